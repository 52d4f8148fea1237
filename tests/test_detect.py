"""`kprl.imm.detect`: reading user frames, exact mapping of keypoints back to input pixels, `keypoints_command`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kprl import config as C
from kprl.errors import ConfigError, DataError
from kprl.imm.detect import detect, draw_keypoints, keypoints_command, read_frames
from kprl.nets.imm import IMM, KeypointOutput
from kprl.runtime.checkpoint import save_checkpoint
from kprl.viz.keypoints import scale_to_frame

MODEL_SIZE = 32


def tiny_model() -> IMM:
    torch.manual_seed(0)
    return IMM(C.IMMConfig(keypoints=2, num_conv_layers=2), image_size=MODEL_SIZE)


def write_checkpoint(run_dir: Path, step: int = 7) -> IMM:
    """A checkpoint `load_imm` reads, with the keys `IMMTrainer.save` writes (no training)."""
    model = tiny_model()
    state = {
        "kind": "imm",
        "model": model.state_dict(),
        "optimizer": torch.optim.Adam(model.parameters()).state_dict(),
        "model_config": C.to_dict(model.cfg),
        "image_size": MODEL_SIZE,
        "landmark_names": ["cart", "pole_tip"],
        "step": step,
        "wall_seconds": 1.0,
        "rng": {"torch": torch.get_rng_state()},
    }
    save_checkpoint(run_dir, step, state, None)
    return model


class ImageGrid(nn.Module):
    """A stand-in trunk whose "maps" are the image itself: map coordinates are image coordinates."""

    def image_coords(self, coords: torch.Tensor) -> torch.Tensor:
        return coords


class CentroidKeyNet(nn.Module):
    """Keypoint 0: the brightness centroid of the input (normalised image coords); keypoint 1: always (0, 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = ImageGrid()

    def forward(self, frames: torch.Tensor) -> KeypointOutput:
        b, _, h, w = frames.shape
        weight = frames.float().sum(dim=1)  # [B, H, W]
        weight = weight / weight.sum(dim=(1, 2), keepdim=True)
        cols = torch.arange(w, dtype=torch.float32)
        rows = torch.arange(h, dtype=torch.float32)
        col = (weight.sum(dim=1) * cols).sum(dim=1)
        row = (weight.sum(dim=2) * rows).sum(dim=1)
        first = torch.stack([col / (w - 1) * 2 - 1, row / (h - 1) * 2 - 1], dim=-1)
        coords = torch.stack([first, torch.zeros_like(first)], dim=1)
        empty = torch.zeros(b, 2, 1, 1)
        return KeypointOutput(coords, empty, empty[..., 0], empty[..., 0], empty)


def dot_frames(height: int, width: int, dots: list[tuple[int, int]]) -> np.ndarray:
    """One frame per (column, row): black with a single white pixel there."""
    frames = np.zeros((len(dots), height, width, 3), np.uint8)
    for n, (col, row) in enumerate(dots):
        frames[n, row, col] = 255
    return frames


# ------------------------------------------------------------------------------------------ coordinate mapping


def test_scale_to_frame_is_exact() -> None:
    points = np.array([[0.0, 0.0], [32.0, 32.0], [16.5, 3.25], [0.5, 31.5]])
    got = scale_to_frame(points, 32, 48, 80)
    want = np.array([[0.0, 0.0], [80.0, 48.0], [16.5 * 2.5, 3.25 * 1.5], [0.5 * 2.5, 31.5 * 1.5]])
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    # Same size: identity. Torch input: same result.
    np.testing.assert_array_equal(scale_to_frame(points, 32, 32, 32), points.astype(np.float32))
    np.testing.assert_allclose(scale_to_frame(torch.tensor(points), 32, 48, 80).numpy(), want, atol=1e-6)


@pytest.mark.parametrize(("height", "width"), [(32, 32), (64, 64), (48, 80), (100, 37), (20, 24)])
def test_detect_maps_a_dot_back_to_its_input_pixel(height: int, width: int) -> None:
    model = tiny_model()
    model.keynet = CentroidKeyNet()
    dots = [(width // 2, height // 2), (5, 9), (width - 7, height - 6), (width // 3, 2 * height // 3)]
    frames = dot_frames(height, width, dots)
    kp = detect(model, MODEL_SIZE, frames, "cpu", batch_size=3)
    assert kp.shape == (len(dots), 2, 2) and kp.dtype == np.float32
    centres = np.array(dots, dtype=np.float64) + 0.5
    # Exact without resizing; with it, the resized dot's centroid lands within a few hundredths of a pixel.
    tol = 1e-4 if (height, width) == (MODEL_SIZE, MODEL_SIZE) else 0.1
    np.testing.assert_allclose(kp[:, 0], centres, rtol=0, atol=tol)
    # Normalised (0, 0) is the model image's centre, which is the input frame's centre exactly.
    np.testing.assert_allclose(kp[:, 1], np.tile([width / 2, height / 2], (len(dots), 1)), rtol=0, atol=1e-4)
    assert model.training  # mode restored


def test_detect_runs_the_real_model_in_batches() -> None:
    model = tiny_model()
    frames = np.random.default_rng(0).integers(0, 256, (5, 40, 56, 3), dtype=np.uint8)
    whole = detect(model, MODEL_SIZE, frames, "cpu")
    batched = detect(model, MODEL_SIZE, frames, "cpu", batch_size=2)
    assert whole.shape == (5, 2, 2)
    np.testing.assert_allclose(whole, batched, atol=1e-5)
    assert np.all((whole[..., 0] >= 0) & (whole[..., 0] <= 56) & (whole[..., 1] >= 0) & (whole[..., 1] <= 40))


def test_draw_keypoints_draws_coloured_discs() -> None:
    frames = np.zeros((2, 48, 80, 3), np.uint8)
    kp = np.array([[[40.0, 24.0], [10.0, 10.0]], [[np.nan, 5.0], [79.9, 47.9]]], np.float32)
    out = draw_keypoints(frames, kp, 64)
    assert out.shape == (2, 64, 64, 3) and out.dtype == np.uint8
    # Keypoint (40, 24) of an 80x48 frame is the centre (32, 32) of the 64 px overlay.
    assert out[0, 32, 32].tolist() != [0, 0, 0]
    assert out[0, 32, 32].tolist() != out[0, int(10 * 64 / 48), int(10 * 64 / 80)].tolist()
    assert out[1, 63, 63].tolist() != [0, 0, 0]  # near the corner: clipped, not an error


# ------------------------------------------------------------------------------------------------ read_frames


def test_read_frames_npz_png_folder_and_video(tmp_path: Path) -> None:
    import imageio.v2 as imageio

    frames = np.random.default_rng(1).integers(0, 256, (4, 24, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "f.npz", frames=frames)
    np.testing.assert_array_equal(read_frames(tmp_path / "f.npz"), frames)
    np.savez(tmp_path / "one.npz", frames=frames[0])
    assert read_frames(tmp_path / "one.npz").shape == (1, 24, 32, 3)

    folder = tmp_path / "pngs"
    folder.mkdir()
    imageio.imwrite(folder / "b.png", frames[1])
    imageio.imwrite(folder / "a.png", frames[0])
    rgba = np.concatenate([frames[2], np.full((24, 32, 1), 7, np.uint8)], axis=-1)
    imageio.imwrite(folder / "c.png", rgba)
    imageio.imwrite(folder / "d.png", frames[3, :, :, 0])  # grey
    got = read_frames(folder)
    assert got.shape == (4, 24, 32, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got[:3], frames[:3])  # sorted by name, alpha dropped
    np.testing.assert_array_equal(got[3], np.repeat(frames[3, :, :, :1], 3, axis=-1))

    video = tmp_path / "v.mp4"
    with imageio.get_writer(video, fps=15, codec="libx264", macro_block_size=1) as writer:
        for i in range(6):
            writer.append_data(np.full((24, 32, 3), 40 * i, np.uint8))
    got = read_frames(video)
    assert got.shape == (6, 24, 32, 3) and got.dtype == np.uint8


def _bad_inputs(tmp_path: Path) -> dict[str, Path]:
    import imageio.v2 as imageio

    good = np.zeros((2, 16, 16, 3), np.uint8)
    cases: dict[str, Path] = {}

    def npz(name: str, **arrays: np.ndarray) -> None:
        cases[name] = tmp_path / f"{name}.npz"
        np.savez(cases[name], **arrays)

    cases["missing"] = tmp_path / "nope.npz"
    npz("no_frames", images=good)
    npz("float", frames=good.astype(np.float32))
    npz("grey", frames=good[..., 0])
    npz("rgba", frames=np.zeros((2, 16, 16, 4), np.uint8))
    npz("zero", frames=good[:0])
    npz("tiny", frames=np.zeros((2, 4, 16, 3), np.uint8))
    npz("five_d", frames=good[None])
    np.savez(tmp_path / "whole.npz", frames=np.zeros((50, 16, 16, 3), np.uint8))
    data = (tmp_path / "whole.npz").read_bytes()
    cases["truncated"] = tmp_path / "truncated.npz"
    cases["truncated"].write_bytes(data[: len(data) // 2])
    cases["text_npz"] = tmp_path / "text.npz"
    cases["text_npz"].write_text("not an archive\n")
    cases["npy_as_npz"] = tmp_path / "npy.npz"
    with open(cases["npy_as_npz"], "wb") as f:
        np.save(f, good)
    cases["empty_dir"] = tmp_path / "empty"
    cases["empty_dir"].mkdir()
    cases["bad_png"] = tmp_path / "badpng"
    cases["bad_png"].mkdir()
    imageio.imwrite(cases["bad_png"] / "000.png", good[0])
    (cases["bad_png"] / "001.png").write_text("hello")
    cases["other_file"] = tmp_path / "other"
    cases["other_file"].mkdir()
    imageio.imwrite(cases["other_file"] / "000.png", good[0])
    (cases["other_file"] / "notes.txt").write_text("hello")
    cases["mixed_sizes"] = tmp_path / "mixed"
    cases["mixed_sizes"].mkdir()
    imageio.imwrite(cases["mixed_sizes"] / "000.png", good[0])
    imageio.imwrite(cases["mixed_sizes"] / "001.png", np.zeros((20, 16, 3), np.uint8))
    cases["bad_video"] = tmp_path / "bad.mp4"
    cases["bad_video"].write_bytes(b"garbage" * 20)
    cases["extension"] = tmp_path / "frames.txt"
    cases["extension"].write_text("1 2 3\n")
    return cases


def test_read_frames_rejects_bad_input_with_one_line_naming_the_file(tmp_path: Path) -> None:
    for name, path in _bad_inputs(tmp_path).items():
        with pytest.raises(DataError) as info:
            read_frames(path)
        message = str(info.value)
        assert str(path) in message, (name, message)
        assert "\n" not in message, (name, message)
    with pytest.raises(DataError, match="not RGB images"):
        read_frames(tmp_path / "grey.npz")


# ------------------------------------------------------------------------------------------ keypoints_command


def test_keypoints_command_end_to_end(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_checkpoint(run_dir, step=7)
    frames = np.random.default_rng(2).integers(0, 256, (5, 40, 56, 3), dtype=np.uint8)
    np.savez(tmp_path / "frames.npz", frames=frames)
    out, video = tmp_path / "out" / "kp.npz", tmp_path / "overlay.mp4"

    summary = keypoints_command(run_dir, tmp_path / "frames.npz", out, video=video, video_size=64)
    assert summary["frames"] == 5 and summary["keypoints"] == 2 and summary["checkpoint_step"] == 7
    assert summary["out"] == str(out) and summary["video"] == str(video)
    with np.load(out, allow_pickle=False) as data:
        kp = data["keypoints"]
        assert kp.dtype == np.float32 and kp.shape == (5, 2, 2)
        assert data["image_size"].tolist() == [40, 56]
        assert int(data["model_image_size"]) == MODEL_SIZE and int(data["checkpoint_step"]) == 7
    from kprl.imm.checkpoint import load_imm

    np.testing.assert_allclose(kp, detect(load_imm(run_dir).model, MODEL_SIZE, frames, "cpu"), atol=1e-5)
    assert read_frames(video).shape == (5, 64, 64, 3)

    # Existing outputs are refused (bytes unchanged) unless overwrite=True.
    out.write_bytes(b"old")
    with pytest.raises(ConfigError, match="exists; pass --overwrite"):
        keypoints_command(run_dir, tmp_path / "frames.npz", out)
    assert out.read_bytes() == b"old"
    other = tmp_path / "other.npz"
    with pytest.raises(ConfigError, match="exists; pass --overwrite"):
        keypoints_command(run_dir, tmp_path / "frames.npz", other, video=video)
    assert not other.exists()
    keypoints_command(run_dir / "checkpoints", tmp_path / "frames.npz", out, overwrite=True)
    with np.load(out, allow_pickle=False) as data:
        np.testing.assert_array_equal(data["keypoints"], kp)


def test_keypoints_command_bad_input_writes_nothing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_checkpoint(run_dir)
    np.savez(tmp_path / "grey.npz", frames=np.zeros((3, 16, 16), np.uint8))
    out = tmp_path / "kp.npz"
    with pytest.raises(DataError, match="not RGB images"):
        keypoints_command(run_dir, tmp_path / "grey.npz", out, video=tmp_path / "v.mp4")
    assert not out.exists() and not (tmp_path / "v.mp4").exists()
    out.write_bytes(b"old")
    with pytest.raises(DataError):
        keypoints_command(run_dir, tmp_path / "missing.npz", out, overwrite=True)
    assert out.read_bytes() == b"old"
    with pytest.raises(ConfigError, match=r"\.npz"):
        keypoints_command(run_dir, tmp_path / "grey.npz", tmp_path / "kp.csv")


def test_frames_of_the_training_size_are_centre_cropped_not_resized(tmp_path: Path) -> None:
    model = tiny_model()
    model.keynet = CentroidKeyNet()
    side = MODEL_SIZE + C.CROP_MARGIN
    offset = C.CROP_MARGIN // 2
    dots = [(offset + 3, offset + 5), (side // 2, side // 2), (offset + MODEL_SIZE - 2, offset + 1)]
    frames = dot_frames(side, side, dots)
    frames[:, 1, 1] = 255  # a second dot in the margin, which the centre crop leaves out
    cropped = detect(model, MODEL_SIZE, frames, "cpu", frame_size=side)
    # The model saw the crop: only the inner dot, found exactly, in the input frame's pixels.
    np.testing.assert_allclose(cropped[:, 0], np.array(dots) + 0.5, rtol=0, atol=1e-4)
    resized = detect(model, MODEL_SIZE, frames, "cpu")
    assert np.abs(resized[:, 0] - (np.array(dots) + 0.5)).min() > 1.0  # resized, it sees both dots
    # Another size, or no training size known: resized.
    np.testing.assert_allclose(detect(model, MODEL_SIZE, frames, "cpu", frame_size=side + 2), resized, atol=1e-6)

    run_dir = tmp_path / "run"
    write_checkpoint(run_dir, step=3)  # no frame_size recorded: kprl collect's default, model + crop margin
    np.savez(tmp_path / "frames.npz", frames=frames)
    summary = keypoints_command(run_dir, tmp_path / "frames.npz", tmp_path / "kp.npz")
    assert summary["frames_fed"].startswith("centre crop")
    np.savez(tmp_path / "small.npz", frames=dot_frames(40, 56, dots[:1]))
    assert keypoints_command(run_dir, tmp_path / "small.npz", tmp_path / "kp2.npz")["frames_fed"] == (
        f"resized to {MODEL_SIZE} px"
    )
