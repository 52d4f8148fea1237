"""Which change makes IMM keypoints find the cartpole pole tip at every angle? Trains one standalone IMM model per
(setting, seed), scores each on held-out frames that span every pole angle, and prints one JSON object (also
written to OUT/levers.json) with a markdown table: pole-tip error per 45 degree pole-angle bin, cart, tip and mean
error, and training minutes.

Every model is trained and scored by the user commands, run in this process (each resumes when rerun, so a killed
study continues where it stopped):

    kprl imm train --data TRAIN --run-dir OUT/NAME-sSEED --seed SEED --threads T [the setting's flags]
    kprl imm eval  --run-dir OUT/NAME-sSEED --data TEST

The two datasets come from `kprl collect` (different seeds, so no state is shared):

    kprl collect --task cartpole_swingup --env-steps 60000 --time-limit 1 --start any --seed 1 --out data/cartpole_any_s1
    kprl collect --task cartpole_swingup --env-steps 40000 --time-limit 1 --start any --seed 5 --out data/cartpole_start_any
    python experiments/keypoint_levers.py poster k8 --seeds 1 [--out runs/imm-levers] [--threads 2]

Runs made apart (two processes side by side, each with its own ``--out``) become one study, with a mean +- std row
for every setting with several seeds, without training anything:

    python experiments/keypoint_levers.py --merge runs/levers-a/levers.json runs/levers-b/levers.json

A setting ``NAME@TRAIN_DATA`` trains on another dataset, e.g. ``poster@data/cartpole`` (random-policy episodes) or
``k8-mix1@data/cartpole_any_short_s1``, episodes of 0.4 s from any state. In one-second episodes the pole swings
towards hanging, so upright frames are rare (in the test set, 69 of 1,078 frames lie within 22.5 degrees of upright,
222 of hanging); shorter episodes keep more frames near the angles the starts are drawn from, uniformly:

    kprl collect --task cartpole_swingup --env-steps 60000 --time-limit 0.4 --start any --seed 1 --out data/cartpole_any_short_s1
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import torch  # noqa: E402

from kprl.analysis.landmarks import EDGE_BIN_LABELS  # noqa: E402
from kprl.cli import main as kprl  # noqa: E402
from kprl.runtime.hardware import describe_machine  # noqa: E402

SETTINGS: dict[str, list[str]] = {
    "poster": [],
    "k8": ["--keypoints", "8"],
    "sigma0.05": ["--sigma", "0.05"],
    "k8-sigma0.05": ["--keypoints", "8", "--sigma", "0.05"],
    "k8-skip": ["--keypoints", "8", "--source-skip"],
    "k8-batchnorm": ["--keypoints", "8", "--norm", "batch"],
    "k8-lr2e-4": ["--keypoints", "8", "--lr", "2e-4"],
    "mix4": ["--mix-layers", "4"],
    "k8-mix4": ["--keypoints", "8", "--mix-layers", "4"],
    "k8-9k": ["--keypoints", "8", "--steps", "9000"],
    "k8-mix1": ["--keypoints", "8", "--mix-layers", "1"],
    "k8-mix1-11k": ["--keypoints", "8", "--mix-layers", "1", "--steps", "11000"],
    "k16-mix1": ["--keypoints", "16", "--mix-layers", "1"],
    "k8-mix1-sigma0.05": ["--keypoints", "8", "--mix-layers", "1", "--sigma", "0.05"],
    "k8-mix1-sep1e-3": ["--keypoints", "8", "--mix-layers", "1", "--separation-weight", "1e-3"],
    "k8-mix1-sep1e-2": ["--keypoints", "8", "--mix-layers", "1", "--separation-weight", "1e-2"],
    "k8-mix1-sep1e-4": ["--keypoints", "8", "--mix-layers", "1", "--separation-weight", "1e-4"],
    "k8-mix1-gap4": ["--keypoints", "8", "--mix-layers", "1", "--min-offset", "4"],
    "k8-mix1-gap6": ["--keypoints", "8", "--mix-layers", "1", "--min-offset", "6"],
    "k8-mix1-pad": ["--keypoints", "8", "--mix-layers", "1", "--same-padding"],
    "k8-mix1-gap4-pad": ["--keypoints", "8", "--mix-layers", "1", "--min-offset", "4", "--same-padding"],
}
"""The poster's IMM (K = 3, sigma 0.1, MSE, Adam 1e-3, batch 32, 4,500 updates unless ``--steps`` says otherwise)
and changes from it, not all of them in docs/keypoints.md's table yet. ``--mix-layers`` sets how far the renderer
reaches from a keypoint at map resolution: 4 layers (dilations 1, 2, 4, 8) reach +-15 cells of the 35 x 35 maps, more
than a pole (about 13 cells); the default 2 reach +-3 and 1 reaches +-1 (the transposed convs add +-3 to each).
``--separation-weight`` adds Minderer et al.'s temporal separation loss; 1e-3 is their weight (10 against a
per-frame sum of squares over 64 x 64 x 3 pixels) rescaled to kprl's per-pixel mean over 84 x 84 x 3.
``--min-offset 4`` draws pairs 4..10 agent steps apart (0.32-0.8 s of cartpole at action repeat 8) instead of
1..10, so the pole has moved and the generator cannot copy it from the source."""

BINS = ("0", "45", "90", "135", "180", "-135", "-90", "-45")
"""Pole-angle bin centres of `kprl imm eval` (0 = upright, 180 = hanging)."""


def run(args: list[str]) -> None:
    code = kprl(args)
    if code != 0:
        raise SystemExit(f"kprl {' '.join(args)} failed with status {code}")


def training_minutes(run_dir: Path) -> float:
    """Wall minutes the run's training took, from its own log (the last train.csv row)."""
    with open(run_dir / "train.csv") as f:
        rows = list(csv.DictReader(f))
    return round(60 * float(rows[-1]["wall_hours"]), 1)


