"""`kprl imm train|eval|figure` and `kprl keypoints` end to end on a tiny synthetic dataset: outputs, exact resume,
and one-line errors that touch nothing."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import kprl
from kprl import config as C
from kprl.cli import main
from kprl.data.synthetic import write_shapes_dataset
from kprl.imm.checkpoint import load_imm
from kprl.imm.train import train_imm

TINY = ["--image-size", "24", "--num-conv-layers", "2", "--num-filters", "8", "--batch-size", "8", "--val-pairs", "16"]


@pytest.fixture(scope="module")
def squares(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shapes_dataset(tmp_path_factory.mktemp("data") / "squares", episodes=6, length=8, size=28)


def tiny_cfg(data: Path, run_dir: Path, steps: int) -> C.IMMTrainConfig:
    return C.IMMTrainConfig(
        data=data, run_dir=run_dir, steps=steps, batch_size=8, image_size=24, val_pairs=16, eval_every=5,
        checkpoint_every=5, log_every=5, threads=1, model=C.IMMConfig(keypoints=2, num_conv_layers=2, num_filters=8),
    )  # fmt: skip


def test_imm_train_cli_writes_config_logs_checkpoint_split_and_figures(
    squares: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    args = ["imm", "train", "--data", str(squares), "--run-dir", str(run), "--steps", "10", "--eval-every", "5"]
    assert main([*args, *TINY, "--keypoints", "3", "--log-every", "5"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 10 and "error/square_0" in summary and "val_loss" in summary
    for name in ("config.json", "split.json", "train.csv", "eval.csv", "tb"):
        assert (run / name).exists(), name
    assert sorted(p.name for p in (run / "figures").iterdir()) == [
        "gaussian_maps.png", "imm_example.png", "loss_curve.png", "score_maps.png"]  # fmt: skip
    split = json.loads((run / "split.json").read_text())
    assert set(split["train"]).isdisjoint(split["val"]) and len(split["train"]) + len(split["val"]) == 6
    steps = [int(r.split(",")[0]) for r in (run / "eval.csv").read_text().splitlines()[1:]]
    assert steps == [0, 5, 10]
    loaded = load_imm(run)
    assert loaded.step == 10 and loaded.model.cfg.keypoints == 3 and loaded.image_size == 24

    # imm eval: landmark errors and reconstruction MSE on held-out episodes, also saved in the run dir
    assert main(["imm", "eval", "--run-dir", str(run), "--pairs", "16"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"error/square_0", "error/square_1", "error/mean", "reconstruction_mse"} <= set(result)
    assert result["heldout_episodes"] == len(split["val"]) and result["crop_offset_px"] == 2
    assert json.loads((run / "landmark_eval.json").read_text()) == result
    # On other frames the score goes beside the run's own, never over it.
    other = write_shapes_dataset(tmp_path / "other_squares", episodes=6, length=8, size=28, seed=3)
    assert main(["imm", "eval", "--run-dir", str(run), "--data", str(other), "--pairs", "16"]) == 0
    elsewhere = json.loads(capsys.readouterr().out)
    assert json.loads((run / "landmark_eval_other_squares.json").read_text()) == elsewhere != result
    assert json.loads((run / "landmark_eval.json").read_text()) == result

    # imm figure redraws from the checkpoint
    (run / "figures" / "imm_example.png").unlink()
    assert main(["imm", "figure", "--run-dir", str(run)]) == 0
    assert (run / "figures" / "imm_example.png").is_file()

    # keypoints: a user's frames of another size, mapped back to their pixels
    frames = np.load(squares / "shard_00000.npz")["frames"][:5]
    np.savez(tmp_path / "frames.npz", frames=frames)
    out = tmp_path / "kp.npz"
    assert main(["keypoints", "--checkpoint", str(run), "--frames", str(tmp_path / "frames.npz"), "--out", str(out)]) == 0
    with np.load(out) as kp:
        assert kp["keypoints"].shape == (5, 3, 2) and kp["keypoints"].dtype == np.float32
        assert ((kp["keypoints"] >= 0) & (kp["keypoints"] <= 28)).all()


def test_resume_after_a_kill_equals_an_uninterrupted_run(squares: Path, tmp_path: Path) -> None:
    train_imm(tiny_cfg(squares, tmp_path / "straight", 10), quiet=True)
    train_imm(tiny_cfg(squares, tmp_path / "resumed", 5), quiet=True)  # "killed" after its step-5 checkpoint
    train_imm(tiny_cfg(squares, tmp_path / "resumed", 10), quiet=True)  # the same command, longer: resumes
    a, b = load_imm(tmp_path / "straight").model.state_dict(), load_imm(tmp_path / "resumed").model.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    rows = lambda run: (tmp_path / run / "train.csv").read_text().splitlines()  # noqa: E731
    assert [r.split(",")[:2] for r in rows("straight")] == [r.split(",")[:2] for r in rows("resumed")]


def test_separation_loss_is_logged_beside_the_mse_and_resumes_exactly(squares: Path, tmp_path: Path) -> None:
    def cfg(run: str, steps: int) -> C.IMMTrainConfig:
        c = tiny_cfg(squares, tmp_path / run, steps)
        c.model.separation_weight = 0.1
        return c

    train_imm(cfg("straight", 10), quiet=True)
    rows = (tmp_path / "straight" / "train.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert header[:3] == ["step", "loss", "separation_loss"]
    assert all(0 <= float(r.split(",")[2]) <= 1 for r in rows[1:])
    train_imm(cfg("resumed", 5), quiet=True)
    train_imm(cfg("resumed", 10), quiet=True)
    a, b = load_imm(tmp_path / "straight").model.state_dict(), load_imm(tmp_path / "resumed").model.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert load_imm(tmp_path / "resumed").model.cfg.separation_weight == 0.1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--keypoints", "0"], "--keypoints must be >= 1"),
        (["--sigma", "0"], "--sigma must be > 0"),
        (["--sigma", "-1"], "--sigma must be > 0"),
        (["--image-size", "64"], "larger than the dataset"),
        (["--val-fraction", "1.5"], "--val-fraction"),
        (["--norm", "group"], "norm"),
        (["--separation-weight", "-1"], "--separation-weight must be >= 0"),
        (["--separation-sigma", "0"], "--separation-sigma must be > 0"),
        (["--min-offset", "0"], "--min-offset must be >= 1"),
        (["--min-offset", "11"], "--min-offset (11) must be <= --max-offset (10)"),
        (["--min-offset", "8", "--image-size", "24"], "no episode with at least 9 frames"),  # they have 8
    ],
)
def test_bad_imm_options_are_one_line_errors(
    squares: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    run = tmp_path / "run"
    assert main(["imm", "train", "--data", str(squares), "--run-dir", str(run), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kprl: error:") and "\n" not in err and message in err, err
    assert not (run / "config.json").exists()


def test_bad_datasets_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope"
    assert main(["imm", "train", "--data", str(missing), "--run-dir", str(tmp_path / "r")]) == 2
    assert "nope" in capsys.readouterr().err
    data = write_shapes_dataset(tmp_path / "d", episodes=3, length=4, size=28)
    shard = data / "shard_00000.npz"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    assert main(["imm", "train", "--data", str(data), "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kprl: error:") and "shard_00000.npz" in err and "\n" not in err
    assert not (tmp_path / "r").exists()


def test_existing_run_with_another_config_is_refused_untouched(squares: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train_imm(tiny_cfg(squares, run, 5), quiet=True)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert main(["imm", "train", "--config", str(run / "config.json"), "--sigma", "0.2"]) == 2
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_every_start_records_its_machine_threads_and_code(squares: Path, tmp_path: Path) -> None:
    """A resume with other execution options (here 2 threads instead of 1) is recorded beside the first start, so
    the run still says how its first steps trained."""
    run = tmp_path / "run"
    threads_before = torch.get_num_threads()
    try:
        train_imm(tiny_cfg(squares, run, 5), quiet=True)
        train_imm(dataclasses.replace(tiny_cfg(squares, run, 10), threads=2), quiet=True)
    finally:
        torch.set_num_threads(threads_before)
    starts = [json.loads(line) for line in (run / "runtime.jsonl").read_text().splitlines()]
    assert [(s["step"], s["threads"]) for s in starts] == [(0, 1), (5, 2)]
    for start in starts:
        assert start["device"] == "cpu" and start["precision"] in ("fp32", "bf16") and start["machine"]
        assert start["kprl_version"] == kprl.__version__ and start["torch"] == torch.__version__
        assert set(start["cpu"]) == {"vendor", "family", "model", "flags"}


def test_imm_command_usage_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["imm"]) == 2
    assert main(["imm", "fly"]) == 2
    assert "unknown command 'imm fly'" in capsys.readouterr().err
    assert main(["imm", "eval", "--run-dir", str(tmp_path)]) == 2
    assert "config.json" in capsys.readouterr().err
    assert main(["keypoints", "--checkpoint", str(tmp_path), "--frames", "x.npz", "--out", "kp.npz"]) == 2


def test_restart_before_the_first_checkpoint_starts_the_logs_afresh(squares: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = tiny_cfg(squares, run, 5)
    train_imm(cfg, quiet=True)
    for path in (run / "checkpoints").iterdir():  # as if killed before its first checkpoint was written
        import shutil

        shutil.rmtree(path)
    train_imm(cfg, quiet=True)
    steps = [r.split(",")[0] for r in (run / "eval.csv").read_text().splitlines()[1:]]
    assert steps == ["0", "5"]


def test_imm_eval_uses_the_given_ridge(squares: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    train_imm(tiny_cfg(squares, run, 5), quiet=True)
    assert main(["imm", "eval", "--run-dir", str(run), "--pairs", "8", "--ridge", "0"]) == 0
    exact = json.loads(capsys.readouterr().out)
    assert main(["imm", "eval", "--run-dir", str(run), "--pairs", "8", "--ridge", "1e6"]) == 0
    shrunk = json.loads(capsys.readouterr().out)
    assert shrunk["ridge"] == 1e6 and shrunk["error/mean"] != exact["error/mean"]


def test_checkpoint_interval_must_be_a_multiple_of_the_log_interval(
    squares: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["imm", "train", "--data", str(squares), "--run-dir", str(tmp_path / "r"), "--log-every", "3"]
    assert main([*args, "--checkpoint-every", "10"]) == 2
    assert "multiple of --log-every" in capsys.readouterr().err
