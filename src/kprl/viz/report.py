"""Figures of `kprl report`: learning curves with bootstrap bands beside published curves, and IMM losses."""

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
