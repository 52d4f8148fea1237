"""Atomic, pickle-free checkpoints.

A checkpoint is a directory ``checkpoints/step_<env_step>/`` holding ``state.pt`` (torch tensors and plain Python
values only, loadable with ``torch.load(weights_only=True)``) and ``replay.npz`` (numpy arrays only, loadable with
``np.load(allow_pickle=False)``). It is written under a temporary name, fsynced and renamed in one step, so a kill at
any moment leaves either the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kprl.errors import CheckpointError, first_line
from kprl.runtime.files import fsync_dir

CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "state.pt"
REPLAY_FILE = "replay.npz"
FORMAT_VERSION = 1


def _numpy_to_torch(tree: Any) -> Any:
    """Numpy arrays become tensors so that ``torch.load(weights_only=True)`` accepts the file."""
    if isinstance(tree, np.ndarray):
        return torch.from_numpy(np.array(tree, order="C", copy=True))  # keeps 0-d arrays 0-d
    if isinstance(tree, dict):
        return {k: _numpy_to_torch(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_numpy_to_torch(v) for v in tree)
    return tree


def rng_state(np_rng: np.random.Generator) -> dict[str, Any]:
    """torch (CPU and every CUDA device) and numpy generator states, as a checkpoint stores them."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": np_rng.bit_generator.state}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], np_rng: np.random.Generator) -> None:
    """Restore what `rng_state` saved (CUDA states only where CUDA is present)."""
    torch.set_rng_state(state["torch"].cpu())
    np_rng.bit_generator.state = state["numpy"]
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def checkpoint_steps(run_dir: Path) -> list[int]:
    """Env steps of the complete checkpoints in ``run_dir``, ascending."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    steps = []
    for child in root.iterdir():
        if child.is_dir() and child.name.startswith("step_") and (child / STATE_FILE).is_file():
            try:
                steps.append(int(child.name[len("step_") :]))
            except ValueError:
                continue
    return sorted(steps)


def save_checkpoint(
    run_dir: Path, env_step: int, state: dict[str, Any], replay_state: dict[str, np.ndarray] | None, keep: int = 1
) -> Path:
    """Write a checkpoint atomically and keep only the newest ``keep`` complete ones. Returns its directory."""
    root = Path(run_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{env_step:010d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp_step_"))
    try:
        payload = {"format_version": FORMAT_VERSION, "env_step": env_step, **_numpy_to_torch(state)}
        with open(tmp / STATE_FILE, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        if replay_state is not None:
            with open(tmp / REPLAY_FILE, "wb") as f:
                np.savez(f, **replay_state)
                f.flush()
                os.fsync(f.fileno())
        fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(root)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"could not write checkpoint in {root}: {exc.strerror or exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in checkpoint_steps(run_dir)[:-keep]:
        shutil.rmtree(root / f"step_{old:010d}", ignore_errors=True)
    return final


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete what a killed earlier attempt left half-written in ``run_dir``: checkpoint directories still under
    their temporary name (``checkpoints/.tmp_step_*``, possibly gigabytes of replay) and temporary files of atomic
    writes (``.NAME.*.tmp``, videos' ``.NAME.tmp.mp4``). Completed files never have these names. Returns what was
    removed."""
    run_dir = Path(run_dir)
    removed: list[Path] = []
    if not run_dir.is_dir():
        return removed
    for path in [*run_dir.glob(f"{CHECKPOINT_DIR}/.tmp_step_*"), *run_dir.glob(".*.tmp"), *run_dir.glob("*/.*.tmp*")]:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def find_checkpoint(path: Path) -> Path | None:
    """Resolve a run dir, a checkpoints dir, a step dir or a state file to the newest checkpoint directory."""
    path = Path(path)
    if path.is_file():
        return path.parent
    if (path / STATE_FILE).is_file():
        return path
    if path.name == CHECKPOINT_DIR:
        path = path.parent
    steps = checkpoint_steps(path)
    if not steps:
        return None
    return path / CHECKPOINT_DIR / f"step_{steps[-1]:010d}"


def load_state(ckpt_dir: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load ``state.pt`` safely (no code runs from the file); a clear :class:`CheckpointError` otherwise."""
    file = Path(ckpt_dir) / STATE_FILE
    if not file.is_file():
        raise CheckpointError(f"no checkpoint at {file}")
    try:
        state = torch.load(file, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        first = first_line(exc)
        raise CheckpointError(f"cannot load checkpoint {file}: {first}") from exc
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{file} is not a kprl checkpoint (format {FORMAT_VERSION})")
    return state


def load_replay_state(ckpt_dir: Path) -> dict[str, np.ndarray] | None:
    """Load ``replay.npz`` (arrays only) if the checkpoint has one."""
    file = Path(ckpt_dir) / REPLAY_FILE
    if not file.is_file():
        return None
    try:
        with np.load(file, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except Exception as exc:
        raise CheckpointError(f"cannot load replay buffer {file}: {exc}") from exc
