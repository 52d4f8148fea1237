"""What a ``kprl imm train`` run leaves behind and how it is read back: the episode split (``split.json``), the
resolved config (``config.json``) and the checkpoint, loaded as a :class:`LoadedIMM` (`load_imm`).

Everything that uses a trained IMM model (``kprl imm eval`` / ``figure``, ``kprl keypoints``, a pretrained KeyNet
in an agent, the Python API) loads it from here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kprl import config as C
from kprl.errors import CheckpointError, ConfigError, DataError, first_line
from kprl.nets.imm import IMM
from kprl.runtime.checkpoint import find_checkpoint, load_state
from kprl.runtime.files import atomic_write_text
from kprl.runtime.hardware import resolve_device

MODEL_KIND = "imm"
SPLIT_FILE = "split.json"


@dataclass
class EpisodeSplit:
    """Episode ids for training and validation."""

    train: np.ndarray
    val: np.ndarray


def split_episodes(episode_ids: np.ndarray, val_fraction: float, seed: int) -> EpisodeSplit:
    """A seeded random split of episode ids: round(val_fraction * n) for validation, at least one each."""
    ids = np.sort(np.asarray(episode_ids))
    if len(ids) < 2:
        raise DataError(f"the dataset has {len(ids)} episode(s); a train/validation split needs at least 2")
    n_val = min(max(1, round(val_fraction * len(ids))), len(ids) - 1)
    perm = np.random.default_rng(seed).permutation(len(ids))
    return EpisodeSplit(train=np.sort(ids[perm[n_val:]]), val=np.sort(ids[perm[:n_val]]))


def write_split(run_dir: Path, split: EpisodeSplit) -> None:
    """RUN_DIR/split.json: ``{"train": [ids], "val": [ids]}``."""
    payload = {"train": split.train.tolist(), "val": split.val.tolist()}
    atomic_write_text(Path(run_dir) / SPLIT_FILE, json.dumps(payload) + "\n")


def read_split(run_dir: Path) -> EpisodeSplit:
    """The episode split a run trained with (`write_split`); a one-line ConfigError when missing or malformed."""
    path = Path(run_dir) / SPLIT_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"split file not found: {path}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read split file {path}: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"split file {path} is not valid JSON") from exc
    try:
        train, val = (np.asarray(data[key], dtype=np.int64).reshape(-1) for key in ("train", "val"))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f'split file {path} must hold {{"train": [ids], "val": [ids]}}') from exc
    return EpisodeSplit(train=train, val=val)


def read_run_config(run_dir: Path) -> C.IMMTrainConfig:
    """The resolved config of a `kprl imm train` run; a one-line ConfigError when it is missing or not one."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{path} not found: is {run_dir} a `kprl imm train` run directory?")
    try:
        return C.load_json(C.IMMTrainConfig, path)
    except (OSError, UnicodeDecodeError) as exc:  # load_json reports bad JSON and unknown keys itself
        raise ConfigError(f"cannot read config file {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    except TypeError as exc:
        raise ConfigError(f"config file {path} is not an IMM training config: {exc}") from exc


@dataclass
class LoadedIMM:
    """A trained IMM model and what its checkpoint says about it."""

    model: IMM
    image_size: int
    """Side of the (square) frames the model takes."""
    landmark_names: list[str]
    step: int
    checkpoint: Path
    frame_size: int
    """Side of the dataset frames it was trained on (crops of them); checkpoints that predate this record are
    taken to be from `kprl collect`'s default, the model's side plus the crop margin."""


def load_imm(path: Path, device: str | torch.device = "cpu") -> LoadedIMM:
    """Load a standalone IMM model (eval mode) from a run dir, a checkpoint dir or its state.pt.

    The checkpoint carries the model config, so no config.json is needed (a copied state.pt is enough)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist")
    ckpt = find_checkpoint(path)
    if ckpt is None:
        raise CheckpointError(f"no checkpoint found in {path}")
    dev = resolve_device(str(device))
    state = load_state(ckpt, map_location=dev)
    if state.get("kind") != MODEL_KIND:
        raise CheckpointError(f"{ckpt} is not a standalone IMM checkpoint (kprl imm train)")
    try:
        model_cfg = C.from_dict(C.IMMConfig, state["model_config"])
        model = IMM(model_cfg, int(state["image_size"])).to(dev)
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {ckpt} is damaged: {first_line(exc)}") from exc
    model.eval()
    size = int(state["image_size"])
    frame_size = int(state.get("frame_size", size + C.CROP_MARGIN))
    return LoadedIMM(model, size, list(state.get("landmark_names", [])), int(state["step"]), ckpt, frame_size)
