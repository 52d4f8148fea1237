"""Keypoint benchmark: collect -> IMM train -> landmark evaluation on cartpole swingup; prints one JSON object.

Runs the three user commands in order (each resumes if its output already exists, so a killed benchmark continues):

    kprl collect    --task cartpole_swingup --env-steps ENV_STEPS --out DATA
    kprl imm train  --data DATA --run-dir RUN [--config CONFIG] [--steps STEPS]
    kprl imm eval   --run-dir RUN

and reports the wall time of each stage (only meaningful for a stage that ran from scratch), the training speed
from the run's own log, and the held-out landmark errors (pixels of the 84 px centre crop) with the reconstruction
MSE. The README's keypoint numbers come from this script; the run directory is what results/ commits.

Usage: ``python benchmarks/keypoints.py [--data data/cartpole] [--run-dir runs/imm-bench] [--env-steps 50000]
[--config results/keypoints/cartpole/config.json] [--steps N] [--device cpu] [any other kprl imm train flag]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import torch  # noqa: E402

from kprl.cli import main as kprl  # noqa: E402


def run_stage(args: list[str]) -> float:
    """Run one kprl command in this process; return its wall time in seconds (raises on failure)."""
    start = time.perf_counter()
    code = kprl(args)
    if code != 0:
        raise SystemExit(f"kprl {' '.join(args)} failed with status {code}")
    return round(time.perf_counter() - start, 1)


def last_row(path: Path) -> dict[str, str]:
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return rows[-1] if rows else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/cartpole"))
    parser.add_argument("--run-dir", type=Path, default=Path("runs/imm-bench"))
    parser.add_argument("--env-steps", type=int, default=50_000)
    parser.add_argument("--config", type=Path, default=None, help="an IMM train config.json to start from")
    parser.add_argument("--steps", type=int, default=None, help="override the number of updates")
    parser.add_argument("--device", default="cpu")
    args, train_flags = parser.parse_known_args()

    collect_s = run_stage(
        ["collect", "--task", "cartpole_swingup", "--env-steps", str(args.env_steps), "--out", str(args.data)]
    )
    train_args = ["imm", "train", "--data", str(args.data), "--run-dir", str(args.run_dir), "--device", args.device]
    if args.config is not None:
        train_args += ["--config", str(args.config)]
    if args.steps is not None:
        train_args += ["--steps", str(args.steps)]
    train_args += train_flags
    train_s = run_stage(train_args)
    eval_s = run_stage(["imm", "eval", "--run-dir", str(args.run_dir), "--device", args.device])
    result = json.loads((args.run_dir / "landmark_eval.json").read_text())
    train_log = last_row(args.run_dir / "train.csv")
    print(
        json.dumps(
            {
                "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                            "platform": platform.platform(), "device": args.device},  # fmt: skip
                "seconds": {"collect": collect_s, "imm_train": train_s, "imm_eval": eval_s},
                "train_wall_hours_in_log": float(train_log.get("wall_hours", "nan")),
                "pairs_per_second_at_end": float(train_log.get("pairs_per_second", "nan")),
                "result": result,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
