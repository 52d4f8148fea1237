"""Frame-once replay buffer with episode-aware frame stacking.

Each rendered frame is stored exactly once (uint8 ``[C, H, W]``); observation stacks of ``frame_stack`` frames are
assembled when a batch is sampled. Memory is therefore about one frame per transition, instead of the two full
stacks per transition (``obs`` and ``next_obs``, ≈127 KB at 9×84×84) that pytorch_sac_ae stores.

Frames are addressed by a *global* index ``g`` (0, 1, 2, … in the order they were added); frame ``g`` lives in slot
``g % capacity``. The buffer holds the frames ``[max(0, total - capacity), total)``. Next to each frame it stores the
global index of the first frame of its episode, which is all that is needed to

* clamp a stack at the start of its episode (the first frame is repeated, as frame stacking does on reset),
* tell whether two frames belong to the same episode (episodes are contiguous runs of global indices), and
* decide whether everything a transition needs is still stored after the circular buffer wrapped around.

The action, reward and discount of the transition that *leaves* frame ``g`` are stored in slot ``g % capacity`` too;
the last frame of an episode has no transition, so it is never the ``obs`` of a sample (only a ``next_obs`` or
``target_obs``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import torch

__all__ = ["Batch", "FrameReplay"]

# Rejection sampling draws this many rounds of candidates before falling back to enumerating every valid index
# (which is exact but O(capacity)); with ordinary episode lengths the first round nearly always suffices.
_REJECTION_ROUNDS = 4

# Version of the layout written by state_dict(); bump it when the set or meaning of the arrays changes.
_FORMAT_VERSION = 1


class Batch(NamedTuple):
    """A sampled batch of transitions; observation tensors are uint8 (the agent converts them to float)."""

    obs: torch.Tensor
    """uint8 ``[B, C*S, H, W]``: ``S`` stacked frames, oldest first."""
    action: torch.Tensor
    """float32 ``[B, A]``: the action taken from ``obs``."""
    reward: torch.Tensor
    """float32 ``[B, 1]``."""
    discount: torch.Tensor
    """float32 ``[B, 1]``: environment discount (0 at termination, 1 otherwise, time limits included); the agent
    multiplies it by gamma."""
    next_obs: torch.Tensor
    """uint8 ``[B, C*S, H, W]``: the stack one step after ``obs``."""
    target_obs: torch.Tensor | None
    """uint8 ``[B, C*S, H, W]``: the stack ``target_offset`` steps after ``obs`` in the same episode (the IMM
    source/target pair), or None when no offset was asked for."""


class FrameReplay:
    """Circular replay buffer that stores each frame once and stacks frames at sampling time.

    Args:
        capacity: number of stored frames (one per environment transition plus one initial frame per episode).
            When full, the oldest frames are overwritten.
        frame_shape: shape of one frame, ``(C, H, W)`` (channels first, uint8).
        action_dim: size of the action vector.
        frame_stack: number of consecutive frames in an observation.

    Usage: call :meth:`add_first` with the frame returned by ``reset()``, then :meth:`add` once per step with the
    action taken, the reward, the discount and the frame observed after the step.
    """

    def __init__(
        self, capacity: int, frame_shape: tuple[int, int, int], action_dim: int, frame_stack: int = 3
    ) -> None:
        if capacity < 2:
            raise ValueError(f"capacity must be at least 2 frames (one transition), got {capacity}")
        if len(frame_shape) != 3 or min(frame_shape) < 1:
            raise ValueError(f"frame_shape must be (C, H, W) with positive sizes, got {frame_shape}")
        if action_dim < 1:
            raise ValueError(f"action_dim must be positive, got {action_dim}")
        if frame_stack < 1:
            raise ValueError(f"frame_stack must be positive, got {frame_stack}")
        self.capacity = int(capacity)
        self.frame_shape: tuple[int, int, int] = (
            int(frame_shape[0]),
            int(frame_shape[1]),
            int(frame_shape[2]),
        )
        self.action_dim = int(action_dim)
        self.frame_stack = int(frame_stack)

        # np.zeros maps untouched pages lazily, so a large, mostly empty buffer costs little resident memory.
        self._frames = np.zeros((self.capacity, *self.frame_shape), dtype=np.uint8)
        self._actions = np.zeros((self.capacity, self.action_dim), dtype=np.float32)
        self._rewards = np.zeros((self.capacity,), dtype=np.float32)
        self._discounts = np.zeros((self.capacity,), dtype=np.float32)
        # Global index of the episode's first frame: survives that frame being overwritten, and differs between
        # any two episodes, so it serves both as episode id and as the clamp for stacks at an episode start.
        self._ep_start = np.zeros((self.capacity,), dtype=np.int64)
        self._reset_counters()

    def _reset_counters(self) -> None:
        self._total = 0  # frames ever added (global index of the next frame)
        self._cur_ep_start = -1  # first frame of the episode being recorded; -1 before any add_first()
        self._len_cache: tuple[int, int] | None = None  # (total, len) so len() is O(1) between adds

    # ------------------------------------------------------------------ adding

    def _check_frame(self, frame: np.ndarray) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.shape != self.frame_shape:
            raise ValueError(f"frame has shape {frame.shape}, expected {self.frame_shape}")
        if frame.dtype != np.uint8:
            # Casting float images silently would store garbage (0..1 floats truncate to 0), so refuse instead.
            raise TypeError(f"frame must be uint8, got {frame.dtype}")
        return frame

    def _write_frame(self, frame: np.ndarray) -> None:
        slot = self._total % self.capacity
        self._frames[slot] = frame
        self._ep_start[slot] = self._cur_ep_start
        self._total += 1
        self._len_cache = None

    def add_first(self, frame: np.ndarray) -> None:
        """Store the first frame of a new episode (the frame returned by ``reset()``).

        An episode that was still open simply ends here: its last frame becomes a terminal-less episode end (no
        transition leaves it), which is what a time-limit truncation looks like.
        """
        frame = self._check_frame(frame)
        self._cur_ep_start = self._total
        self._write_frame(frame)

    def add(self, action: np.ndarray, reward: float, discount: float, next_frame: np.ndarray) -> None:
        """Store one transition from the last stored frame: the action taken, its reward and discount, and the
        frame observed afterwards."""
        if self._cur_ep_start < 0:
            raise RuntimeError("add() called before add_first(): start an episode with add_first(frame)")
        action = np.asarray(action, dtype=np.float32)
        if action.size != self.action_dim:
            raise ValueError(f"action has {action.size} elements, expected action_dim={self.action_dim}")
        next_frame = self._check_frame(next_frame)
        # The transition's data belongs to the frame it leaves (the last one written).
        slot = (self._total - 1) % self.capacity
        self._actions[slot] = action.reshape(self.action_dim)
        self._rewards[slot] = reward
        self._discounts[slot] = discount
        self._write_frame(next_frame)

    # ------------------------------------------------------------------ validity

    def _stored_range(self) -> tuple[int, int]:
        """Global indices ``[lo, hi)`` of the frames currently held."""
        return max(0, self._total - self.capacity), self._total

    def _valid(self, g: np.ndarray) -> np.ndarray:
        """Mask of global indices ``g`` that are the ``obs`` of a sampleable transition: its next frame is in the
        same episode and every frame of its obs stack is still stored. (A later IMM target is clamped to its
        episode, `_targets`, so it never makes a transition unsampleable.)

        Requires ``lo <= g`` (callers draw from the stored range).
        """
        lo, hi = self._stored_range()
        following = g + 1
        in_range = following < hi
        start = self._ep_start[g % self.capacity]
        same_episode = self._ep_start[following % self.capacity] == start
        stack_first = np.maximum(start, g - (self.frame_stack - 1))
        return in_range & same_episode & (stack_first >= lo)

    def __len__(self) -> int:
        """Number of sampleable transitions currently stored (those with a next frame in the same episode whose
        frame stacks are fully stored)."""
        if self._len_cache is None or self._len_cache[0] != self._total:
            lo, hi = self._stored_range()
            count = int(np.count_nonzero(self._valid(np.arange(lo, hi)))) if hi > lo else 0
            self._len_cache = (self._total, count)
        return self._len_cache[1]

    # ------------------------------------------------------------------ sampling

    def _sample_indices(self, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``batch_size`` global indices i.i.d. uniformly over the sampleable transitions."""
        lo, hi = self._stored_range()
        if hi <= lo:
            raise ValueError("cannot sample from an empty replay buffer")
        # Rejection sampling: uniform candidates over the stored range, keep the valid ones. Each kept index is
        # uniform over the valid set, and the cost is O(batch) rather than O(capacity).
        parts: list[np.ndarray] = []
        needed = batch_size
        for _ in range(_REJECTION_ROUNDS):
            candidates = rng.integers(lo, hi, size=2 * needed + 16)
            kept = candidates[self._valid(candidates)][:needed]
            parts.append(kept)
            needed -= kept.size
            if needed == 0:
                break
        if needed > 0:
            # Transitions are rare among the stored frames (e.g. many one-frame episodes): enumerate them exactly.
            valid = np.flatnonzero(self._valid(np.arange(lo, hi))) + lo
            if valid.size == 0:
                raise ValueError(
                    f"no valid transitions to sample ({hi - lo} frames stored, frame_stack={self.frame_stack}): "
                    "add more data first"
                )
            parts.append(valid[rng.integers(0, valid.size, size=needed)])
        return np.concatenate(parts)

    def _targets(self, g: np.ndarray, offset: int) -> np.ndarray:
        """Global index of the frame ``offset`` steps after each obs frame ``g``, clamped to the last stored frame
        of its episode (``g + 1`` always is one: ``g`` is the obs of a sampleable transition)."""
        _, hi = self._stored_range()
        start = self._ep_start[g % self.capacity]
        target = g + 1
        for step in range(2, offset + 1):
            # Episodes are contiguous, so the frames of g's episode after g form one run: the first frame outside it
            # ends the search for that sample.
            later = g + step
            inside = (later < hi) & (self._ep_start[later % self.capacity] == start) & (target == later - 1)
            target = np.where(inside, later, target)
        return target

    def _stacks(self, last: np.ndarray, ep_start: np.ndarray) -> np.ndarray:
        """Gather ``[B, C*S, H, W]`` frame stacks ending at global indices ``last``, repeating the episode's first
        frame where the stack would reach before it."""
        steps = np.arange(-(self.frame_stack - 1), 1)
        idx = np.maximum(last[:, None] + steps, ep_start[:, None]) % self.capacity
        frames = self._frames[idx]  # [B, S, C, H, W], one contiguous copy
        c, h, w = self.frame_shape
        return frames.reshape(len(last), self.frame_stack * c, h, w)

    def sample(
        self,
        batch_size: int,
        rng: np.random.Generator,
        target_offset: int | None = None,
        device: torch.device | str = "cpu",
    ) -> Batch:
        """Sample transitions uniformly (with replacement) for an update.

        Args:
            batch_size: number of transitions.
            rng: source of randomness (the same state and buffer contents give the same batch).
            target_offset: if given (``k >= 1``), also return as ``target_obs`` the stack ending ``k`` frames after
                the obs, or at the episode's last stored frame where the episode ends sooner (its last ``k - 1``
                transitions). Every transition stays sampleable, so terminal transitions still reach the TD loss
                of an agent that asks for a later IMM target.
            device: where the tensors go. Observations stay uint8 so host→GPU transfers stay small.

        Raises:
            ValueError: if ``batch_size < 1``, ``target_offset < 1`` or no transition is stored.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if target_offset is not None and target_offset < 1:
            raise ValueError(f"target_offset must be at least 1, got {target_offset}")
        g = self._sample_indices(batch_size, rng)
        slots = g % self.capacity
        ep_start = self._ep_start[slots]

        device = torch.device(device)
        # Pinned memory lets the copy to the GPU run asynchronously; pointless (and unavailable) without CUDA.
        pin = device.type == "cuda"

        def to_tensor(a: np.ndarray) -> torch.Tensor:
            t = torch.from_numpy(a)
            return t.pin_memory().to(device, non_blocking=True) if pin else t.to(device)

        next_obs = to_tensor(self._stacks(g + 1, ep_start))
        target_obs = None
        if target_offset is not None:
            # Offset 1 is the next observation itself: the same tensor (agents reuse its encoding).
            later = self._targets(g, target_offset)
            target_obs = next_obs if target_offset == 1 else to_tensor(self._stacks(later, ep_start))
        return Batch(
            obs=to_tensor(self._stacks(g, ep_start)),
            action=to_tensor(self._actions[slots]),
            reward=to_tensor(self._rewards[slots, None]),
            discount=to_tensor(self._discounts[slots, None]),
            next_obs=next_obs,
            target_obs=target_obs,
        )

    # ------------------------------------------------------------------ persistence

    @property
    def nbytes(self) -> int:
        """Bytes held by all storage arrays (allocated size, whether or not it is filled yet)."""
        return sum(a.nbytes for a in self._storage().values())

    def _storage(self) -> dict[str, np.ndarray]:
        return {
            "frames": self._frames,
            "actions": self._actions,
            "rewards": self._rewards,
            "discounts": self._discounts,
            "ep_start": self._ep_start,
        }

    def state_dict(self) -> dict[str, np.ndarray]:
        """Return the buffer's contents as numpy arrays only (safe for ``np.savez`` / ``np.load(allow_pickle=False)``).

        Scalars are 0-d arrays. While the buffer is not full only the used prefix of each storage array is included,
        so a fresh, large buffer does not write gigabytes of zeros. The arrays are views, not copies.
        """
        used = min(self._total, self.capacity)
        state: dict[str, np.ndarray] = {
            "format_version": np.array(_FORMAT_VERSION, dtype=np.int64),
            "capacity": np.array(self.capacity, dtype=np.int64),
            "frame_shape": np.array(self.frame_shape, dtype=np.int64),
            "action_dim": np.array(self.action_dim, dtype=np.int64),
            "frame_stack": np.array(self.frame_stack, dtype=np.int64),
            "total": np.array(self._total, dtype=np.int64),
            "cur_ep_start": np.array(self._cur_ep_start, dtype=np.int64),
        }
        for name, array in self._storage().items():
            state[name] = array[:used]
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore contents saved by :meth:`state_dict` into this buffer, whose configuration must match.

        ``state`` may be a lazy mapping such as the ``NpzFile`` from ``np.load``: each storage array is read once and
        copied in, so peak memory is the buffer plus one array.

        Raises:
            ValueError: (one line) on a missing key or a configuration, shape or dtype mismatch. If a storage array
                turns out to be malformed after copying has begun, the buffer is left empty.
        """

        def scalar(key: str) -> int:
            if key not in state:
                raise ValueError(f"replay state is missing '{key}'")
            value = np.asarray(state[key])
            if value.shape != () or value.dtype.kind not in "iu":
                raise ValueError(
                    f"replay state '{key}' must be a 0-d integer array, got {value.dtype}{value.shape}"
                )
            return int(value)

        version = scalar("format_version")
        if version != _FORMAT_VERSION:
            raise ValueError(f"replay state has format_version {version}, this code reads {_FORMAT_VERSION}")
        for key, expected in (
            ("capacity", self.capacity),
            ("action_dim", self.action_dim),
            ("frame_stack", self.frame_stack),
        ):
            got = scalar(key)
            if got != expected:
                raise ValueError(f"replay state has {key}={got}, but this buffer has {key}={expected}")
        if "frame_shape" not in state:
            raise ValueError("replay state is missing 'frame_shape'")
        frame_shape = tuple(int(v) for v in np.asarray(state["frame_shape"]).reshape(-1))
        if frame_shape != self.frame_shape:
            raise ValueError(
                f"replay state has frame_shape={frame_shape}, but this buffer has {self.frame_shape}"
            )
        total = scalar("total")
        cur_ep_start = scalar("cur_ep_start")
        if not (cur_ep_start == -1 if total == 0 else 0 <= cur_ep_start < total):
            raise ValueError(
                f"replay state has inconsistent counters total={total}, cur_ep_start={cur_ep_start}"
            )
        used = min(total, self.capacity)
        missing = [name for name in self._storage() if name not in state]
        if missing:
            raise ValueError(f"replay state is missing arrays {missing}")

        self._reset_counters()  # empty until every array is in, so a failure part-way leaves no mixed contents
        for name, target in self._storage().items():
            array = state[name]  # read once: an NpzFile reads from disk on every access
            expected_shape = (used, *target.shape[1:])
            if array.shape != expected_shape or array.dtype != target.dtype:
                raise ValueError(
                    f"replay state '{name}' is {array.dtype}{tuple(array.shape)}, "
                    f"expected {target.dtype}{expected_shape}"
                )
            target[:used] = array
        self._total = total
        self._cur_ep_start = cur_ep_start

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the buffer to ``path`` (an uncompressed ``.npz``) atomically.

        The data goes to a temporary file in the same directory, is flushed and fsynced, then renamed over
        ``path``, so a crash mid-save leaves either the old file or the new one, never a truncated mix. The name is
        used as given (numpy's automatic ``.npz`` suffix does not apply).
        """
        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                # Uncompressed: zlib on gigabytes of frames would take minutes at every checkpoint.
                np.savez(f, **self.state_dict())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        # Make the rename itself durable; directories cannot be opened this way on Windows, hence the guard.
        if hasattr(os, "O_DIRECTORY"):
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def load(self, path: str | os.PathLike[str]) -> None:
        """Replace this buffer's contents with those saved at ``path`` by :meth:`save`.

        The buffer must be constructed with the same configuration first (as a resumed run does from its config);
        mismatches raise ValueError. Reads with ``allow_pickle=False``, so a file cannot execute code.
        """
        with np.load(os.fspath(path), allow_pickle=False) as data:
            self.load_state_dict(data)
