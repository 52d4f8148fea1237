"""Gymnasium environments from pixels (``--task gym:ID`` / ``--env gym:ID``) on a real Gymnasium MuJoCo task,
InvertedPendulum-v5 (Box(-3, 3) actions, dt 0.04 s, terminates when the pole falls)."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gymnasium", reason="kprl[gym] not installed")

from kprl.cli import main  # noqa: E402
from kprl.envs.factory import make_pixel_env  # noqa: E402
from kprl.envs.gym import GymEnv, square_resize  # noqa: E402

TASK = "gym:InvertedPendulum-v5"
TINY = ["--seed-steps", "60", "--batch-size", "8", "--hidden-dim", "32", "--num-filters", "8", "--latent-dim", "8",
        "--image-size", "64", "--eval-every", "60", "--eval-episodes", "2", "--checkpoint-every", "60",
        "--threads", "1", "--video-size", "64", "--time-limit", "0.2"]  # fmt: skip
# 0.2 s = 5 Gymnasium steps per episode (the pole does not fall that fast): episodes end on a fixed grid, so a
# run stopped at 120 env steps stops at an episode boundary, where kill-and-resume checkpoints are taken too.


def kprl(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MUJOCO_GL": "egl"}
    return subprocess.run([sys.executable, "-m", "kprl.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)  # fmt: skip


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def episode(env: GymEnv, actions: np.ndarray) -> tuple[list[np.ndarray], list]:
    step = env.reset()
    frames, steps = [step.obs], [step]
    for action in actions:
        step = env.step(action)
        frames.append(step.obs)
        steps.append(step)
        if step.last:
            break
    return frames, steps


def test_gym_env_steps_render_and_ends_like_dmc() -> None:
    env = make_pixel_env(TASK, image_size=64, action_repeat=2, frame_stack=3, seed=1)
    try:
        assert isinstance(env, GymEnv) and env.action_dim == 1 and env.landmark_names == []
        assert env.obs_shape == (9, 64, 64) and env.max_episode_steps == 500  # 1000 Gymnasium steps / repeat 2
        first = env.reset()
        assert first.obs.dtype == np.uint8 and first.obs.shape == (9, 64, 64) and first.first
        assert np.array_equal(first.obs[:3], first.obs[6:]) and first.landmarks.shape == (0, 2)
        # Full push one way: the pole falls, Gymnasium terminates -> discount 0, no bootstrapping.
        _, steps = episode(env, np.ones((200, 1)))
        last = steps[-1]
        assert last.last and last.terminated and not last.truncated and last.discount == 0.0
        assert all(s.reward == 2.0 for s in steps[1:-1])  # +1 per Gymnasium step, 2 steps per action
        assert not np.array_equal(steps[1].frame, steps[-1].frame)
        assert env.render(32).shape == (32, 32, 3)
        with pytest.raises(RuntimeError):
            env.step(np.zeros(1))
    finally:
        env.close()
    # A time limit shorter than the fall: a truncation, which bootstraps (discount 1).
    short = make_pixel_env(TASK, image_size=64, time_limit=0.2, seed=1)  # 0.2 s = 5 steps of 0.04 s
    try:
        _, steps = episode(short, np.zeros((50, 1)))
        assert len(steps) == 6 and steps[-1].truncated and steps[-1].discount == 1.0
    finally:
        short.close()


def test_gym_env_is_seeded_and_resumes_its_random_state() -> None:
    actions = np.random.default_rng(0).uniform(-1, 1, size=(30, 1))
    a, b, c = (make_pixel_env(TASK, image_size=48, seed=s) for s in (3, 3, 4))
    try:
        first_a, _ = episode(a, actions)
        assert all(np.array_equal(x, y) for x, y in zip(first_a, episode(b, actions)[0], strict=True))
        assert not np.array_equal(first_a[0], episode(c, actions)[0][0])
        saved = a.random_state()
        second_a, _ = episode(a, actions)
        fresh = make_pixel_env(TASK, image_size=48, seed=3)  # as a resumed run: same seed, then the saved state
        try:
            fresh.set_random_state({k: np.asarray(v) for k, v in saved.items()})
            second_fresh, _ = episode(fresh, actions)
        finally:
            fresh.close()
        assert all(np.array_equal(x, y) for x, y in zip(second_a, second_fresh, strict=True))
    finally:
        for env in (a, b, c):
            env.close()


def test_frames_do_not_depend_on_other_envs_of_the_process() -> None:
    """Training and evaluation envs live in one process: opening and closing one must not change the other's
    frames (Gymnasium's renderer does not make its GL context current by itself: black frames before the fix)."""
    env = make_pixel_env(TASK, image_size=48, seed=1)
    try:
        saved = env.random_state()
        before = env.reset().obs
        other = make_pixel_env(TASK, image_size=48, seed=7)
        other.reset()
        env.set_random_state(saved)
        assert np.array_equal(env.reset().obs, before) and before.max() > 0
        other.close()
        env.set_random_state(saved)
        assert np.array_equal(env.reset().obs, before)
    finally:
        env.close()


def test_square_resize_is_exact_at_size_and_keeps_a_constant_image() -> None:
    image = np.random.default_rng(0).integers(0, 256, size=(40, 60, 3), dtype=np.uint8)
    assert np.array_equal(square_resize(image, 40), image[:, 10:50])
    flat = np.full((100, 150, 3), 77, dtype=np.uint8)
    assert (square_resize(flat, 33) == 77).all() and square_resize(flat, 200).shape == (200, 200, 3)


def test_train_on_a_gymnasium_env_writes_the_usual_run_and_resumes(tmp_path: Path) -> None:
    """A keypoint agent (the DMC agents share everything but the env with it) trains, evaluates, records videos and
    IMM figures, and resumes exactly."""
    agent, full, part = "sac_imm", tmp_path / "full", tmp_path / "part"
    extra = ["--augmentation", "crop"]
    done = kprl("train", "--agent", agent, "--env", TASK, *TINY, *extra, "--env-steps", "180", "--run-dir", str(full))
    assert done.returncode == 0, done.stderr[-2000:]
    config = json.loads((full / "config.json").read_text())
    assert config["env"]["task"] == TASK and config["agent"] == agent
    evals = rows(full / "eval.csv")
    assert int(evals[0]["env_step"]) == 0 and int(evals[-1]["env_step"]) == 180
    assert len(list((full / "videos").glob("eval_*.mp4"))) == len(evals)
    assert list((full / "figures").glob("imm_example_*.png"))
    # Episodes end early (the pole falls), so stop the second run where the first evaluated and checkpointed (an
    # episode boundary, as a killed run's checkpoint is); resumed (env RNG included) it must continue exactly.
    stop = int(evals[-2]["env_step"])
    assert 60 <= stop < 180
    first = kprl("train", "--agent", agent, "--env", TASK, *TINY, *extra, "--env-steps", str(stop),
                 "--run-dir", str(part))  # fmt: skip
    assert first.returncode == 0, first.stderr[-2000:]
    resumed = kprl("train", "--agent", agent, "--task", TASK, *TINY, *extra, "--env-steps", "180",
                   "--run-dir", str(part))  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    keep = ("env_step", "episode_return", "updates", "train/critic_loss")
    assert [{k: r[k] for k in keep} for r in rows(part / "train.csv")] == [
        {k: r[k] for k in keep} for r in rows(full / "train.csv")
    ]
    assert [(r["env_step"], r["episode_return"]) for r in rows(part / "eval.csv")] == [
        (r["env_step"], r["episode_return"]) for r in evals
    ]


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ("gym:NoSuchEnv-v0", "unknown Gymnasium environment 'NoSuchEnv-v0'"),
        ("gym:", "needs an environment id"),
        ("gym:CartPole-v1", "Discrete action space"),
        pytest.param("gym:Pendulum-v1", "cannot render gym:Pendulum-v1: pygame is not installed",
                     marks=pytest.mark.skipif(importlib.util.find_spec("pygame") is not None, reason="pygame here")),
        ("cartpole_nope", "or gym:ID"),
    ],
)
def test_bad_gym_task_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], task: str, message: str
) -> None:
    code = main(["train", "--env", task, "--run-dir", str(tmp_path / "r"), "--env-steps", "100", "--seed-steps", "10"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_keypoints_on_a_gymnasium_dataset_report_landmarks_as_unavailable(tmp_path: Path) -> None:
    """collect -> imm train -> imm eval on an environment without ground truth: everything but the landmark error,
    which is said to be unavailable rather than computed from nothing."""
    data, run = tmp_path / "data", tmp_path / "imm"
    collected = kprl("collect", "--out", str(data), "--task", TASK, "--env-steps", "120", "--image-size", "64",
                     "--time-limit", "0.4", "--episodes-per-shard", "5")  # fmt: skip
    assert collected.returncode == 0, collected.stderr[-2000:]
    meta = json.loads((data / "meta.json").read_text())
    assert meta["task"] == TASK and meta["landmark_names"] == [] and meta["camera_id"] is None
    trained = kprl("imm", "train", "--data", str(data), "--run-dir", str(run), "--steps", "10", "--batch-size", "4",
                   "--image-size", "48", "--eval-every", "10", "--checkpoint-every", "10", "--log-every", "10",
                   "--val-pairs", "8", "--max-offset", "3")  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert "landmark error unavailable" in trained.stdout
    assert not any(k.startswith("error") for k in rows(run / "eval.csv")[0])
    evaluated = kprl("imm", "eval", "--run-dir", str(run), "--pairs", "8")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    result = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert result["landmarks"].startswith("unavailable") and result["reconstruction_mse"] > 0
    assert not any(k.startswith("error") for k in result)
