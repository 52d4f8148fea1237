"""How good are unsupervised keypoints? Regress the true landmarks from them (Thewlis et al. 2017; Jakab et al.
2018, Sec. 4.1): fit a linear map from the K detected keypoints to the L ground-truth landmarks on training
episodes, then report the mean pixel distance between predicted and true landmarks on held-out episodes.

Keypoints are unsupervised, so their identity and placement are arbitrary (a keypoint may sit mid-pole, another
between cart and pole); a linear regressor with a bias absorbs that, and a small ridge penalty keeps it stable
when keypoints are collinear or collapsed. Each landmark is fitted and scored only on frames where it lies inside
the image (a landmark off-screen cannot be seen by any detector).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np


@dataclass
class LandmarkRegression:
    """A fitted keypoints -> landmarks ridge regressor (one weight matrix per landmark)."""

    weights: np.ndarray
    """[L, 2K + 1, 2]: for landmark l, (x, y) = [keypoints..., 1] @ weights[l]."""

    def predict(self, keypoints: np.ndarray) -> np.ndarray:
        """Keypoints [N, K, 2] (pixels) -> predicted landmarks [N, L, 2] (pixels)."""
        design = _design(keypoints)
        return np.einsum("nd,ldc->nlc", design, self.weights)


def _design(keypoints: np.ndarray) -> np.ndarray:
    """[N, K, 2] -> [N, 2K + 1] rows of (x1, y1, ..., xK, yK, 1)."""
    flat = np.asarray(keypoints, dtype=np.float64).reshape(len(keypoints), -1)
    return np.concatenate([flat, np.ones((len(flat), 1))], axis=1)


def inside_frame(landmarks: np.ndarray, width: int, height: int) -> np.ndarray:
    """[N, L] bool: which landmarks [N, L, 2] (pixel coordinates) lie inside a width x height image."""
    x, y = landmarks[..., 0], landmarks[..., 1]
    return (x >= 0) & (x < width) & (y >= 0) & (y < height)


def fit_landmark_regression(
    keypoints: np.ndarray, landmarks: np.ndarray, visible: np.ndarray, ridge: float = 1e-3
) -> LandmarkRegression:
    """Least squares with an L2 penalty ``ridge`` * N on the non-bias weights, per landmark, on visible rows.

    keypoints [N, K, 2] and landmarks [N, L, 2] are in pixels; visible [N, L] selects the rows used for each
    landmark. Raises ValueError when a landmark has fewer visible rows than unknowns."""
    if len(keypoints) != len(landmarks) or len(landmarks) != len(visible):
        raise ValueError("keypoints, landmarks and visible must have the same number of frames")
    design = _design(keypoints)
    dim = design.shape[1]
    weights = np.zeros((landmarks.shape[1], dim, 2))
    for lm in range(landmarks.shape[1]):
        rows = visible[:, lm]
        count = int(rows.sum())
        if count < dim:
            raise ValueError(f"landmark {lm} is visible in {count} training frames, fewer than {dim} unknowns")
        a = design[rows]
        penalty = ridge * count * np.eye(dim)
        penalty[-1, -1] = 0.0  # no penalty on the bias
        weights[lm] = np.linalg.solve(a.T @ a + penalty, a.T @ landmarks[rows, lm].astype(np.float64))
    return LandmarkRegression(weights)


def landmark_errors(predicted: np.ndarray, landmarks: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """[L] mean Euclidean pixel error per landmark over the rows where it is visible (NaN if never visible)."""
    dist = np.linalg.norm(predicted - landmarks, axis=-1)
    counts = visible.sum(axis=0)
    sums = np.where(visible, dist, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


ANGLE_BIN_DEGREES = 45
"""Width of the pole-angle bins errors are reported in; bins are centred on 0 (upright), ±45, ±90, ±135, 180."""


def pole_angles(landmarks: np.ndarray, names: list[str]) -> np.ndarray | None:
    """[N] angle of the pole in the image, in degrees in (-180, 180]: 0 upright, ±90 horizontal (positive: tip to
    the right of the cart), 180 hanging; from the ``cart`` and ``pole_tip`` landmarks [N, L, 2] (x right, y down).
    None when the landmarks are not cartpole's."""
    if "cart" not in names or "pole_tip" not in names:
        return None
    cart, tip = landmarks[:, names.index("cart")], landmarks[:, names.index("pole_tip")]
    dx, dy = tip[:, 0] - cart[:, 0], tip[:, 1] - cart[:, 1]
    angles = np.degrees(np.arctan2(dx, -dy))
    return np.where(angles <= -180.0, angles + 360.0, angles)


def angle_bins(angles: np.ndarray, width: int = ANGLE_BIN_DEGREES) -> dict[str, np.ndarray]:
    """Boolean masks over ``angles`` (degrees) by bin, labelled by the bin's centre (``"0"``, ``"45"``, ...,
    ``"180"``, ``"-135"``), each bin ``width`` degrees wide; the bin centred on 180 holds both ends of the range."""
    centres = np.arange(-180 + width, 180 + width, width)
    nearest = centres[np.argmin(np.abs(((angles[:, None] - centres[None, :]) + 180) % 360 - 180), axis=1)]
    return {str(int(c)): nearest == c for c in centres}


