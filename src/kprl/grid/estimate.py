"""How long a grid row takes on this machine: measured from its own runs here when there are any, else calibrated.

* Observed: every run of the row (in the grid home or harvested into results/) that ran on a machine of the same
  description (CPU model and cores, :func:`kprl.runtime.hardware.describe_machine`, and the precision ``auto`` picks there,
  which tells CPUs with native bf16 from those without when a VM hides the model) with the same torch threads,
  throughout.
  Its hours per env step come from train.csv's ``wall_hours`` past the seed phase, so evaluations, checkpoints and
  the slowdown of a run beside it are all counted. The median over such runs is taken.
* Calibrated: :func:`kprl.runtime.speed.measure_run_hours` (a few timed updates and actions, about half a minute), cached in
  ``HOME/speed.json``. Runs side by side slow each other (memory bandwidth, acting): a calibration of one thread
  count below the machine's cores is multiplied by :data:`SIDE_BY_SIDE_SLOWDOWN`.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections.abc import Iterable
from pathlib import Path

from kprl import config as C
from kprl.runtime.files import atomic_write_text
from kprl.runtime.speed import measure_run_hours

SIDE_BY_SIDE_SLOWDOWN = 1.15
MIN_OBSERVED_ENV_STEPS = 5_000  # span of train.csv rows a rate is read from
# Options a calibration does not depend on: a cached measurement stays valid when only these change.
IGNORED_BY_SPEED = frozenset({"run_dir", "seed", "threads", "checkpoint_every", "keep_checkpoints", "log_every"})


def _runtime_records(run_dir: Path) -> list[dict]:
    try:
        lines = (run_dir / "runtime.jsonl").read_text().splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def machine_key(record: dict) -> str:
    """``<machine>, <precision>`` of a runtime.jsonl record: the key speed estimates are kept under."""
    return f"{record.get('machine')}, {record.get('precision')}"


def observed_hours_per_env_step(run_dir: Path, machine: str, threads: int) -> float | None:
    """Hours per env step of the run in ``run_dir`` if it ran only on ``machine`` (a :func:`machine_key`) with
    ``threads`` threads and its train.csv spans enough steps past the seed phase; else None."""
    records = _runtime_records(run_dir)
    if not records or any(machine_key(r) != machine or r.get("threads") != threads for r in records):
        return None
    if len(records) > 1:  # a resumed run's wall_hours carries the restart; read only its last attempt's rows
        first_step = int(records[-1].get("env_step") or 0)
    else:
        first_step = 0
    points: list[tuple[int, float]] = []
    try:
        with open(run_dir / "train.csv", newline="") as f:
            for row in csv.DictReader(f):
                if row.get("updates") not in (None, "", "0") and row.get("wall_hours"):
                    step = int(float(row["env_step"]))
                    if step > first_step:
                        points.append((step, float(row["wall_hours"])))
    except (OSError, ValueError, KeyError):
        return None
    if len(points) < 2 or points[-1][0] - points[0][0] < MIN_OBSERVED_ENV_STEPS:
        return None
    return (points[-1][1] - points[0][1]) / (points[-1][0] - points[0][0])


def observed_hours(run_dirs: Iterable[Path], env_steps: int, machine: str, threads: int) -> float | None:
    """Median estimated hours of a whole ``env_steps`` run over ``run_dirs`` that qualify; None if none does."""
    rates = [r for d in run_dirs if (r := observed_hours_per_env_step(d, machine, threads)) is not None]
    return statistics.median(rates) * env_steps if rates else None


class CalibrationCache:
    """Calibrated hours per (machine, row config, threads), kept in a JSON file so that each is measured once."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.entries: dict[str, float] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}

    @staticmethod
    def key(machine: str, cfg: C.TrainConfig, threads: int) -> str:
        options = {k: v for k, v in C.flatten(cfg).items() if k not in IGNORED_BY_SPEED}
        return json.dumps([machine, threads, options], sort_keys=True, default=str)

    def hours(self, machine: str, cfg: C.TrainConfig, threads: int, cores: int) -> float:
        """Calibrated hours of ``cfg`` at ``threads`` threads (measured now if not cached)."""
        key = self.key(machine, cfg, threads)
        if key not in self.entries:

            self.entries[key] = measure_run_hours(cfg, threads)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.path, json.dumps(self.entries, indent=1) + "\n")
        factor = SIDE_BY_SIDE_SLOWDOWN if threads < cores else 1.0
        return self.entries[key] * factor
