"""``kprl imm eval``: keypoint quality of a trained IMM model against the ground-truth landmarks.

The protocol of Thewlis et al. 2017 and Jakab et al. 2018 (Sec. 4.1), applied to DMC: detect keypoints on
centre-cropped frames, fit a ridge regressor from keypoints to landmarks on training episodes, report the mean
pixel error per landmark and overall on held-out episodes (landmarks inside the frame only), plus the held-out
reconstruction MSE. On cartpole the errors are also reported per pole-angle bin of 45 degrees
(``error_by_group/<bin centre>/<landmark>``, 0 = upright, 180 = hanging, with ``frames_by_group``), so that a model
that knows only the hanging pole cannot hide behind the mean; on every domain also by each landmark's distance to
the frame's edge (``error_by_edge/<bin>/<landmark>``, `kprl.analysis.landmarks.edge_bins`). On the run's own
dataset the run's train/validation split is used; on another dataset its episodes are split afresh with the run's
validation fraction and seed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from kprl.data.frames import load_dataset
from kprl.errors import ConfigError, DataError
from kprl.imm.checkpoint import load_imm, read_run_config, read_split, split_episodes
from kprl.imm.pairs import PairSampler, centre_offset
from kprl.imm.train import frames_of, landmark_report, pairs_loss
from kprl.runtime.files import atomic_write_text
from kprl.runtime.hardware import resolve_device

RESULT_FILE = "landmark_eval.json"


def result_file(run_dir: Path, data_dir: Path, same_data: bool) -> Path:
    """Where the evaluation is saved: ``landmark_eval.json`` on the run's own dataset, else
    ``landmark_eval_<dataset folder>.json``, so that scoring on other frames never replaces the run's own score."""
    return run_dir / (RESULT_FILE if same_data else f"landmark_eval_{data_dir.resolve().name}.json")


def evaluate_imm(
    run_dir: Path, data: Path | None = None, device: str = "cpu", ridge: float = 1e-3, pairs: int = 512
) -> dict[str, Any]:
    """Landmark regression errors (pixels of the model's centre-cropped input) and reconstruction MSE of the
    newest checkpoint of ``run_dir``, on held-out episodes; also written to the run directory (`result_file`)."""
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    if ridge < 0:
        raise ConfigError(f"--ridge must be >= 0, got {ridge}")
    if pairs < 1:
        raise ConfigError(f"--pairs must be >= 1, got {pairs}")
    loaded = load_imm(run_dir, device)
    model = loaded.model
    data_dir = Path(data) if data is not None else Path(cfg.data)
    dataset = load_dataset(data_dir)
    if dataset.image_size < loaded.image_size:
        raise DataError(
            f"{data_dir} holds {dataset.image_size} px frames, the model needs {loaded.image_size} px"
        )
    same_data = data is None or data_dir.resolve() == Path(cfg.data).resolve()
    split = (
        read_split(run_dir)
        if same_data
        else split_episodes(dataset.episode_ids(), cfg.val_fraction, cfg.seed)
    )
    dev = resolve_device(device)
    report: dict[str, Any] = {"landmarks": "unavailable: the dataset has no ground-truth landmarks"}
    if dataset.landmark_names:
        try:
            report = landmark_report(model, dataset, split, dev, ridge=ridge, by_pole_angle=True)
        except ValueError as exc:
            raise DataError(f"{data_dir}: cannot fit the landmark regression: {exc}") from exc
    # Held-out pairs drawn as training draws them, from a seed of their own.
    try:
        sampler = PairSampler(dataset.episode, split.val, cfg.max_offset, cfg.min_offset)
    except ValueError as exc:
        raise DataError(f"{data_dir}: held-out episodes: {exc}") from exc
    source, target = sampler.sample(pairs, np.random.default_rng(cfg.seed + 2))
    mse = pairs_loss(model, dataset.frames, source, target, dev)
    shift = centre_offset(dataset.image_size, loaded.image_size)
    result: dict[str, Any] = {
        "run_dir": str(run_dir),
        "checkpoint_step": loaded.step,
        "data": str(data_dir),
        "train_episodes": len(split.train),
        "heldout_episodes": len(split.val),
        "heldout_frames": int(len(frames_of(dataset, split.val))),
        "image_size": loaded.image_size,
        "crop_offset_px": shift,
        "ridge": ridge,
        **{k: round(v, 4) if isinstance(v, float) else v for k, v in report.items()},
        "reconstruction_mse": round(mse, 6),
    }
    atomic_write_text(result_file(run_dir, data_dir, same_data), json.dumps(result, indent=2) + "\n")
    return result
