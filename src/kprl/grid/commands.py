"""``kprl grid status | run | harvest``: the queue's three commands, as functions that return what they print."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import torch

from kprl import config as C
from kprl.analysis.report import load_run, split_by_version, write_report
from kprl.config import PUBLISHED_CURVES
from kprl.errors import ConfigError, KprlError
from kprl.grid.code import pin_code, pinned_provenance
from kprl.grid.estimate import CalibrationCache, machine_key, observed_hours
from kprl.grid.harvest import foreign_runs, harvest
from kprl.grid.jobs import GridHome, launch
from kprl.grid.queue import HoursFn, grid_states, plan, usable_cores
from kprl.grid.spec import Grid, Job
from kprl.runtime.hardware import describe_machine, resolve_precision


def this_machine() -> str:
    """This CPU as runs record it (:func:`kprl.runtime.hardware.describe_machine` and the precision ``auto`` picks): the key
    of speed estimates (:func:`kprl.grid.estimate.machine_key`)."""

    cpu = torch.device("cpu")
    return machine_key({"machine": describe_machine(cpu), "precision": resolve_precision("auto", cpu)})


def status_lines(grid: Grid, home: GridHome) -> list[str]:
    """One line per job: state, env steps, machine (for a running or interrupted job also its newest checkpoint,
    where a kill now would resume from); then the counts per state."""
    states = grid_states(grid, home)
    width = max(len(s.job.name) for s in states)
    lines = [f"{grid.name}: {len(states)} jobs (grid home {home.root / grid.name}, results {grid.results})"]
    for s in states:
        steps = f"{s.env_step:>7d}/{s.env_steps or grid.config(s.job.row.name).env_steps}" if s.env_step else ""
        where = ""
        if s.launch is not None and s.state in ("running", "interrupted"):
            saved = f"checkpoint {s.checkpoint}" if s.checkpoint is not None else "no checkpoint yet"
            where = f"{saved}; {s.launch.host}, {s.launch.threads} threads, {s.machine}"
        elif s.machine:
            where = s.machine
        lines.append(f"  {s.job.name:<{width}}  {s.state:<11}  {steps:<15}  {where}".rstrip())
    counts: dict[str, int] = {}
    for s in states:
        counts[s.state] = counts.get(s.state, 0) + 1
    lines.append("  " + ", ".join(f"{n} {state}" for state, n in counts.items()))
    return lines


def estimator(grid: Grid, home: GridHome, machine: str, cores: int) -> HoursFn:
    """Hours of a whole run of a job's row on this machine: observed if its runs ran here, else calibrated."""
    cache = CalibrationCache(home.root / "speed.json")
    memo: dict[tuple[str, int], float] = {}

    def row_dirs(row: str) -> list[Path]:
        names = [job.name for job in grid.jobs() if job.row.name == row]
        return [d for n in names for d in (home.run_dir(n), grid.results / "runs" / n) if d.is_dir()]

    def estimate(job: Job, threads: int) -> float:
        key = (job.row.name, threads)
        if key not in memo:
            cfg = grid.config(job.row.name)
            seen = observed_hours(row_dirs(job.row.name), cfg.env_steps, machine, threads)
            memo[key] = seen if seen is not None else cache.hours(machine, cfg, threads, cores)
        return memo[key]

    return estimate


