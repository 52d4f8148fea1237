"""``kprl report``: aggregate training runs into the experiment's evidence.

Given run directories (or folders holding them), writes to ``--out``:

* ``evaluations.csv``: one tidy row per evaluation of every run: agent (the variant label), task, seed, env_step,
  episode_return (mean of the eval episodes), episodes (how many), wall_hours, machine, kprl_version, kprl_commit
  (the git commit the run's code came from, ``+dirty`` when tracked files had local changes; a run restarted under
  several machines, versions or commits lists each, joined by `` + ``; ``unknown`` where the run did not record it);
* ``final_scores.csv`` / ``final_scores.md``: per condition and task at one env step (default: the largest step
  every finished run reached): runs that reached it (of all runs), evaluation episodes, mean ± std over seeds, IQM
  with its 95 % stratified bootstrap CI (Agarwal et al. 2021), the keypoint agents' collapse diagnostics near that
  step, beside the published numbers of the CURL and DrQ papers' tables; the markdown lists below the table the runs
  left out of it and the unfinished ones, each with its last evaluated step;
* ``conditions.csv`` / ``conditions.md``: the short name of each condition the figures use (``C2 sac_imm``, see
  :func:`name_conditions`) with its full label, runs, seeds and run directories;
* ``performance_profile_<task>.png`` / ``.csv``: per condition the fraction of its runs whose return at that step
  exceeds τ, over a grid of τ, with a 95 % stratified bootstrap band (Agarwal et al. 2021's performance profiles,
  :func:`kprl.analysis.stats.performance_profile`);
* ``differences.csv`` / ``differences.md`` (``--compare TREATMENT:CONTROL``): per pair of conditions the difference
  of mean final returns and the probability of improvement, each with a 95 % bootstrap CI (:func:`differences`);
* ``curves_<task>.png``: mean evaluation return over seeds with a 95 % bootstrap band per agent, published DrQ /
  DrQ-v2 per-seed curves (``--reference-results``) aggregated the same way and drawn beside; an unfinished run
  counts up to its last evaluation;
* ``keypoints_<task>.png``: keypoint separation and batch std (:data:`KEYPOINT_COLUMNS`) against env steps per
  keypoint agent, the signs of keypoint collapse;
* ``imm_loss.png``: the IMM loss during RL of each keypoint agent next to a standalone IMM run's train and
  validation loss (``--imm-run``), the poster's comparison;
* ``keypoints/``: each keypoint run's newest IMM example figure (its keypoints on a frame).

Runs are grouped into one condition (one curve, one row of final scores) by their variant label
(:func:`variant_label`): the agent and every method option that differs from its default, except the options that
agent never reads (:data:`UNREAD_OPTIONS`), and, when the runs span several kprl versions, that version
(:func:`split_by_version`). Runs that differ in anything that can change what is learnt are never pooled.

A run is unfinished while its eval.csv stops before its config's env_steps (training evaluates at the end of its
budget); a ``status.json`` a harvester left in the run dir adds how far it trained (``last_env_step``), and is not
required. Statistics at a step use only the runs evaluated there.

Figures name conditions by their short names, legends below the axes. Everything is recomputed from the runs'
CSV logs, so rerunning the command regenerates the report.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from kprl import config as C
from kprl.analysis.stats import (
    bootstrap_band,
    bootstrap_ci,
    iqm,
    mean_difference,
    performance_profile,
    probability_of_improvement,
    stratified_bootstrap_ci,
)
from kprl.errors import ConfigError, KprlError
from kprl.runtime.files import atomic_write_text
from kprl.viz import report as plots
from kprl.viz.curves import read_csv
from kprl.viz.report import Band

# Published cartpole swingup scores from pixels, mean ± std over seeds (the CURL and DrQ papers' tables: Laskin et al. 2020, Kostrikov et al. 2020).
PUBLISHED: dict[str, dict[int, list[tuple[str, float, float]]]] = {
    "cartpole_swingup": {
        100_000: [("SAC+AE", 311, 11), ("PlaNet", 297, 39), ("Dreamer", 326, 27), ("CURL", 582, 146),
                  ("DrQ", 759, 92), ("SAC on true state", 835, 22)],  # fmt: skip
        500_000: [("SAC+AE", 735, 63), ("PlaNet", 475, 71), ("Dreamer", 762, 27), ("CURL", 841, 45),
                  ("DrQ", 868, 10), ("SAC on true state", 848, 15)],  # fmt: skip
    }
}
TIDY_COLUMNS = ("agent", "task", "seed", "env_step", "episode_return", "episodes", "wall_hours", "machine",
                "kprl_version", "kprl_commit")  # fmt: skip
SCORE_COLUMNS = ("condition", "agent", "task", "env_step", "runs", "runs_total", "eval_episodes", "mean", "std", "iqm",
                 "iqm_ci_low", "iqm_ci_high", "keypoint_separation", "keypoint_batch_std", "seeds",
                 "wall_hours_mean")  # fmt: skip
CONDITION_COLUMNS = ("condition", "agent", "task", "runs", "unfinished", "seeds", "run_dirs")
PROFILE_COLUMNS = ("condition", "agent", "task", "env_step", "runs", "tau", "fraction", "ci_low", "ci_high")
# Thresholds τ of a performance profile: this many, evenly from min(0, lowest return) to the highest return.
PROFILE_POINTS = 101
DIFFERENCE_COLUMNS = ("treatment", "control", "task", "env_step", "n_treatment", "n_control", "mean_difference",
                      "mean_difference_ci_low", "mean_difference_ci_high", "probability_of_improvement",
                      "probability_of_improvement_ci_low", "probability_of_improvement_ci_high", "note")  # fmt: skip
# Keypoint collapse diagnostics the keypoint agents log in train.csv (kprl.rl.representations.keypoint_spread),
# in map coordinates [-1, 1] (2 = the feature map's width); their final-score columns drop the ``train/`` prefix.
KEYPOINT_COLUMNS = ("train/keypoint_separation", "train/keypoint_batch_std")
# The final-score keypoint diagnostics average the train.csv rows within this last fraction of the env steps.
FINAL_WINDOW = 0.1
ONE_SEED = "one seed: preliminary"
UNKNOWN = "unknown"
NOT_METHOD = C.options_marked(C.TrainConfig, "execution")
"""Options that say *how* a run executed or was logged, not which method it is: left out of variant labels."""
# Options each agent never reads, by dotted name: left out of its variant labels so that runs differing only there
# form one condition. Every other method option labels runs, so an option missing here splits conditions (safe)
# rather than pooling different experiments; tests/test_report.py checks that changing the options listed leaves
# an agent's update bitwise unchanged.
# sac_ae has no keypoint head or GenNet. keypoint.per_frame and keypoint.pretrained_imm are not listed: the agent
# factory reads them for every agent (trunk layout, pretrained weights), and config validation refuses them for
# sac_ae. sac_imm has no latent head (encoder.latent_dim) and no decoder or reconstruction loss (ae.*); its IMM
# loss trains every parameter it reaches at --imm-lr, so --encoder-lr is not read either.
UNREAD_OPTIONS: dict[str, frozenset[str]] = {
    "sac_ae": frozenset(
        {"keypoint.keypoints", "keypoint.sigma", "keypoint.imm_lr", "keypoint.imm_update_every",
         "keypoint.imm_target_offset", "keypoint.imm_mix_layers", "keypoint.keypoint_features",
         "keypoint.freeze_keynet"}  # fmt: skip
    ),
    "sac_imm": frozenset(
        {"ae.encoder_lr", "ae.decoder_lr", "ae.decoder_update_every", "ae.decoder_latent_lambda",
         "ae.decoder_weight_decay", "ae.reconstruction_bits", "encoder.latent_dim"}  # fmt: skip
    ),
    "sac_ae_imm": frozenset(),
}


@dataclass
class Run:
    """One training run as the report sees it."""

    run_dir: Path
    label: str
    agent: str
    task: str
    seed: int
    evals: list[dict[str, str]]
    train: list[dict[str, str]]
    machine: str
    kprl_version: str = UNKNOWN
    kprl_commit: str = UNKNOWN
    env_steps: int = 0
    status: dict[str, Any] = dataclasses.field(default_factory=dict)
    eval_episodes: int = 0
    condition: str = ""  # the short name figures use (:func:`name_conditions`); empty: not named yet

    @property
    def steps(self) -> list[int]:
        return [int(r["env_step"]) for r in self.evals]

    @property
    def last_step(self) -> int:
        """The env step of the last evaluation; -1 before the first."""
        return max(self.steps, default=-1)

    @property
    def finished(self) -> bool:
        """Whether the run evaluated at the end of its budget (training evaluates once it reaches env_steps)."""
        return self.last_step >= self.env_steps

    def row_at(self, env_step: int) -> dict[str, str] | None:
        """The evaluation row at ``env_step``, if the run has one."""
        return next((row for row in self.evals if int(row["env_step"]) == env_step), None)

    def return_at(self, env_step: int) -> float | None:
        row = self.row_at(env_step)
        return None if row is None else float(row["episode_return"])

    def episodes_at(self, env_step: int) -> int | None:
        """How many evaluation episodes the return at ``env_step`` is the mean of: eval.csv's ``episodes`` column,
        else (logs without it) the config's eval_episodes; None without an evaluation there."""
        row = self.row_at(env_step)
        if row is None:
            return None
        return int(float(row["episodes"])) if row.get("episodes") else self.eval_episodes

    @property
    def short(self) -> str:
        """The condition's name in figures: its short name, else (not named) its label."""
        return self.condition or self.label


