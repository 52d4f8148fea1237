"""Harvest: copy the logs of a grid's runs into results/ (finished or not), then regenerate its report.

Per job, ``RESULTS/runs/<job>/`` gets config.json, eval.csv, train.csv, runtime.jsonl (and the GPU script's
gpu_status.json), the last IMM example figure,
the last evaluation video, and ``status.json`` (finished or not, the last env step, the machine and code). Sources
are the grid home's run directories and any folders or ``.tar.gz`` archives of run directories named after jobs (the
GPU script's output). A source replaces what results/ holds only if it got at least as far, so harvesting is safe
at any time, any number of times, from any machine: it never loses progress already harvested.
"""

from __future__ import annotations

import json
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kprl.errors import KprlError
from kprl.grid.jobs import GridHome, last_env_step, progress, run_budget
from kprl.grid.queue import STATUS_FILE, harvested_status
from kprl.grid.spec import Grid, Job
from kprl.runtime.files import atomic_write_bytes, atomic_write_text

LOG_FILES = ("config.json", "eval.csv", "train.csv", "runtime.jsonl", "gpu_status.json")
# The newest file of each pattern (names carry a zero-padded env step, so the last in name order is the newest).
LAST_OF = (("figures", "imm_example_*.png"), ("videos", "eval_*.mp4"))


def _last_record(run_dir: Path) -> dict[str, Any]:
    try:
        lines = (run_dir / "runtime.jsonl").read_text().splitlines()
        return json.loads(lines[-1]) if lines else {}
    except (OSError, ValueError):
        return {}


def run_status(job: Job, run_dir: Path, source: str) -> dict[str, Any]:
    """``status.json`` of a harvested run: how far it got and where and with which code it ran."""
    here = progress(run_dir)
    record = _last_record(run_dir)
    budget = run_budget(run_dir)
    finished = here.finished
    gpu_status = run_dir / "gpu_status.json"
    if gpu_status.is_file():  # the GPU script's record: runs there keep no checkpoints
        try:
            finished = bool(json.loads(gpu_status.read_text()).get("finished"))
        except ValueError:
            pass
    return {
        "job": job.name,
        "row": job.row.name,
        "seed": job.seed,
        "finished": finished,
        "last_env_step": here.env_step,
        "env_steps": budget,
        "machine": record.get("machine", ""),
        "device": record.get("device", ""),
        "threads": record.get("threads"),
        "kprl_version": record.get("kprl_version"),
        "git_commit": record.get("git_commit"),
        "source": source,
        "harvested": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def copy_logs(run_dir: Path, dest: Path) -> None:
    """Copy a run's logs (:data:`LOG_FILES` and the newest of :data:`LAST_OF`) into ``dest``, replacing older ones."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in LOG_FILES:
        if (run_dir / name).is_file():
            atomic_write_bytes(dest / name, (run_dir / name).read_bytes())
    for folder, pattern in LAST_OF:
        newest = sorted((run_dir / folder).glob(pattern))[-1:] if (run_dir / folder).is_dir() else []
        for path in newest:
            (dest / folder).mkdir(exist_ok=True)
            atomic_write_bytes(dest / folder / path.name, path.read_bytes())
            for old in (dest / folder).glob(pattern):
                if old.name != path.name:
                    old.unlink()


@contextmanager
def _run_folders(source: Path) -> Iterator[Path]:
    """A folder whose subfolders are run directories: ``source`` itself, or a ``.tar.gz`` of it unpacked."""
    if source.is_dir():
        yield source
        return
    if not source.is_file() or not tarfile.is_tarfile(source):
        raise KprlError(f"--from {source}: not a folder or a tar archive of run directories")
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(source) as archive:
        archive.extractall(tmp, filter="data")
        yield Path(tmp)


def _same_but_time(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Whether two ``status.json`` records differ at most in when they were harvested."""

    def untimed(status: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in status.items() if k != "harvested"}

    return "harvested" in before and untimed(before) == untimed(after)


def harvest_job(grid: Grid, job: Job, run_dir: Path, source: str) -> str | None:
    """Copy one run into results/ if it got at least as far as what is there; a line saying what was done."""
    if not (run_dir / "config.json").is_file():
        return None
    dest = grid.results / "runs" / job.name
    before = harvested_status(grid, job)
    step = last_env_step(run_dir)
    # A run that has only just started has no curve yet: copying it would add an empty run to results/ and the report.
    if before is None and step == 0:
        return f"{job.name}: nothing to harvest yet (0 env steps in {source})"
    if before is not None and int(before.get("last_env_step", 0)) > step:
        return f"{job.name}: kept results/ ({before.get('last_env_step')} env steps > {step} in {source})"
    status = run_status(job, run_dir, source)
    if before is not None and _same_but_time(before, status):
        status["harvested"] = before["harvested"]  # nothing new: leave the committed file as it is
    copy_logs(run_dir, dest)
    atomic_write_text(dest / STATUS_FILE, json.dumps(status, indent=1) + "\n")
    return f"{job.name}: {step} env steps{' (finished)' if status['finished'] else ''} from {source}"


def harvest(grid: Grid, home: GridHome, extra_sources: Sequence[Path] = ()) -> list[str]:
    """Harvest every job found in the grid home and in ``extra_sources``; one line per job harvested or kept."""
    lines: list[str] = []
    jobs = {job.name: job for job in grid.jobs()}
    for name, job in jobs.items():
        line = harvest_job(grid, job, home.run_dir(name), f"{home.run_dir(name)}")
        if line:
            lines.append(line)
    for source in extra_sources:
        with _run_folders(Path(source)) as folder:
            for run_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
                if run_dir.name in jobs:
                    line = harvest_job(grid, jobs[run_dir.name], run_dir, str(source))
                    if line:
                        lines.append(line)
    return lines


def foreign_runs(grid: Grid) -> list[str]:
    """Folders in results/<grid>/runs that name no job of the grid (a row renamed or dropped): never deleted, only
    listed, since the report reads the grid's jobs alone."""
    runs = grid.results / "runs"
    names = {job.name for job in grid.jobs()}
    return sorted(p.name for p in runs.iterdir() if p.is_dir() and p.name not in names) if runs.is_dir() else []

