"""Fault injection: `kprl train` killed with SIGKILL at random moments, again and again, then rerun to the end.

Whatever the kill interrupted (start-up, the seed phase, an update, an evaluation and its video, a checkpoint being
written), the finished run must equal an uninterrupted one in what it logged: every evaluation and training episode
exactly once, TensorBoard showing each step once, every video readable, one final checkpoint, and no temporary file
left. The fast suite kills 3 times; ``make test-slow`` (marker ``slow``) 15 times.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from tiny import tiny_args
from tiny import tiny_config as tiny_run

from kprl.config import TrainConfig
from kprl.runtime.checkpoint import checkpoint_steps

# 40-env-step episodes (0.4 s at action repeat 8); evaluation + video and checkpoint every 80 env steps.
ARGS = tiny_args(env_steps=400, eval_episodes=1, video=True, video_size=64)
EVAL_STEPS = [0, 80, 160, 240, 320, 400]
EPISODE_ENDS = list(range(40, 401, 40))


def command(run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "kprl.cli", "train", *ARGS, "--run-dir", str(run_dir)]


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def kill_at_random_progress(
    cmd: list[str], progress_of: Callable[[], int], milestones: list[int], kills: int, seed: int,
    max_extra: float = 1.5,
) -> list[tuple[int, float]]:
    """Up to ``kills`` times: start ``cmd``, wait until ``progress_of()`` reaches a randomly chosen milestone still
    ahead (or, one time in five, not at all), wait a random extra 0 to ``max_extra`` s and SIGKILL it. Kills therefore land at
    random in start-up, computation and every kind of write, however fast the machine is. Returns (milestone,
    extra delay) of each kill."""
    rng = np.random.default_rng(seed)
    env = {**os.environ, "MUJOCO_GL": "egl"}
    done = []
    for _ in range(kills):
        ahead = [m for m in milestones if m > progress_of()]
        if not ahead:
            break
        target = -1 if rng.random() < 0.2 else int(rng.choice(ahead))
        extra = float(rng.uniform(0.0, max_extra))
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while proc.poll() is None and progress_of() < target and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(extra)
        proc.kill()
        proc.wait()
        done.append((target, extra))
    return done


def last_logged(csv_file: Path, key: str) -> int:
    """The largest ``key`` in a CSV log (-1 if there is none yet)."""
    try:
        logged = rows(csv_file)
    except (FileNotFoundError, csv.Error):
        return -1
    return max((int(r[key]) for r in logged if (r.get(key) or "").isdigit()), default=-1)


def check_finished_run(run_dir: Path) -> None:
    assert [int(r["env_step"]) for r in rows(run_dir / "eval.csv")] == EVAL_STEPS
    assert [int(r["env_step"]) for r in rows(run_dir / "train.csv")] == EPISODE_ENDS
    assert checkpoint_steps(run_dir) == [400]
    leftovers = [p for p in run_dir.rglob("*") if ".tmp" in p.name]
    assert not leftovers, leftovers

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"), purge_orphaned_data=True)
    events.Reload()
    assert [e.step for e in events.Scalars("eval/episode_return")] == EVAL_STEPS
    assert [e.step for e in events.Scalars("train/episode_return")] == EPISODE_ENDS

    import imageio.v2 as imageio

    videos = sorted((run_dir / "videos").glob("*.mp4"))
    assert [int(v.stem.split("_")[1]) for v in videos] == EVAL_STEPS
    for video in videos:
        with imageio.get_reader(video) as reader:
            assert reader.get_next_data().shape == (64, 64, 3)


def run_fault_injection(tmp_path: Path, kills: int, seed: int) -> None:
    run_dir = tmp_path / "run"
    done_kills = kill_at_random_progress(
        command(run_dir), lambda: last_logged(run_dir / "train.csv", "env_step"), EPISODE_ENDS, kills, seed
    )
    assert len(done_kills) >= min(kills, 3)
    env = {**os.environ, "MUJOCO_GL": "egl"}
    done = subprocess.run(command(run_dir), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    check_finished_run(run_dir)


def test_train_killed_at_random_moments_resumes_to_a_complete_run(tmp_path: Path) -> None:
    run_fault_injection(tmp_path, kills=3, seed=0)


@pytest.mark.slow
def test_train_killed_fifteen_times_resumes_to_a_complete_run(tmp_path: Path) -> None:
    run_fault_injection(tmp_path, kills=15, seed=1)


def test_collect_killed_at_random_moments_resumes_to_identical_shards(tmp_path: Path) -> None:
    from kprl.data.collect import collect
    from kprl.data.frames import shard_files

    out = tmp_path / "data"
    cmd = [sys.executable, "-m", "kprl.cli", "collect", "--out", str(out), "--env-steps", "1200", "--task",
           "cartpole_swingup", "--time-limit", "0.4", "--image-size", "32", "--episodes-per-shard", "1"]  # fmt: skip
    shards = lambda: len(shard_files(out)) if (out / "meta.json").is_file() else -1  # noqa: E731
    # 30 one-episode shards of 32 px frames take a few seconds: kill within 0.3 s of a shard being written.
    assert len(kill_at_random_progress(cmd, shards, list(range(1, 31)), kills=3, seed=2, max_extra=0.3)) >= 2
    done = subprocess.run(cmd, env={**os.environ, "MUJOCO_GL": "egl"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    straight = tmp_path / "straight"
    collect(straight, env_steps=1200, task="cartpole_swingup", time_limit=0.4, image_size=32, episodes_per_shard=1,
            quiet=True)  # fmt: skip
    files = lambda d: {f.name: f.read_bytes() for f in d.iterdir()}  # noqa: E731
    assert files(out) == files(straight)  # byte-identical, no temporaries


def test_imm_train_killed_at_random_moments_resumes_to_the_same_model(tmp_path: Path) -> None:
    import torch

    from kprl.data.synthetic import write_shapes_dataset
    from kprl.imm.checkpoint import load_imm

    data = write_shapes_dataset(tmp_path / "squares", episodes=6, length=8, size=28)

    def cmd(run_dir: Path) -> list[str]:
        return [sys.executable, "-m", "kprl.cli", "imm", "train", "--data", str(data), "--run-dir", str(run_dir),
                "--steps", "40", "--checkpoint-every", "5", "--log-every", "5", "--eval-every", "5", "--threads", "1",
                "--keypoints", "2", "--image-size", "24", "--num-conv-layers", "2", "--num-filters", "8",
                "--batch-size", "8", "--val-pairs", "16"]  # fmt: skip

    run = tmp_path / "run"
    kills = kill_at_random_progress(cmd(run), lambda: last_logged(run / "train.csv", "step"), list(range(5, 41, 5)),
                                    kills=3, seed=3)  # fmt: skip
    assert len(kills) >= 2
    env = {**os.environ, "MUJOCO_GL": "egl"}
    for run_dir in (run, tmp_path / "straight"):
        done = subprocess.run(cmd(run_dir), env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    assert [int(r["step"]) for r in rows(run / "train.csv")] == list(range(5, 41, 5))
    assert [int(r["step"]) for r in rows(run / "eval.csv")] == list(range(0, 41, 5))
    assert checkpoint_steps(run) == [40]
    assert not [p for p in run.rglob("*") if ".tmp" in p.name]
    a, b = load_imm(run).model.state_dict(), load_imm(tmp_path / "straight").model.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


# ---------------------------------------------------------------------------------------------- in-process faults
def tiny_config(run_dir: Path, **overrides: object) -> TrainConfig:
    """The tiny run for 240 env steps with one evaluation episode."""
    return tiny_run(run_dir, **{"env_steps": 240, "eval_episodes": 1, **overrides})


def test_disk_full_while_checkpointing_is_a_clear_error_and_keeps_the_last_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import torch

    from kprl.errors import CheckpointError
    from kprl.rl.train import train
    from kprl.runtime import checkpoint

    real_save, calls = torch.save, []

    def full_disk_on_second_save(obj: object, f: object) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, f)

    monkeypatch.setattr(checkpoint.torch, "save", full_disk_on_second_save)
    run = tmp_path / "run"
    with pytest.raises(CheckpointError, match="could not write checkpoint.*No space left on device"):
        train(tiny_config(run), quiet=True)
    assert checkpoint_steps(run) == [80]  # the previous checkpoint is complete
    assert not [p for p in run.rglob("*") if ".tmp" in p.name]
    checkpoint.load_state(checkpoint.find_checkpoint(run))
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    assert train(tiny_config(run), quiet=True)["env_steps"] == 240  # space freed: the same command resumes


def test_non_finite_loss_stops_with_its_name_and_step_and_keeps_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kprl.errors import TrainingError
    from kprl.rl.sac import SACAgent
    from kprl.rl.train import train

    real_update = SACAgent.update

    def diverging(self: SACAgent, batch, step, generator=None):  # type: ignore[no-untyped-def]
        metrics = real_update(self, batch, step, generator)
        if step >= 12:
            metrics["train/critic_loss"] = float("nan")
        return metrics

    monkeypatch.setattr(SACAgent, "update", diverging)
    run = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"train/critic_loss became nan at env step \d+ \(update 13\)"):
        train(tiny_config(run, seed_update_burst=False), quiet=True)
    assert checkpoint_steps(run) == [160]  # written before the loss diverged (update 13 = env step 176)


def test_non_finite_parameters_are_never_checkpointed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from kprl.errors import TrainingError
    from kprl.rl.sac import SACAgent
    from kprl.rl.train import train

    real_update = SACAgent.update

    def poisoning(self: SACAgent, batch, step, generator=None):  # type: ignore[no-untyped-def]
        metrics = real_update(self, batch, step, generator)
        # Update 9 comes at agent step 19, the last before the episode that ends at env step 160 (evaluation, then
        # the checkpoint); its losses were finite, the next update's would not be.
        if step == 9:
            with torch.no_grad():
                self.critic.q1[0].weight[0, 0] = float("inf")
        return metrics

    monkeypatch.setattr(SACAgent, "update", poisoning)
    run = tmp_path / "run"
    with pytest.raises(TrainingError, match=r"parameter critic\.q1\.0\.weight is not finite at env step 160"):
        train(tiny_config(run, seed_update_burst=False), quiet=True)
    assert checkpoint_steps(run) == [80]
