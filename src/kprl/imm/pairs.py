"""Source/target pairs for IMM from episodes of frames, cropped as the networks see them.

A pair is two frames of the same episode a random offset (1..max_offset agent steps, either order) apart, so the
scene is the same and only the moving parts differ (Jakab et al. 2018 use video frames the same way). Training
crops a random window, *the same one* for source and target, so the generator can copy the static background from
the source; evaluation takes the centre window. Frames are HWC uint8 as stored by ``kprl collect``.
"""

from __future__ import annotations

import numpy as np
import torch


class PairSampler:
    """Samples (source, target) frame indices within episodes.

    Args:
        episode: int [N] episode id of every frame; the frames of one episode must be contiguous and in time
            order (as ``kprl collect`` writes them).
        allowed: episode ids to draw from (the training or the validation split).
        max_offset: largest distance in frames between source and target.
    """

    def __init__(self, episode: np.ndarray, allowed: np.ndarray, max_offset: int) -> None:
        if max_offset < 1:
            raise ValueError(f"max_offset must be >= 1, got {max_offset}")
        episode = np.asarray(episode)
        starts = np.flatnonzero(np.r_[True, episode[1:] != episode[:-1]])
        ends = np.r_[starts[1:], len(episode)]
        keep = np.isin(episode[starts], allowed) & (ends - starts >= 2)
        self.starts, self.ends = starts[keep], ends[keep]
        if len(self.starts) == 0:
            raise ValueError("no episode with at least two frames to draw pairs from")
        lengths = self.ends - self.starts
        self._frames = np.concatenate([np.arange(s, e) for s, e in zip(self.starts, self.ends, strict=True)])
        self._first = np.repeat(self.starts, lengths)
        self._last = np.repeat(self.ends - 1, lengths)
        self.max_offset = max_offset

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``batch_size`` pairs (source indices, target indices): a uniform frame, then a uniform non-zero offset
        within ``max_offset`` that stays inside its episode."""
        pick = rng.integers(0, len(self._frames), size=batch_size)
        source, first, last = self._frames[pick], self._first[pick], self._last[pick]
        low = np.maximum(first - source, -self.max_offset)
        high = np.minimum(last - source, self.max_offset)
        # Uniform over [low, high] without 0: draw from a range one shorter and skip over zero.
        offset = low + (rng.random(batch_size) * (high - low)).astype(np.int64)
        offset = np.where(offset >= 0, offset + 1, offset)
        return source, source + offset


def crop_windows(height: int, width: int, size: int, count: int, rng: np.random.Generator | None) -> np.ndarray:
    """[count, 2] (top, left) of size x size windows: uniform when ``rng`` is given, else the centre window."""
    if size > height or size > width:
        raise ValueError(f"cannot crop {size} px from {height}x{width} frames")
    if rng is None:
        return np.tile([(height - size) // 2, (width - size) // 2], (count, 1))
    return np.stack([rng.integers(0, height - size + 1, count), rng.integers(0, width - size + 1, count)], axis=1)


def crop_frames(frames: np.ndarray, indices: np.ndarray, windows: np.ndarray, size: int) -> torch.Tensor:
    """uint8 [B, 3, size, size] tensor of frames[indices] (HWC uint8) cut at the (top, left) ``windows``."""
    out = np.empty((len(indices), size, size, frames.shape[-1]), dtype=np.uint8)
    for i, (index, (top, left)) in enumerate(zip(indices, windows, strict=True)):
        out[i] = frames[index, top : top + size, left : left + size]
    return torch.from_numpy(out).permute(0, 3, 1, 2)


def centre_offset(frame_size: int, size: int) -> int:
    """Pixels cut from the top (and left) by the centre crop: subtract it from frame coordinates."""
    return (frame_size - size) // 2
