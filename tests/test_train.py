"""The training loop on real dm_control: smoke run, determinism, resume, run-dir safety, re-evaluation."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny import tiny_args, tiny_config

from kprl.errors import ConfigError
from kprl.rl.evaluate import evaluate_saved
from kprl.rl.train import train
from kprl.runtime.checkpoint import checkpoint_steps


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def kprl(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MUJOCO_GL": "egl"}
    return subprocess.run(
        [sys.executable, "-m", "kprl.cli", *args], capture_output=True, text=True, env=env, check=check, timeout=300
    )


def test_cli_smoke_run_writes_every_output(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = kprl("train", *tiny_args(video=True, video_size=64), "--run-dir", str(run))
    assert result.returncode == 0, result.stderr
    for name in ("config.json", "eval.csv", "train.csv"):
        assert (run / name).is_file(), name
    assert list((run / "tb").glob("events.out.tfevents.*"))
    evals = read_rows(run / "eval.csv")
    assert [int(r["env_step"]) for r in evals] == [0, 80, 160, 200]
    train_rows = read_rows(run / "train.csv")
    assert [int(r["env_step"]) for r in train_rows] == list(range(40, 201, 40))
    assert "episode_return" in train_rows[0] and "train/critic_loss" in train_rows[-1]
    # seed phase: 80 env steps = 10 actions; then a burst of 10 updates (pytorch_sac_ae) and one per action
    assert [int(r["updates"]) for r in train_rows] == [0, 0, 14, 19, 24]
    videos = sorted(p.name for p in (run / "videos").glob("*.mp4"))
    assert videos == ["eval_00000000.mp4", "eval_00000080.mp4", "eval_00000160.mp4", "eval_00000200.mp4"]
    assert checkpoint_steps(run) == [200]
    assert "env steps/s" in result.stdout and "ETA" in result.stdout
    # the eval command re-evaluates the saved agent and writes a video
    video = tmp_path / "again.mp4"
    out = kprl("eval", "--run-dir", str(run), "--episodes", "1", "--video", str(video), "--video-size", "64")
    assert out.returncode == 0, out.stderr
    assert video.stat().st_size > 0 and '"episode_return"' in out.stdout
    by_ckpt = kprl("eval", "--checkpoint", str(run / "checkpoints" / "step_0000000200"), "--episodes", "1")
    assert by_ckpt.returncode == 0 and '"env_step": 200' in by_ckpt.stdout, by_ckpt.stderr


def test_same_seed_gives_identical_eval_csv(tmp_path: Path) -> None:
    train(tiny_config(tmp_path / "a"), quiet=True)
    train(tiny_config(tmp_path / "b"), quiet=True)
    train(tiny_config(tmp_path / "c", seed=2), quiet=True)
    a = [r["episode_return"] for r in read_rows(tmp_path / "a" / "eval.csv")]
    b = [r["episode_return"] for r in read_rows(tmp_path / "b" / "eval.csv")]
    c = [r["episode_return"] for r in read_rows(tmp_path / "c" / "eval.csv")]
    assert a == b
    assert a != c


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path: Path) -> None:
    full = tmp_path / "full"
    train(tiny_config(full), quiet=True)
    part = tmp_path / "part"
    train(tiny_config(part, env_steps=120), quiet=True)  # stops after the checkpoint at 120
    train(tiny_config(part), quiet=True)  # same run dir, longer budget: resumes
    cols = ("env_step", "episode_return")
    expect = [[r[c] for c in cols] for r in read_rows(full / "eval.csv")]
    got = [[r[c] for c in cols] for r in read_rows(part / "eval.csv")]
    # the 120-step run evaluated at its end (120); the resumed run then continues with the same schedule
    assert [row for row in got if row[0] != "120"] == expect
    train_full = [r["env_step"] for r in read_rows(full / "train.csv")]
    train_part = [r["env_step"] for r in read_rows(part / "train.csv")]
    assert train_part == train_full
    # a completed run rerun does nothing and changes nothing
    before = (part / "eval.csv").read_text()
    summary = train(tiny_config(part), quiet=True)
    assert summary["env_steps"] == 200 and (part / "eval.csv").read_text() == before


def test_resume_may_checkpoint_more_often_and_computes_the_same(tmp_path: Path) -> None:
    settings = dict(env_steps=280, log_every=40, keep_checkpoints=10)
    full = tmp_path / "full"
    train(tiny_config(full, **settings), quiet=True)
    part = tmp_path / "part"
    train(tiny_config(part, **{**settings, "env_steps": 120, "checkpoint_every": 400}), quiet=True)
    assert checkpoint_steps(part) == [120]  # only the final one
    train(tiny_config(part, **{**settings, "checkpoint_every": 40}), quiet=True)
    assert checkpoint_steps(part) == [120, 160, 200, 240, 280]
    cols = ("env_step", "episode_return")
    expect = [[r[c] for c in cols] for r in read_rows(full / "eval.csv")]
    got = [[r[c] for c in cols] for r in read_rows(part / "eval.csv")]
    assert [row for row in got if row[0] != "120"] == expect


def test_killed_run_resumes_without_duplicate_or_missing_rows(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train", *tiny_args(env_steps=400), "--run-dir", str(run)]
    env = {**os.environ, "MUJOCO_GL": "egl"}
    proc = subprocess.Popen([sys.executable, "-m", "kprl.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and not [s for s in checkpoint_steps(run) if s >= 160]:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoint_steps(run), "no checkpoint was written before the kill"
    result = kprl(*args)
    assert result.returncode == 0, result.stderr
    evals = [int(r["env_step"]) for r in read_rows(run / "eval.csv")]
    assert evals == [0, 80, 160, 240, 320, 400]
    episodes = [int(r["env_step"]) for r in read_rows(run / "train.csv")]
    assert episodes == list(range(40, 401, 40))
    assert checkpoint_steps(run) == [400]
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp")]


def test_existing_run_dir_with_other_config_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(tiny_config(run, env_steps=120), quiet=True)
    before = (run / "config.json").read_text()
    with pytest.raises(ConfigError, match="different config.*batch_size"):
        train(tiny_config(run, batch_size=16), quiet=True)
    assert (run / "config.json").read_text() == before
    result = kprl("train", *tiny_args(batch_size=16), "--run-dir", str(run))
    assert result.returncode == 2
    assert result.stderr.strip().startswith("kprl: error:") and len(result.stderr.strip().splitlines()) == 1


def test_eval_of_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    from kprl.errors import KprlError

    with pytest.raises(KprlError, match="no checkpoint"):
        evaluate_saved(run_dir=tmp_path)


def test_keep_checkpoints_keeps_the_newest_n(tmp_path: Path) -> None:
    train(tiny_config(tmp_path / "two", keep_checkpoints=2), quiet=True)
    assert checkpoint_steps(tmp_path / "two") == [160, 200]
    train(tiny_config(tmp_path / "one"), quiet=True)
    assert checkpoint_steps(tmp_path / "one") == [200]


def test_tensorboard_gets_config_hparams_video_frames_and_imm_figures(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_config(tmp_path / "run", agent="sac_imm", video=True, video_size=64, eval_episodes=1)
    train(cfg, quiet=True)
    events = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    images = events.Tags()["images"]
    assert {"eval/video_frames", "eval/imm_example"} <= set(images)
    assert [e.step for e in events.Images("eval/video_frames")] == [0, 80, 160, 200]
    frames = events.Images("eval/video_frames")[0]
    assert (frames.height, frames.width) == (64, 64 * 6)  # a 0.4 s episode's video has 6 frames: all of them
    assert "config/text_summary" in events.Tags()["tensors"]
    assert "hparam/final_eval_return" in EventAccumulator(str(tmp_path / "run" / "tb")).Reload().Tags()["scalars"]
