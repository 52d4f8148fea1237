"""Source/target pairs for IMM from episodes of frames, cropped as the networks see them.

A pair is two frames of the same episode a random offset (min_offset..max_offset agent steps, either order) apart,
so the scene is the same and only the moving parts differ (Jakab et al. 2018 use video frames the same way). A
``min_offset`` above 1 keeps nearly identical pairs out, where the generator could copy the moving parts from the
source instead of drawing them from the keypoints. Training
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
        min_offset: smallest distance; frames with no partner that far away in their episode are never drawn.
    """

    def __init__(self, episode: np.ndarray, allowed: np.ndarray, max_offset: int, min_offset: int = 1) -> None:
        if not 1 <= min_offset <= max_offset:
            raise ValueError(f"need 1 <= min_offset <= max_offset, got {min_offset} and {max_offset}")
        episode = np.asarray(episode)
        starts = np.flatnonzero(np.r_[True, episode[1:] != episode[:-1]])
        ends = np.r_[starts[1:], len(episode)]
        keep = np.isin(episode[starts], allowed) & (ends - starts > min_offset)
        starts, ends = starts[keep], ends[keep]
        if len(starts) == 0:
            raise ValueError(f"no episode with at least {min_offset + 1} frames to draw pairs from")
        lengths = ends - starts
        frames = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)])
        first, last = np.repeat(starts, lengths), np.repeat(ends - 1, lengths)
        # Offsets a frame may take: [low, -min_offset] before it and [min_offset, high] after it.
        low = np.maximum(first - frames, -max_offset)
        high = np.minimum(last - frames, max_offset)
        before = np.maximum(0, -low - min_offset + 1)
        after = np.maximum(0, high - min_offset + 1)
        has_partner = before + after > 0
        self._frames, self._low = frames[has_partner], low[has_partner]
        self._before, self._count = before[has_partner], (before + after)[has_partner]
        self.max_offset, self.min_offset = max_offset, min_offset

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``batch_size`` pairs (source indices, target indices): a uniform frame, then a uniform offset among those
        ``min_offset..max_offset`` away that stay inside its episode. With ``min_offset`` 1 these are exactly the
        pairs of a uniform non-zero offset in ``[low, high]``."""
        pick = rng.integers(0, len(self._frames), size=batch_size)
        source, low, before = self._frames[pick], self._low[pick], self._before[pick]
        k = (rng.random(batch_size) * self._count[pick]).astype(np.int64)
        offset = np.where(k < before, low + k, self.min_offset + (k - before))
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
