"""The grid as a queue: what state each job is in, and which to start on this machine in the hours it has left.

States, looked up in this order:

* ``running``: its process is alive on this machine;
* ``done``: finished here (final checkpoint written), or harvested as finished into results/;
* ``interrupted``: its run directory is here but no process runs it: resumed first, with its pinned code;
* ``unfinished``: harvested unfinished from a machine that is not this one; restarted from scratch here;
* ``todo``: never started.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kprl.grid.jobs import GridHome, Launch, is_alive, progress
from kprl.grid.spec import Grid, Job

STATUS_FILE = "status.json"  # written by the harvest into results/<grid>/runs/<job>/


@dataclass
class JobState:
    """Where one job stands."""

    job: Job
    state: str
    env_step: int = 0
    env_steps: int | None = None
    machine: str = ""
    launch: Launch | None = None
    resume_step: int = 0
    """The env step a run of it here starts from: its newest checkpoint if interrupted here, else 0."""
    checkpoint: int | None = None
    """The env step of its newest checkpoint here (running or interrupted): what survives a kill now."""

    @property
    def fraction_left(self) -> float:
        """The part of a whole run that starting it here costs."""
        if not self.env_steps:
            return 1.0
        return max(0.0, 1.0 - self.resume_step / self.env_steps)


def harvested_status(grid: Grid, job: Job) -> dict | None:
    """The harvest's status.json of ``job`` in results/, if any."""
    try:
        return json.loads((grid.results / "runs" / job.name / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None


def job_state(grid: Grid, home: GridHome, job: Job) -> JobState:
    """The state of ``job`` as seen from this machine."""
    launch = Launch.load(home.record_path(job.name))
    run_dir = Path(launch.run_dir) if launch else home.run_dir(job.name)
    here = progress(run_dir)
    machine = launch.machine if launch else ""
    if launch is not None and is_alive(launch):
        return JobState(job, "running", here.env_step, here.env_steps, machine, launch, checkpoint=here.checkpoint)
    if here.finished:
        return JobState(job, "done", here.env_step, here.env_steps, machine, launch)
    harvested = harvested_status(grid, job)
    if harvested and harvested.get("finished"):
        return JobState(job, "done", int(harvested.get("last_env_step", 0)), harvested.get("env_steps"),
                        str(harvested.get("machine", "")))  # fmt: skip
    if run_dir.is_dir() and (run_dir / "config.json").is_file():
        return JobState(job, "interrupted", here.env_step, here.env_steps, machine, launch, here.checkpoint or 0,
                        here.checkpoint)  # fmt: skip
    if harvested:
        return JobState(job, "unfinished", int(harvested.get("last_env_step", 0)), harvested.get("env_steps"),
                        str(harvested.get("machine", "")))  # fmt: skip
    return JobState(job, "todo")


def grid_states(grid: Grid, home: GridHome) -> list[JobState]:
    """Every job's state, in queue order."""
    return [job_state(grid, home, job) for job in grid.jobs()]


def usable_cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass
class Decision:
    """A job the planner starts, with its threads and estimated hours."""

    state: JobState
    threads: int
    hours: float
    reason: str


HoursFn = Callable[[Job, int], float]
"""Estimated hours of a whole run of a job's row at a number of threads on this machine."""


def plan(states: list[JobState], hours_left: float, cores: int, busy_threads: int, estimate: HoursFn,
         fill: bool = False) -> list[Decision]:  # fmt: skip
    """Which jobs to start now: interrupted ones first (to resume), then the queue in order (jobs never started,
    and jobs harvested unfinished from another machine, which start over here).

    The queue's order comes first, so that each round of seeds is complete before the next starts: the first job
    estimated to finish within ``hours_left`` is started, side by side with the next job that also fits there (half
    the free cores each) if there is one, else alone on all free cores. Else, with ``fill``, the first jobs anyway (as
    many as side by side allows), to keep the cores busy: their progress is harvested as unfinished and resumes on a
    machine that keeps the grid home. Returns the started decisions."""
    free = cores - busy_threads
    # Resuming costs only what is left, so interrupted jobs go first. A job harvested unfinished from another machine
    # starts over here: a whole run, like a job never started, so it keeps its place in the queue.
    candidates = [s for s in states if s.state == "interrupted"] + [s for s in states if s.state in ("todo", "unfinished")]
    if free < 1 or not candidates:
        return []

    def decide(s: JobState, threads: int, within: bool) -> Decision:
        hours = estimate(s.job, threads) * s.fraction_left
        verb = "resume" if s.state == "interrupted" else "start"
        note = "" if within else f", past the {hours_left:.2f} h left (--fill)"
        return Decision(s, threads, hours, f"{verb}: about {hours:.2f} h at {threads} threads{note}")

    def fits(s: JobState, threads: int) -> bool:
        return estimate(s.job, threads) * s.fraction_left <= hours_left

    half = free // 2
    for i, first in enumerate(candidates):
        if half >= 1 and fits(first, half):
            partner = next((s for s in candidates[i + 1 :] if fits(s, half)), None)
            if partner is not None:
                return [decide(first, half, True), decide(partner, half, True)]
        if fits(first, free):
            return [decide(first, free, True)]
    if fill:
        slots = 2 if free >= 2 else 1
        return [decide(s, free // slots, False) for s in candidates[:slots]]
    return []
