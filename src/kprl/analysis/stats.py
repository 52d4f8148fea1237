"""Aggregate scores over seeds the way Agarwal et al. (2021, "Deep RL at the edge of the statistical precipice")
recommend: interquartile mean (IQM) and percentile confidence intervals from a stratified bootstrap.

Scores are given per task as arrays of one number per run (seed). The bootstrap resamples runs with replacement
*within each task* (stratified), recomputes the statistic on the pooled resample, and takes the 2.5 and 97.5
percentiles of the replicates (Efron's percentile bootstrap: Efron 1979, "Bootstrap methods: another look at the
jackknife"; Efron & Tibshirani 1993, "An introduction to the bootstrap"). Two conditions are compared by the
difference of their means and by the probability of improvement P(X > Y) of Agarwal et al. (2021), each with a
bootstrap interval that resamples the runs of either condition independently. Score distributions (performance
profiles, Agarwal et al. 2021): the fraction of runs scoring above each threshold, with a stratified bootstrap band.
Pure numpy; the rliable package that implements this is archived.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

Statistic = Callable[[np.ndarray], float]
# Per-task arrays of per-run scores, or one array for a single task.
Scores = Mapping[str, ArrayLike] | ArrayLike


def _per_task(scores: Scores) -> list[np.ndarray]:
    """Each task's scores as a flat array (one array: a single task); a ValueError for no task or a task without
    scores."""
    per_task = scores.values() if isinstance(scores, Mapping) else [scores]
    parts = [np.asarray(v, dtype=np.float64).ravel() for v in per_task]
    if not parts or any(v.size == 0 for v in parts):
        raise ValueError("every task (sample) needs at least one score")
    return parts


def _percentiles(replicates: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """The central ``confidence`` percentile range of bootstrap replicates along axis 0, NaN replicates left out
    (Efron's percentile interval)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    tail = (1 - confidence) / 2 * 100
    low, high = np.nanpercentile(replicates, [tail, 100 - tail], axis=0)
    return low, high


def iqm(scores: ArrayLike) -> float:
    """Interquartile mean: the mean of the scores left after cutting ``floor(n / 4)`` from each end of the sorted
    scores (``scipy.stats.trim_mean(scores, 0.25)``, as rliable's ``aggregate_iqm``). Robust to outlier seeds and
    less noisy than the median."""
    x = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    if x.size == 0:
        raise ValueError("IQM of no scores")
    cut = int(0.25 * x.size)
    return float(x[cut : x.size - cut].mean())


def mean(scores: ArrayLike) -> float:
    """Arithmetic mean of all scores."""
    x = np.asarray(scores, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("mean of no scores")
    return float(x.mean())


class Interval(NamedTuple):
    """A point estimate with its confidence interval."""

    estimate: float
    low: float
    high: float


def bootstrap_ci(
    samples: Sequence[ArrayLike],
    statistic: Callable[..., float],
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """``statistic(*samples)`` and its percentile bootstrap interval (Efron 1979; Efron & Tibshirani 1993).

    Each of ``reps`` replicates draws, for every sample independently, as many values as it has, with replacement,
    and recomputes the statistic; the interval is the replicates' central ``confidence`` percentile range. Seeded:
    the same inputs give the same interval. Two samples (treatment, control) and a two-sample statistic
    (:func:`mean_difference`, :func:`probability_of_improvement`) give the difference's interval with the runs of
    either condition resampled independently; with one run a sample, every replicate equals the estimate and the
    interval is a point."""
    parts = _per_task(dict(enumerate(samples)))
    rng = np.random.default_rng(seed)
    replicates = np.empty(reps)
    for r in range(reps):
        replicates[r] = statistic(*[v[rng.integers(0, v.size, v.size)] for v in parts])
    low, high = _percentiles(replicates, confidence)
    return Interval(float(statistic(*parts)), float(low), float(high))


def stratified_bootstrap_ci(
    scores: Scores,
    statistic: Statistic = iqm,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """``statistic`` of the pooled scores and its percentile bootstrap interval.

    ``scores``: per-task arrays of per-run scores (a mapping), or one array for a single task. Each replicate draws,
    for every task independently, as many runs as it has, with replacement (:func:`bootstrap_ci`)."""

    def pooled(*parts: np.ndarray) -> float:
        return statistic(np.concatenate(parts))

    return bootstrap_ci(_per_task(scores), pooled, reps, confidence, seed)


def mean_difference(treatment: ArrayLike, control: ArrayLike) -> float:
    """Mean of the treatment's scores minus mean of the control's."""
    return mean(treatment) - mean(control)


def probability_of_improvement(treatment: ArrayLike, control: ArrayLike) -> float:
    """P(X > Y) + P(X = Y) / 2 for a random treatment run X and a random control run Y: the Mann-Whitney U statistic
    over the number of pairs, Agarwal et al. (2021)'s probability of improvement on one task (rliable's
    ``probability_of_improvement``). 0.5: neither condition tends to score higher; 1: every treatment run beats
    every control run."""
    x = np.asarray(treatment, dtype=np.float64).ravel()[:, None]
    y = np.asarray(control, dtype=np.float64).ravel()[None, :]
    if x.size == 0 or y.size == 0:
        raise ValueError("probability of improvement of no scores")
    return float(((x > y) + 0.5 * (x == y)).mean())


def bootstrap_band(
    curves: ArrayLike, reps: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean learning curve over runs with a pointwise bootstrap interval of that mean.

    ``curves``: [runs, points], NaN where a run has no value (an unfinished run, past its last evaluation): each
    point's mean is over the runs that have it. Returns (mean, low, high), each [points]. Runs are resampled as
    wholes, so the band at every point comes from the same replicates; a replicate that drew no run having a point
    is left out of that point's interval."""
    y = np.asarray(curves, dtype=np.float64)
    if y.ndim != 2 or y.shape[0] == 0:
        raise ValueError(f"curves must be [runs, points] with at least one run, got shape {y.shape}")
    present = ~np.isnan(y)
    if not present.any(axis=0).all():
        raise ValueError("every point needs a value of at least one run")
    values = np.where(present, y, 0.0)
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, y.shape[0], (reps, y.shape[0]))
    with np.errstate(invalid="ignore"):  # 0 / 0: a replicate without the point, NaN, left out below
        replicates = values[drawn].sum(axis=1) / present[drawn].sum(axis=1)  # [reps, points]
    low, high = _percentiles(replicates, confidence)
    return values.sum(axis=0) / present.sum(axis=0), low, high


def _above(scores: np.ndarray, taus: ArrayLike) -> np.ndarray:
    """[runs, thresholds]: 1 where a run's score exceeds the threshold τ (strictly), else 0."""
    return (scores[:, None] > np.asarray(taus, dtype=np.float64).ravel()[None, :]).astype(np.float64)


def score_distribution(scores: Scores, taus: ArrayLike) -> np.ndarray:
    """The run-score distribution of Agarwal et al. (2021, "Deep RL at the edge of the statistical precipice",
    performance profiles; rliable's ``run_score_distribution``): for each threshold τ of ``taus`` the fraction of
    runs whose score exceeds τ, per task, averaged over tasks (each task weighs the same, however many runs it has).
    A non-increasing curve from 1 (τ below every score) to 0 (τ at or above the best); one curve above another
    everywhere is stochastic dominance."""
    return np.mean([_above(v, taus).mean(axis=0) for v in _per_task(scores)], axis=0)


def performance_profile(
    scores: Scores, taus: ArrayLike, reps: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`score_distribution` at ``taus`` with its pointwise percentile bootstrap band, stratified as Agarwal et
    al. (2021) draw theirs: each of ``reps`` replicates resamples, for every task independently, as many runs as it
    has, with replacement, and recomputes the curve from the same resampled runs at every τ. Seeded. Returns
    (fraction, low, high), each [thresholds]; with one run a task the band is the curve itself."""
    rng = np.random.default_rng(seed)
    above = [_above(v, taus) for v in _per_task(scores)]
    replicates = np.mean([a[rng.integers(0, len(a), (reps, len(a)))].mean(axis=1) for a in above], axis=0)
    low, high = _percentiles(replicates, confidence)
    return score_distribution(scores, taus), low, high