def variant_label(cfg: C.TrainConfig) -> str:
    """The name of the condition a run belongs to: the agent plus every method option that differs from its default,
    sorted by name (``sac_imm[augmentation=crop,imm_lr=0.0002]``). Execution and logging options (:data:`NOT_METHOD`)
    and the options the agent never reads (:data:`UNREAD_OPTIONS`) are left out."""
    default = C.flatten(C.TrainConfig())
    current = C.flatten(cfg)
    unread = UNREAD_OPTIONS.get(cfg.agent, frozenset())
    diffs = [
        f"{_label_key(key, default)}={current[key]}"
        for key in sorted(current)
        if key != "agent" and key not in NOT_METHOD and key not in unread and current[key] != default[key]
    ]
    return cfg.agent + (f"[{','.join(diffs)}]" if diffs else "")


def _label_key(key: str, options: Iterable[str]) -> str:
    """How an option is named in a label: its field name (``imm_lr``) where no other option has that field name,
    else its dotted name, so that two different options never read alike."""
    field = key.rsplit(".", 1)[-1]
    same_field = [name for name in options if name.rsplit(".", 1)[-1] == field]
    return field if len(same_field) == 1 else key


def find_runs(paths: Iterable[Path]) -> list[Path]:
    """Run directories (holding config.json and eval.csv) at or below ``paths``, sorted."""
    found: set[Path] = set()
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise KprlError(f"{path} does not exist")
        candidates = [path] if (path / "config.json").is_file() else [p.parent for p in path.rglob("config.json")]
        found.update(p for p in candidates if (p / "eval.csv").is_file() and _is_training_run(p))
    return sorted(found)


