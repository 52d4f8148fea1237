"""Aggregate scores over seeds the way Agarwal et al. (2021, "Deep RL at the edge of the statistical precipice")
recommend: interquartile mean (IQM) and percentile confidence intervals from a stratified bootstrap.

Scores are given per task as arrays of one number per run (seed). The bootstrap resamples runs with replacement
*within each task* (stratified), recomputes the statistic on the pooled resample, and takes the 2.5 and 97.5
percentiles of the replicates. Pure numpy; the rliable package that implements this is archived.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

Statistic = Callable[[np.ndarray], float]


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


def stratified_bootstrap_ci(
    scores: Mapping[str, ArrayLike] | ArrayLike,
    statistic: Statistic = iqm,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """``statistic`` of the pooled scores and its percentile bootstrap interval.

    ``scores``: per-task arrays of per-run scores (a mapping), or one array for a single task. Each replicate draws,
    for every task independently, as many runs as it has, with replacement."""
    per_task = [np.asarray(v, dtype=np.float64).ravel() for v in (scores.values() if isinstance(scores, Mapping) else [scores])]
    if not per_task or any(v.size == 0 for v in per_task):
        raise ValueError("every task needs at least one score")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    estimate = statistic(np.concatenate(per_task))
    replicates = np.empty(reps)
    for r in range(reps):
        replicates[r] = statistic(np.concatenate([v[rng.integers(0, v.size, v.size)] for v in per_task]))
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return Interval(float(estimate), float(low), float(high))


def bootstrap_band(
    curves: ArrayLike, reps: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean learning curve over runs with a pointwise bootstrap interval of that mean.

    ``curves``: [runs, points]. Returns (mean, low, high), each [points]. Runs are resampled as wholes, so the band
    at every point comes from the same replicates."""
    y = np.asarray(curves, dtype=np.float64)
    if y.ndim != 2 or y.shape[0] == 0:
        raise ValueError(f"curves must be [runs, points] with at least one run, got shape {y.shape}")
    rng = np.random.default_rng(seed)
    replicates = y[rng.integers(0, y.shape[0], (reps, y.shape[0]))].mean(axis=1)  # [reps, points]
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail], axis=0)
    return y.mean(axis=0), low, high
