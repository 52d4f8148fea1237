"""A grid's jobs on this machine: where they live, how they are launched in the background, what state they are in.

Layout under the grid home (``--home``, default ``$KPRL_GRID_HOME`` or ``~/kprl-grid``), outside any checkout so that a
machine that survives can resume, and big enough for checkpoints and replay buffers (~2 GB per 100k-step run)::

    HOME/code/<id>/                 pinned copies of kprl (kprl.grid.code)
    HOME/<grid>/runs/<job>/         kprl train run directories
    HOME/<grid>/jobs/<job>.json     the launch record: command, pinned code, host, pid, threads
    HOME/<grid>/jobs/<job>.log      the run's console output
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kprl.grid.spec import Job
from kprl.runtime.checkpoint import checkpoint_steps
from kprl.runtime.files import atomic_write_text

HOME_VARIABLE = "KPRL_GRID_HOME"
# `python -c` rather than `python -m kprl`: a pinned copy from any kprl version runs this way.
_ENTRY = "import sys; from kprl.cli import main; sys.exit(main())"


def default_home() -> Path:
    """``$KPRL_GRID_HOME``, else ``~/kprl-grid``."""
    return Path(os.environ.get(HOME_VARIABLE) or Path.home() / "kprl-grid")


@dataclass(frozen=True)
class GridHome:
    """The folders of one grid under a grid home."""

    root: Path
    grid: str

    @property
    def runs(self) -> Path:
        return self.root / self.grid / "runs"

    @property
    def jobs(self) -> Path:
        return self.root / self.grid / "jobs"

    def run_dir(self, name: str) -> Path:
        return self.runs / name

    def record_path(self, name: str) -> Path:
        return self.jobs / f"{name}.json"

    def log_path(self, name: str) -> Path:
        return self.jobs / f"{name}.log"


@dataclass
class Launch:
    """How a job was (last) started: enough to resume it with the same code and to find its process."""

    name: str
    argv: list[str]
    """``kprl`` arguments (``train ... --run-dir ... --threads ...``)."""
    pythonpath: str
    """The pinned code's folder (kprl.grid.code)."""
    code: dict[str, Any]
    host: str
    machine: str
    threads: int
    started: str
    pid: int
    starts: list[str] = field(default_factory=list)
    """Every start and resume: ``<time> <host>``."""

    @property
    def run_dir(self) -> str:
        return self.argv[self.argv.index("--run-dir") + 1]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> Launch | None:
        """The record at ``path``; None if there is none or it cannot be read."""
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None


def _process_cmdline(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


def is_alive(launch: Launch) -> bool:
    """Whether the job's process is running on this machine: same host, and the pid's command names its run dir
    (so a pid reused by another process does not count)."""
    if launch.host != socket.gethostname():
        return False
    cmdline = _process_cmdline(launch.pid)
    return cmdline is not None and launch.run_dir in cmdline


@dataclass(frozen=True)
class Progress:
    """How far a run directory got."""

    env_step: int
    """The last env step in its logs (train.csv or eval.csv); 0 if none."""
    env_steps: int | None
    """Its budget (config.json), if readable."""
    checkpoint: int | None
    """The env step of its newest checkpoint, if any."""

    @property
    def finished(self) -> bool:
        return self.env_steps is not None and self.checkpoint is not None and self.checkpoint >= self.env_steps


def last_env_step(run_dir: Path) -> int:
    """The largest env step logged in ``run_dir``'s eval.csv and train.csv (0 if neither has a row)."""
    best = 0
    for name in ("eval.csv", "train.csv"):
        try:
            with open(Path(run_dir) / name, newline="") as f:
                for row in csv.DictReader(f):
                    try:
                        best = max(best, int(float(row.get("env_step") or 0)))
                    except ValueError:
                        continue
        except OSError:
            continue
    return best


def run_budget(run_dir: Path) -> int | None:
    """``env_steps`` of the run's config.json, if readable."""
    try:
        return int(json.loads((Path(run_dir) / "config.json").read_text())["env_steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def progress(run_dir: Path) -> Progress:
    """How far the run in ``run_dir`` got (a run is finished when its final checkpoint is written)."""
    steps = checkpoint_steps(run_dir) if Path(run_dir).is_dir() else []
    return Progress(last_env_step(run_dir), run_budget(run_dir), max(steps) if steps else None)


def with_threads(argv: list[str], threads: int) -> list[str]:
    """``argv`` with its ``--threads`` value set to ``threads`` (added if absent)."""
    if "--threads" not in argv:
        return [*argv, "--threads", str(threads)]
    out = list(argv)
    out[out.index("--threads") + 1] = str(threads)
    return out


def launch(
    job: Job, home: GridHome, pythonpath: Path, code: dict[str, Any], threads: int, machine: str,
    previous: Launch | None = None, python: str = sys.executable, repin: bool = False,
) -> Launch:  # fmt: skip
    """Start ``job`` in the background (its own process session, so it outlives this command), or resume it with
    ``previous``'s command and code (``repin``: in ``previous``'s run dir with ``job``'s command now and the code at
    ``pythonpath``). Returns the launch record, already saved."""
    if previous is not None and not repin:
        # Same command and code; the thread count follows this machine's plan (a run may resume with other threads).
        argv, pythonpath_text, code = with_threads(previous.argv, threads), previous.pythonpath, previous.code
    else:
        run_dir = previous.run_dir if previous is not None else str(home.run_dir(job.name))
        argv = ["train", *job.train_args(), "--run-dir", run_dir, "--threads", str(threads)]
        pythonpath_text = str(pythonpath)
    home.jobs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": pythonpath_text, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    with open(home.log_path(job.name), "ab") as log:
        log.write(f"\n=== {now} {'resume' if previous else 'start'} on {socket.gethostname()}\n".encode())
        log.flush()
        process = subprocess.Popen(
            [python, "-c", _ENTRY, *argv], cwd=home.root, env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    record = Launch(
        name=job.name, argv=argv, pythonpath=pythonpath_text, code=code, host=socket.gethostname(),
        machine=machine, threads=threads,
        started=now, pid=process.pid, starts=[*(previous.starts if previous else []), f"{now} {socket.gethostname()}"],
    )  # fmt: skip
    record.save(home.record_path(job.name))
    return record
