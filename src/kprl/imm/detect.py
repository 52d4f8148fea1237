"""Keypoints of a trained IMM model on a user's frames (``kprl keypoints``).

Frames come from an ``.npz`` holding a ``frames`` array (uint8 ``[N, H, W, 3]``), a folder of ``.png`` files or a
video. Frames of the size the model was trained on (a `kprl collect` dataset's, e.g. 100 px for an 84 px model) are
centre-cropped to the model's input, as training and `kprl imm eval` do; other frames whose size differs from the
model's (``model_size`` x ``model_size``) are resized to it with an antialiased bilinear filter
(``align_corners=False``); **non-square frames are allowed and are stretched to the square**. The summary says which
(``frames_fed``). The keypoints are mapped back to the input frames' own pixels, so they are always reported as (x, y)
with x right, y down and the origin at the top-left *corner* of the top-left pixel (the centre of pixel column i,
row j is (i + 0.5, j + 0.5); `kprl.nets.keypoints` conventions). With ``align_corners=False`` resizing maps
pixel-corner coordinates linearly, so the mapping back is an exact scaling by W / model_size and H / model_size
(`scale_to_frame`).

**Agents.** The checkpoint may also be a `kprl train` run (or checkpoint) of a keypoint agent (sac_ae_imm,
sac_imm): then the agent's own keypoints are detected (`detect_agent`). The frames are resized to the agent's render
size (`kprl.config.render_size`, as above), stacked as the env stacks them (each frame with the ``frame_stack - 1``
frames before it, the first frame repeated at the start as at reset), and the agent finds keypoints in the centre
crop it sees (`view_to_frame` maps them back to the input frame's pixels). An agent without keypoints (sac_ae) is
a one-line `ConfigError`.

Bad input (missing or malformed files, frames that are not RGB images) raises `DataError` with a one-line message
naming the file; existing outputs are never replaced unless asked (`ConfigError`), and that is checked before any
work is done. Outputs are written atomically.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import imageio.v2 as imageio
import imageio.v3 as iio
import numpy as np
import torch
import torch.nn.functional as F

from kprl.config import TrainConfig, render_size
from kprl.errors import ConfigError, DataError, first_line
from kprl.imm.checkpoint import load_imm
from kprl.nets.imm import IMM
from kprl.rl.evaluate import load_agent
from kprl.rl.sac import SACAgent
from kprl.runtime.checkpoint import find_checkpoint, load_state
from kprl.runtime.files import atomic_write_bytes
from kprl.runtime.hardware import resolve_device
from kprl.runtime.video import write_video
from kprl.viz.keypoints import disc_radius, draw_points, newest_frame_keypoints, scale_to_frame, view_to_frame

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".gif")
"""Video files `read_frames` reads (through imageio)."""
MIN_FRAME_SIZE = 8
"""Frames smaller than this (either side, in pixels) are refused."""
OVERLAY_FPS = 15
"""Frame rate of the overlay video."""


# ------------------------------------------------------------------------------------------------- reading


def _to_rgb(image: np.ndarray, source: Path) -> np.ndarray:
    """A decoded image [H, W], [H, W, 1|2|3|4] as uint8 [H, W, 3]: grey repeated, alpha dropped."""
    if image.dtype != np.uint8:
        raise DataError(f"{source}: not an 8-bit image (pixel type {image.dtype})")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 2, 3, 4):
        raise DataError(f"{source}: not an image (decoded shape {tuple(image.shape)})")
    if image.shape[-1] in (1, 2):  # grey, grey + alpha
        image = np.repeat(image[..., :1], 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def _check_frames(frames: np.ndarray, source: Path) -> np.ndarray:
    """Validate an array of frames: uint8, [N, H, W, 3] (or one [H, W, 3] image), N >= 1, sides >= 8 px."""
    if frames.dtype != np.uint8:
        raise DataError(f"{source}: frames must be uint8 (0..255), got {frames.dtype}")
    if frames.ndim == 3 and frames.shape[-1] == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise DataError(
            f"{source}: frames are not RGB images (shape {tuple(frames.shape)}, expected [N, H, W, 3])"
        )
    if frames.shape[0] == 0:
        raise DataError(f"{source}: holds no frames")
    height, width = frames.shape[1:3]
    if min(height, width) < MIN_FRAME_SIZE:
        raise DataError(
            f"{source}: frames of {height}x{width} px are too small (at least {MIN_FRAME_SIZE} px)"
        )
    return frames


def _read_npz(path: Path) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or first_line(exc)})") from exc
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):  # zip local file header / empty archive
        raise DataError(f"{path}: not an .npz archive")
    try:
        data = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as exc:
        raise DataError(f"{path}: damaged .npz archive ({first_line(exc)})") from exc
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: not an .npz archive")
    try:
        if "frames" not in data.files:
            names = ", ".join(data.files) or "nothing"
            raise DataError(f"{path}: has no `frames` array (it holds {names})")
        return np.asarray(data["frames"])
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, KeyError) as exc:
        raise DataError(f"{path}: cannot read `frames` ({first_line(exc)})") from exc
    finally:
        data.close()


def _read_png_folder(path: Path) -> np.ndarray:
    entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    others = [p for p in entries if p.suffix.lower() != ".png"]
    if others:
        raise DataError(f"{others[0]}: not a .png file (a frame folder must hold only .png frames)")
    if not entries:
        raise DataError(f"{path}: folder holds no .png frames")
    images = []
    for file in entries:
        if not file.is_file():
            raise DataError(f"{file}: not a file")
        try:
            image = np.asarray(iio.imread(file, plugin="pillow"))
        except Exception as exc:  # imageio/Pillow raise many types for non-images
            raise DataError(f"{file}: not a readable PNG image ({first_line(exc)})") from exc
        image = _to_rgb(image, file)
        if images and image.shape != images[0].shape:
            raise DataError(
                f"{file}: is {image.shape[0]}x{image.shape[1]} px but {entries[0].name} is "
                f"{images[0].shape[0]}x{images[0].shape[1]} px (all frames must have one size)"
            )
        images.append(image)
    return np.stack(images)


def _read_video(path: Path) -> np.ndarray:
    images: list[np.ndarray] = []
    try:
        with imageio.get_reader(path) as reader:
            for frame in reader:
                image = _to_rgb(np.asarray(frame), path)
                if images and image.shape != images[0].shape:
                    raise DataError(f"{path}: frames change size within the video")
                images.append(image)
    except DataError:
        raise
    except Exception as exc:  # imageio/ffmpeg raise many types for corrupt videos
        raise DataError(f"{path}: cannot read video ({first_line(exc)})") from exc
    if not images:
        raise DataError(f"{path}: holds no frames")
    return np.stack(images)


def read_frames(path: Path) -> np.ndarray:
    """uint8 [N, H, W, 3] from an .npz with a `frames` array, a folder of .png files (sorted by name), or a video
    (.mp4/.avi/.mov/.mkv/.gif via imageio).

    An .npz may hold a single [H, W, 3] image (read as N = 1). PNGs with alpha lose it; grey PNGs are repeated to
    RGB. Anything else (missing path, unknown extension, corrupt file, non-uint8 or non-RGB frames, no frames,
    frames under 8 px) raises a one-line `DataError` naming the file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        frames = _read_png_folder(path)
    elif path.suffix.lower() == ".npz":
        frames = _read_npz(path)
    elif path.suffix.lower() in VIDEO_SUFFIXES:
        frames = _read_video(path)
    else:
        raise DataError(
            f"{path}: unsupported frame file (expected .npz, a folder of .png files, or a video: "
            f"{', '.join(VIDEO_SUFFIXES)})"
        )
    return _check_frames(frames, path)


