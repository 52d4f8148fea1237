"""IMM figures (kprl.viz.imm): the PNGs are written, the loss curve is optional, the model's mode is kept."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
import torch

from kprl.config import IMMConfig
from kprl.errors import ConfigError
from kprl.imm.checkpoint import EpisodeSplit
from kprl.nets.imm import IMM
from kprl.viz.imm import figures_from_run, write_imm_figures

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURES = ["imm_example.png", "score_maps.png", "gaussian_maps.png", "loss_curve.png"]


def _dataset(frame_size: int = 40, episodes: int = 4, length: int = 6) -> types.SimpleNamespace:
    """A stand-in for kprl.data.frames.FrameDataset with random frames."""
    rng = np.random.default_rng(0)
    n = episodes * length
    return types.SimpleNamespace(
        frames=rng.integers(0, 256, size=(n, frame_size, frame_size, 3), dtype=np.uint8),
        landmarks=rng.uniform(0, frame_size, size=(n, 2, 2)).astype(np.float32),
        episode=np.repeat(np.arange(episodes, dtype=np.int64), length),
        step=np.tile(np.arange(length, dtype=np.int64), episodes),
        image_size=frame_size,
        landmark_names=["cart", "pole_tip"],
    )


def _model(keypoints: int) -> IMM:
    torch.manual_seed(0)
    return IMM(IMMConfig(keypoints=keypoints, num_conv_layers=2, num_filters=8), image_size=32)


SPLIT = EpisodeSplit(train=np.array([0, 1, 2]), val=np.array([3]))


def _write_logs(run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "train.csv").write_text("step,loss,pairs_per_second\n10,0.05,100\n20,0.03,101\n30,0.02,99\n")
    (run_dir / "eval.csv").write_text(
        "step,val_loss,error/mean,error/cart,error/pole_tip,wall_hours\n"
        "0,0.06,12.5,10.0,15.0,0.0\n20,0.035,8.0,6.0,10.0,0.001\n30,0.025,,,,0.002\n"
    )


def _check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > 5000, f"{path} is only {len(data)} bytes"


def test_all_four_figures_with_logs(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _write_logs(run_dir)
    model = _model(3)
    model.train()
    paths = write_imm_figures(model, _dataset(), SPLIT, run_dir, seed=1)
    assert [p.name for p in paths] == FIGURES
    for p in paths:
        assert p.parent == run_dir / "figures"
        _check_png(p)
    assert model.training, "train mode must be restored"
    assert not list((run_dir / "figures").glob(".*.tmp")), "no temporary files left behind"


@pytest.mark.parametrize("keypoints", [1, 7])
def test_without_logs_and_any_keypoint_count(tmp_path: Path, keypoints: int) -> None:
    model = _model(keypoints)
    model.eval()
    paths = write_imm_figures(model, _dataset(), SPLIT, tmp_path, seed=3, examples=2)
    assert [p.name for p in paths] == FIGURES[:3]
    assert not (tmp_path / "figures" / "loss_curve.png").exists()
    for p in paths:
        _check_png(p)
    assert not model.training, "eval mode must be kept"


def test_empty_train_csv_skips_loss_curve(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("step,loss\n")
    paths = write_imm_figures(_model(2), _dataset(), SPLIT, tmp_path, seed=0, examples=1)
    assert [p.name for p in paths] == FIGURES[:3]


def test_figures_from_run_needs_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config.json"):
        figures_from_run(tmp_path)
    (tmp_path / "config.json").write_text('{"seed": 2}\n')
    with pytest.raises(ConfigError, match="split.json"):
        figures_from_run(tmp_path)
    (tmp_path / "split.json").write_text("not json")
    with pytest.raises(ConfigError, match="split.json"):
        figures_from_run(tmp_path)


def test_figures_from_run_end_to_end(tmp_path: Path) -> None:
    """A run dir as `kprl imm train` leaves it (config.json, split.json, checkpoint) and a dataset on disk."""
    import json

    from kprl.config import IMMTrainConfig, save_json, to_dict
    from kprl.data.frames import FORMAT, META_FILE, VERSION, shard_name, write_shard
    from kprl.runtime.checkpoint import save_checkpoint

    data = _dataset()
    data_dir, run_dir = tmp_path / "data", tmp_path / "run"
    data_dir.mkdir()
    meta = {"format": FORMAT, "version": VERSION, "image_size": 40, "action_dim": 1,
            "landmark_names": data.landmark_names, "episodes_per_shard": 4}  # fmt: skip
    (data_dir / META_FILE).write_text(json.dumps(meta))
    n = len(data.frames)
    arrays = {"frames": data.frames, "landmarks": data.landmarks, "actions": np.zeros((n, 1), np.float32),
              "rewards": np.zeros(n, np.float32), "episode": data.episode, "step": data.step}  # fmt: skip
    write_shard(data_dir / shard_name(0), arrays)
    model = _model(3)
    cfg = IMMTrainConfig(data=data_dir, run_dir=run_dir, image_size=32, model=model.cfg)
    run_dir.mkdir()
    save_json(cfg, run_dir / "config.json")
    (run_dir / "split.json").write_text('{"train": [0, 1, 2], "val": [3]}\n')
    state = {"kind": "imm", "model": model.state_dict(), "model_config": to_dict(model.cfg), "image_size": 32,
             "landmark_names": data.landmark_names, "step": 7}  # fmt: skip
    save_checkpoint(run_dir, 7, state, None)
    paths = figures_from_run(run_dir)
    assert [p.name for p in paths] == FIGURES[:3]
    for p in paths:
        _check_png(p)
