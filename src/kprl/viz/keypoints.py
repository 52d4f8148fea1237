"""An agent's or a model's keypoints on a picture: where they land in an image's pixels, and how they are drawn.

Coordinates follow `kprl.nets.keypoints`: pixel (x, y) with x right, y down and the origin at the top-left *corner*
of the top-left pixel (the centre of pixel column i, row j is (i + 0.5, j + 0.5)). Under this convention a resize
with ``align_corners=False`` is a pure scaling (`scale_to_frame`). Keypoint k is drawn as a disc in ``PALETTE[k %
10]`` in videos (`kprl keypoints`, evaluation videos) as in the IMM figures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, overload

import numpy as np
import torch

from kprl.nets.keypoints import to_pixels

if TYPE_CHECKING:
    from kprl.rl.sac import SACAgent

# One colour per keypoint (matplotlib's tab10), cycled when there are more keypoints.
PALETTE = np.array(
    [
        [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
        [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207],
    ],
    dtype=np.uint8,
)  # fmt: skip


@overload
def scale_to_frame(points: np.ndarray, model_size: int, height: int, width: int) -> np.ndarray: ...
@overload
def scale_to_frame(points: torch.Tensor, model_size: int, height: int, width: int) -> torch.Tensor: ...
def scale_to_frame(
    points: np.ndarray | torch.Tensor, model_size: int, height: int, width: int
) -> np.ndarray | torch.Tensor:
    """Pixel (x, y) [..., 2] of a ``model_size`` x ``model_size`` image -> pixel (x, y) of the ``height`` x
    ``width`` frame it was resized from (with ``align_corners=False``).

    Both use the pixel-corner convention (origin at the top-left corner of the top-left pixel), under which the
    resize is a pure scaling: x * width / model_size, y * height / model_size."""
    if isinstance(points, torch.Tensor):
        scale_t = points.new_tensor([width / model_size, height / model_size])
        return points * scale_t
    scale = np.array([width / model_size, height / model_size])
    return (np.asarray(points, dtype=np.float64) * scale).astype(np.float32)


def view_to_frame(
    coords: np.ndarray | torch.Tensor, view_size: int, render_size: int, height: int, width: int
) -> np.ndarray:
    """Agent keypoints (x, y) in [-1, 1] of its ``view_size`` px centre-cropped view [..., 2] -> float32 pixel
    (x, y) of a ``height`` x ``width`` image of the whole ``render_size`` px frame (pixel-corner convention).

    View pixel p (`kprl.nets.keypoints.to_pixels`) is render pixel p + (render_size - view_size) // 2 (the offset
    `kprl.rl.augment.center_crop` crops at), and render pixel q is q * width / render_size, q * height / render_size
    in the image (`scale_to_frame`: a resize with ``align_corners=False`` or a render at another size)."""
    if view_size > render_size:
        raise ValueError(f"the view ({view_size} px) cannot be larger than the render ({render_size} px)")
    points = torch.as_tensor(coords).detach().cpu().double()
    pixels = to_pixels(points, view_size, view_size) + float((render_size - view_size) // 2)
    return scale_to_frame(pixels.numpy(), render_size, height, width)


def newest_frame_keypoints(agent: SACAgent, coords: torch.Tensor) -> torch.Tensor:
    """The keypoints of the newest frame of each observation among an agent's keypoints [B, K', 2].

    An agent with per-frame keypoints finds K in each of the S stacked frames (S*K, oldest frame's first); only the
    newest frame's last K are kept. Other agents' keypoints are returned as they are."""
    index = agent.keypoint_head_index
    if index is None:
        return coords
    head = agent.critic.encoder.heads[index]
    frames = int(getattr(head, "frames", 1))
    per_frame = int(getattr(head, "num_keypoints", coords.shape[1]))
    if frames > 1 and coords.shape[1] == frames * per_frame:
        return coords[:, -per_frame:]
    return coords


def disc_radius(size: int) -> float:
    """Radius in pixels of the keypoint discs on a ``size`` px image: max(2, size / 64)."""
    return max(2.0, size / 64.0)


def draw_points(image: np.ndarray, points: np.ndarray, radius: float | None = None) -> np.ndarray:
    """Draw keypoints on one uint8 frame [H, W, 3] **in place** and return it.

    ``points`` [K, 2] are pixel (x, y) of ``image`` (pixel-corner convention: the centre of pixel column i, row j is
    (i + 0.5, j + 0.5)); keypoint k becomes a filled disc of ``radius`` (default `disc_radius` of the smaller side)
    in colour ``PALETTE[k % 10]`` with a one-pixel dark rim. A pixel is coloured when its centre lies within the
    disc. Non-finite keypoints are skipped, discs are clipped at the image border."""
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {tuple(image.shape)}")
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[-1] != 2:
        raise ValueError(f"points must be [K, 2], got shape {tuple(points.shape)}")
    height, width = int(image.shape[0]), int(image.shape[1])
    radius = disc_radius(min(height, width)) if radius is None else float(radius)
    reach = int(np.ceil(radius + 1.0))
    for k, (x, y) in enumerate(points):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        col0, col1 = max(0, int(np.floor(x)) - reach), min(width, int(np.floor(x)) + reach + 1)
        row0, row1 = max(0, int(np.floor(y)) - reach), min(height, int(np.floor(y)) + reach + 1)
        if col0 >= col1 or row0 >= row1:
            continue
        dx = np.arange(col0, col1) + 0.5 - x
        dy = np.arange(row0, row1) + 0.5 - y
        dist2 = dy[:, None] ** 2 + dx[None, :] ** 2
        patch = image[row0:row1, col0:col1]
        patch[dist2 <= (radius + 1.0) ** 2] = 0
        patch[dist2 <= radius**2] = PALETTE[k % len(PALETTE)]
    return image