# ----------------------------------------------------------------------------------------------- detecting


def _resize(frames: np.ndarray, height: int, width: int, device: torch.device) -> torch.Tensor:
    """uint8 HWC frames [B, H, W, 3] -> channels-first [B, 3, height, width] on ``device``: the uint8 frames
    themselves when the size already matches, else float 0..255 resized (bilinear, antialiased,
    align_corners=False)."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2)
    if tuple(x.shape[-2:]) == (height, width):
        return x
    x = F.interpolate(x.float(), size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return x.clamp_(0.0, 255.0)


def fits_by_crop(height: int, width: int, model_size: int, frame_size: int) -> bool:
    """Whether frames of ``height`` x ``width`` are the frames a standalone IMM was trained on (square, of the
    dataset's ``frame_size``, larger than the model's input): then the model sees their centre crop, as in training
    and `kprl imm eval`; any other frame is resized to the model's input."""
    return height == width == frame_size and frame_size > model_size


@torch.no_grad()
def detect(
    model: IMM, model_size: int, frames: np.ndarray, device: str | torch.device, batch_size: int = 256,
    frame_size: int | None = None,
) -> np.ndarray:  # fmt: skip
    """float32 [N, K, 2] pixel (x, y) in the input frames' own coordinates.

    ``frames`` are uint8 [N, H, W, 3]. Frames of the training ``frame_size`` (:func:`fits_by_crop`) are centre-
    cropped to ``model_size`` and the keypoints shifted back by the crop offset; other frames whose size is not
    ``model_size`` x ``model_size`` are resized to it (non-square frames are stretched to the square) and the
    keypoints scaled back (`scale_to_frame`). The model runs in eval mode (its previous mode is restored), in
    batches of ``batch_size`` frames."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [N, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = torch.device(device)
    height, width = int(frames.shape[1]), int(frames.shape[2])
    crop = frame_size is not None and fits_by_crop(height, width, model_size, frame_size)
    offset = (height - model_size) // 2  # `kprl.imm.pairs.centre_offset`
    was_training = model.training
    model.eval()
    out: list[np.ndarray] = []
    try:
        for start in range(0, len(frames), batch_size):
            chunk = frames[start : start + batch_size]
            if crop:
                x = _resize(chunk[:, offset : offset + model_size, offset : offset + model_size], model_size,
                            model_size, dev)  # fmt: skip
                out.append(model.keypoint_pixels(x).cpu().numpy() + offset)
            else:
                x = _resize(chunk, model_size, model_size, dev)
                out.append(scale_to_frame(model.keypoint_pixels(x).cpu().numpy(), model_size, height, width))
    finally:
        model.train(was_training)
    if not out:
        return np.zeros((0, model.cfg.keypoints, 2), np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)


def frame_stacks(frames: torch.Tensor, frame_stack: int, start: int, stop: int) -> torch.Tensor:
    """Observation stacks [stop - start, frame_stack * C, H, W] of frames ``start..stop-1`` of a sequence
    [N, C, H, W]: each frame with the ``frame_stack - 1`` before it, oldest first, the first frame repeated where
    the sequence has none (as `kprl.envs.dmc.DMCEnv.reset` fills the stack)."""
    index = torch.arange(start, stop)[:, None] + torch.arange(1 - frame_stack, 1)[None, :]
    stacked = frames[index.clamp_(min=0)]  # [B, S, C, H, W]
    return stacked.flatten(1, 2)


@torch.no_grad()
def detect_agent(agent: SACAgent, cfg: TrainConfig, frames: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """float32 [N, K, 2] pixel (x, y) of a keypoint agent's keypoints in the input frames' own coordinates.

    ``frames`` uint8 [N, H, W, 3] are consecutive frames of one episode: they are resized to the agent's render
    size (`kprl.config.render_size`; bilinear, antialiased, rounded to uint8 as the env stores frames), stacked
    (`frame_stacks`, the first frame repeated at the start), and `SACAgent.keypoints` finds the keypoints in the
    centre crop the agent sees; `view_to_frame` maps them back. With per-frame keypoints only the newest frame's
    are returned (`newest_frame_keypoints`). A ConfigError for an agent without keypoints."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [N, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if agent.keypoint_head_index is None:
        raise ConfigError(f"agent {cfg.agent} has no keypoints (keypoint agents: sac_ae_imm, sac_imm)")
    render = render_size(cfg)
    view = agent.augmentation.out_size
    stack = cfg.env.frame_stack
    height, width = int(frames.shape[1]), int(frames.shape[2])
    was_training = agent.critic.training
    agent.train(False)
    out: list[np.ndarray] = []
    try:
        for start in range(0, len(frames), batch_size):
            stop = min(start + batch_size, len(frames))
            first = max(0, start - stack + 1)  # the frames the first stack of the batch needs
            x = _resize(frames[first:stop], render, render, torch.device("cpu"))
            x = x.round().clamp(0, 255).to(torch.uint8) if x.dtype != torch.uint8 else x
            obs = frame_stacks(x, stack, start - first, stop - first)
            coords = agent.keypoints(obs)
            assert coords is not None
            coords = newest_frame_keypoints(agent, coords)
            out.append(view_to_frame(coords, view, render, height, width))
    finally:
        agent.train(was_training)
    return np.concatenate(out).astype(np.float32, copy=False)


