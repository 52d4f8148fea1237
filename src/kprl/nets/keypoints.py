"""Keypoints from score maps, and Gaussian maps from keypoints: the differentiable bottleneck of IMM.

Jakab et al. 2018 ("Unsupervised Learning of Object Landmarks through Conditional Image Generation", Sec. 3.1):
a network produces K score maps; each is turned into a keypoint by taking, for each image axis, the softmax of the
score map averaged over the *other* axis (a marginal distribution over that axis) and its expectation; the
keypoint is then rendered as an isotropic Gaussian map that the generator reads.

Conventions (every function here follows them):
- Tensors are channels-first: score maps and Gaussian maps are ``[B, K, H, W]`` (H rows, W columns).
- A keypoint is ``(x, y)`` in that order, **x along the width (columns, right), y along the height (rows, down)**,
  each in ``[-1, 1]``: -1 is the centre of the first row/column, +1 the centre of the last (``linspace(-1, 1, n)``,
  as in the reference implementation). The same normalised coordinate therefore means the same place on maps of
  any resolution, which is what lets the generator read Gaussian maps at a resolution other than the score maps'.
- Pixel coordinates (``to_pixels``/``from_pixels``) follow the environment's landmark convention: x right, y down,
  origin at the top-left *corner* of the top-left pixel, so the centre of pixel (column i, row j) is (i + .5, j + .5).

All functions are pure tensor functions (no parameters, no state) and work on CPU and CUDA, in fp32 and bf16.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Keypoints(NamedTuple):
    """What `keypoints_from_scores` returns."""

    coords: torch.Tensor
    """[B, K, 2] expected (x, y) in [-1, 1]."""
    marginal_x: torch.Tensor
    """[B, K, W] distribution over columns (sums to 1)."""
    marginal_y: torch.Tensor
    """[B, K, H] distribution over rows (sums to 1)."""


def coordinate_grid(size: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The normalised coordinates of ``size`` cells along one axis: ``linspace(-1, 1, size)`` (0 when size is 1)."""
    if size == 1:
        return torch.zeros(1, device=device, dtype=dtype)
    return torch.linspace(-1.0, 1.0, size, device=device, dtype=dtype)


def marginals(score_maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-axis distributions of score maps [B, K, H, W]: (over columns [B, K, W], over rows [B, K, H]).

    Each is the softmax of the score map averaged over the other axis (Jakab et al. 2018, Eq. 1-2). The softmax
    is taken in fp32 whatever the input dtype, so that bf16 score maps still give sharp, normalised marginals.
    """
    if score_maps.dim() != 4:
        raise ValueError(f"score maps must be [B, K, H, W], got shape {tuple(score_maps.shape)}")
    scores = score_maps.float()
    marginal_x = torch.softmax(scores.mean(dim=2), dim=-1)
    marginal_y = torch.softmax(scores.mean(dim=3), dim=-1)
    return marginal_x, marginal_y


def expected_coordinates(marginal_x: torch.Tensor, marginal_y: torch.Tensor) -> torch.Tensor:
    """Expected (x, y) in [-1, 1] of marginals [B, K, W] and [B, K, H]: returns [B, K, 2]."""
    grid_x = coordinate_grid(marginal_x.shape[-1], marginal_x.device, marginal_x.dtype)
    grid_y = coordinate_grid(marginal_y.shape[-1], marginal_y.device, marginal_y.dtype)
    x = (marginal_x * grid_x).sum(dim=-1)
    y = (marginal_y * grid_y).sum(dim=-1)
    return torch.stack([x, y], dim=-1)


def keypoints_from_scores(score_maps: torch.Tensor) -> Keypoints:
    """Score maps [B, K, H, W] -> keypoints (x, y) in [-1, 1] with the marginals they came from."""
    marginal_x, marginal_y = marginals(score_maps)
    return Keypoints(expected_coordinates(marginal_x, marginal_y), marginal_x, marginal_y)


def gaussian_maps(coords: torch.Tensor, height: int, width: int, sigma: float) -> torch.Tensor:
    """Render keypoints [B, K, 2] as maps [B, K, height, width] with value exp(-||u - mu||^2 / sigma^2).

    ``u`` runs over the normalised coordinates of the map's cells, so a map peaks (value 1) at the cell nearest
    to its keypoint, and ``sigma`` is in the same [-1, 1] units (IMM's "rot" form with std sigma; the poster uses
    sigma = 0.1). Gradients flow to ``coords``.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    if coords.dim() != 3 or coords.shape[-1] != 2:
        raise ValueError(f"keypoints must be [B, K, 2], got shape {tuple(coords.shape)}")
    grid_x = coordinate_grid(width, coords.device, coords.dtype).view(1, 1, 1, width)
    grid_y = coordinate_grid(height, coords.device, coords.dtype).view(1, 1, height, 1)
    dx = grid_x - coords[..., 0, None, None]
    dy = grid_y - coords[..., 1, None, None]
    return torch.exp(-(dx.square() + dy.square()) / (sigma * sigma))


def to_pixels(coords: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Normalised (x, y) in [-1, 1] -> pixel (x, y) of a ``width`` x ``height`` image (module convention).

    -1 maps to the centre of the first pixel (0.5) and +1 to the centre of the last (size - 0.5)."""
    scale = coords.new_tensor([(width - 1) / 2.0, (height - 1) / 2.0])
    return (coords + 1.0) * scale + 0.5


def from_pixels(points: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Inverse of `to_pixels`: pixel (x, y) -> normalised (x, y)."""
    scale = points.new_tensor([max(width - 1, 1) / 2.0, max(height - 1, 1) / 2.0])
    return (points - 0.5) / scale - 1.0


def temporal_separation_loss(trajectories: torch.Tensor, sigma: float) -> torch.Tensor:
    """How alike the keypoints' motions are: 0 when every two keypoints move differently, 1 when all move alike.

    Minderer et al. 2019 ("Unsupervised Learning of Object Structure and Dynamics from Videos", Sec. 3.2, the
    temporal separation loss): each keypoint's trajectory ``trajectories`` [B, T, K, 2] is centred on its mean
    over time, the squared distance between two centred trajectories is averaged over time, ``d_kl``, and the loss
    is the mean over pairs k != l of exp(-d_kl / (2 sigma^2)), averaged over the batch. Two keypoints that follow
    one object (or both stand still) have d = 0 and cost 1 each; keypoints on parts that move differently, such as
    the cart and the tip of a swinging pole, cost nearly 0. ``sigma`` is in the coordinates' units."""
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    if trajectories.dim() != 4 or trajectories.shape[-1] != 2:
        raise ValueError(f"trajectories must be [B, T, K, 2], got shape {tuple(trajectories.shape)}")
    k = trajectories.shape[2]
    if k < 2:
        return trajectories.new_zeros(())
    centred = trajectories - trajectories.mean(dim=1, keepdim=True)
    distances = (centred[:, :, :, None] - centred[:, :, None, :]).square().sum(-1).mean(dim=1)  # [B, K, K]
    similarity = torch.exp(-distances / (2.0 * sigma * sigma)).mean(dim=0)
    # Summing off the diagonal, rather than subtracting its K ones, keeps small losses exact in fp32.
    off_diagonal = ~torch.eye(k, dtype=torch.bool, device=similarity.device)
    return similarity[off_diagonal].mean()
