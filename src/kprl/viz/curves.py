"""Learning-curve figure of one run, from its CSV logs."""

from __future__ import annotations

import csv
from pathlib import Path

from kprl.config import require_rl_run
from kprl.errors import KprlError


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV log (empty list if the file does not exist)."""
    if not Path(path).is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def plot_run(run_dir: Path, out: Path | None = None) -> Path:
    """Draw evaluation return (mean ± std over eval episodes) and training episode returns against env steps.

    Writes ``curves.png`` in the run dir (or ``out``) and returns its path."""
    # matplotlib is imported on the first figure, on the Agg backend: importing kprl leaves a notebook's backend alone.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg")

    run_dir = Path(run_dir)
    require_rl_run(run_dir, "kprl plot")
    eval_rows = read_csv(run_dir / "eval.csv")
    train_rows = read_csv(run_dir / "train.csv")
    if not eval_rows and not train_rows:
        raise KprlError(f"{run_dir} has no eval.csv or train.csv to plot")
    fig, ax = plt.subplots(figsize=(6, 4))
    if train_rows:
        ax.plot(
            [int(r["env_step"]) for r in train_rows],
            [float(r["episode_return"]) for r in train_rows],
            color="0.6",
            lw=1,
            label="train episode",
        )
    if eval_rows:
        x = [int(r["env_step"]) for r in eval_rows]
        y = [float(r["episode_return"]) for r in eval_rows]
        s = [float(r.get("episode_return_std") or 0.0) for r in eval_rows]
        ax.plot(x, y, "o-", color="C0", label="eval (mean ± std over episodes)")
        ax.fill_between(x, [a - b for a, b in zip(y, s, strict=True)], [a + b for a, b in zip(y, s, strict=True)], color="C0", alpha=0.2)
    ax.set_xlabel("environment steps (incl. action repeat)")
    ax.set_ylabel("episode return")
    ax.set_title(run_dir.name)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    out = Path(out) if out is not None else run_dir / "curves.png"
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