def is_agent_checkpoint(path: Path) -> bool:
    """Whether ``path`` resolves to a checkpoint of a `kprl train` agent (its state names ``agent_name``)."""
    if not path.exists():
        return False
    ckpt = find_checkpoint(path)
    if ckpt is None:
        return False
    return "agent_name" in load_state(ckpt, map_location="cpu")


# ------------------------------------------------------------------------------------------------- drawing


def draw_keypoints(frames: np.ndarray, keypoints: np.ndarray, size: int) -> np.ndarray:
    """Frames [N,H,W,3] with keypoints drawn as coloured discs (one colour per keypoint), resized to size x size
    (for the overlay video).

    ``keypoints`` [N, K, 2] are pixel (x, y) of the input frames (pixel-corner convention); each becomes a filled
    disc of radius max(2, size / 64) in the keypoint's colour with a one-pixel dark rim (`draw_points`).
    Non-finite keypoints are skipped. Returns uint8 [N, size, size, 3]."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [N, H, W, 3], got shape {tuple(frames.shape)}")
    if keypoints.ndim != 3 or keypoints.shape[-1] != 2 or len(keypoints) != len(frames):
        raise ValueError(f"keypoints must be [{len(frames)}, K, 2], got shape {tuple(keypoints.shape)}")
    height, width = int(frames.shape[1]), int(frames.shape[2])
    resized = _resize(frames.astype(np.uint8, copy=False), size, size, torch.device("cpu"))
    images = resized.float().round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    points = np.asarray(keypoints, dtype=np.float64) * np.array([size / width, size / height])
    radius = disc_radius(size)
    for n in range(len(images)):
        draw_points(images[n], points[n], radius)
    return images


class _OverlayFrames(Sequence[np.ndarray]):
    """The overlay video's frames, drawn one at a time as the writer asks for them (bounded memory)."""

    def __init__(self, frames: np.ndarray, keypoints: np.ndarray, size: int) -> None:
        self.frames, self.keypoints, self.size = frames, keypoints, size

    def __len__(self) -> int:
        return len(self.frames)

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[np.ndarray]: ...
    def __getitem__(self, index: int | slice) -> np.ndarray | Sequence[np.ndarray]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        i = index % len(self)
        return draw_keypoints(self.frames[i : i + 1], self.keypoints[i : i + 1], self.size)[0]

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]


