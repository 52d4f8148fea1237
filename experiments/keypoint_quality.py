"""How much state do a keypoint agent's keypoints carry? Scores runs of `kprl train --agent sac_imm|sac_ae_imm` on a
frame dataset with landmarks (`kprl collect`), so that variants (e.g. --imm-target-offset 1 vs 3) can be compared.

For every run: the agent's keypoints on every frame of the dataset (`kprl.imm.detect.detect_agent`, one episode at a
time, so frame stacks never mix episodes); a ridge regression from keypoints to the true landmarks fitted on the
first half of the episodes and scored on the second (`kprl.analysis.landmarks.regression_report`, pixels of the
dataset's frames), beside the error of the same regression from no keypoints at all (the landmarks' mean: what a
collapsed detector scores); collapse diagnostics (mean distance between two keypoints of one frame, and how far each keypoint
moves across frames: the standard deviation of its position, averaged over keypoints); and the IMM loss of the
last fifth of its train.csv rows.

    .venv/bin/kprl collect --task cartpole_swingup --env-steps 20000 --seed 100 --out data/cartpole_heldout
    .venv/bin/python experiments/keypoint_quality.py RUN_DIR... --data data/cartpole_heldout --out OUT.json
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from kprl.analysis.landmarks import regression_report
from kprl.data.frames import FrameDataset, load_dataset
from kprl.imm.detect import detect_agent
from kprl.rl.evaluate import load_agent


def agent_keypoints(run_dir: Path, data: FrameDataset) -> tuple[np.ndarray, dict[str, Any]]:
    """Keypoints [N, K, 2] (pixels of the dataset frames) of the run's newest checkpoint, in dataset order."""
    agent, cfg, meta = load_agent(run_dir=run_dir, device="cpu")
    keypoints = np.zeros((len(data), cfg.keypoint.keypoints, 2), dtype=np.float32)
    for index in data.episode_index().values():
        keypoints[index] = detect_agent(agent, cfg, data.frames[index])
    return keypoints, {"agent": cfg.agent, "imm_target_offset": cfg.keypoint.imm_target_offset, **meta}


def collapse(keypoints: np.ndarray) -> dict[str, float]:
    """Mean pairwise distance of a frame's keypoints and mean per-keypoint positional std across frames (pixels)."""
    k = keypoints.shape[1]
    pairs = [np.linalg.norm(keypoints[:, i] - keypoints[:, j], axis=-1).mean() for i in range(k) for j in range(i + 1, k)]
    spread = np.sqrt(keypoints.var(axis=0).sum(-1)).mean()
    return {"pairwise_distance_px": float(np.mean(pairs)) if pairs else float("nan"), "movement_std_px": float(spread)}


def late_imm_loss(run_dir: Path) -> float:
    """Mean train/imm_loss over the last fifth of the run's train.csv rows."""
    with open(run_dir / "train.csv", newline="") as f:
        values = [float(r["train/imm_loss"]) for r in csv.DictReader(f) if r.get("train/imm_loss")]
    return float(np.mean(values[-max(1, len(values) // 5) :])) if values else float("nan")


def landmark_report(keypoints: np.ndarray, data: FrameDataset) -> dict[str, float]:
    """Regression fitted on the first half of the episodes, scored on the second half."""
    episodes = data.episode_ids()
    fit = np.isin(data.episode, episodes[: len(episodes) // 2])
    return regression_report(keypoints[fit], data.landmarks[fit], keypoints[~fit], data.landmarks[~fit],
                             data.image_size, data.landmark_names)  # fmt: skip


def score(run_dir: Path, data: FrameDataset) -> dict[str, Any]:
    keypoints, meta = agent_keypoints(run_dir, data)
    return {"run": str(run_dir), **meta, **landmark_report(keypoints, data), **collapse(keypoints),
            "imm_loss_late": late_imm_loss(run_dir)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    data = load_dataset(args.data)
    rows = [score(run, data) for run in args.runs]
    constant = landmark_report(np.zeros((len(data), 1, 2), dtype=np.float32), data)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"data": str(args.data), "frames": len(data), "no_keypoints": constant, "runs": rows}
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({"no_keypoints": {k: round(v, 2) for k, v in constant.items()}}))
    for row in rows:
        print(json.dumps({k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in row.items()}))


if __name__ == "__main__":
    main()