def study(setting: str, seed: int, opts: argparse.Namespace) -> dict[str, Any]:
    name, _, data = setting.partition("@")
    train_data = Path(data) if data else opts.train
    run_dir = opts.out / (setting.replace("@", "-on-").replace("/", "_") + f"-s{seed}")
    flags = SETTINGS[name] + ([] if "--steps" in SETTINGS[name] else ["--steps", str(opts.steps)])
    flags += ["--threads", str(opts.threads)] if opts.threads else []
    run(["imm", "train", "--data", str(train_data), "--run-dir", str(run_dir), "--seed", str(seed), *flags])
    run(["imm", "eval", "--run-dir", str(run_dir), "--data", str(opts.test)])
    scores = json.loads((run_dir / f"landmark_eval_{opts.test.name}.json").read_text())
    return {
        "setting": setting,
        "flags": " ".join(SETTINGS[name]) or "(none)",
        "train_data": str(train_data),
        "seed": seed,
        "run_dir": str(run_dir),
        "train_minutes": training_minutes(run_dir),
        "cart": scores["error/cart"],
        "pole_tip": scores["error/pole_tip"],
        "mean": scores["error/mean"],
        "mean_both_in_view": scores["error_inview/mean"],
        "pole_tip_by_bin": {b: scores.get(f"error_by_group/{b}/pole_tip") for b in BINS},
        "pole_tip_by_edge": {b: scores.get(f"error_by_edge/{b}/pole_tip") for b in EDGE_BIN_LABELS},
        "pole_tip_frames_by_edge": {b: scores.get(f"frames_by_edge/{b}/pole_tip") for b in EDGE_BIN_LABELS},
        "heldout_frames": scores["heldout_frames"],
    }


