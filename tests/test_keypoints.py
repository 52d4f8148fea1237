"""Exact checks of the keypoint bottleneck: score maps -> marginals -> (x, y) -> Gaussian maps, and pixel maps."""

import math

import pytest
import torch

from kprl.nets.keypoints import (
    coordinate_grid,
    expected_coordinates,
    from_pixels,
    gaussian_maps,
    keypoints_from_scores,
    marginals,
    temporal_separation_loss,
    to_pixels,
)


def peaked_scores(height: int, width: int, peaks: list[tuple[int, int]]) -> torch.Tensor:
    """[1, K, H, W] score maps, zero except a huge value at (row, col) of each peak."""
    scores = torch.zeros(1, len(peaks), height, width)
    for k, (row, col) in enumerate(peaks):
        scores[0, k, row, col] = 1e4 * max(height, width)
    return scores


@pytest.mark.parametrize("height,width", [(35, 35), (7, 12), (12, 7)])
def test_single_peak_gives_its_coordinate_x_then_y(height: int, width: int) -> None:
    peaks = [(0, 0), (height - 1, width - 1), (2, width - 3), (height // 2, 1)]
    kp = keypoints_from_scores(peaked_scores(height, width, peaks))
    xs, ys = coordinate_grid(width), coordinate_grid(height)
    expected = torch.tensor([[[xs[col], ys[row]] for row, col in peaks]])
    assert kp.coords.shape == (1, len(peaks), 2)
    torch.testing.assert_close(kp.coords, expected, atol=1e-5, rtol=0)


def test_marginals_are_distributions_over_the_right_axis() -> None:
    scores = torch.randn(2, 3, 5, 9)
    mx, my = marginals(scores)
    assert mx.shape == (2, 3, 9) and my.shape == (2, 3, 5)
    torch.testing.assert_close(mx.sum(-1), torch.ones(2, 3))
    torch.testing.assert_close(my.sum(-1), torch.ones(2, 3))
    # x marginal: softmax over columns of the mean over rows (Jakab et al. Eq. 1)
    torch.testing.assert_close(mx, torch.softmax(scores.mean(2), -1))


def test_uniform_scores_give_the_centre() -> None:
    kp = keypoints_from_scores(torch.zeros(1, 2, 6, 10))
    torch.testing.assert_close(kp.coords, torch.zeros(1, 2, 2), atol=1e-6, rtol=0)


def test_expected_coordinates_is_the_mean_of_the_marginals() -> None:
    mx = torch.tensor([[[0.5, 0.0, 0.5]]])  # columns at -1, 0, 1 -> mean 0
    my = torch.tensor([[[0.0, 0.0, 0.0, 1.0, 0.0]]])  # rows at -1, -.5, 0, .5, 1 -> 0.5
    torch.testing.assert_close(expected_coordinates(mx, my), torch.tensor([[[0.0, 0.5]]]))


def test_gaussian_map_peaks_at_mu_with_value_one_and_has_the_given_width() -> None:
    size, sigma = 21, 0.1
    grid = coordinate_grid(size)
    row, col = 4, 15
    mu = torch.tensor([[[grid[col], grid[row]]]])
    g = gaussian_maps(mu, size, size, sigma)
    assert g.shape == (1, 1, size, size)
    assert g[0, 0].argmax().item() == row * size + col
    assert g[0, 0, row, col].item() == pytest.approx(1.0)
    # one cell to the right: distance 2/(size-1), value exp(-d^2/sigma^2)
    d = 2.0 / (size - 1)
    assert g[0, 0, row, col + 1].item() == pytest.approx(torch.exp(torch.tensor(-(d**2) / sigma**2)).item(), rel=1e-5)
    assert g[0, 0, row + 1, col].item() == pytest.approx(g[0, 0, row, col + 1].item(), rel=1e-5)


def test_gaussian_maps_of_non_square_maps_follow_x_columns_y_rows() -> None:
    mu = torch.tensor([[[1.0, -1.0]]])  # right edge, top edge
    g = gaussian_maps(mu, 4, 9, 0.2)
    assert g[0, 0].argmax().item() == 0 * 9 + 8


def test_gaussian_maps_pass_gradients_to_the_keypoints() -> None:
    mu = torch.tensor([[[0.1, -0.2]]], requires_grad=True)
    gaussian_maps(mu, 8, 8, 0.3).sum().backward()
    assert mu.grad is not None and torch.isfinite(mu.grad).all() and mu.grad.abs().sum() > 0


def test_bad_sigma_or_shape_is_rejected() -> None:
    with pytest.raises(ValueError, match="sigma"):
        gaussian_maps(torch.zeros(1, 1, 2), 4, 4, 0.0)
    with pytest.raises(ValueError, match="B, K, 2"):
        gaussian_maps(torch.zeros(1, 2), 4, 4, 0.1)
    with pytest.raises(ValueError, match="B, K, H, W"):
        marginals(torch.zeros(3, 4, 4))


def test_pixel_conversion_maps_grid_ends_to_pixel_centres_and_round_trips() -> None:
    coords = torch.tensor([[[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]])
    px = to_pixels(coords, width=84, height=60)
    torch.testing.assert_close(px, torch.tensor([[[0.5, 0.5], [83.5, 59.5], [42.0, 30.0]]]))
    torch.testing.assert_close(from_pixels(px, 84, 60), coords)


def test_bf16_scores_give_fp32_marginals_close_to_fp32() -> None:
    scores = torch.randn(2, 3, 35, 35) * 5
    a = keypoints_from_scores(scores).coords
    b = keypoints_from_scores(scores.bfloat16()).coords
    assert b.dtype == torch.float32
    torch.testing.assert_close(a, b, atol=0.05, rtol=0)


def test_separation_loss_is_one_for_keypoints_moving_alike_and_near_zero_for_different_motions() -> None:
    start = torch.tensor([[-0.5, 0.0], [0.5, 0.0], [0.0, 0.5]])
    shift = torch.tensor([0.3, -0.2])
    alike = torch.stack([start, start + shift])[None]  # [1, T=2, K=3, 2]: one translation, offsets apart
    assert temporal_separation_loss(alike, 0.1).item() == pytest.approx(1.0)
    assert temporal_separation_loss(torch.stack([start, start])[None], 0.1).item() == pytest.approx(1.0)
    apart = torch.stack([start, start + torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, -1.0]])])[None]
    # centred motions differ by 0.5 (keypoint 0 against 1 and 2) and 0.5 * sqrt(2) (1 against 2)
    expected = (4 * math.exp(-0.25 / 0.02) + 2 * math.exp(-0.5 / 0.02)) / 6
    assert temporal_separation_loss(apart, 0.1).item() == pytest.approx(expected, rel=1e-4) and expected < 1e-5


