"""Sweeps and hyperparameter search on a real local Ray instance (kprl sweep / kprl tune), with tiny cartpole runs.

Each Ray start and each trial process costs seconds on 2 cores: the three Ray tests take about 2.5 minutes."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny import tiny_args

from kprl.analysis.sweep import parse_seeds
from kprl.cli import main
from kprl.runtime.checkpoint import checkpoint_steps

pytest.importorskip("ray.tune", reason="kprl[sweep] not installed")

# Cartpole cut to 0.4 s episodes (5 actions); tiny networks: a trial trains in a few seconds.
TINY_TRAIN = tiny_args(without=["env_steps", "threads"])  # the sweep sets both


def kprl(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MUJOCO_GL": "egl", "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run([sys.executable, "-m", "kprl.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)  # fmt: skip


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def starts(run: Path) -> list[int]:
    """The env step each (re)start of a run began at (runtime.jsonl)."""
    return [json.loads(line)["env_step"] for line in (run / "runtime.jsonl").read_text().splitlines()]


def test_sweep_trains_every_cell_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    args = ["sweep", "--out", str(out), "--agents", "sac_ae,sac_imm", "--seeds", "3", "--env-steps", "160",
            "--cpus-per-run", "1", "--reference-results", str(tmp_path / "none"), "--", *TINY_TRAIN]  # fmt: skip
    result = kprl(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    names = sorted(p.name for p in (out / "runs").iterdir())
    assert names == ["sac_ae-cartpole_swingup-s3", "sac_imm-cartpole_swingup-s3"]
    for name in names:
        run = out / "runs" / name
        config = json.loads((run / "config.json").read_text())
        assert (config["agent"], config["seed"], config["env_steps"]) == (name.split("-")[0], int(name[-1]), 160)
        assert config["threads"] == 1  # follows --cpus-per-run
        assert [int(r["env_step"]) for r in rows(run / "eval.csv")] == [0, 80, 160]
        assert checkpoint_steps(run) == [160]
    tidy = rows(out / "report" / "evaluations.csv")
    assert len(tidy) == 2 * 3 and {r["agent"].split("[")[0] for r in tidy} == {"sac_ae", "sac_imm"}
    assert (out / "report" / "final_scores.md").is_file()
    # Trials reported each evaluation to Ray as they went: Ray's own per-trial progress has the three of them.
    progress = list((out / "ray").rglob("progress.csv"))
    assert len(progress) == 2 and all(len(rows(p)) == 3 for p in progress)
    # Another sweep in the same directory is refused without touching it.
    other = kprl("sweep", "--out", str(out), "--agents", "sac_ae", "--seeds", "3", "--env-steps", "160")
    assert other.returncode == 2 and "holds another sweep" in other.stderr and len(other.stderr.splitlines()) == 1


def test_killed_sweep_driver_resumes(tmp_path: Path) -> None:
    """SIGKILL the driver (and its local Ray) once one trial has finished and the other has checkpointed; the same
    command then leaves the finished trial alone and resumes the other from its checkpoint."""
    out = tmp_path / "sweep"
    args = ["sweep", "--out", str(out), "--agents", "sac_ae", "--seeds", "1,2", "--env-steps", "480",
            "--cpus-per-run", "1", "--max-concurrent", "1", "--reference-results", str(tmp_path / "none"),
            "--", *TINY_TRAIN]  # fmt: skip
    env = {**os.environ, "MUJOCO_GL": "egl", "RAY_USAGE_STATS_ENABLED": "0"}
    driver = subprocess.Popen([sys.executable, "-m", "kprl.cli", *args], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and driver.poll() is None:
            runs = list((out / "runs").glob("*")) if (out / "runs").is_dir() else []
            steps = [checkpoint_steps(r) for r in runs]
            if len(runs) == 2 and sorted(bool(s) and s[-1] == 480 for s in steps) == [False, True] and all(steps):
                break
            time.sleep(0.05)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver, its local Ray and the trial processes
        driver.wait()
    assert driver.returncode == -signal.SIGKILL, "the sweep ended before it could be killed mid-way"
    finished = next(r for r in (out / "runs").iterdir() if checkpoint_steps(r)[-1] == 480)
    partial = next(r for r in (out / "runs").iterdir() if r != finished)
    resume_from = checkpoint_steps(partial)[-1]

    result = kprl(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert starts(finished) == [0], "a finished trial was run again"
    assert starts(partial)[0] == 0 and starts(partial)[-1] == resume_from > 0, "the interrupted trial did not resume"
    for run in (finished, partial):
        assert [int(r["env_step"]) for r in rows(run / "eval.csv")] == list(range(0, 481, 80))
    assert len(rows(out / "report" / "evaluations.csv")) == 2 * 7


def test_tune_stops_early_and_saves_a_best_config_that_train_accepts(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("imm_lr: {loguniform: [1e-4, 1e-3]}\nkeypoints: [2, 3]\naugmentation: {choice: [none, crop]}\n")
    out = tmp_path / "tune"
    result = kprl("tune", "--agent", "sac_imm", "--space", str(space), "--samples", "3", "--out", str(out),
                  "--env-steps", "160", "--grace-period", "80", "--cpus-per-run", "1", "--", *TINY_TRAIN)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    trials = rows(out / "trials.csv")
    assert len(trials) == 3 and not any(t["error"] for t in trials)
    for t in trials:
        assert 1e-4 <= float(t["keypoint.imm_lr"]) <= 1e-3 and t["keypoint.keypoints"] in ("2", "3")
        run = out / "runs" / t["run_dir"]
        config = json.loads((run / "config.json").read_text())
        assert config["keypoint"]["keypoints"] == int(t["keypoint.keypoints"])
        assert int(t["env_step"]) == int(rows(run / "eval.csv")[-1]["env_step"])
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    longest = max(int(t["env_step"]) for t in trials)
    assert summary["best_env_step"] == longest == 160
    assert summary["best_return"] == max(float(t["episode_return"]) for t in trials if int(t["env_step"]) == longest)
    best = json.loads((out / "best_config.json").read_text())
    assert best["agent"] == "sac_imm" and best["keypoint"]["keypoints"] == summary["best"]["keypoint.keypoints"]
    trained = kprl("train", "--config", str(out / "best_config.json"), "--run-dir", str(tmp_path / "best"),
                   "--env-steps", "120", "--threads", "1")  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert json.loads((tmp_path / "best" / "config.json").read_text())["keypoint"] == best["keypoint"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "5-1"], "--seeds range '5-1' is empty"),
        (["--seeds", "a"], "--seeds must look like"),
        (["--agents", "sac_x"], "--agent must be one of"),
        (["--tasks", "cartpole_nope"], "cartpole_nope"),
        (["--cpus-per-run", "0"], "--cpus-per-run must be > 0"),
        (["--", "--batch-size", "0"], "--batch-size must be >= 1"),
    ],
)
def test_bad_sweep_input_is_one_line_before_ray_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code = main(["sweep", "--out", str(tmp_path / "s"), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ("nope: [1, 2]\n", "unknown option 'nope'"),
        ("imm_lr: {loguniform: [1e-3, 1e-4]}\n", "low < high"),
        ("imm_lr: {normal: [0, 1]}\n", "needs exactly one of"),
        ("keypoints: [0, 3]\n", "--keypoints must be >= 1"),
        ("augmentation: [crop, blur]\n", "--augmentation must be one of"),
        ("seed: [1, 2]\n", "set by kprl tune itself"),
        ("imm_lr: [\n", "not valid YAML"),
    ],
)
def test_bad_search_space_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], space: str, message: str
) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(space)
    code = main(["tune", "--space", str(path), "--out", str(tmp_path / "t")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "t").exists()


def test_without_ray_the_commands_say_how_to_install_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    assert main(["sweep", "--out", str(tmp_path / "s")]) == 2
    assert "pip install 'kprl[sweep]'" in capsys.readouterr().err
    assert main(["tune", "--space", str(tmp_path / "x.yaml"), "--out", str(tmp_path / "t")]) == 2
    assert "pip install 'kprl[sweep]'" in capsys.readouterr().err


def test_parse_seeds() -> None:
    assert parse_seeds("1-5") == [1, 2, 3, 4, 5]
    assert parse_seeds("1,3,7") == [1, 3, 7]
    assert parse_seeds("1-3,10,2") == [1, 2, 3, 10]