def _is_training_run(run_dir: Path) -> bool:
    try:
        data = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "agent" in data


def load_run(run_dir: Path) -> Run:
    """A run directory's config, logs and where and with which code it ran (``runtime.jsonl``, one line a start)."""
    cfg = C.load_json(C.TrainConfig, run_dir / "config.json")
    starts = _runtime_records(run_dir / "runtime.jsonl")
    return Run(run_dir, variant_label(cfg), cfg.agent, cfg.env.task, cfg.seed, read_csv(run_dir / "eval.csv"),
               read_csv(run_dir / "train.csv"), _distinct(r.get("machine") for r in starts),
               _distinct(r.get("kprl_version") for r in starts), _distinct(_commit(r) for r in starts),
               cfg.env_steps, _status(run_dir / "status.json"), cfg.eval_episodes)  # fmt: skip


def _status(path: Path) -> dict[str, Any]:
    """A harvester's ``status.json`` (``{"finished": bool, "last_env_step": int, ...}``); empty where absent or
    unreadable, as it is optional."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def split_by_version(runs: Sequence[Run]) -> list[Run]:
    """Runs whose labels also name their kprl version when the runs span several versions (``unknown`` for runs
    that did not record one): a release may change what an option computes, so runs of different versions are
    never pooled into one condition. One version: the runs unchanged."""
    if len({r.kprl_version for r in runs}) <= 1:
        return list(runs)
    return [dataclasses.replace(r, label=f"{r.label} (kprl {r.kprl_version})") for r in runs]


SHORT_OPTIONS_CHARS = 24  # of a short name's option summary; the full label is in conditions.md


def short_options(label: str) -> str:
    """The options of a variant label in a few characters: ``sac_imm[augmentation=crop,imm_lr=0.0002]`` ->
    ``crop imm_lr=0.0002``; the augmentation by its value alone; cut to :data:`SHORT_OPTIONS_CHARS` with an
    ellipsis."""
    inner = label[label.index("[") + 1 : label.rindex("]")] if "[" in label and label.endswith("]") else ""
    parts = [part.split("=", 1)[1] if part.startswith("augmentation=") else part for part in inner.split(",") if part]
    text = " ".join(parts)
    return text if len(text) <= SHORT_OPTIONS_CHARS else text[: SHORT_OPTIONS_CHARS - 1] + "…"


def name_conditions(runs: Sequence[Run]) -> list[Run]:
    """Runs with the short name of their condition (label) for figures: ``C<n> <agent> <options>``, n counting
    the labels in first-seen order (``C2 sac_imm crop imm_lr=0.0002``), the options cut short
    (:func:`short_options`). Full labels (``sac_imm[augmentation=crop,batch_size=8,...]``) do not fit a legend;
    ``conditions.md`` maps each short name to its label (:func:`conditions_rows`)."""
    number = {label: n for n, label in enumerate(dict.fromkeys(r.label for r in runs), start=1)}
    return [
        dataclasses.replace(r, condition=f"C{number[r.label]} {r.agent} {short_options(r.label)}".rstrip())
        for r in runs
    ]


def _runtime_records(path: Path) -> list[dict[str, Any]]:
    """The lines of a ``runtime.jsonl``; none where the file is absent."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _commit(record: dict[str, Any]) -> str | None:
    """The commit a start ran, with ``+dirty`` where tracked files had local changes; None where not recorded."""
    commit = record.get("git_commit")
    if not commit:
        return None
    return f"{commit}+dirty" if record.get("git_dirty") else str(commit)


def _distinct(values: Iterable[Any]) -> str:
    """The distinct values in first-seen order joined by `` + `` (a run restarted on other machines or code);
    ``unknown`` stands for a value not recorded."""
    names = list(dict.fromkeys(UNKNOWN if v is None or v == "" else str(v) for v in values))
    return " + ".join(names) if names else UNKNOWN