def seed_summary(setting: str, rows: list[dict[str, Any]]) -> str:
    """A table row over one setting's seeds: errors as mean +- std over seeds, bins as means, minutes as a range."""
    def spread(key: str) -> str:
        values = [r[key] for r in rows]
        return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"

    bins = " | ".join(f"{statistics.mean(r['pole_tip_by_bin'][b] for r in rows):.2f}" for b in BINS)
    minutes = sorted(r["train_minutes"] for r in rows)
    seeds = ", ".join(str(r["seed"]) for r in rows)
    return (
        f"| {setting}, seeds {seeds} | {len(rows)} seeds | {minutes[0]}–{minutes[-1]} | {bins} | {spread('cart')} | "
        f"{spread('pole_tip')} | {spread('mean')} | {spread('mean_both_in_view')} |"
    )


def table(rows: list[dict[str, Any]]) -> str:
    """One line per run, then a mean +- std line for every setting that has two or more seeds."""
    head = "| setting | seed | minutes | " + " | ".join(BINS) + " | cart | pole tip | mean | both in view |"
    lines = [head, "|" + "---|" * (7 + len(BINS))]
    for r in rows:
        bins = " | ".join(f"{r['pole_tip_by_bin'][b]:.2f}" for b in BINS)
        lines.append(
            f"| {r['setting']} | {r['seed']} | {r['train_minutes']} | {bins} | {r['cart']:.2f} | "
            f"{r['pole_tip']:.2f} | {r['mean']:.2f} | {r['mean_both_in_view']:.2f} |"
        )
    by_setting: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_setting.setdefault(r["setting"], []).append(r)
    lines += [seed_summary(name, group) for name, group in by_setting.items() if len(group) > 1]
    return "\n".join(lines)


def merge(paths: list[Path]) -> dict[str, Any]:
    """The rows of several levers.json files (runs made apart, e.g. side by side) as one study: the latest file's
    row wins where two hold the same setting and seed."""
    merged: dict[tuple[str, int], dict[str, Any]] = {}
    machines, tests = set(), set()
    for path in paths:
        study_json = json.loads(path.read_text())
        machines.add(study_json["machine"])
        tests.add(study_json["test_data"])
        merged.update({(r["setting"], r["seed"]): r for r in study_json["rows"]})
    rows = sorted(merged.values(), key=lambda r: (r["setting"], r["seed"]))
    return {"machine": " / ".join(sorted(machines)), "test_data": " / ".join(sorted(tests)), "rows": rows,
            "table": table(rows), "merged_from": [str(p) for p in paths]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "settings", nargs="*", help=f"names from {', '.join(SETTINGS)}, optionally NAME@TRAIN_DATA"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--train", type=Path, default=Path("data/cartpole_any_s1"))
    parser.add_argument("--test", type=Path, default=Path("data/cartpole_start_any"))
    parser.add_argument("--out", type=Path, default=Path("runs/imm-levers"))
    parser.add_argument("--steps", type=int, default=4500)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--merge", type=Path, nargs="+", metavar="LEVERS_JSON",
        help="train nothing: print one study (with per-setting seed summaries) from these levers.json files",
    )
    opts = parser.parse_args()
    if opts.merge:
        print(json.dumps(merge(opts.merge), indent=2))
        return
    if not opts.settings:
        parser.error("name at least one setting, or --merge LEVERS_JSON ...")
    unknown = [s for s in opts.settings if s.partition("@")[0] not in SETTINGS]
    if unknown:
        parser.error(f"unknown setting {unknown[0]!r}; choose from {', '.join(SETTINGS)}")
    rows = [study(s, seed, opts) for s in opts.settings for seed in opts.seeds]
    machine = describe_machine(torch.device("cpu"))
    summary = json.dumps(
        {"machine": machine, "test_data": str(opts.test), "rows": rows, "table": table(rows)}, indent=2
    )
    (opts.out / "levers.json").write_text(summary + "\n")
    print(summary)


if __name__ == "__main__":
    main()