EDGE_BINS_PX = (0, 4, 10, 20)
"""Lower ends of the bins of a landmark's distance to the nearest image edge (pixels) errors are reported in; the
last bin is open."""
EDGE_BIN_LABELS = (*(f"{lo}-{hi}" for lo, hi in itertools.pairwise(EDGE_BINS_PX)), f"{EDGE_BINS_PX[-1]}+")
"""``"0-4"``, ``"4-10"``, ``"10-20"``, ``"20+"``: the bins' names in `regression_report`'s keys."""


def edge_bins(landmarks: np.ndarray, image_size: int) -> dict[str, np.ndarray]:
    """Masks [N, L] over landmarks [N, L, 2] (pixels) by their distance to the nearest edge of the image, labelled
    by `EDGE_BIN_LABELS`. Near the edge a landmark's object is partly out of view, and an unpadded conv's maps do
    not reach there (`kprl.nets.encoder.ConvTrunk.image_coords`)."""
    x, y = landmarks[..., 0], landmarks[..., 1]
    edge = np.minimum(np.minimum(x, y), np.minimum(image_size - x, image_size - y))
    highs = (*EDGE_BINS_PX[1:], np.inf)
    return {
        label: (edge >= low) & (edge < high)
        for label, low, high in zip(EDGE_BIN_LABELS, EDGE_BINS_PX, highs, strict=True)
    }


def regression_report(
    train_keypoints: np.ndarray,
    train_landmarks: np.ndarray,
    test_keypoints: np.ndarray,
    test_landmarks: np.ndarray,
    image_size: int,
    names: list[str],
    ridge: float = 1e-3,
    test_groups: dict[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """Fit on the training frames, score on the test frames, in two ways:

    - ``error/<name>``, ``error/mean``: every landmark fitted and scored on the frames where *it* is inside the
      image (a pole tip that pokes into the view while the cart is off-screen counts);
    - ``error_inview/<name>``, ``error_inview/mean``: only frames where *all* landmarks are inside the image.

    A mean averages over the scored (frame, landmark) pairs. ``inview_fraction`` is the share of test frames with
    every landmark in view. With ``test_groups`` (label -> boolean mask over the test frames, e.g. `angle_bins`),
    also ``error_by_group/<label>/<name>``, ``error_by_group/<label>/mean`` and ``frames_by_group/<label>`` under
    the first fit, so that a model good on common frames cannot hide its errors on rare ones behind the mean.
    Likewise ``error_by_edge/<bin>/<name>`` and ``frames_by_edge/<bin>/<name>``: each landmark's error by its
    distance to the image's nearest edge (`edge_bins`). Raises ValueError when a landmark is visible in too few
    training frames to fit."""
    train_vis = inside_frame(train_landmarks, image_size, image_size)
    test_vis = inside_frame(test_landmarks, image_size, image_size)
    report: dict[str, float] = {}
    for prefix, fit_vis, score_vis in (
        ("error", train_vis, test_vis),
        ("error_inview", np.broadcast_to(train_vis.all(1, keepdims=True), train_vis.shape),
         np.broadcast_to(test_vis.all(1, keepdims=True), test_vis.shape)),
    ):  # fmt: skip
        try:
            model = fit_landmark_regression(train_keypoints, train_landmarks, fit_vis, ridge)
        except ValueError:
            if prefix == "error":
                raise
            # Too few frames with every landmark in view: the per-landmark errors above still stand.
            report.update({f"{prefix}/{name}": float("nan") for name in names})
            report[f"{prefix}/mean"] = float("nan")
            continue
        predicted = model.predict(test_keypoints)
        per = landmark_errors(predicted, test_landmarks, score_vis)
        dist = np.linalg.norm(predicted - test_landmarks, axis=-1)
        report.update({f"{prefix}/{name}": float(v) for name, v in zip(names, per, strict=True)})
        report[f"{prefix}/mean"] = float(dist[score_vis].mean()) if score_vis.any() else float("nan")
        if prefix == "error":
            for label, rows in (test_groups or {}).items():
                vis = score_vis & rows[:, None]
                group = landmark_errors(predicted, test_landmarks, vis)
                report.update({f"error_by_group/{label}/{n}": float(v) for n, v in zip(names, group, strict=True)})
                report[f"error_by_group/{label}/mean"] = float(dist[vis].mean()) if vis.any() else float("nan")
                report[f"frames_by_group/{label}"] = int(rows.sum())
            for label, near in edge_bins(test_landmarks, image_size).items():
                vis = score_vis & near
                group = landmark_errors(predicted, test_landmarks, vis)
                report.update({f"error_by_edge/{label}/{n}": float(v) for n, v in zip(names, group, strict=True)})
                report.update({f"frames_by_edge/{label}/{n}": int(c) for n, c in zip(names, vis.sum(0), strict=True)})
    report["inview_fraction"] = float(test_vis.all(1).mean()) if len(test_vis) else float("nan")
    return report
