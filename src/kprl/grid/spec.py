"""What an experiment grid is: rows (a named set of ``kprl train`` options), the seeds each row gets in which
order (stages), where its results go. Read from a TOML file (``experiments/cartpole_100k.toml``)::

    name = "cartpole_100k"
    results = "../results/cartpole_100k"        # relative to this file
    args = ["--task", "cartpole_swingup", "--env-steps", "100000"]   # given to every row

    [[row]]
    name = "sac_ae-crop"
    args = ["--agent", "sac_ae", "--augmentation", "crop"]
    about = "the control: SAC+AE with the keypoint rows' augmentation"

    [[row]]
    name = "sac_imm-crop"
    args = ["--agent", "sac_imm", "--augmentation", "crop"]
    compare_to = "sac_ae-crop"                  # the report states the difference to this row

    [[stage]]                                   # stages run in order; within one, seed by seed, row by row
    rows = ["sac_ae-crop", "sac_imm-crop"]
    seeds = [1]

A job is one (row, seed): its name ``<row>-s<seed>`` names its run directory here and in ``results``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

from kprl import config as C
from kprl.cli_args import parse
from kprl.errors import ConfigError, KprlError

# Options the grid sets for each job itself: a row that set them would fight the queue.
GRID_OWNED = ("--run-dir", "--seed", "--threads", "--device", "--config")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+=-]*")


@dataclass(frozen=True)
class Row:
    """One condition of the grid: ``kprl train`` options shared by its seeds."""

    name: str
    args: tuple[str, ...]
    about: str = ""
    compare_to: str | None = None


@dataclass(frozen=True)
class Job:
    """One run of the grid: a row at one seed."""

    row: Row
    seed: int
    common_args: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.row.name}-s{self.seed}"

    def train_args(self) -> list[str]:
        """The ``kprl train`` options of this job, without the ones the queue adds (run dir, threads, device)."""
        return [*self.common_args, *self.row.args, "--seed", str(self.seed)]


@dataclass
class Grid:
    """A grid file, validated."""

    name: str
    path: Path
    results: Path
    args: tuple[str, ...]
    rows: dict[str, Row]
    stages: list[tuple[tuple[str, ...], tuple[int, ...]]]
    imm_run: Path | None = None
    configs: dict[str, C.TrainConfig] = field(default_factory=dict, repr=False)

    def jobs(self) -> list[Job]:
        """Every job in queue order: stage by stage; within a stage, seed by seed, then row by row (so each round
        of seeds is a complete picture before the next starts). A job listed twice keeps its first place."""
        seen: set[str] = set()
        out: list[Job] = []
        for rows, seeds in self.stages:
            for seed in seeds:
                for name in rows:
                    job = Job(self.rows[name], seed, self.args)
                    if job.name not in seen:
                        seen.add(job.name)
                        out.append(job)
        return out

    def config(self, row: str) -> C.TrainConfig:
        """The resolved ``kprl train`` config of ``row`` (seed 1)."""
        return self.configs[row]

    @property
    def env_steps(self) -> int:
        """The budget of the grid's runs (the largest over rows), at which final scores are taken."""
        return max(cfg.env_steps for cfg in self.configs.values())

    def comparisons(self) -> list[tuple[str, str]]:
        """(row, the row it is compared to) for every row that names one."""
        return [(row.name, row.compare_to) for row in self.rows.values() if row.compare_to]


def _strings(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{what} must be a list of strings")
    return tuple(value)


def _parse_row(entry: object, where: str) -> Row:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: every [[row]] must be a table")
    unknown = set(entry) - {"name", "args", "about", "compare_to"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} in [[row]]")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"{where}: row name {name!r} must be letters, digits and _ . + = - (it names directories)")
    args = _strings(entry.get("args", []), f"{where}: row {name} args")
    owned = [a for a in args if a.split("=", 1)[0] in GRID_OWNED]
    if owned:
        raise ConfigError(f"{where}: row {name} sets {owned[0]}, which the grid sets for each job itself")
    compare_to = entry.get("compare_to")
    if compare_to is not None and not isinstance(compare_to, str):
        raise ConfigError(f"{where}: row {name} compare_to must be a row name")
    return Row(name, args, str(entry.get("about", "")), compare_to)


def _parse_stage(entry: object, rows: dict[str, Row], where: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    if not isinstance(entry, dict) or set(entry) != {"rows", "seeds"}:
        raise ConfigError(f"{where}: every [[stage]] needs exactly rows = [...] and seeds = [...]")
    names = _strings(entry["rows"], f"{where}: stage rows")
    missing = [n for n in names if n not in rows]
    if missing:
        raise ConfigError(f"{where}: stage names unknown row {missing[0]!r} (rows: {', '.join(rows)})")
    seeds = entry["seeds"]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise ConfigError(f"{where}: stage seeds must be a non-empty list of non-negative integers")
    return names, tuple(seeds)


def _row_config(grid_args: tuple[str, ...], row: Row, where: str) -> C.TrainConfig:

    try:
        return parse(C.TrainConfig, [*grid_args, *row.args], "kprl train")
    except KprlError as exc:
        raise ConfigError(f"{where}: row {row.name}: {exc}") from None
    except SystemExit:  # --help inside a row's args
        raise ConfigError(f"{where}: row {row.name} asks for --help") from None


def load_grid(path: Path) -> Grid:
    """Read and check a grid file: every row's options must parse as ``kprl train`` options; a problem is one
    :class:`ConfigError` line naming the file."""
    path = Path(path)
    where = str(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no grid file {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where} is not valid TOML: {exc}") from None
    unknown = set(data) - {"name", "results", "args", "imm_run", "row", "stage"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"{where}: name must be letters, digits and _ . + = - (it names directories)")
    if not isinstance(data.get("results"), str):
        raise ConfigError(f"{where}: results = \"DIR\" (relative to the grid file) is required")
    args = _strings(data.get("args", []), f"{where}: args")
    rows: dict[str, Row] = {}
    for entry in data.get("row", []):
        row = _parse_row(entry, where)
        if row.name in rows:
            raise ConfigError(f"{where}: two rows are named {row.name}")
        rows[row.name] = row
    if not rows:
        raise ConfigError(f"{where}: no [[row]]")
    for row in rows.values():
        if row.compare_to is not None and row.compare_to not in rows:
            raise ConfigError(f"{where}: row {row.name} compares to unknown row {row.compare_to!r}")
    stages = [_parse_stage(entry, rows, where) for entry in data.get("stage", [])]
    if not stages:
        raise ConfigError(f"{where}: no [[stage]] (which rows run at which seeds)")
    base = path.resolve().parent
    imm_run = data.get("imm_run")
    grid = Grid(
        name=name,
        path=path,
        results=(base / data["results"]).resolve(),
        args=args,
        rows=rows,
        stages=stages,
        imm_run=(base / imm_run).resolve() if isinstance(imm_run, str) else None,
    )
    grid.configs = {row.name: _row_config(args, row, where) for row in rows.values()}
    return grid
