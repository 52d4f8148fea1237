"""The frame dataset format (``kprl-frames`` version 1): write, read and validate.

A dataset is a directory written by ``kprl collect``::

    OUT/
      meta.json          settings of the collection, written (atomically) before any shard
      shard_00000.npz    episodes 0 .. E-1      (E = episodes_per_shard)
      shard_00001.npz    episodes E .. 2E-1
      ...                the last shard may hold fewer than E episodes

``meta.json`` holds ``{"format": "kprl-frames", "version": 1, "task", "image_size", "camera_id",
"action_repeat", "action_dim", "landmark_names", "policy" ("random" or the run directory of a trained agent),
"policy_checkpoint" (env step of the agent's checkpoint, null for random), "seed", "episodes_per_shard",
"time_limit" (null = the task's own), "env_steps_requested"}``.

Every shard holds **whole episodes**; with N frames in the shard its arrays are:

==============  ===============  ================================================================================
``frames``      uint8 [N,H,W,3]  single RGB frames as rendered (H = W = image_size, HWC), one per agent step,
                                 including each episode's reset frame
``landmarks``   float32 [N,L,2]  ground-truth (x, y) pixel coordinates of ``landmark_names`` in the frame: x
                                 right, y down, origin at the top-left *corner* of the top-left pixel (the
                                 convention of `kprl.envs.dmc`); points may lie outside the frame
``actions``     float32 [N,A]    the action in [-1, 1]^A that led to this frame (zeros on an episode's first frame)
``rewards``     float32 [N]      reward received on arriving at this frame, summed over the action repeat (0 on
                                 the first frame)
``episode``     int64 [N]        global episode index (shard k holds episodes k*E .. k*E+E-1)
``step``        int64 [N]        agent step within the episode (0 = the reset frame)
==============  ===============  ================================================================================

Why npz shards: numpy reads and writes them with no extra dependency; they are pickle-free (every array is a
plain ``.npy`` member, loaded with ``np.load(allow_pickle=False)``, so opening a dataset runs no code from it);
each shard is written to bytes first and renamed into place (`kprl.runtime.checkpoint.atomic_write_bytes`), so a killed
collection leaves only complete shards and resumes after the last one; and members are deflate-compressed,
which suits rendered frames with large flat areas: a cartpole collection at 100 px shrinks about 33x (random
policy, 4 episodes = 504 frames: 15.1 MB of arrays in 0.45 MB of shards; compressing costs ~0.2 ms a frame,
negligible next to rendering). Members are written with a fixed timestamp, so equal data gives byte-identical
shards.

`load_dataset` validates everything before handing arrays out and turns every problem (missing directory,
unreadable ``meta.json``, no shards, truncated or corrupt shard, missing array, wrong dtype or shape, an episode
stored twice) into a one-line `DataError` naming the file.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from kprl.errors import DataError
from kprl.runtime.files import atomic_write_bytes

FORMAT = "kprl-frames"
VERSION = 1
META_FILE = "meta.json"
SHARD_PATTERN = re.compile(r"^shard_(\d+)\.npz$")

# Array name -> dtype; the shapes depend on the meta data (see `validate_arrays`).
ARRAYS: dict[str, np.dtype] = {
    "frames": np.dtype(np.uint8),
    "landmarks": np.dtype(np.float32),
    "actions": np.dtype(np.float32),
    "rewards": np.dtype(np.float32),
    "episode": np.dtype(np.int64),
    "step": np.dtype(np.int64),
}
# meta.json keys that readers need.
META_KEYS = ("image_size", "action_dim", "landmark_names")

# Errors that a truncated or corrupt zip / npy member raises while being read.
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, KeyError)


def shard_name(index: int) -> str:
    """File name of shard ``index``: ``shard_00000.npz``, ``shard_00001.npz``, ..."""
    return f"shard_{index:05d}.npz"


def shard_files(path: Path) -> list[tuple[int, Path]]:
    """(number, file) of the shards in dataset directory ``path``, ascending by number (gaps allowed)."""
    found = []
    for child in Path(path).iterdir():
        match = SHARD_PATTERN.match(child.name)
        if match and child.is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


@dataclass
class FrameDataset:
    """A whole frame dataset in memory: the arrays of all its shards concatenated in shard order."""

    path: Path
    meta: dict[str, Any]
    frames: np.ndarray
    """uint8 [N, H, W, 3] RGB frames."""
    landmarks: np.ndarray
    """float32 [N, L, 2] (x, y) pixel coordinates of the landmarks in each frame."""
    actions: np.ndarray
    """float32 [N, A] action that led to each frame (zeros on first frames)."""
    rewards: np.ndarray
    """float32 [N] reward received on arriving at each frame (0 on first frames)."""
    episode: np.ndarray
    """int64 [N] global episode index of each frame."""
    step: np.ndarray
    """int64 [N] agent step of each frame within its episode (0 = reset frame)."""

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def image_size(self) -> int:
        """Side in pixels of the square frames."""
        return int(self.meta["image_size"])

    @property
    def landmark_names(self) -> list[str]:
        """Names of the L landmarks, in the order of ``landmarks[:, l]``."""
        return [str(name) for name in self.meta["landmark_names"]]

    def episode_ids(self) -> np.ndarray:
        """Sorted unique episode ids (int64)."""
        return np.unique(self.episode)

    def episode_index(self) -> dict[int, np.ndarray]:
        """Episode id -> indices (int64) of its frames, in step order."""
        order = np.lexsort((self.step, self.episode))
        ids, starts = np.unique(self.episode[order], return_index=True)
        return {int(e): idx for e, idx in zip(ids, np.split(order, starts[1:]), strict=True)}


class _ArraySpec(NamedTuple):
    """Shape and dtype of an array read from its npy header, without loading the data."""

    shape: tuple[int, ...]
    dtype: np.dtype


def _expected_shapes(meta: Mapping[str, Any], n: int) -> dict[str, tuple[int, ...]]:
    size = int(meta["image_size"])
    return {
        "frames": (n, size, size, 3),
        "landmarks": (n, len(meta["landmark_names"]), 2),
        "actions": (n, int(meta["action_dim"])),
        "rewards": (n,),
        "episode": (n,),
        "step": (n,),
    }


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def validate_arrays(arrays: Mapping[str, Any], meta: Mapping[str, Any], where: str) -> None:
    """Check that ``arrays`` are a valid shard for ``meta``; a one-line `DataError` starting with ``where``.

    Every array of the format must be present with its dtype; frames must be [N, H, W, 3] with H = W =
    ``meta["image_size"]``, landmarks [N, len(landmark_names), 2], actions [N, action_dim], and the 1-D arrays
    of length N. Anything with ``.shape`` and ``.dtype`` is accepted as an array (so headers can be checked
    before the data are read). Extra arrays are ignored.
    """
    missing = [name for name in ARRAYS if name not in arrays]
    if missing:
        raise DataError(f"{where}: missing array{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    for name, dtype in ARRAYS.items():
        if np.dtype(arrays[name].dtype) != dtype:
            raise DataError(f"{where}: array {name!r} has dtype {arrays[name].dtype}, expected {dtype}")
    frames_shape = tuple(arrays["frames"].shape)
    n = frames_shape[0] if frames_shape else 0
    for name, shape in _expected_shapes(meta, n).items():
        actual = tuple(arrays[name].shape)
        if actual != shape:
            raise DataError(
                f"{where}: array {name!r} has shape {_shape_text(actual)}, expected {_shape_text(shape)}"
            )


def encode_shard(arrays: Mapping[str, np.ndarray]) -> bytes:
    """The bytes of a compressed npz holding ``arrays`` (what `np.savez_compressed` writes, byte-reproducible).

    Members get a fixed timestamp instead of the current time, so equal arrays always give equal bytes.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, mode="w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
        for name, value in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
    return buffer.getvalue()


