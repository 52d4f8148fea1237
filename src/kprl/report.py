"""``kprl report``: aggregate training runs into the experiment's evidence.

Given run directories (or folders holding them), writes to ``--out``:

* ``evaluations.csv``: one tidy row per evaluation of every run: agent (the variant label), task, seed, env_step,
  episode_return (mean of the eval episodes), wall_hours, machine, kprl_version, kprl_commit (the git commit the
  run's code came from, ``+dirty`` when tracked files had local changes; a run restarted under several machines,
  versions or commits lists each, joined by `` + ``; ``unknown`` where the run did not record it);
* ``final_scores.csv`` / ``final_scores.md``: per agent and task at one env step (default: the largest step every
  run reached): runs, mean ± std over seeds, IQM with its 95 % stratified bootstrap CI (Agarwal et al. 2021), beside
  the published numbers of the CURL and DrQ papers' tables;
* ``curves_<task>.png``: mean evaluation return over seeds with a 95 % bootstrap band per agent, published DrQ /
  DrQ-v2 per-seed curves (``--reference-results``) aggregated the same way and drawn beside;
* ``imm_loss.png``: the IMM loss during RL of each keypoint agent next to a standalone IMM run's train and
  validation loss (``--imm-run``), the poster's comparison;
* ``keypoints/``: each keypoint run's newest IMM example figure (its keypoints on a frame).

Runs are grouped into one condition (one curve, one row of final scores) by their variant label
(:func:`variant_label`): the agent and every method option that differs from its default, except the options that
agent never reads (:data:`UNREAD_OPTIONS`), and, when the runs span several kprl versions, that version
(:func:`split_by_version`). Runs that differ in anything that can change what is learnt are never pooled.

Everything is recomputed from the runs' CSV logs, so rerunning the command regenerates the report.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kprl import config as C
from kprl.checkpoint import atomic_write_text
from kprl.errors import KprlError
from kprl.evaluation.stats import bootstrap_band, iqm, stratified_bootstrap_ci
from kprl.viz.curves import read_csv

# Published cartpole swingup scores from pixels, mean ± std over seeds (the CURL and DrQ papers' tables: Laskin et al. 2020, Kostrikov et al. 2020).
PUBLISHED: dict[str, dict[int, list[tuple[str, float, float]]]] = {
    "cartpole_swingup": {
        100_000: [("SAC+AE", 311, 11), ("PlaNet", 297, 39), ("Dreamer", 326, 27), ("CURL", 582, 146),
                  ("DrQ", 759, 92), ("SAC on true state", 835, 22)],  # fmt: skip
        500_000: [("SAC+AE", 735, 63), ("PlaNet", 475, 71), ("Dreamer", 762, 27), ("CURL", 841, 45),
                  ("DrQ", 868, 10), ("SAC on true state", 848, 15)],  # fmt: skip
    }
}
TIDY_COLUMNS = ("agent", "task", "seed", "env_step", "episode_return", "wall_hours", "machine", "kprl_version",
                "kprl_commit")  # fmt: skip
UNKNOWN = "unknown"
# Options that say *how* a run executed or was logged, not which method it is: left out of variant labels.
NOT_METHOD = frozenset(
    {"run_dir", "seed", "env_steps", "device", "threads", "precision", "update_path", "eval_every", "eval_episodes",
     "checkpoint_every", "video", "video_size", "log_every", "wandb", "wandb_project"}  # fmt: skip
)
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

    @property
    def steps(self) -> list[int]:
        return [int(r["env_step"]) for r in self.evals]

    def row_at(self, env_step: int) -> dict[str, str] | None:
        """The evaluation row at ``env_step``, if the run has one."""
        return next((row for row in self.evals if int(row["env_step"]) == env_step), None)

    def return_at(self, env_step: int) -> float | None:
        row = self.row_at(env_step)
        return None if row is None else float(row["episode_return"])


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
               _distinct(r.get("kprl_version") for r in starts), _distinct(_commit(r) for r in starts))  # fmt: skip


def split_by_version(runs: Sequence[Run]) -> list[Run]:
    """Runs whose labels also name their kprl version when the runs span several versions (``unknown`` for runs
    that did not record one): a release may change what an option computes, so runs of different versions are
    never pooled into one condition. One version: the runs unchanged."""
    if len({r.kprl_version for r in runs}) <= 1:
        return list(runs)
    return [dataclasses.replace(r, label=f"{r.label} (kprl {r.kprl_version})") for r in runs]


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
         "episode_return": float(row["episode_return"]), "wall_hours": float(row.get("wall_hours") or "nan"),
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


def final_scores(runs: Sequence[Run], at: int | None = None) -> tuple[int, list[dict[str, Any]]]:
    """Scores at env step ``at`` (default: the largest step every run has an evaluation at) per (agent, task)."""
    if at is None:
        common = set.intersection(*(set(r.steps) for r in runs))
        if not common:
            raise KprlError("the runs share no evaluation step; pass --at")
        at = max(common)
    rows = []
    for (label, task), members in groups(runs).items():
        reached = [(r, row) for r in members if (row := r.row_at(at)) is not None]
        if not reached:
            continue
        scores = [float(row["episode_return"]) for _, row in reached]
        ci = stratified_bootstrap_ci({task: scores}, statistic=iqm)
        rows.append({
            "agent": label, "task": task, "env_step": at, "runs": len(scores),
            "mean": float(np.mean(scores)), "std": float(np.std(scores, ddof=1)) if len(scores) > 1 else float("nan"),
            "iqm": ci.estimate, "iqm_ci_low": ci.low, "iqm_ci_high": ci.high,
            "seeds": " ".join(str(r.seed) for r, _ in reached),
            "wall_hours_mean": float(np.mean([float(row.get("wall_hours") or "nan") for _, row in reached])),
        })  # fmt: skip
    return at, rows


def scores_markdown(at: int, rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        f"Evaluation return at {at:,} env steps (mean of 10 deterministic episodes per evaluation; over seeds: mean ± "
        "std and IQM with its 95 % stratified bootstrap CI).",
        "",
        "| agent | task | runs | mean ± std | IQM [95 % CI] | wall-clock h (mean) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        std = "" if np.isnan(r["std"]) else f" ± {r['std']:.0f}"
        lines.append(
            f"| {r['agent']} | {r['task']} | {r['runs']} | {r['mean']:.0f}{std} | {r['iqm']:.0f} "
            f"[{r['iqm_ci_low']:.0f}, {r['iqm_ci_high']:.0f}] | {r['wall_hours_mean']:.2f} |"
        )
    for task in dict.fromkeys(r["task"] for r in rows):
        published = PUBLISHED.get(task, {}).get(at)
        if published:
            lines += ["", f"Published ({task}, {at:,} env steps, mean ± std over seeds; CURL and DrQ tables):", ""]
            lines += ["| method | return |", "|---|---|"] + [f"| {m} | {v:.0f} ± {s:.0f} |" for m, v, s in published]
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
    rows = [r for r in run.train if r.get("train/imm_loss") not in (None, "")]
    if not rows:
        return None
    return np.array([float(r["updates"]) for r in rows]), np.array([float(r["train/imm_loss"]) for r in rows])


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


def write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    import io

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
) -> dict[str, Any]:
    """Write the report of the runs under ``paths`` into ``out``; returns a summary with the files written."""
    from kprl.viz.report import imm_loss_figure, learning_curves_figure

    if not paths:
        raise KprlError("give the run directories (or folders holding them) to report on")
    run_dirs = find_runs(paths)
    if not run_dirs:
        raise KprlError(f"no training runs (config.json + eval.csv) under {', '.join(str(p) for p in paths)}")
    runs = split_by_version([load_run(d) for d in run_dirs])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    write_csv(out / "evaluations.csv", tidy_rows(runs), TIDY_COLUMNS)
    written.append(out / "evaluations.csv")
    at, scores = final_scores(runs, at)
    score_columns = ("agent", "task", "env_step", "runs", "mean", "std", "iqm", "iqm_ci_low", "iqm_ci_high",
                     "seeds", "wall_hours_mean")  # fmt: skip
    write_csv(out / "final_scores.csv", scores, score_columns)
    atomic_write_text(out / "final_scores.md", scores_markdown(at, scores))
    written += [out / "final_scores.csv", out / "final_scores.md"]

    for task in dict.fromkeys(r.task for r in runs):
        curves = {}
        for (label, t), members in groups(runs).items():
            if t != task:
                continue
            common = sorted(set.intersection(*(set(r.steps) for r in members)))
            y = np.array([[r.return_at(s) for s in common] for r in members], dtype=np.float64)
            curves[f"{label} ({len(members)} seed{'s' if len(members) > 1 else ''})"] = (
                np.array(common), *bootstrap_band(y, reps=bootstrap_reps))  # fmt: skip
        references = {
            f"{name} (published, {y.shape[0]} seeds)": (steps, *bootstrap_band(y, reps=bootstrap_reps))
            for name, (steps, y) in reference_curves(reference_dir, task).items()
        }
        path = out / f"curves_{task}.png"
        learning_curves_figure(curves, references, task, path)
        written.append(path)

    rl_losses = {f"{r.label} seed {r.seed}": s for r in runs if (s := imm_loss_series(r)) is not None}
    if rl_losses:
        path = out / "imm_loss.png"
        imm_loss_figure(rl_losses, standalone_imm_losses(imm_run), path)
        written.append(path)

    for r in runs:
        figures = sorted((r.run_dir / "figures").glob("imm_example_*.png"))
        if figures:
            target = out / "keypoints" / f"{r.label}_{r.task}_seed{r.seed}_{figures[-1].name}"
            target.parent.mkdir(exist_ok=True)
            shutil.copyfile(figures[-1], target)
            written.append(target)
    return {"runs": len(runs), "env_step": at, "scores": scores, "written": [str(p) for p in written]}