def run_what_fits(grid: Grid, home: GridHome, hours: float, fill: bool = False, cores: int | None = None,
                  estimate: HoursFn | None = None, repin: bool = False, only: Sequence[str] = ()) -> list[str]:  # fmt: skip
    """Start (in the background) the jobs that :func:`kprl.grid.queue.plan` picks; lines saying what was done.
    ``repin``: interrupted jobs resume with the code pinned now and the grid file's current options. ``only``: the
    plan chooses among these jobs alone (in the grid's order); the others' running processes still hold cores."""
    if not hours > 0:
        raise ConfigError(f"--hours must be > 0, got {hours}")
    cores = usable_cores() if cores is None else cores
    machine = this_machine()
    states = grid_states(grid, home)
    unknown = sorted(set(only) - {s.job.name for s in states})
    if unknown:
        raise ConfigError(f"--only {unknown[0]}: no such job in {grid.name} (kprl grid status lists them)")
    busy = sum(s.launch.threads for s in states if s.state == "running" and s.launch is not None)
    chosen = [s for s in states if s.job.name in only] if only else states
    decisions = plan(chosen, hours, cores, busy, estimate or estimator(grid, home, machine, cores), fill)
    if not decisions:
        todo = sum(s.state in ("todo", "unfinished", "interrupted") for s in states)
        reason = "no free core" if busy >= cores else f"no job fits {hours:.2f} h (--fill starts one anyway)"
        return [f"nothing started: {reason}; {todo} jobs left"]
    pinned = pin_code(home.root)
    lines = []
    for d in decisions:
        previous = d.state.launch if d.state.state == "interrupted" else None
        repinning = previous is not None and repin
        if previous is not None and not repinning and not Path(previous.pythonpath).is_dir():
            lines.append(f"{d.state.job.name}: not resumed: its pinned code {previous.pythonpath} is gone")
            continue
        diffs = option_differences(grid, d.state.job, Path(previous.run_dir)) if repinning else []
        if diffs:
            lines.append(f"{d.state.job.name}: not resumed: the grid file's options differ from its run's"
                         f" ({', '.join(diffs[:4])}); without --repin it resumes with its own")  # fmt: skip
            continue
        code = pinned_provenance(Path(previous.pythonpath) if previous and not repinning else pinned)
        record = launch(d.state.job, home, pinned, code, d.threads, machine, previous, repin=repinning)
        reason = f"{d.reason}, with the code pinned now" if repinning else d.reason
        lines.append(f"{d.state.job.name}: {reason}; pid {record.pid}, log {home.log_path(d.state.job.name)}")
    return lines


def option_differences(grid: Grid, job: Job, run_dir: Path) -> list[str]:
    """The method options in which ``job``'s command from the grid file now differs from the run in ``run_dir``
    (options a resume may change do not count; :func:`kprl.config.config_differences`)."""
    try:
        stored = C.to_dict(C.load_json(C.TrainConfig, run_dir / "config.json"))
    except (OSError, ValueError, KprlError) as exc:
        return [f"config.json unreadable: {exc}"]
    return C.config_differences(stored, C.to_dict(dataclasses.replace(grid.config(job.row.name), seed=job.seed)))


def export_jobs(grid: Grid, home: GridHome, count: int) -> list[str]:
    """JSON lines ``{"name", "argv"}`` of the next ``count`` jobs neither done nor running here, for a machine that
    does not run the queue itself (experiments/gpu/run_grid.sh); harvest its runs with ``--sources``."""
    if count < 1:
        raise ConfigError(f"--count must be >= 1, got {count}")
    pending = [s for s in grid_states(grid, home) if s.state in ("interrupted", "todo", "unfinished")]
    return [json.dumps({"name": s.job.name, "argv": s.job.train_args()}) for s in pending[:count]]


def harvest_lines(grid: Grid, home: GridHome, sources: Sequence[Path] = (), report: bool = True) -> list[str]:
    """Harvest into results/ and (unless ``report`` is False) regenerate the report from the harvested runs."""
    lines = harvest(grid, home, sources) or ["nothing to harvest"]
    foreign = foreign_runs(grid)
    if foreign:
        lines.append(f"left alone in {grid.results / 'runs'} (no job of this grid): {', '.join(foreign)}")
    if report:
        lines.append(write_grid_report(grid))
    return lines


def write_grid_report(grid: Grid) -> str:
    """``kprl report`` of the grid's harvested runs into its results folder, with each row's difference to the row
    it is compared to (both must have harvested runs)."""
    harvested = [(job.row.name, grid.results / "runs" / job.name) for job in grid.jobs()]
    harvested = [(row, d) for row, d in harvested if (d / "config.json").is_file()]
    if not harvested:
        return "no report: no harvested runs"
    runs = split_by_version([load_run(d) for _, d in harvested])
    labels: dict[str, set[str]] = {}
    for (row, _), run in zip(harvested, runs, strict=True):
        labels.setdefault(row, set()).add(run.label)
    pairs = [
        f"{next(iter(labels[row]))}:{next(iter(labels[parent]))}"
        for row, parent in grid.comparisons()
        if len(labels.get(row, ())) == 1 and len(labels.get(parent, ())) == 1
    ]
    write_report([d for _, d in harvested], grid.results, None, PUBLISHED_CURVES, grid.imm_run, compare=pairs)
    return f"report written to {grid.results}" + (f" ({len(pairs)} comparisons)" if pairs else "")
