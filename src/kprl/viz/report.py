"""Figures of `kprl report`: learning curves with bootstrap bands beside published curves, IMM losses, and the
keypoint agents' collapse diagnostics."""

from __future__ import annotations

from pathlib import Path

import numpy as np

Band = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # env steps, mean, low, high


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curves_figure(ours: dict[str, Band], published: dict[str, Band], task: str, out: Path) -> Path:
    """Mean evaluation return with its 95 % bootstrap band per agent (solid), published curves dashed."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (name, (x, m, lo, hi)) in enumerate(ours.items()):
        ax.plot(x, m, "o-", color=f"C{i}", ms=3, label=name)
        ax.fill_between(x, lo, hi, color=f"C{i}", alpha=0.2)
    for j, (name, (x, m, lo, hi)) in enumerate(published.items()):
        color = f"C{len(ours) + j}"
        ax.plot(x, m, "--", color=color, lw=1.2, label=name)
        ax.fill_between(x, lo, hi, color=color, alpha=0.08)
    ax.set_xlabel("environment steps (incl. action repeat)")
    ax.set_ylabel("evaluation return (mean over seeds, 95 % bootstrap CI)")
    ax.set_title(task)
    right = max([float(x[-1]) for x, *_ in ours.values()] or [1.0])
    ax.set_xlim(0, right * 1.02)  # published curves run longer: show our budget
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def imm_loss_figure(
    rl: dict[str, tuple[np.ndarray, np.ndarray]], standalone: dict[str, tuple[np.ndarray, np.ndarray]], out: Path
) -> Path:
    """IMM reconstruction loss (pixel MSE) against updates: inside RL agents and in standalone IMM training."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (name, (x, y)) in enumerate(rl.items()):
        ax.plot(x, y, color=f"C{i}", lw=1, label=f"{name} (during RL)")
    for j, (name, (x, y)) in enumerate(standalone.items()):
        ax.plot(x, y, "k-" if j == 0 else "k--", lw=1.2, label=name)
    ax.set_xlabel("updates")
    ax.set_ylabel("IMM loss (pixel MSE, frames in [-0.5, 0.5])")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def keypoint_spread_figure(
    spread: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], task: str, out: Path
) -> Path:
    """Keypoint separation and batch std against env steps, one panel each: per condition the mean over seeds
    (thick) and each seed (thin); ``spread``: train.csv column -> condition -> (env steps, values [seeds, steps],
    NaN where a seed has no value). Collapsed keypoints (all on one spot) bring both to 0."""
    plt = _pyplot()
    titles = {"train/keypoint_separation": "separation: mean distance between two keypoints",
              "train/keypoint_batch_std": "batch std: how far a keypoint moves across a batch"}  # fmt: skip
    names = list(dict.fromkeys(name for column in titles for name in spread.get(column, {})))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4 + 0.25 * len(names)))
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
    handles = {label: h for ax in axes for h, label in zip(*ax.get_legend_handles_labels(), strict=True)}
    fig.legend(handles.values(), handles.keys(), loc="lower center", fontsize=8, frameon=False)
    fig.suptitle(f"{task}: keypoint collapse diagnostics (mean over seeds, thin: each seed; both near 0: collapse)")
    fig.tight_layout(rect=(0, 0.06 * len(names), 1, 1))
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
