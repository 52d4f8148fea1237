"""Landmark regression (Thewlis et al. 2017 protocol): exact on affine data, visibility handled per landmark."""

import numpy as np
import pytest

from kprl.analysis.landmarks import (
    angle_bins,
    edge_bins,
    fit_landmark_regression,
    inside_frame,
    landmark_errors,
    pole_angles,
    regression_report,
)


def affine_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints [n, 3, 2] and landmarks [n, 2, 2] that are an exact affine function of them."""
    rng = np.random.default_rng(seed)
    keypoints = rng.uniform(0, 84, (n, 3, 2))
    weights = rng.normal(size=(6, 4)) * 0.5
    landmarks = keypoints.reshape(n, 6) @ weights + np.array([1010.0, 1020.0, 1030.0, 1040.0])  # inside a 10000 px "image"
    return keypoints, landmarks.reshape(n, 2, 2)


def test_affine_landmarks_are_recovered_exactly() -> None:
    kp, lm = affine_data(200)
    model = fit_landmark_regression(kp, lm, np.ones((200, 2), bool), ridge=0.0)
    np.testing.assert_allclose(model.predict(kp), lm, atol=1e-8)


def test_errors_are_mean_euclidean_distances_over_visible_frames() -> None:
    truth = np.zeros((3, 2, 2))
    predicted = truth.copy()
    predicted[:, 0, 0] = [3.0, 4.0, 100.0]  # landmark 0: errors 3, 4 and (hidden) 100
    predicted[:, 1] = [[3.0, 4.0], [0.0, 0.0], [0.0, 0.0]]  # landmark 1: errors 5, 0, 0
    visible = np.array([[True, True], [True, True], [False, True]])
    np.testing.assert_allclose(landmark_errors(predicted, truth, visible), [3.5, 5.0 / 3.0])
    assert np.isnan(landmark_errors(predicted, truth, np.zeros((3, 2), bool))).all()


def test_inside_frame_uses_pixel_corner_bounds() -> None:
    pts = np.array([[[0.0, 0.0], [83.99, 83.99], [84.0, 10.0], [-0.01, 5.0]]])
    assert inside_frame(pts, 84, 84).tolist() == [[True, True, False, False]]


def test_report_fits_on_train_scores_on_test_and_ignores_hidden_landmarks() -> None:
    kp, lm = affine_data(300)
    test_kp, test_lm = affine_data(100, seed=1)
    # Different affine map for the test set would give errors; the same one gives ~0 error.
    lm_shifted = lm.copy()
    lm_shifted[:50, 0] = -50.0  # landmark 0 hidden in 50 training frames (values there must not matter)
    report = regression_report(kp, lm_shifted, kp[:100], lm[:100], 10_000, ["a", "b"], ridge=0.0)
    assert report["error/a"] < 1e-6 and report["error/b"] < 1e-6 and report["error/mean"] < 1e-6
    assert report["error_inview/mean"] < 1e-6 and report["inview_fraction"] == 1.0
    other = regression_report(kp, lm, test_kp, test_lm, 10_000, ["a", "b"])
    assert other["error/mean"] > 1.0  # a different mapping on the test set is not hidden by the fit


def test_too_few_visible_training_frames_is_an_error() -> None:
    kp, lm = affine_data(5)
    with pytest.raises(ValueError, match="visible in 5 training frames"):
        fit_landmark_regression(kp, lm, np.ones((5, 2), bool))


def test_pole_angles_read_the_pole_from_cart_to_tip_in_image_coordinates() -> None:
    cart = np.array([40.0, 50.0])
    # y grows downwards: a tip above the cart is upright (0), below it hanging (180), right of it +90.
    tips = np.array([[40.0, 30.0], [60.0, 50.0], [40.0, 70.0], [20.0, 50.0], [60.0, 30.0]])
    landmarks = np.stack([np.broadcast_to(cart, tips.shape), tips], axis=1)
    angles = pole_angles(landmarks, ["cart", "pole_tip"])
    np.testing.assert_allclose(angles, [0.0, 90.0, 180.0, -90.0, 45.0], atol=1e-6)
    assert pole_angles(landmarks, ["torso", "head"]) is None  # not cartpole: no pole


def test_angle_bins_partition_the_circle_into_45_degree_bins_centred_on_upright() -> None:
    angles = np.array([0.0, 22.4, 22.6, -22.6, 179.0, -179.0, -157.4, 90.0, 112.4, 112.6])
    bins = angle_bins(angles)
    assert list(bins) == ["-135", "-90", "-45", "0", "45", "90", "135", "180"]
    assert sum(b.astype(int) for b in bins.values()).tolist() == [1] * len(angles)  # every angle in one bin
    assert angles[bins["0"]].tolist() == [0.0, 22.4]
    assert angles[bins["180"]].tolist() == [179.0, -179.0]
    assert angles[bins["-135"]].tolist() == [-157.4] and angles[bins["-45"]].tolist() == [-22.6]
    assert angles[bins["90"]].tolist() == [90.0, 112.4] and angles[bins["135"]].tolist() == [112.6]


def test_report_by_group_scores_each_group_alone() -> None:
    kp, lm = affine_data(300)
    test_kp, test_lm = kp[:100], lm[:100].copy()
    test_lm[:40] += 3.0  # the first 40 test frames are 3 px off in x and y: sqrt(18) px for both landmarks
    first = np.arange(100) < 40
    report = regression_report(kp, lm, test_kp, test_lm, 10_000, ["a", "b"], ridge=0.0,
                               test_groups={"off": first, "exact": ~first})  # fmt: skip
    assert report["frames_by_group/off"] == 40 and report["frames_by_group/exact"] == 60
    np.testing.assert_allclose([report["error_by_group/off/a"], report["error_by_group/off/mean"]], [18**0.5] * 2)
    assert report["error_by_group/exact/b"] < 1e-6
    np.testing.assert_allclose(report["error/mean"], 0.4 * 18**0.5)


def test_edge_bins_split_landmarks_by_their_distance_to_the_nearest_edge() -> None:
    points = np.array([[[0.0, 50.0], [3.9, 40.0], [80.5, 42.0], [42.0, 73.0], [42.0, 42.0]]])  # [1, 5, 2], 84 px
    bins = edge_bins(points, 84)
    assert list(bins) == ["0-4", "4-10", "10-20", "20+"]
    assert [np.flatnonzero(m[0]).tolist() for m in bins.values()] == [[0, 1, 2], [], [3], [4]]


def test_report_by_edge_scores_each_landmark_by_its_own_distance_to_the_edge() -> None:
    kp, lm = affine_data(300)
    size = 2100  # landmarks lie 1000-1100 px inside: all in the open bin unless moved
    test_kp, test_lm = kp[:100], lm[:100].copy()
    test_lm[:30, 0] = [2.0, 50.0]  # landmark a of 30 frames near the left edge, where nothing predicts it
    report = regression_report(kp, lm, test_kp, test_lm, size, ["a", "b"], ridge=0.0)
    assert report["frames_by_edge/0-4/a"] == 30 and report["frames_by_edge/0-4/b"] == 0
    assert report["frames_by_edge/20+/a"] == 70 and report["frames_by_edge/20+/b"] == 100
    assert report["error_by_edge/20+/a"] < 1e-6 and report["error_by_edge/20+/b"] < 1e-6
    assert report["error_by_edge/0-4/a"] > 900 and np.isnan(report["error_by_edge/0-4/b"])
