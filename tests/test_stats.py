"""IQM, stratified bootstrap intervals and learning-curve bands against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from kprl.evaluation.stats import (
    bootstrap_band,
    bootstrap_ci,
    iqm,
    mean,
    mean_difference,
    probability_of_improvement,
    stratified_bootstrap_ci,
)


def test_iqm_cuts_a_quarter_from_each_end() -> None:
    assert iqm([8, 1, 7, 2, 6, 3, 5, 4]) == 4.5  # mean of 3, 4, 5, 6
    assert iqm([10, 1, 2, 3]) == 2.5  # mean of 2, 3
    assert iqm([1, 2, 3, 4, 100]) == 3.0  # floor(5 / 4) = 1 cut from each end
    assert iqm([7]) == 7.0 and iqm([1, 3]) == 2.0  # fewer than four: nothing to cut


def test_iqm_matches_scipy_trim_mean() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for n in range(1, 23):
        x = rng.normal(size=n) * 100
        assert iqm(x) == pytest.approx(stats.trim_mean(x, 0.25))


def test_empty_scores_are_refused() -> None:
    with pytest.raises(ValueError):
        iqm([])
    with pytest.raises(ValueError):
        stratified_bootstrap_ci({"a": []})


def test_bootstrap_of_two_runs_spans_both() -> None:
    # Resamples of [0, 1] have means 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4: the 2.5 / 97.5 percentiles are 0, 1.
    ci = stratified_bootstrap_ci([0.0, 1.0], statistic=mean, reps=4000)
    assert ci == (0.5, 0.0, 1.0)


def test_bootstrap_is_stratified_by_task() -> None:
    # Within a task both runs are equal, so every stratified resample has the same pooled mean (an unstratified
    # bootstrap of the four numbers would not).
    ci = stratified_bootstrap_ci({"easy": [10.0, 10.0], "hard": [0.0, 0.0]}, statistic=mean, reps=500)
    assert ci == (5.0, 5.0, 5.0)


def test_bootstrap_interval_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(1)
    hits = sum(
        ci.low <= 3.0 <= ci.high
        for ci in (stratified_bootstrap_ci(rng.normal(3.0, 2.0, 25), statistic=mean, reps=400, seed=i) for i in range(200))
    )
    assert 0.88 <= hits / 200 <= 0.99, hits


def test_iqm_interval_contains_its_estimate_and_is_reproducible() -> None:
    scores = {"cartpole": [700.0, 820.0, 790.0, 310.0, 805.0]}
    a, b = stratified_bootstrap_ci(scores), stratified_bootstrap_ci(scores)
    assert a == b
    assert a.low <= a.estimate <= a.high
    assert a.estimate == pytest.approx((700 + 790 + 805) / 3)  # 310 and 820 cut


def test_bootstrap_band_of_learning_curves() -> None:
    same = np.tile([[0.0, 100.0, 200.0]], (3, 1))
    m, lo, hi = bootstrap_band(same)
    np.testing.assert_array_equal(m, [0, 100, 200])
    np.testing.assert_array_equal(lo, m)
    np.testing.assert_array_equal(hi, m)
    m, lo, hi = bootstrap_band([[0.0, 0.0], [2.0, 4.0]], reps=4000)
    np.testing.assert_array_equal(m, [1.0, 2.0])
    np.testing.assert_array_equal(lo, [0.0, 0.0])
    np.testing.assert_array_equal(hi, [2.0, 4.0])
    with pytest.raises(ValueError):
        bootstrap_band(np.zeros(3))


def test_bootstrap_band_skips_runs_that_stopped_early() -> None:
    # Run 2 ends after the first point: the second point is run 1's alone, and its band is that single value.
    m, lo, hi = bootstrap_band([[0.0, 10.0], [2.0, np.nan]], reps=4000)
    np.testing.assert_array_equal(m, [1.0, 10.0])
    np.testing.assert_array_equal(lo, [0.0, 10.0])
    np.testing.assert_array_equal(hi, [2.0, 10.0])
    with pytest.raises(ValueError):
        bootstrap_band([[0.0, np.nan], [1.0, np.nan]])  # a point no run has


def test_probability_of_improvement_counts_ties_half() -> None:
    assert probability_of_improvement([2.0, 3.0], [1.0, 2.0]) == (1 + 0.5 + 1 + 1) / 4
    assert probability_of_improvement([1.0], [1.0]) == 0.5
    assert probability_of_improvement([0.0, 1.0], [5.0]) == 0.0
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 5, 7).astype(float), rng.integers(0, 5, 4).astype(float)  # many ties
    u = stats.mannwhitneyu(x, y, alternative="greater").statistic
    assert probability_of_improvement(x, y) == pytest.approx(u / (x.size * y.size))


def test_two_sample_bootstrap_resamples_each_side_and_is_reproducible() -> None:
    # One run a side: every replicate is the estimate. Control [0, 2]: resampled means 0, 1, 2 (1/4, 1/2, 1/4).
    assert bootstrap_ci([[5.0], [3.0]], mean_difference) == (2.0, 2.0, 2.0)
    ci = bootstrap_ci([[5.0], [0.0, 2.0]], mean_difference, reps=4000)
    assert ci == (4.0, 3.0, 5.0)
    x, y = [3.0, 9.0, 4.0], [1.0, 6.0]
    assert bootstrap_ci([x, y], probability_of_improvement) == bootstrap_ci([x, y], probability_of_improvement)
    with pytest.raises(ValueError):
        bootstrap_ci([x, []], mean_difference)