def tidy_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One row of :data:`TIDY_COLUMNS` per evaluation of every run."""
    return [
        {"agent": r.label, "task": r.task, "seed": r.seed, "env_step": int(row["env_step"]),
         "episode_return": float(row["episode_return"]), "episodes": r.episodes_at(int(row["env_step"])),
         "wall_hours": float(row.get("wall_hours") or "nan"),
         "machine": r.machine, "kprl_version": r.kprl_version, "kprl_commit": r.kprl_commit}  # fmt: skip
        for r in runs
        for row in r.evals
    ]


def groups(runs: Sequence[Run]) -> dict[tuple[str, str], list[Run]]:
    """Runs by (agent label, task), in first-seen order."""
    out: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        out.setdefault((r.label, r.task), []).append(r)
    return out


def default_step(runs: Sequence[Run]) -> int:
    """The largest env step every finished run evaluated at (every run, where none finished): an unfinished run
    does not hold the table back; it is left out of it instead."""
    pool = [r for r in runs if r.finished] or list(runs)
    common = set.intersection(*(set(r.steps) for r in pool))
    if not common:
        raise KprlError("the runs share no evaluation step; pass --at")
    return max(common)


def reached(members: Sequence[Run], at: int) -> list[tuple[Run, dict[str, str]]]:
    """The runs evaluated at env step ``at``, each with that evaluation's row."""
    return [(r, row) for r in members if (row := r.row_at(at)) is not None]


def returns_at(members: Sequence[Run], at: int) -> list[float]:
    """The evaluation returns at env step ``at`` of the runs evaluated there."""
    return [float(row["episode_return"]) for _, row in reached(members, at)]


def final_scores(runs: Sequence[Run], at: int | None = None) -> tuple[int, list[dict[str, Any]]]:
    """Scores at env step ``at`` (default: :func:`default_step`) per (agent, task) over the runs evaluated there
    (``runs``, of ``runs_total``); a condition none of whose runs got there has no row."""
    at = default_step(runs) if at is None else at
    rows = []
    for (label, task), members in groups(runs).items():
        there = reached(members, at)
        if not there:
            continue
        scores = returns_at(members, at)
        ci = stratified_bootstrap_ci({task: scores}, statistic=iqm)
        rows.append({
            "condition": members[0].short, "agent": label, "task": task, "env_step": at, "runs": len(scores),
            "runs_total": len(members), "eval_episodes": " ".join(map(str, _episodes([r for r, _ in there], at))),
            "mean": float(np.mean(scores)), "std": float(np.std(scores, ddof=1)) if len(scores) > 1 else float("nan"),
            "iqm": ci.estimate, "iqm_ci_low": ci.low, "iqm_ci_high": ci.high,
            **{column.removeprefix("train/"): final_train_value([r for r, _ in there], column, at)
               for column in KEYPOINT_COLUMNS},
            "seeds": " ".join(str(r.seed) for r, _ in there),
            "wall_hours_mean": float(np.mean([float(row.get("wall_hours") or "nan") for _, row in there])),
        })  # fmt: skip
    return at, rows


def train_series(run: Run, column: str, x: str = "env_step") -> tuple[np.ndarray, np.ndarray]:
    """(``x``, ``column``) of the train.csv rows that have a value in ``column``."""
    rows = [r for r in run.train if r.get(column) not in (None, "")]
    return np.array([float(r[x]) for r in rows]), np.array([float(r[column]) for r in rows])


def final_train_value(members: Sequence[Run], column: str, at: int) -> float | None:
    """A train.csv ``column`` near env step ``at``: per run the mean over its rows within the last
    :data:`FINAL_WINDOW` of env steps up to ``at``, averaged over the runs that have such rows; None where none has
    (an agent that does not log it)."""
    per_run = []
    for run in members:
        steps, values = train_series(run, column)
        window = values[(steps >= (1 - FINAL_WINDOW) * at) & (steps <= at)]
        if window.size:
            per_run.append(float(window.mean()))
    return float(np.mean(per_run)) if per_run else None


def _episodes(runs: Iterable[Run], at: int) -> list[int]:
    """The distinct numbers of evaluation episodes behind the runs' returns at ``at``, ascending."""
    return sorted({n for r in runs if (n := r.episodes_at(at)) is not None})


def episodes_phrase(runs: Sequence[Run], at: int) -> str:
    """What each return at ``at`` is the mean of, for the table's header: ``10 deterministic episodes per
    evaluation`` where every run evaluated alike, else the range (each condition's numbers are then in the table's
    episodes column)."""
    counts = _episodes(runs, at)
    if len(counts) <= 1:
        return f"{counts[0] if counts else 'no'} deterministic episode{'' if counts == [1] else 's'} per evaluation"
    return (f"{counts[0]} to {counts[-1]} deterministic episodes per evaluation, the number differing between runs "
            "(episodes column)")  # fmt: skip