def write_shard(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as a compressed, pickle-free npz shard at ``path`` atomically (temp file + rename)."""
    atomic_write_bytes(Path(path), encode_shard(arrays))


def read_meta(path: Path) -> dict[str, Any]:
    """Read and check ``meta.json`` of dataset directory ``path``; a one-line `DataError` when unusable."""
    file = Path(path) / META_FILE
    if not file.is_file():
        raise DataError(
            f"{file}: not found; {path} is not a kprl frame dataset (write one with `kprl collect`)"
        )
    try:
        meta = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{file}: not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise DataError(f"{file}: format is {found!r}, expected {FORMAT!r}")
    if meta.get("version") != VERSION:
        raise DataError(f"{file}: format version {meta.get('version')!r}, this kprl reads version {VERSION}")
    missing = [key for key in META_KEYS if key not in meta]
    if missing:
        raise DataError(f"{file}: missing {', '.join(missing)}")
    return meta


def _read_headers(file: Path) -> dict[str, _ArraySpec]:
    """Shape and dtype of every ``.npy`` member of an npz, reading only the headers."""
    specs = {}
    with zipfile.ZipFile(file) as zf:
        for member in zf.namelist():
            if not member.endswith(".npy"):
                continue
            with zf.open(member) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            specs[member[: -len(".npy")]] = _ArraySpec(tuple(shape), np.dtype(dtype))
    return specs


def read_shard(
    file: Path, meta: Mapping[str, Any], names: tuple[str, ...] = tuple(ARRAYS)
) -> dict[str, np.ndarray]:
    """Read the arrays ``names`` of one shard after validating all its headers against ``meta``.

    Raises a one-line `DataError` naming ``file`` when it is truncated, corrupt or holds wrong arrays.
    """
    try:
        validate_arrays(_read_headers(file), meta, str(file))
        with np.load(file, allow_pickle=False) as data:
            return {name: data[name] for name in names}
    except DataError:
        raise
    except _READ_ERRORS as exc:
        reason = "corrupt compressed data" if isinstance(exc, zlib.error) else f"{type(exc).__name__}: {exc}"
        raise DataError(f"{file}: cannot read shard ({reason})") from exc


def load_dataset(path: Path) -> FrameDataset:
    """Load every shard of the dataset at ``path`` into memory (shard order) after validating all of them.

    Headers and the small arrays of all shards are checked first, then the frames are read straight into one
    preallocated array (peak memory: the dataset plus one shard). Raises a one-line `DataError` naming the file
    and the problem.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such dataset directory")
    if not path.is_dir():
        raise DataError(f"{path}: not a directory")
    meta = read_meta(path)
    shards = shard_files(path)
    if not shards:
        raise DataError(f"{path}: empty dataset (no shard_*.npz files)")
    small = tuple(name for name in ARRAYS if name != "frames")
    parts: list[dict[str, np.ndarray]] = []
    owner: dict[int, Path] = {}
    for _, file in shards:
        arrays = read_shard(file, meta, small)
        for e in np.unique(arrays["episode"]).tolist():
            if e in owner:
                where = "twice in" if owner[e] == file else f"in {owner[e].name} and"
                raise DataError(f"{file}: episode {e} is stored {where} {file.name}")
            owner[e] = file
        parts.append(arrays)
    total = sum(len(p["step"]) for p in parts)
    size = int(meta["image_size"])
    frames = np.empty((total, size, size, 3), dtype=np.uint8)
    start = 0
    for (_, file), part in zip(shards, parts, strict=True):
        stop = start + len(part["step"])
        frames[start:stop] = read_shard(file, meta, ("frames",))["frames"]
        start = stop
    columns = {name: np.concatenate([p[name] for p in parts]) for name in small}
    return FrameDataset(path=path, meta=meta, frames=frames, **columns)
