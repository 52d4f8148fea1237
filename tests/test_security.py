"""No code runs from a loaded file: checkpoints, replay buffers, datasets and frame files crafted to execute code on
unpickling are refused with one line, and the code never runs. Corrupt and truncated checkpoints likewise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kprl import config as C
from kprl.cli import main
from kprl.errors import CheckpointError, DataError
from kprl.runtime.checkpoint import STATE_FILE, load_replay_state, load_state


class Exploit:
    """Unpickling this calls ``Path.touch(marker)``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


def run_dir_with_state(tmp_path: Path, payload: object) -> tuple[Path, Path]:
    run = tmp_path / "run"
    step = run / "checkpoints" / "step_0000000080"
    step.mkdir(parents=True)
    C.save_json(C.TrainConfig(run_dir=run), run / "config.json")
    torch.save(payload, step / STATE_FILE)  # torch.save pickles whatever it is given
    return run, step


def test_checkpoint_that_runs_code_when_unpickled_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    run, step = run_dir_with_state(tmp_path, {"format_version": 1, "agent": Exploit(marker)})
    with pytest.raises(CheckpointError, match="cannot load checkpoint"):
        load_state(step)
    assert main(["eval", "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kprl: error: cannot load checkpoint") and len(err.splitlines()) == 1
    assert main(["train", "--run-dir", str(run)]) == 2  # resuming it fails the same way
    assert not marker.exists(), "code from the checkpoint ran"


def test_replay_buffer_with_pickled_objects_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    step = tmp_path / "step"
    step.mkdir()
    np.savez(step / "replay.npz", frames=np.array([Exploit(marker)], dtype=object))
    with pytest.raises(CheckpointError, match="cannot load replay buffer"):
        load_replay_state(step)
    assert not marker.exists()


def test_dataset_shard_and_frame_file_with_pickled_objects_are_refused(tmp_path: Path) -> None:
    from kprl.imm.detect import read_frames

    marker = tmp_path / "pwned"
    frames = tmp_path / "frames.npz"
    np.savez(frames, frames=np.array([Exploit(marker)], dtype=object))
    with pytest.raises(DataError):
        read_frames(frames)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "not_a_dict"])
def test_corrupt_checkpoints_are_one_line_errors(tmp_path: Path, damage: str, capsys: pytest.CaptureFixture[str]) -> None:
    run, step = run_dir_with_state(tmp_path, {"format_version": 1, "weights": torch.zeros(1000)})
    state = step / STATE_FILE
    if damage == "truncated":
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    elif damage == "garbage":
        state.write_bytes(b"\x00not a checkpoint" * 100)
    elif damage == "empty":
        state.write_bytes(b"")
    else:
        torch.save([1, 2, 3], state)
    before = state.read_bytes()
    assert main(["eval", "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kprl: error:") and "checkpoint" in err and len(err.splitlines()) == 1
    assert state.read_bytes() == before  # nothing overwritten


@pytest.fixture(scope="module")
def sac_ae_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_faults import tiny_config

    from kprl.rl.train import train

    source = tmp_path_factory.mktemp("source") / "sac_ae"
    train(tiny_config(source, env_steps=120), quiet=True)
    return source


def foreign_run(source: Path, tmp_path: Path, **overrides: object):  # type: ignore[no-untyped-def]
    """A run dir whose config differs from the checkpoint it holds (copied from ``source``)."""
    import shutil

    from test_faults import tiny_config

    other = tmp_path / "other"
    cfg = tiny_config(other, env_steps=120, **overrides)
    other.mkdir()
    C.save_json(cfg, other / "config.json")
    shutil.copytree(source / "checkpoints", other / "checkpoints")
    return other, cfg


@pytest.mark.parametrize(
    ("overrides", "eval_message", "resume_message"),
    [
        ({"agent": "sac_imm"}, "holds agent 'sac_ae', config says 'sac_imm'", "belongs to agent 'sac_ae', not 'sac_imm'"),
        ({"image_size": 48}, "does not fit agent sac_ae", "does not fit this agent"),
    ],
)
def test_checkpoint_of_another_agent_or_image_size_is_refused_by_eval_and_resume(
    sac_ae_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], overrides: dict, eval_message: str,
    resume_message: str,
) -> None:
    from kprl.rl.train import train

    image_size = overrides.pop("image_size", None)
    other, cfg = foreign_run(sac_ae_run, tmp_path, **overrides)
    if image_size is not None:
        cfg.env.image_size = image_size
        C.save_json(cfg, other / "config.json")
    before = sorted((p.name, p.stat().st_size) for p in other.rglob("*") if p.is_file())
    assert main(["eval", "--run-dir", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert eval_message in err and len(err.splitlines()) == 1, err
    with pytest.raises(CheckpointError, match=resume_message):
        train(cfg, quiet=True)
    assert sorted((p.name, p.stat().st_size) for p in other.rglob("*") if p.is_file()) == before
