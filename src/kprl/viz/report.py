"""Figures of `kprl report`: learning curves with bootstrap bands beside published curves, performance profiles,
IMM losses, and the keypoint agents' collapse diagnostics. Legends sit below the axes, where no number of entries
covers data, and every figure is saved with its legend whole (``bbox_inches="tight"``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

Band = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # x (env steps or τ), mean, low, high
LEGEND_FONTSIZE = 8
LEGEND_COLUMN_INCHES = 3.2  # at least this much figure width per legend column
LEGEND_HANDLE_INCHES = 0.7  # a legend entry's line sample and padding
LEGEND_CHAR_INCHES = 0.065  # one character of a label at LEGEND_FONTSIZE
LEGEND_ROW_INCHES = 0.2  # figure height added per legend row


def _pyplot():  # type: ignore[no-untyped-def]
    # matplotlib is imported on the first figure, on the Agg backend: importing kprl leaves a notebook's backend alone.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg")

    return plt


def _legend_columns(width: float, labels: list[str]) -> int:
    """Legend columns for a figure ``width`` inches wide: as many as fit the longest label, at most one per label."""
    column = max(LEGEND_COLUMN_INCHES, LEGEND_HANDLE_INCHES + LEGEND_CHAR_INCHES * max(map(len, labels), default=0))
    return max(1, min(len(labels), int(width // column)))


def _figure(panels: int, width: float, height: float, labels: list[str]) -> tuple[Any, list[Any]]:
    """A figure of ``panels`` axes side by side, laid out so that a legend of ``labels`` below them
    (:func:`_legend_below`) adds height rather than shrinking the axes."""
    rows = math.ceil(len(labels) / _legend_columns(width, labels)) if labels else 0
    fig, axes = _pyplot().subplots(1, panels, figsize=(width, height + LEGEND_ROW_INCHES * rows), layout="constrained")
    return fig, list(np.atleast_1d(axes))


def _legend_below(fig: Any, axes: list[Any]) -> None:
    """One legend of the labelled lines of ``axes`` (each label once), below the axes, outside them."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        columns = _legend_columns(fig.get_figwidth(), list(handles))
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=columns,
                   fontsize=LEGEND_FONTSIZE, frameon=False)  # fmt: skip


def _save(fig: Any, out: Path) -> Path:
    """Save with nothing cut off (``bbox_inches="tight"``) and close."""
    fig.savefig(out, dpi=120, bbox_inches="tight")
    _pyplot().close(fig)
    return out


def _band(ax: Any, x: np.ndarray, m: np.ndarray, lo: np.ndarray, hi: np.ndarray, color: str, **line: Any) -> None:
    """A line with its shaded confidence band."""
    ax.plot(x, m, color=color, **line)
    ax.fill_between(x, lo, hi, color=color, alpha=0.2 if line.get("ls", "-") == "-" else 0.08)


def learning_curves_figure(ours: dict[str, Band], published: dict[str, Band], task: str, out: Path) -> Path:
    """Mean evaluation return with its 95 % bootstrap band per condition (solid), published curves dashed."""
    fig, (ax,) = _figure(1, 7, 4.5, [*ours, *published])
    for i, (name, band) in enumerate(ours.items()):
        _band(ax, *band, color=f"C{i}", marker="o", ms=3, label=name)
    for j, (name, band) in enumerate(published.items()):
        _band(ax, *band, color=f"C{len(ours) + j}", ls="--", lw=1.2, label=name)
    ax.set_xlabel("environment steps (incl. action repeat)")
    ax.set_ylabel("evaluation return (mean over seeds, 95 % bootstrap CI)")
    ax.set_title(task)
    right = max([float(x[-1]) for x, *_ in ours.values()] or [1.0])
    ax.set_xlim(0, right * 1.02)  # published curves run longer: show our budget
    ax.grid(alpha=0.3)
    _legend_below(fig, [ax])
    return _save(fig, out)


def performance_profile_figure(profiles: dict[str, Band], task: str, at: int, out: Path) -> Path:
    """Performance profiles (Agarwal et al. 2021): per condition the fraction of runs whose return at env step
    ``at`` exceeds τ, against τ, with its 95 % stratified bootstrap band. A curve above another everywhere:
    stochastically better."""
    fig, (ax,) = _figure(1, 7, 4.5, list(profiles))
    for i, (name, band) in enumerate(profiles.items()):
        _band(ax, *band, color=f"C{i}", lw=1.5, label=name)
    ax.set_xlabel(f"evaluation return τ at {at:,} env steps")
    ax.set_ylabel("fraction of runs with return > τ (95 % CI)")
    ax.set_title(f"{task}: performance profile")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    _legend_below(fig, [ax])
    return _save(fig, out)


def imm_loss_figure(
    rl: dict[str, tuple[np.ndarray, np.ndarray]], standalone: dict[str, tuple[np.ndarray, np.ndarray]], out: Path
) -> Path:
    """IMM reconstruction loss (pixel MSE) against updates: inside RL agents and in standalone IMM training."""
    fig, (ax,) = _figure(1, 7, 4.5, [f"{name} (during RL)" for name in rl] + list(standalone))
    for i, (name, (x, y)) in enumerate(rl.items()):
        ax.plot(x, y, color=f"C{i}", lw=1, label=f"{name} (during RL)")
    for j, (name, (x, y)) in enumerate(standalone.items()):
        ax.plot(x, y, "k-" if j == 0 else "k--", lw=1.2, label=name)
    ax.set_xlabel("updates")
    ax.set_ylabel("IMM loss (pixel MSE, frames in [-0.5, 0.5])")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    _legend_below(fig, [ax])
    return _save(fig, out)


def keypoint_spread_figure(
    spread: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], task: str, out: Path
) -> Path:
    """Keypoint separation and batch std against env steps, one panel each: per condition the mean over seeds
    (thick) and each seed (thin); ``spread``: train.csv column -> condition -> (env steps, values [seeds, steps],
    NaN where a seed has no value). Collapsed keypoints (all on one spot) bring both to 0."""
    titles = {"train/keypoint_separation": "separation: mean distance between two keypoints",
              "train/keypoint_batch_std": "batch std: how far a keypoint moves across a batch"}  # fmt: skip
    names = list(dict.fromkeys(name for column in titles for name in spread.get(column, {})))
    fig, axes = _figure(2, 11, 4.5, names)
    for ax, (column, title) in zip(axes, titles.items(), strict=True):
        for name, (x, y) in spread.get(column, {}).items():
            color = f"C{names.index(name)}"
            for seed_values in y:
                ax.plot(x, seed_values, color=color, lw=0.6, alpha=0.35)
            ax.plot(x, np.nanmean(y, axis=0), color=color, lw=1.8, label=name)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("environment steps (incl. action repeat)")
        ax.set_ylabel("map units (coordinates in [-1, 1])")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    _legend_below(fig, axes)
    fig.suptitle(f"{task}: keypoint collapse diagnostics (mean over seeds, thin: each seed; both near 0: collapse)")
    return _save(fig, out)
