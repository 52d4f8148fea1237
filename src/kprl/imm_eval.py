"""``kprl imm eval``: keypoint quality of a trained IMM model against the ground-truth landmarks.

The protocol of Thewlis et al. 2017 and Jakab et al. 2018 (Sec. 4.1), applied to DMC: detect keypoints on
centre-cropped frames, fit a ridge regressor from keypoints to landmarks on training episodes, report the mean
pixel error per landmark and overall on held-out episodes (landmarks inside the frame only), plus the held-out
reconstruction MSE. On the run's own dataset the run's train/validation split is used; on another dataset its
episodes are split afresh with the run's validation fraction and seed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kprl import config as C
from kprl.checkpoint import atomic_write_text
from kprl.data.frames import load_dataset
from kprl.errors import ConfigError, DataError
from kprl.imm_pairs import PairSampler, centre_offset, crop_frames, crop_windows
from kprl.imm_train import EpisodeSplit, frames_of, landmark_report, load_imm, split_episodes
from kprl.train import resolve_device

RESULT_FILE = "landmark_eval.json"


def _read_split(run_dir: Path) -> EpisodeSplit:
    file = run_dir / "split.json"
    try:
        raw = json.loads(file.read_text())
        return EpisodeSplit(np.asarray(raw["train"], dtype=np.int64), np.asarray(raw["val"], dtype=np.int64))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot read the episode split {file}: {exc}") from exc


@torch.no_grad()
def reconstruction_mse(
    model: Any, frames: np.ndarray, episode: np.ndarray, episodes: np.ndarray, max_offset: int, pairs: int, seed: int
) -> float:
    """Mean IMM reconstruction MSE (frames in [-0.5, 0.5]) over ``pairs`` centre-cropped pairs of ``episodes``."""
    device = next(model.parameters()).device
    source, target = PairSampler(episode, episodes, max_offset).sample(pairs, np.random.default_rng(seed))
    size = model.image_size
    total = 0.0
    for start in range(0, pairs, 256):
        s, t = source[start : start + 256], target[start : start + 256]
        windows = crop_windows(frames.shape[1], frames.shape[2], size, len(s), None)
        loss, _ = model.loss(crop_frames(frames, s, windows, size).to(device), crop_frames(frames, t, windows, size).to(device))
        total += float(loss) * len(s)
    return total / pairs


def evaluate_imm(
    run_dir: Path, data: Path | None = None, device: str = "cpu", ridge: float = 1e-3, pairs: int = 512
) -> dict[str, Any]:
    """Landmark regression errors (pixels of the model's centre-cropped input) and reconstruction MSE of the
    newest checkpoint of ``run_dir``, on held-out episodes; also written to RUN_DIR/landmark_eval.json."""
    run_dir = Path(run_dir)
    config_file = run_dir / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"{config_file} not found: is {run_dir} a `kprl imm train` run directory?")
    cfg = C.load_json(C.IMMTrainConfig, config_file)
    if ridge < 0:
        raise ConfigError(f"--ridge must be >= 0, got {ridge}")
    if pairs < 1:
        raise ConfigError(f"--pairs must be >= 1, got {pairs}")
    loaded = load_imm(run_dir, device)
    model = loaded.model
    data_dir = Path(data) if data is not None else Path(cfg.data)
    dataset = load_dataset(data_dir)
    if dataset.image_size < loaded.image_size:
        raise DataError(f"{data_dir} holds {dataset.image_size} px frames, the model needs {loaded.image_size} px")
    same_data = data is None or data_dir.resolve() == Path(cfg.data).resolve()
    split = _read_split(run_dir) if same_data else split_episodes(dataset.episode_ids(), cfg.val_fraction, cfg.seed)
    dev = resolve_device(device)
    try:
        report = landmark_report(model, dataset, split, dev, ridge=ridge)
    except ValueError as exc:
        raise DataError(f"{data_dir}: cannot fit the landmark regression: {exc}") from exc
    mse = reconstruction_mse(model, dataset.frames, dataset.episode, split.val, cfg.max_offset, pairs, cfg.seed + 2)
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
        **{k: round(v, 4) for k, v in report.items()},
        "reconstruction_mse": round(mse, 6),
    }
    atomic_write_text(run_dir / RESULT_FILE, json.dumps(result, indent=2) + "\n")
    return result