# ------------------------------------------------------------------------------------------------- command


def _check_output(path: Path, suffixes: tuple[str, ...], option: str, overwrite: bool) -> None:
    if path.suffix.lower() not in suffixes:
        raise ConfigError(f"{option} {path} must end with {' or '.join(suffixes)}")
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a folder")
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} exists; pass --overwrite to replace it")


def keypoints_command(
    checkpoint: Path,
    frames: Path,
    out: Path,
    video: Path | None = None,
    device: str = "cpu",
    overwrite: bool = False,
    video_size: int = 256,
) -> dict[str, Any]:
    """What `kprl keypoints` does; returns a JSON-able summary (n frames, K, out, video).

    Loads the IMM model from ``checkpoint`` (a run dir, checkpoint dir or state.pt of `kprl imm train`), or the
    agent of a `kprl train` run of a keypoint agent (sac_ae_imm, sac_imm: its run dir, checkpoint dir or state.pt;
    `kprl.rl.evaluate.load_agent`), reads ``frames`` (`read_frames`), detects keypoints (`detect`, or `detect_agent`
    on frame stacks of consecutive frames) and writes ``out`` (.npz, atomically) holding ``keypoints`` float32
    [N, K, 2] (pixel x, y of the input frames), ``image_size`` [H, W], ``model_image_size`` (the side frames are
    resized to: the IMM's input, or the agent's render size) and ``checkpoint_step`` (update step, or env step of
    an agent); with ``video``, also an mp4 of the frames (``video_size`` px square) with the keypoints drawn.
    Existing outputs are refused unless ``overwrite`` (checked before any work); an agent without keypoints
    (sac_ae) is a one-line ConfigError."""
    checkpoint, frames, out = Path(checkpoint), Path(frames), Path(out)
    video = Path(video) if video is not None else None
    _check_output(out, (".npz",), "--out", overwrite)
    if video is not None:
        _check_output(video, (".mp4",), "--video", overwrite)
        if video_size < MIN_FRAME_SIZE:
            raise ConfigError(f"--video-size must be >= {MIN_FRAME_SIZE}, got {video_size}")
    if frames.exists() and out.exists() and out.resolve() == frames.resolve():
        raise ConfigError(f"--out {out} is the frame file itself; choose another name")

    dev = resolve_device(device)
    agent_name: str | None = None
    fit: str | None = None  # how the frames were brought to the model's input
    if is_agent_checkpoint(checkpoint):

        agent, cfg, meta = load_agent(checkpoint=checkpoint, device=str(dev))
        if agent.keypoint_head_index is None:
            raise ConfigError(
                f"{checkpoint} holds a {cfg.agent} agent, which has no keypoints "
                "(kprl keypoints takes sac_ae_imm / sac_imm runs or kprl imm train runs)"
            )
        agent_name, model_size = cfg.agent, render_size(cfg)
        step, ckpt = int(meta["env_step"]), Path(meta["checkpoint"])
        images = read_frames(frames)
        keypoints = detect_agent(agent, cfg, images)
    else:
        loaded = load_imm(checkpoint, dev)
        model_size, step, ckpt = loaded.image_size, loaded.step, loaded.checkpoint
        images = read_frames(frames)
        keypoints = detect(loaded.model, loaded.image_size, images, dev, frame_size=loaded.frame_size)
        if fits_by_crop(int(images.shape[1]), int(images.shape[2]), model_size, loaded.frame_size):
            fit = f"centre crop of {model_size} px, as in training"

    height, width = int(images.shape[1]), int(images.shape[2])
    if agent_name is not None:
        fit = f"resized to the agent's {model_size} px render, then its own centre crop"
    elif fit is None:
        fit = "as they are" if (height, width) == (model_size, model_size) else f"resized to {model_size} px"
    buffer = io.BytesIO()
    np.savez(
        buffer,
        keypoints=keypoints.astype(np.float32, copy=False),
        image_size=np.array([height, width], dtype=np.int64),
        model_image_size=np.array(model_size, dtype=np.int64),
        checkpoint_step=np.array(step, dtype=np.int64),
    )
    atomic_write_bytes(out, buffer.getvalue())
    if video is not None:
        write_video(video, _OverlayFrames(images, keypoints, video_size), fps=OVERLAY_FPS)
    return {
        "frames": int(len(images)),
        "keypoints": int(keypoints.shape[1]),
        "image_size": [height, width],
        "model_image_size": model_size,
        "frames_fed": fit,
        "checkpoint": str(ckpt),
        "checkpoint_step": step,
        **({"agent": agent_name} if agent_name is not None else {}),
        "out": str(out),
        "video": str(video) if video is not None else None,
    }
