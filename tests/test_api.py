"""The Python API (kprl.make_config, train_agent, evaluate_agent, load_policy, load_keypoint_detector) and the
runnable example that uses all of it. kprl.make_gym_env: tests/test_gym_wrapper.py."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny import tiny_options

import kprl
from kprl.errors import CheckpointError, ConfigError
from kprl.runtime.checkpoint import checkpoint_steps

ROOT = Path(__file__).resolve().parent.parent
TINY = tiny_options(env_steps=160, eval_episodes=1)


def test_example_runs_end_to_end(tmp_path: Path) -> None:
    env = {**os.environ, "MUJOCO_GL": "egl"}
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "python_api.py"), "--quick", "--out",
                             str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "agent keypoints: (5, 3, 2)" in result.stdout and "IMM keypoints: (5, 3, 2)" in result.stdout
    assert (tmp_path / "keypoints.png").stat().st_size > 0
    assert (tmp_path / "run" / "eval.csv").is_file()


def test_make_config_sets_options_by_any_name_and_validates() -> None:
    cfg = kprl.make_config(agent="sac_ae_imm", task="reacher_easy", run_dir="runs/x", imm_lr="2e-4",
                           **{"keypoint.keypoints": 5, "per-frame": True})  # fmt: skip
    assert isinstance(cfg, kprl.TrainConfig) and cfg.keypoint.imm_lr == 2e-4 and cfg.keypoint.keypoints == 5
    assert cfg.keypoint.per_frame and cfg.env.task == "reacher_easy" and cfg.run_dir == Path("runs/x")
    with pytest.raises(ConfigError, match="unknown option 'imm_rate'"):
        kprl.make_config(imm_rate=1e-3)
    with pytest.raises(ConfigError, match="--batch-size must be >= 1"):
        kprl.make_config(batch_size=0)
    # A bad task fails here, in one line, not later in train_agent.
    with pytest.raises(ConfigError, match="unknown DeepMind Control task 'nope'") as bad_task:
        kprl.make_config(task="nope")
    assert "\n" not in str(bad_task.value)


def test_policy_of_an_agent_without_keypoints(tmp_path: Path) -> None:
    rows: list[dict] = []
    cfg = kprl.make_config(agent="sac_ae", run_dir=tmp_path / "run", **TINY)
    summary = kprl.train_agent(cfg, on_eval=rows.append)
    assert [r["env_step"] for r in rows] == [0, 80, 160] and summary["env_steps"] == 160
    policy = kprl.load_policy(tmp_path / "run")
    assert policy.env_step == 160 and policy.config.agent == "sac_ae"
    env = policy.make_env(seed=0)
    try:
        step = env.reset()
        action = policy.act(step.obs)
        assert action.shape == (1,) and -1 <= float(action[0]) <= 1
        assert np.array_equal(action, policy.act(step.obs))  # deterministic: the policy mean
        assert policy.keypoints(step.obs) is None
        # A batch [N, C, H, W] gives [N, A], each row the action of its observation alone.
        second = env.step(action).obs
        batch = policy.act(np.stack([step.obs, second, step.obs]))
        assert batch.shape == (3, 1) and batch.dtype == np.float32 and np.all(np.abs(batch) <= 1)
        assert np.allclose(batch[0], action, atol=1e-5) and np.allclose(batch[1], policy.act(second), atol=1e-5)
        assert np.array_equal(batch, policy.act(np.stack([step.obs, second, step.obs])))  # deterministic
        assert policy.obs_shape == (9, 64, 64)
        for bad in (step.obs[None, None], step.obs[0], step.obs[:6], np.stack([step.obs[:, :32]] * 2)):
            with pytest.raises(ValueError, match=r"expects one observation of shape \(9, 64, 64\) or a batch of "
                                                 r"shape \(N, 9, 64, 64\), got shape"):  # fmt: skip
                policy.act(bad)
    finally:
        env.close()
    if importlib.util.find_spec("gymnasium") is not None:  # the same env as a gymnasium.Env (kprl[gym])
        gym_env = policy.make_gym_env()
        try:
            obs, _ = gym_env.reset(seed=0)
            assert gym_env.observation_space.shape == policy.obs_shape and policy.act(obs).shape == (1,)
        finally:
            gym_env.close()
    with pytest.raises(ConfigError, match="no keypoints"):
        kprl.load_keypoint_detector(tmp_path / "run")
    with pytest.raises(CheckpointError):
        kprl.load_policy(tmp_path / "missing")


def test_on_eval_returning_false_stops_with_a_checkpoint_and_rerun_resumes(tmp_path: Path) -> None:
    # checkpoint_every 160: the only checkpoint at env step 80 can come from the stop.
    cfg = kprl.make_config(agent="sac_ae", run_dir=tmp_path / "run", **{**TINY, "checkpoint_every": 160})
    seen: list[int] = []

    def stop_at_second_evaluation(row: dict) -> bool:
        seen.append(row["env_step"])
        return len(seen) < 2

    summary = kprl.train_agent(cfg, on_eval=stop_at_second_evaluation)
    assert seen == [0, 80]
    assert summary["stopped_by_callback"] is True and summary["env_steps"] == 80
    assert checkpoint_steps(cfg.run_dir) == [80]
    assert kprl.load_policy(cfg.run_dir).env_step == 80

    summary = kprl.train_agent(cfg)  # no callback: resumes from 80 and finishes
    assert summary["stopped_by_callback"] is False and summary["env_steps"] == 160
    assert checkpoint_steps(cfg.run_dir)[-1] == 160
    with open(cfg.run_dir / "eval.csv", newline="") as f:
        assert [int(r["env_step"]) for r in csv.DictReader(f)] == [0, 80, 160]
