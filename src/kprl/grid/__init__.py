"""An experiment grid as a resumable queue for machines that come and go (``kprl grid``, docs/grid.md).

spec (the grid file: rows, seeds, order) -> queue (each job's state; which to start in the hours left) -> jobs
(launch in the background from a pinned copy of the code, in run directories outside the checkout) -> harvest (logs
into results/, finished or not) -> report. ``estimate`` says how long a row takes on this machine; ``code`` pins the
code; ``commands`` holds the three commands.
"""