def scores_markdown(at: int, rows: Sequence[dict[str, Any]], runs: Sequence[Run] = ()) -> str:
    """The final-score table (the episodes column where runs evaluated over different numbers of episodes, the
    keypoint columns where some agent has keypoints), a note on the runs left out or unfinished
    (:func:`unfinished_note`) and the published numbers at ``at``."""
    keypoints = any(r["keypoint_separation"] is not None or r["keypoint_batch_std"] is not None for r in rows)
    episodes = len(_episodes(runs, at)) > 1
    lines = [
        f"Evaluation return at {at:,} env steps (mean of {episodes_phrase(runs, at)}; over seeds: mean "
        "± std and IQM with its 95 % stratified bootstrap CI). condition: the short name the figures use "
        "(conditions.md); runs: the runs evaluated there, of all runs of the condition."
        + (" Keypoint separation and batch std: train.csv means over the last 10 % of env steps up to there, in map "
           "coordinates [-1, 1] (near 0: collapsed keypoints)." if keypoints else ""),
        "",
        "| condition | agent | task | runs |" + (" episodes |" if episodes else "")
        + " mean ± std | IQM [95 % CI] | wall-clock h (mean) |"
        + (" keypoint separation | keypoint batch std |" if keypoints else ""),
        "|---|---|---|---|---|---|---|" + ("---|" if episodes else "") + ("---|---|" if keypoints else ""),
    ]  # fmt: skip
    for r in rows:
        std = "" if np.isnan(r["std"]) else f" ± {r['std']:.0f}"
        runs_there = str(r["runs"]) if r["runs"] == r["runs_total"] else f"{r['runs']} of {r['runs_total']}"
        spread = f" {_fmt(r['keypoint_separation'], 3)} | {_fmt(r['keypoint_batch_std'], 3)} |" if keypoints else ""
        lines.append(
            f"| {r['condition']} | {r['agent']} | {r['task']} | {runs_there} |"
            + (f" {r['eval_episodes']} |" if episodes else "")
            + f" {r['mean']:.0f}{std} | {r['iqm']:.0f} [{r['iqm_ci_low']:.0f}, {r['iqm_ci_high']:.0f}] |"
            f" {r['wall_hours_mean']:.2f} |{spread}"
        )
    lines += unfinished_note(runs, at)
    for task in dict.fromkeys(r["task"] for r in rows):
        published = PUBLISHED.get(task, {}).get(at)
        if published:
            lines += ["", f"Published ({task}, {at:,} env steps, mean ± std over seeds; CURL and DrQ tables):", ""]
            lines += ["| method | return |", "|---|---|"] + [f"| {m} | {v:.0f} ± {s:.0f} |" for m, v, s in published]
    return "\n".join(lines) + "\n"


def _fmt(value: float | None, digits: int) -> str:
    """A number to ``digits`` decimals; blank for None."""
    return "" if value is None else f"{value:.{digits}f}"


def unfinished_note(runs: Sequence[Run], at: int) -> list[str]:
    """Markdown lines (none where every run finished and was evaluated at ``at``): the runs left out of the table
    (no evaluation at ``at``) and the unfinished runs in it, each with its last evaluated env step (and, from a
    harvester's status.json, the step training got to)."""
    lines = []
    if missing := left_out(runs, at):
        lines += ["", f"Left out of the table, without an evaluation at {at:,} env steps: "
                  + "; ".join(_progress(r, at) for r in missing) + "."]  # fmt: skip
    if unfinished := [r for r in runs if not r.finished and r.row_at(at) is not None]:
        lines += ["", f"Unfinished runs in the table (evaluated at {at:,} env steps, their eval.csv stops before "
                  "their env_steps): " + "; ".join(_progress(r, at) for r in unfinished) + "."]  # fmt: skip
    return lines


def left_out(runs: Sequence[Run], at: int) -> list[Run]:
    """The runs without an evaluation at env step ``at``: not in the table or the statistics there."""
    return [r for r in runs if r.row_at(at) is None]


def shortfall(run: Run, at: int) -> str:
    """How far a run got, against the table's step ``at``: ``stops at 40,000 env steps (unfinished)``."""
    if run.last_step < 0:
        return "has no evaluation yet (unfinished)"
    state = "unfinished" if not run.finished else f"finished: env_steps {run.env_steps:,}"
    if run.last_step < at or run.row_at(at) is not None:
        return f"stops at {run.last_step:,} env steps ({state})"
    return f"has no evaluation at {at:,} env steps (last at {run.last_step:,}; {state})"


def _progress(run: Run, at: int) -> str:
    """``seed3`` (sac_imm, seed 3): stops at 60,000 env steps (unfinished)[, trained to 64,000 (status.json)]."""
    step = run.status.get("last_env_step")
    trained = f", trained to {step:,} (status.json)" if type(step) is int and step > run.last_step else ""
    return f"`{run.run_dir.name}` ({run.label}, seed {run.seed}): {shortfall(run, at)}{trained}"


def coverage_lines(runs: Sequence[Run], at: int) -> list[str]:
    """What `kprl report` prints about the table's step: how many runs reached it, and a warning per run that did
    not (:func:`shortfall`), so that a table over fewer runs than were given never passes unnoticed."""
    reached_at = len(runs) - len(missing := left_out(runs, at))
    return [f"scores at env step {at:,} ({reached_at} of {len(runs)} runs reached it)"] + [
        f"warning: {r.run_dir} {shortfall(r, at)}" for r in missing
    ]