def test_separation_loss_matches_its_definition_and_pushes_alike_motions_apart() -> None:
    g = torch.Generator().manual_seed(0)
    traj = torch.rand(4, 3, 2, 2, generator=g) * 0.2  # B=4, T=3, K=2
    centred = traj - traj.mean(dim=1, keepdim=True)
    d = (centred[:, :, 0] - centred[:, :, 1]).square().sum(-1).mean(dim=1)  # [B]
    expected = torch.exp(-d / (2 * 0.05**2)).mean()  # the two ordered pairs (0, 1), (1, 0) are equal
    torch.testing.assert_close(temporal_separation_loss(traj, 0.05), expected)
    moving = traj.clone().requires_grad_(True)
    loss = temporal_separation_loss(moving, 0.05)
    loss.backward()
    with torch.no_grad():
        assert temporal_separation_loss(moving - 1e-3 * moving.grad / moving.grad.norm(), 0.05) < loss


def test_separation_loss_of_one_keypoint_is_zero_and_bad_input_is_rejected() -> None:
    assert temporal_separation_loss(torch.rand(2, 3, 1, 2), 0.1).item() == 0.0
    with pytest.raises(ValueError, match="sigma"):
        temporal_separation_loss(torch.rand(2, 3, 2, 2), 0.0)
    with pytest.raises(ValueError, match="B, T, K, 2"):
        temporal_separation_loss(torch.rand(2, 3, 2), 0.1)
