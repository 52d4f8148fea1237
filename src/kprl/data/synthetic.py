"""A synthetic frame dataset with known keypoints: coloured squares bouncing over a static striped background.

Written in the ``kprl-frames`` format (`kprl.data.frames`), with the centres of the squares as landmarks, so that
the whole keypoint pipeline (pairs, training, landmark regression) can be checked in seconds without rendering:
IMM must find the squares to redraw them where the target frame has them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kprl.data.frames import FORMAT, META_FILE, VERSION, shard_name, write_shard
from kprl.runtime.files import atomic_write_text

COLOURS = np.array([[230, 40, 40], [40, 220, 60], [60, 90, 240], [240, 220, 40]], dtype=np.uint8)


def render_squares(centres: np.ndarray, size: int, square: int, background: np.ndarray) -> np.ndarray:
    """uint8 [size, size, 3]: ``background`` with one filled square of side ``square`` per centre [S, 2] (x, y),
    drawn in `COLOURS` order (later squares on top). A square covers pixels [c - square/2, c + square/2)."""
    frame = background.copy()
    for i, (cx, cy) in enumerate(centres):
        left, top = int(round(cx - square / 2)), int(round(cy - square / 2))
        frame[max(top, 0) : max(top + square, 0), max(left, 0) : max(left + square, 0)] = COLOURS[i % len(COLOURS)]
    return frame


def shapes_episodes(
    episodes: int, length: int, size: int = 36, squares: int = 2, square: int = 6, seed: int = 0
) -> dict[str, np.ndarray]:
    """Arrays of a dataset of ``episodes`` x ``length`` frames (keys as in a kprl-frames shard).

    Squares move at a constant random speed (1-3 px per frame) and bounce off the borders; their integer-rounded
    centres are the landmarks, so landmarks and pixels agree exactly."""
    rng = np.random.default_rng(seed)
    stripes = (np.arange(size) // 4 % 2 * 30 + 60).astype(np.uint8)
    background = np.repeat(np.repeat(stripes[None, :, None], size, 0), 3, 2)
    lo, hi = square / 2, size - square / 2
    frames, landmarks, episode, step = [], [], [], []
    for e in range(episodes):
        pos = rng.uniform(lo, hi, size=(squares, 2))
        vel = rng.uniform(1.0, 3.0, size=(squares, 2)) * rng.choice([-1.0, 1.0], size=(squares, 2))
        for t in range(length):
            centres = np.round(pos - square / 2) + square / 2
            frames.append(render_squares(centres, size, square, background))
            landmarks.append(centres.astype(np.float32))
            episode.append(e)
            step.append(t)
            pos = pos + vel
            bounce = (pos < lo) | (pos > hi)
            vel = np.where(bounce, -vel, vel)
            pos = np.clip(pos, lo, hi)
    n = len(frames)
    return {
        "frames": np.stack(frames),
        "landmarks": np.stack(landmarks),
        "actions": np.zeros((n, 1), np.float32),
        "rewards": np.zeros(n, np.float32),
        "episode": np.asarray(episode, np.int64),
        "step": np.asarray(step, np.int64),
    }


def write_shapes_dataset(
    out: Path, episodes: int = 40, length: int = 20, size: int = 36, squares: int = 2, square: int = 6, seed: int = 0
) -> Path:
    """Write a synthetic kprl-frames dataset (one shard) to ``out``; returns ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "task": "synthetic_squares",
        "image_size": size,
        "camera_id": 0,
        "action_repeat": 1,
        "action_dim": 1,
        "landmark_names": [f"square_{i}" for i in range(squares)],
        "policy": "synthetic",
        "policy_checkpoint": None,
        "seed": seed,
        "episodes_per_shard": episodes,
        "time_limit": None,
        "env_steps_requested": episodes * length,
    }
    atomic_write_text(out / META_FILE, json.dumps(meta, indent=2) + "\n")
    write_shard(out / shard_name(0), shapes_episodes(episodes, length, size, squares, square, seed))
    return out
