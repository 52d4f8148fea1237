"""Console progress of long jobs: rich bars on a terminal, plain lines in logs and pipes, and an ETA from the
rates the run itself has measured.

A training run has three speeds: random seed actions (acting only), the seed burst (updates only), and learning
(acting plus one update per action); evaluations come on top. An average over the whole run so far, as a plain
env-steps-per-second ETA takes, says minutes during the random phase of a run that will take hours. :class:`RunEta`
keeps the three rates and the evaluation time apart and projects each over what is left of it.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

WINDOW = 20  # episodes (or bursts of updates) a rate is averaged over


class Rate:
    """Seconds per unit over the last :data:`WINDOW` measurements."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, float]] = deque(maxlen=WINDOW)

    def add(self, seconds: float, units: float) -> None:
        if units > 0:
            self._samples.append((seconds, units))

    @property
    def per_unit(self) -> float | None:
        if not self._samples:
            return None
        return sum(s for s, _ in self._samples) / sum(u for _, u in self._samples)


@dataclass
class RunEta:
    """Remaining wall-clock of a training run (:mod:`kprl.rl.train`) from its own measured rates."""

    total: int
    """Env steps to train for."""
    seed_env_steps: int
    eval_every: int
    burst_updates: int = 0
    """Updates of the seed burst still to do."""
    acting: Rate = field(default_factory=Rate)
    """Seconds per env step of random acting (the seed phase)."""
    learning: Rate = field(default_factory=Rate)
    """Seconds per env step of acting with an update per action."""
    updates: Rate = field(default_factory=Rate)
    """Seconds per update (the seed burst)."""
    evaluations: Rate = field(default_factory=Rate)
    """Seconds per evaluation."""

    def evaluations_after(self, env_step: int) -> int:
        """Evaluations still to come: every ``eval_every`` env steps and at the end."""
        due = self.total // self.eval_every - env_step // self.eval_every
        return due + (1 if self.total % self.eval_every else 0)

    def seconds_left(self, env_step: int, action_repeat: int) -> float | None:
        """Estimated seconds to the end of the run; None until the rates it needs have been measured."""
        seed_left = max(0, self.seed_env_steps - env_step)
        learn_left = self.total - max(env_step, self.seed_env_steps)
        learning = self.learning.per_unit
        if learning is None and learn_left > 0:
            update, act = self.updates.per_unit, self.acting.per_unit
            if update is None or act is None:
                return None
            learning = act + update / action_repeat
        seconds = (learning or 0.0) * learn_left
        if seed_left:
            if self.acting.per_unit is None:
                return None
            seconds += seed_left * self.acting.per_unit
        if self.burst_updates:
            if self.updates.per_unit is None:
                return None
            seconds += self.burst_updates * self.updates.per_unit
        return seconds + self.evaluations_after(env_step) * (self.evaluations.per_unit or 0.0)


def format_seconds(seconds: float | None) -> str:
    """``1h05m``, ``4m07s``, or ``?`` when unknown."""
    if seconds is None:
        return "?"
    h, rem = divmod(int(seconds), 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Task:
    """One bar of :class:`Console` (nothing on a non-terminal: the caller prints lines there)."""

    def __init__(self, console: Console, task_id: Any) -> None:
        self.console, self.task_id = console, task_id

    def update(self, completed: float | None = None, info: str = "", advance: float | None = None) -> None:
        bars = self.console.bars
        if bars is not None and self.task_id is not None:
            bars.update(self.task_id, completed=completed, advance=advance, info=info)

    def done(self) -> None:
        bars = self.console.bars
        if bars is not None and self.task_id is not None:
            bars.remove_task(self.task_id)
            self.task_id = None


class Console:
    """Where progress goes: rich bars and lines on a terminal; plain flushed lines elsewhere (logs, pipes, CI);
    nothing when ``quiet``."""

    def __init__(self, quiet: bool = False, live: bool | None = None) -> None:
        self.quiet = quiet
        self.live = not quiet and (sys.stdout.isatty() if live is None else live)
        self.bars: Any = None
        if self.live:
            self.bars = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("{task.fields[info]}"),
            )  # fmt: skip
            self.bars.start()

    def line(self, message: str) -> None:
        if self.quiet:
            return
        if self.bars is not None:
            self.bars.console.print(message, markup=False, highlight=False)
        else:
            print(message, file=sys.stdout, flush=True)

    def task(self, description: str, total: float, completed: float = 0) -> Task:
        """A bar (on a terminal); remove it with :meth:`Task.done`."""
        if self.bars is None:
            return Task(self, None)
        return Task(self, self.bars.add_task(description, total=total, completed=completed, info=""))

    def close(self) -> None:
        if self.bars is not None:
            self.bars.stop()
            self.bars = None


class Stopwatch:
    """Seconds since the last :meth:`lap` (or creation)."""

    def __init__(self) -> None:
        self.t = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds since the last lap, without starting a new one."""
        return time.perf_counter() - self.t

    def lap(self) -> float:
        now = time.perf_counter()
        elapsed, self.t = now - self.t, now
        return elapsed
