"""Weights & Biases logging (--wandb), offline: no network, no account."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny import tiny_config

from kprl.config import TrainConfig
from kprl.rl.train import train

pytest.importorskip("wandb", reason="kprl[wandb] not installed")


def tiny(run_dir: Path, env_steps: int) -> TrainConfig:
    return tiny_config(run_dir, env_steps=env_steps, eval_episodes=1, wandb=True, wandb_project="kprl-test")


def test_wandb_offline_run_gets_the_rows_and_a_resume_continues_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    train(tiny(run, 120), quiet=True)
    run_id = (run / "wandb_id").read_text().strip()
    train(tiny(run, 200), quiet=True)  # resumes the kprl run, and the same W&B run
    offline = sorted((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(p.name.endswith(run_id) for p in offline)
    # The run log (protobuf records; W&B reads it back in Go only) holds the metric names and the config.
    for path in offline:
        log = next(path.glob("run-*.wandb")).read_bytes()
        assert b"eval/episode_return" in log and b"train/critic_loss" in log and b"kprl-test" in log
    assert (run / "eval.csv").read_text().count("\n") == 1 + 5  # CSV as always: 0, 80, 120 (first end), 160, 200
