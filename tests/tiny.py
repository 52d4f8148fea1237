"""The tiny cartpole run the tests train: seconds on a CPU, yet every stage (rendering, replay, augmentation,
updates, evaluation, checkpoints) runs for real.

One definition; a test changes only what it is about, and takes the run as a config (:func:`tiny_config`), as
``kprl train`` options (:func:`tiny_args`) or as keyword options of the Python API (:func:`tiny_options`). Options
are named as on the command line without dashes (``hidden_dim``, ``time_limit``)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kprl import config as C

TINY: dict[str, Any] = {
    "time_limit": 0.4,  # 40 physics steps: 5 agent steps of action repeat 8 per episode
    "image_size": 64,
    "env_steps": 200,
    "seed_steps": 80,
    "batch_size": 8,
    "hidden_dim": 32,
    "num_filters": 8,
    "latent_dim": 8,
    "eval_every": 80,
    "eval_episodes": 2,
    "checkpoint_every": 80,
    "video": False,
    "threads": 1,
}
DOTTED = {name.rsplit(".", 1)[-1]: name for name in C.flatten(C.TrainConfig())}
"""Each option's place in the config (``hidden_dim`` -> ``sac.hidden_dim``)."""


def tiny_options(*, without: Iterable[str] = (), **overrides: Any) -> dict[str, Any]:
    """The tiny run's options with ``overrides``, less the options named in ``without``."""
    unknown = [name for name in [*overrides, *without] if name not in DOTTED]
    assert not unknown, f"not kprl train options: {unknown}"
    options = {**TINY, **overrides}
    return {name: value for name, value in options.items() if name not in set(without)}


def tiny_config(run_dir: Path, **overrides: Any) -> C.TrainConfig:
    """The tiny run as a config writing to ``run_dir``."""
    cfg = C.TrainConfig(run_dir=run_dir)
    for name, value in tiny_options(**overrides).items():
        *parents, leaf = DOTTED[name].split(".")
        target = cfg
        for parent in parents:
            target = getattr(target, parent)
        setattr(target, leaf, value)
    return cfg


def tiny_args(*, without: Iterable[str] = (), **overrides: Any) -> list[str]:
    """The tiny run as ``kprl train`` options (booleans as ``--flag`` / ``--no-flag``)."""
    args: list[str] = []
    for name, value in tiny_options(without=without, **overrides).items():
        flag = name.replace("_", "-")
        if isinstance(value, bool):
            args.append(f"--{flag}" if value else f"--no-{flag}")
        else:
            args += [f"--{flag}", str(value)]
    return args
