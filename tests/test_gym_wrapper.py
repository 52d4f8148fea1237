"""kprl's pixel environments as a gymnasium.Env (kprl.make_gym_env, kprl.envs.gymnasium_env.PixelGymEnv)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

gymnasium = pytest.importorskip("gymnasium", reason="kprl[gym] not installed")

import kprl  # noqa: E402
from kprl.errors import ConfigError  # noqa: E402

TINY = dict(image_size=32, time_limit=0.4)  # cartpole: 40 control steps, action repeat 8 -> 5 steps an episode


def test_passes_gymnasium_check_env_without_warnings() -> None:
    from gymnasium.utils.env_checker import check_env

    env = kprl.make_gym_env(task="cartpole_swingup", render_mode="rgb_array", **TINY)
    try:
        assert isinstance(env, gymnasium.Env)
        assert env.observation_space == gymnasium.spaces.Box(0, 255, (9, 32, 32), np.uint8)
        assert env.action_space == gymnasium.spaces.Box(-1.0, 1.0, (1,), np.float32)
        assert env.metadata["render_fps"] == 12.5  # 1 / (0.01 s control step * action repeat 8)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(env)  # spaces, seeded reset and step determinism, render, close (on copies from env.spec)
        assert [str(w.message) for w in caught if "gymnasium" in w.filename] == []
        obs, info = env.reset(seed=0)
        frame = env.render()
        assert frame.shape == (32, 32, 3) and frame.dtype == np.uint8 and np.array_equal(frame, obs[-3:].transpose(1, 2, 0))
    finally:
        env.close()
        env.close()  # twice is fine


def test_same_seed_same_first_observation() -> None:
    a, b = kprl.make_gym_env(task="cartpole_swingup", **TINY), kprl.make_gym_env(task="cartpole_swingup", **TINY)
    try:
        first, _ = a.reset(seed=3)
        assert np.array_equal(first, b.reset(seed=3)[0])  # another instance
        assert np.array_equal(first, a.reset(seed=3)[0])  # the same instance again
        assert not np.array_equal(first, a.reset(seed=4)[0])
        a.reset(seed=3)
        b.reset(seed=3)
        assert np.array_equal(a.reset()[0], b.reset()[0])  # unseeded resets continue the seeded sequence
    finally:
        a.close()
        b.close()


def test_time_limit_truncates_and_termination_terminates() -> None:
    env = kprl.make_gym_env(task="cartpole_swingup", **TINY)
    try:
        obs, info = env.reset(seed=0)
        assert obs.shape == (9, 32, 32) and obs.dtype == np.uint8 and info["landmarks"].shape == (2, 2)
        flags = [env.step(np.zeros(1, np.float32))[2:4] for _ in range(env.max_episode_steps)]
        assert env.max_episode_steps == 5 and flags == [(False, False)] * 4 + [(False, True)]
        with pytest.raises(RuntimeError, match="call reset"):
            env.step(np.zeros(1, np.float32))
    finally:
        env.close()
    # A true termination: InvertedPendulum's pole falls under a full push (discount 0, not a truncation).
    env = kprl.make_gym_env(task="gym:InvertedPendulum-v5", image_size=32, action_repeat=2)
    try:
        env.reset(seed=0)
        for _ in range(200):
            _, reward, terminated, truncated, info = env.step(np.ones(1, np.float32))
            if terminated or truncated:
                break
        assert terminated and not truncated and info["discount"] == 0.0 and isinstance(reward, float)
    finally:
        env.close()
    with pytest.raises(ConfigError, match="unknown DeepMind Control task 'nope'"):
        kprl.make_gym_env(task="nope")
