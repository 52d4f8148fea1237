"""IQM, stratified bootstrap intervals, learning-curve bands and performance profiles against hand-computed
values."""

from __future__ import annotations

import numpy as np
import pytest

from kprl.analysis.stats import (
    bootstrap_band,
    bootstrap_ci,
    iqm,
    mean,
    mean_difference,
    performance_profile,
    probability_of_improvement,
    score_distribution,
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


def test_score_distribution_is_the_fraction_of_runs_strictly_above_each_threshold() -> None:
    # Above 0: all four; above 1: 2, 3, 4; above 2.5: 3, 4; above 4: none (not >=).
    np.testing.assert_array_equal(score_distribution([4.0, 1.0, 3.0, 2.0], [0.0, 1.0, 2.5, 4.0]), [1, 0.75, 0.5, 0])
    # Per task, then the mean over tasks: a [0, 10] gives 1/2 above 4 and above 7; b [5, 5, 5, 20] gives 1 and 1/4.
    tasks = {"a": [0.0, 10.0], "b": [5.0, 5.0, 5.0, 20.0]}
    np.testing.assert_array_equal(score_distribution(tasks, [4.0, 7.0]), [(0.5 + 1) / 2, (0.5 + 0.25) / 2])
    # Each task weighs the same: 1 of 1 runs and 0 of 3 give 1/2, not the pooled 1/4.
    assert score_distribution({"a": [10.0], "b": [0.0, 0.0, 0.0]}, [5.0]) == 0.5
    with pytest.raises(ValueError):
        score_distribution({"a": []}, [0.0])


def test_performance_profile_band_of_two_runs() -> None:
    # Resamples of [0, 1] have 0, 1 or 2 runs above 0.5 with probabilities 1/4, 1/2, 1/4: the band is [0, 1]; below
    # both scores every resample is all above, at the higher one none is.
    fraction, low, high = performance_profile([0.0, 1.0], [-1.0, 0.5, 1.0], reps=4000)
    np.testing.assert_array_equal(fraction, [1.0, 0.5, 0.0])
    np.testing.assert_array_equal(low, [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(high, [1.0, 1.0, 0.0])


def test_performance_profile_band_is_stratified_by_task() -> None:
    # Within a task both runs are equal, so every stratified resample gives 1/2 above 5 (an unstratified bootstrap of
    # the four runs would not).
    profile = performance_profile({"easy": [10.0, 10.0], "hard": [0.0, 0.0]}, [5.0], reps=500)
    np.testing.assert_array_equal(profile, [[0.5], [0.5], [0.5]])


def test_performance_profile_band_matches_a_bootstrap_by_hand() -> None:
    scores = [310.0, 700.0, 820.0, 790.0, 805.0, 120.0, 640.0, 455.0, 910.0, 580.0]
    taus, reps = [0.0, 500.0, 795.0, 810.0], 1000
    rng = np.random.default_rng(0)
    replicates = []
    for _ in range(reps):  # one resample of the five runs, the same one at every threshold
        resample = [scores[i] for i in rng.integers(0, len(scores), len(scores))]
        replicates.append([sum(s > tau for s in resample) / len(resample) for tau in taus])
    fraction, low, high = performance_profile(scores, taus, reps=reps)
    np.testing.assert_array_equal(fraction, [1.0, 0.7, 0.3, 0.2])
    np.testing.assert_allclose(low, np.percentile(replicates, 2.5, axis=0))
    np.testing.assert_allclose(high, np.percentile(replicates, 97.5, axis=0))
    assert np.all(np.diff(low) <= 0) and np.all(np.diff(high) <= 0)  # non-increasing in τ
    assert performance_profile(scores, taus, reps=reps)[1].tolist() == low.tolist()  # seeded: reproducible