def conditions_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One row of :data:`CONDITION_COLUMNS` per condition and task: its short name, full label, runs (how many
    unfinished), seeds and run directories."""
    return [
        {"condition": members[0].short, "agent": label, "task": task, "runs": len(members),
         "unfinished": sum(not r.finished for r in members), "seeds": " ".join(str(r.seed) for r in members),
         "run_dirs": " ".join(r.run_dir.name for r in members)}  # fmt: skip
        for (label, task), members in groups(runs).items()
    ]


def conditions_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The conditions as a markdown table: the short names of the figures against the full labels."""
    lines = [
        "Conditions: the short name each figure and table uses, the full label (the agent and every method option "
        "that differs from its default; --compare takes it), and the runs pooled into it.",
        "",
        "| condition | agent (full label) | task | runs | seeds | run directories |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        unfinished = f" ({r['unfinished']} unfinished)" if r["unfinished"] else ""
        dirs = ", ".join(f"`{d}`" for d in r["run_dirs"].split())
        lines.append(f"| {r['condition']} | {r['agent']} | {r['task']} | {r['runs']}{unfinished} | {r['seeds']} | "
                     f"{dirs} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def reference_curves(reference_dir: Path | None, task: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Published per-seed curves for ``task`` from a folder of CSVs like ``kprl.config.PUBLISHED_CURVES``: name -> (env
    steps, returns [seeds, points]) on the steps every seed has."""
    if reference_dir is None or not Path(reference_dir).is_dir():
        return {}
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for path in sorted(Path(reference_dir).glob("*.csv")):
        rows = read_csv(path)
        if not rows:
            continue
        step_key = "step" if "step" in rows[0] else "frame" if "frame" in rows[0] else None
        task_key = "env" if "env" in rows[0] else "task" if "task" in rows[0] else None
        if step_key is None or task_key is None or "episode_reward" not in rows[0]:
            continue
        per_agent: dict[str, dict[str, dict[int, float]]] = {}
        for row in rows:
            if row[task_key] != task:
                continue
            per_agent.setdefault(row.get("agent", path.stem), {}).setdefault(row["seed"], {})[
                int(float(row[step_key]))
            ] = float(row["episode_reward"])
        for agent, seeds in per_agent.items():
            common = sorted(set.intersection(*(set(s) for s in seeds.values())))
            if common:
                out[agent] = (np.array(common), np.array([[s[k] for k in common] for s in seeds.values()]))
    return out


def imm_loss_series(run: Run) -> tuple[np.ndarray, np.ndarray] | None:
    """(updates, mean IMM loss over each training episode) of a keypoint agent's train.csv."""
    updates, losses = train_series(run, "train/imm_loss", x="updates")
    return (updates, losses) if updates.size else None


def standalone_imm_losses(imm_run: Path | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A `kprl imm train` run's training loss (train.csv) and validation loss (eval.csv) by update."""
    if imm_run is None:
        return {}
    train, evals = read_csv(Path(imm_run) / "train.csv"), read_csv(Path(imm_run) / "eval.csv")
    if not train and not evals:
        raise KprlError(f"--imm-run {imm_run} has no train.csv or eval.csv of `kprl imm train`")
    out = {}
    if train:
        out["standalone IMM, train"] = (np.array([float(r["step"]) for r in train]),
                                        np.array([float(r["loss"]) for r in train]))  # fmt: skip
    if evals:
        out["standalone IMM, validation"] = (np.array([float(r["step"]) for r in evals]),
                                             np.array([float(r["val_loss"]) for r in evals]))  # fmt: skip
    return out


def aligned(series: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-run series (steps, values) on shared steps: (steps, values [runs, steps]). A step is kept where every run
    that got that far has it; a run that stopped earlier (unfinished) is NaN there, so it counts up to where it got."""
    maps = [dict(zip(x.tolist(), y.tolist(), strict=True)) for x, y in series]
    ends = [max(m, default=-np.inf) for m in maps]
    union = sorted(set().union(*maps))
    steps = [s for s in union if all(s in m for m, end in zip(maps, ends, strict=True) if end >= s)]
    values = np.array([[m.get(s, np.nan) for s in steps] for m in maps], dtype=np.float64)
    return np.array(steps, dtype=np.float64), values


def eval_series(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """(env steps, evaluation returns) of a run."""
    return np.array(run.steps, dtype=np.float64), np.array([float(r["episode_return"]) for r in run.evals])


def group_name(members: Sequence[Run]) -> str:
    """A condition's legend entry, by its short name: ``C1 sac_ae (3 seeds, 1 unfinished)``."""
    unfinished = sum(not r.finished for r in members)
    return (f"{members[0].short} ({len(members)} seed{'s' if len(members) > 1 else ''}"
            + (f", {unfinished} unfinished)" if unfinished else ")"))  # fmt: skip


def keypoint_series(runs: Sequence[Run], task: str) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Per :data:`KEYPOINT_COLUMNS` column: condition name -> (env steps, values [seeds, steps]) of the conditions
    on ``task`` whose runs log it; empty where none does."""
    out: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for column in KEYPOINT_COLUMNS:
        for (_, t), members in groups(runs).items():
            series = [train_series(r, column) for r in members]
            if t == task and any(x.size for x, _ in series):
                out.setdefault(column, {})[group_name(members)] = aligned([s for s in series if s[0].size])
    return out


def parse_comparisons(specs: Sequence[str], labels: Iterable[str]) -> list[tuple[str, str]]:
    """``TREATMENT:CONTROL`` pairs of condition labels. A label may hold ``:`` itself, so the split is the one
    that leaves two known labels; an unknown label is a :class:`ConfigError` listing the known ones."""
    known = list(dict.fromkeys(labels))
    pairs = []
    for spec in specs:
        splits = [(spec[:i], spec[i + 1 :]) for i, c in enumerate(spec) if c == ":"]
        valid = [pair for pair in splits if pair[0] in known and pair[1] in known]
        if len(valid) != 1:
            unknown = dict.fromkeys(side for pair in splits[:1] for side in pair if side not in known) or [spec]
            raise ConfigError(
                f"--compare {spec!r}: unknown label {', '.join(map(repr, unknown))} (give TREATMENT:CONTROL); "
                f"known labels: {', '.join(known)}"
            )
        pairs.append(valid[0])
    return pairs


def differences(
    runs: Sequence[Run], at: int, pairs: Sequence[tuple[str, str]], reps: int = 2000
) -> list[dict[str, Any]]:
    """Treatment against control at env step ``at``, one row per pair and task either runs on, over the runs
    evaluated there: the difference of mean returns (treatment − control) and the probability of improvement
    P(X_treatment > X_control) of Agarwal et al. (2021, "Deep RL at the edge of the statistical precipice"; rliable),
    each with a 95 % percentile bootstrap CI (Efron 1979) that resamples each condition's seeds independently
    (:func:`kprl.analysis.stats.bootstrap_ci`, seeded). With one seed on a side the CI is a point: the row's note
    says so. A side without runs at ``at`` leaves the statistics blank."""
    by_group = groups(runs)
    rows = []
    for treatment, control in pairs:
        tasks = dict.fromkeys(t for (label, t) in by_group if label in (treatment, control))
        for task in tasks:
            x, y = (returns_at(by_group.get((label, task), []), at) for label in (treatment, control))
            row: dict[str, Any] = {"treatment": treatment, "control": control, "task": task, "env_step": at,
                                   "n_treatment": len(x), "n_control": len(y)}  # fmt: skip
            row.update(_difference_stats(x, y, reps) if x and y else {"note": "no runs at this step on one side"})
            rows.append(row)
    return rows


def _difference_stats(x: Sequence[float], y: Sequence[float], reps: int) -> dict[str, Any]:
    """Mean difference and probability of improvement of scores ``x`` over ``y`` with their bootstrap CIs."""
    out: dict[str, Any] = {"note": ONE_SEED if min(len(x), len(y)) == 1 else ""}
    for name, statistic in (("mean_difference", mean_difference), ("probability_of_improvement",
                                                                   probability_of_improvement)):  # fmt: skip
        ci = bootstrap_ci([x, y], statistic, reps=reps)
        out.update({name: ci.estimate, f"{name}_ci_low": ci.low, f"{name}_ci_high": ci.high})
    return out


def differences_markdown(at: int, rows: Sequence[dict[str, Any]]) -> str:
    """The differences as a markdown table, n = 1 marked preliminary."""
    lines = [
        f"Treatment against control at {at:,} env steps, over the runs evaluated there: difference of mean evaluation "
        "returns (treatment − control) and probability of improvement P(treatment > control) (Agarwal et al. 2021), "
        "each with a 95 % percentile bootstrap CI resampling each condition's seeds independently (Efron). With one "
        "seed on a side the CI is a point and the comparison preliminary.",
        "",
        "| treatment | control | task | runs (treatment, control) | mean difference [95 % CI] | "
        "P(treatment > control) [95 % CI] | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        diff = poi = ""
        if "mean_difference" in r:
            diff = f"{r['mean_difference']:+.0f} [{r['mean_difference_ci_low']:+.0f}, {r['mean_difference_ci_high']:+.0f}]"
            poi = (f"{r['probability_of_improvement']:.2f} [{r['probability_of_improvement_ci_low']:.2f}, "
                   f"{r['probability_of_improvement_ci_high']:.2f}]")  # fmt: skip
        lines.append(f"| {r['treatment']} | {r['control']} | {r['task']} | {r['n_treatment']}, {r['n_control']} | "
                     f"{diff} | {poi} | {r['note']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def write_report(
    paths: Sequence[Path],
    out: Path,
    at: int | None = None,
    reference_dir: Path | None = None,
    imm_run: Path | None = None,
    bootstrap_reps: int = 2000,
    compare: Sequence[str] = (),
) -> dict[str, Any]:
    """Write the report of the runs under ``paths`` into ``out``; returns a summary: the files written, and
    ``notes``, the lines `kprl report` prints about the table's step (:func:`coverage_lines`). ``compare``:
    ``TREATMENT:CONTROL`` label pairs for ``differences.csv`` / ``.md``."""
    if not paths:
        raise KprlError("give the run directories (or folders holding them) to report on")
    run_dirs = find_runs(paths)
    if not run_dirs:
        raise KprlError(f"no training runs (config.json + eval.csv) under {', '.join(str(p) for p in paths)}")
    runs = name_conditions(split_by_version([load_run(d) for d in run_dirs]))
    pairs = parse_comparisons(compare, (r.label for r in runs))  # bad labels fail before anything is written
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    write_csv(out / "evaluations.csv", tidy_rows(runs), TIDY_COLUMNS)
    conditions = conditions_rows(runs)
    write_csv(out / "conditions.csv", conditions, CONDITION_COLUMNS)
    atomic_write_text(out / "conditions.md", conditions_markdown(conditions))
    at, scores = final_scores(runs, at)
    write_csv(out / "final_scores.csv", scores, SCORE_COLUMNS)
    atomic_write_text(out / "final_scores.md", scores_markdown(at, scores, runs))
    written += [out / name for name in ("evaluations.csv", "conditions.csv", "conditions.md", "final_scores.csv",
                                        "final_scores.md")]  # fmt: skip
    diffs = differences(runs, at, pairs, bootstrap_reps)
    if pairs:
        write_csv(out / "differences.csv", diffs, DIFFERENCE_COLUMNS)
        atomic_write_text(out / "differences.md", differences_markdown(at, diffs))
        written += [out / "differences.csv", out / "differences.md"]
    written += _write_figures(runs, at, out, reference_dir, imm_run, bootstrap_reps)
    return {"runs": len(runs), "env_step": at, "scores": scores, "differences": diffs,
            "notes": coverage_lines(runs, at), "written": [str(p) for p in written]}  # fmt: skip


def _write_figures(
    runs: Sequence[Run], at: int, out: Path, reference_dir: Path | None, imm_run: Path | None, reps: int
) -> list[Path]:
    """Per task the curves, the performance profile (figure and CSV) and the keypoint diagnostics; the IMM losses;
    a copy of each keypoint run's newest IMM example figure. Returns the files written."""
    written: list[Path] = []
    for task in dict.fromkeys(r.task for r in runs):
        written.append(_write_curves(runs, task, out, reference_dir, reps))
        written += _write_profile(runs, task, at, out, reps)
        if spread := keypoint_series(runs, task):
            written.append(plots.keypoint_spread_figure(spread, task, out / f"keypoints_{task}.png"))

    rl_losses = {f"{r.short} seed {r.seed}": s for r in runs if (s := imm_loss_series(r)) is not None}
    if rl_losses:
        path = out / "imm_loss.png"
        plots.imm_loss_figure(rl_losses, standalone_imm_losses(imm_run), path)
        written.append(path)

    for r in runs:
        figures = sorted((r.run_dir / "figures").glob("imm_example_*.png"))
        if figures:
            prefix = f"{r.label}_{r.task}_seed{r.seed}_"
            target = out / "keypoints" / f"{prefix}{figures[-1].name}"
            target.parent.mkdir(exist_ok=True)
            # A report of an unfinished run written again later keeps only the run's newest example.
            for stale in target.parent.iterdir():
                if stale != target and stale.name.startswith(prefix + "imm_example_"):
                    stale.unlink()
            shutil.copyfile(figures[-1], target)
            written.append(target)
    return written


def _write_curves(runs: Sequence[Run], task: str, out: Path, reference_dir: Path | None, reps: int) -> Path:
    """``curves_<task>.png``: each condition's mean return with its bootstrap band (unfinished runs up to where
    they got) beside the published curves."""
    curves = {}
    for (_, t), members in groups(runs).items():
        if t == task:
            steps, y = aligned([eval_series(r) for r in members])
            curves[group_name(members)] = (steps, *bootstrap_band(y, reps=reps))
    references = {
        f"{name} (published, {y.shape[0]} seeds)": (steps, *bootstrap_band(y, reps=reps))
        for name, (steps, y) in reference_curves(reference_dir, task).items()
    }
    return plots.learning_curves_figure(curves, references, task, out / f"curves_{task}.png")


def profile_thresholds(scores: ArrayLike, points: int = PROFILE_POINTS) -> np.ndarray:
    """The τ grid of a performance profile: ``points`` thresholds evenly from min(0, lowest score) to the highest
    score, where every curve has fallen to 0 (one unit wide where all scores are equal)."""
    x = np.asarray(scores, dtype=np.float64)
    low, high = min(0.0, float(x.min())), float(x.max())
    return np.linspace(low, high if high > low else low + 1.0, points)


def performance_profiles(runs: Sequence[Run], task: str, at: int, reps: int = 2000) -> dict[str, tuple[Band, int]]:
    """Per condition label on ``task``, over its runs evaluated at ``at``: its performance profile (τ, fraction of
    runs whose return exceeds τ, 95 % stratified bootstrap band; Agarwal et al. 2021,
    :func:`kprl.analysis.stats.performance_profile`) on one τ grid shared by the conditions
    (:func:`profile_thresholds`), and how many runs it is over. Conditions without runs at ``at`` are left out."""
    finals = {
        label: scores for (label, t), members in groups(runs).items() if t == task and (scores := returns_at(members, at))
    }
    if not finals:
        return {}
    taus = profile_thresholds(np.concatenate([np.asarray(v) for v in finals.values()]))
    return {label: ((taus, *performance_profile({task: v}, taus, reps=reps)), len(v)) for label, v in finals.items()}


def _write_profile(runs: Sequence[Run], task: str, at: int, out: Path, reps: int) -> list[Path]:
    """``performance_profile_<task>.png`` and ``.csv`` (:data:`PROFILE_COLUMNS`, one row per condition and τ);
    nothing where no run of ``task`` was evaluated at ``at``."""
    profiles = performance_profiles(runs, task, at, reps)
    if not profiles:
        return []
    short = {r.label: r.short for r in runs}
    rows = [
        {"condition": short[label], "agent": label, "task": task, "env_step": at, "runs": n, "tau": tau,
         "fraction": fraction, "ci_low": low, "ci_high": high}  # fmt: skip
        for label, (band, n) in profiles.items()
        for tau, fraction, low, high in zip(*band, strict=True)
    ]
    table, figure = out / f"performance_profile_{task}.csv", out / f"performance_profile_{task}.png"
    write_csv(table, rows, PROFILE_COLUMNS)
    named = {f"{short[label]} ({n} run{'s' if n > 1 else ''})": band for label, (band, n) in profiles.items()}
    return [table, plots.performance_profile_figure(named, task, at, figure)]
