"""Batched image augmentations for pixel RL: random crop (CURL) and random shift (DrQ).

All functions take ``[B, C, H, W]`` tensors of any dtype (uint8 frames straight from the replay buffer, or floats) on
any device, return the same dtype, and draw one random offset per sample that is shared by all channels of that
sample, so every frame of a stack moves together. No Python loop runs over the batch.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F

__all__ = ["Augmentation", "AugmentationKind", "center_crop", "random_crop", "random_shift"]

AugmentationKind = Literal["none", "crop", "shift"]


def _check_images(x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"expected images of shape [B, C, H, W], got shape {tuple(x.shape)}")


def _check_out_size(x: torch.Tensor, out_size: int) -> None:
    h, w = x.shape[-2:]
    if out_size < 1:
        raise ValueError(f"out_size must be positive, got {out_size}")
    if out_size > h or out_size > w:
        raise ValueError(f"out_size {out_size} is larger than the input images ({h}x{w})")


def _random_offsets(
    n: int, high: int, batch: int, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """``n`` rows of ``batch`` integer offsets in ``[0, high]``, on ``device``."""
    # Draw on the generator's own device (torch refuses a CPU generator for CUDA sampling), then move: a few
    # hundred integers, so the transfer is negligible.
    gen_device = generator.device if generator is not None else device
    offsets = torch.randint(0, high + 1, (n, batch), generator=generator, device=gen_device)
    return offsets.to(device)


def _crop_at(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Crop ``out_h``×``out_w`` windows whose top-left corners are ``(top[b], left[b])``."""
    # unfold gives a strided view of every window ([B, C, nH, nW, out_h, out_w]) without copying; advanced indexing
    # then copies just the chosen one per sample. Measured ~5x faster on CPU than gathering with four broadcast
    # index tensors. The advanced indices (dims 0, 2, 3) are split by a slice, so the batch dim comes first and the
    # result is [B, C, out_h, out_w].
    windows = x.unfold(2, out_h, 1).unfold(3, out_w, 1)
    batch = torch.arange(x.shape[0], device=x.device)
    return windows[batch, :, top, left]


def random_crop(x: torch.Tensor, out_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Randomly crop each image to ``out_size``×``out_size`` (CURL-style: render larger, e.g. 100, crop to 84).

    Each sample gets its own offset, shared by all of its channels (all frames of a stack).
    """
    _check_images(x)
    _check_out_size(x, out_size)
    h, w = x.shape[-2:]
    top = _random_offsets(1, h - out_size, x.shape[0], generator, x.device)[0]
    left = _random_offsets(1, w - out_size, x.shape[0], generator, x.device)[0]
    return _crop_at(x, top, left, out_size, out_size)


def center_crop(x: torch.Tensor, out_size: int) -> torch.Tensor:
    """Crop the centre ``out_size``×``out_size`` window: the deterministic counterpart of :func:`random_crop`, used
    when acting and evaluating. Returns a view of ``x`` (no copy)."""
    _check_images(x)
    _check_out_size(x, out_size)
    h, w = x.shape[-2:]
    top, left = (h - out_size) // 2, (w - out_size) // 2
    return x[:, :, top : top + out_size, left : left + out_size]


def random_shift(x: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ's random shift: replicate-pad each image by ``pad`` pixels and randomly crop back to ``H``×``W``.

    Equivalent to translating each sample by integers ``(dy, dx)`` in ``[-pad, pad]`` with edge pixels repeated.
    DrQ implements it with ``grid_sample`` on a grid aligned to pixel centres, which also yields integer shifts;
    direct indexing gives the same images without interpolation arithmetic.
    """
    _check_images(x)
    if pad < 0:
        raise ValueError(f"pad must be non-negative, got {pad}")
    h, w = x.shape[-2:]
    # F.pad's replicate kernel handles uint8 on CPU and CUDA, and on a CPU it pads a batch of 128 stacks about 50x
    # faster than index_select on clamped indices (index_select along the last dim is slow).
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    top, left = _random_offsets(2, 2 * pad, x.shape[0], generator, x.device)
    return _crop_at(padded, top, left, h, w)


class Augmentation:
    """The augmentation chosen by the config, with a random version for updates and a deterministic one for acting.

    Args:
        kind: ``"none"`` (identity), ``"crop"`` (random crop to ``out_size``; centre crop when acting) or
            ``"shift"`` (DrQ random shift by up to ``pad`` pixels; identity when acting).
        out_size: spatial size the networks see. For ``"crop"`` the rendered frames must be at least this large;
            for ``"none"`` and ``"shift"`` they must be exactly this size.
        pad: maximum shift in pixels for ``"shift"``.
    """

    def __init__(self, kind: AugmentationKind, out_size: int, pad: int = 4) -> None:
        if kind not in get_args(AugmentationKind):
            raise ValueError(
                f"unknown augmentation kind {kind!r}; choose one of {get_args(AugmentationKind)}"
            )
        if out_size < 1:
            raise ValueError(f"out_size must be positive, got {out_size}")
        if pad < 0:
            raise ValueError(f"pad must be non-negative, got {pad}")
        self.kind: AugmentationKind = kind
        self._out_size = int(out_size)
        self.pad = int(pad)

    @property
    def out_size(self) -> int:
        """Spatial size (height = width) of the images the networks see."""
        return self._out_size

    def _check_same_size(self, x: torch.Tensor) -> None:
        _check_images(x)
        h, w = x.shape[-2:]
        if h != self._out_size or w != self._out_size:
            # Catches a render size that disagrees with the network input size, which would otherwise surface
            # later as an obscure shape error inside the encoder.
            raise ValueError(
                f"augmentation {self.kind!r} keeps the image size, so input must be "
                f"{self._out_size}x{self._out_size}, got {h}x{w}"
            )

    def for_update(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Random augmentation of a batch for an update (``[B, C, H, W]`` → ``[B, C, out_size, out_size]``)."""
        if self.kind == "crop":
            return random_crop(x, self._out_size, generator)
        self._check_same_size(x)
        if self.kind == "shift":
            return random_shift(x, self.pad, generator)
        return x

    def for_acting(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic version for acting and evaluation: centre crop for ``"crop"``, identity otherwise."""
        if self.kind == "crop":
            return center_crop(x, self._out_size)
        self._check_same_size(x)
        return x

    def __repr__(self) -> str:
        return f"Augmentation(kind={self.kind!r}, out_size={self._out_size}, pad={self.pad})"
