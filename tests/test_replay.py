"""Tests for the frame-once replay buffer.

Frames encode where they came from: channel 0 holds the episode number and channel 1 the time step, so every
sampled stack can be decoded and checked against the episode structure exactly.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from kprl.rl.replay import Batch, FrameReplay

SMALL = (3, 2, 2)
ACTION_DIM = 2


def frame(ep: int, t: int, shape: tuple[int, int, int] = SMALL) -> np.ndarray:
    f = np.full(shape, 7, dtype=np.uint8)
    f[0], f[1] = ep, t
    return f


def add_episode(buf: FrameReplay, ep: int, length: int, terminal: bool = False) -> None:
    """Episode ``ep`` with ``length`` transitions (length + 1 frames); action = (ep, t), reward = 100 ep + t."""
    buf.add_first(frame(ep, 0, buf.frame_shape))
    for t in range(length):
        done = terminal and t == length - 1
        buf.add(
            np.array([ep, t], np.float32),
            100.0 * ep + t,
            0.0 if done else 1.0,
            frame(ep, t + 1, buf.frame_shape),
        )


def decode(stacks: torch.Tensor, frame_stack: int) -> tuple[np.ndarray, np.ndarray]:
    """(episode, t) of every frame in ``[B, 3*S, H, W]`` stacks -> two ``[B, S]`` arrays."""
    s = stacks.numpy().reshape(stacks.shape[0], frame_stack, 3, *stacks.shape[-2:])
    assert (s[:, :, 2] == 7).all()
    return s[:, :, 0, 0, 0].astype(int), s[:, :, 1, 0, 0].astype(int)


def expected_stack(t_last: int, frame_stack: int) -> list[int]:
    return [max(0, t_last - frame_stack + 1 + j) for j in range(frame_stack)]


def check_batch(
    batch: Batch, frame_stack: int, lengths: dict[int, int], terminal: dict[int, bool], k: int | None = None
) -> set[tuple[int, int]]:
    """Assert every sample is consistent with the episodes; return the sampled (episode, t) pairs."""
    obs_ep, obs_t = decode(batch.obs, frame_stack)
    next_ep, next_t = decode(batch.next_obs, frame_stack)
    seen = set()
    for b in range(batch.obs.shape[0]):
        ep, t = obs_ep[b, -1], obs_t[b, -1]
        seen.add((int(ep), int(t)))
        assert (obs_ep[b] == ep).all() and (next_ep[b] == ep).all(), "a stack mixes episodes"
        assert t < lengths[ep], "the last frame of an episode was sampled as obs"
        assert obs_t[b].tolist() == expected_stack(t, frame_stack)
        assert next_t[b].tolist() == expected_stack(t + 1, frame_stack)
        assert batch.action[b].tolist() == [ep, t]
        assert batch.reward[b, 0].item() == 100 * ep + t
        assert batch.discount[b, 0].item() == (0.0 if terminal[ep] and t == lengths[ep] - 1 else 1.0)
        if k is not None:
            assert batch.target_obs is not None
            tgt_ep, tgt_t = decode(batch.target_obs[b : b + 1], frame_stack)
            assert (tgt_ep == ep).all(), "target crosses an episode boundary"
            # k steps later, or the episode's last (stored) frame for its last k - 1 transitions
            assert tgt_t[0].tolist() == expected_stack(min(t + k, lengths[ep]), frame_stack)
    return seen


def build(lengths: list[int], capacity: int = 1000, frame_stack: int = 3) -> tuple[FrameReplay, dict, dict]:
    buf = FrameReplay(capacity, SMALL, ACTION_DIM, frame_stack)
    terminal = {ep: ep % 2 == 1 for ep in range(len(lengths))}
    for ep, length in enumerate(lengths):
        add_episode(buf, ep, length, terminal[ep])
    return buf, dict(enumerate(lengths)), terminal


def test_batch_shapes_and_dtypes() -> None:
    buf, _, _ = build([5, 4])
    batch = buf.sample(16, np.random.default_rng(0))
    assert batch.obs.shape == (16, 9, 2, 2) and batch.obs.dtype == torch.uint8
    assert batch.next_obs.shape == (16, 9, 2, 2) and batch.next_obs.dtype == torch.uint8
    assert batch.action.shape == (16, ACTION_DIM) and batch.action.dtype == torch.float32
    assert batch.reward.shape == (16, 1) and batch.reward.dtype == torch.float32
    assert batch.discount.shape == (16, 1) and batch.discount.dtype == torch.float32
    assert batch.target_obs is None
    with_target = buf.sample(16, np.random.default_rng(0), target_offset=2)
    assert with_target.target_obs is not None and with_target.target_obs.shape == (16, 9, 2, 2)


@pytest.mark.parametrize("frame_stack", [1, 3, 4])
def test_stacking_next_obs_and_alignment(frame_stack: int) -> None:
    # An episode of a single transition and a long one check the start-of-episode clamp on both sides.
    buf, lengths, terminal = build([5, 1, 7, 2], frame_stack=frame_stack)
    seen = check_batch(buf.sample(2000, np.random.default_rng(1)), frame_stack, lengths, terminal)
    all_transitions = {(ep, t) for ep, n in lengths.items() for t in range(n)}
    assert seen == all_transitions
    assert len(buf) == sum(lengths.values())


def test_first_stack_repeats_first_frame() -> None:
    buf, _, _ = build([1])
    batch = buf.sample(4, np.random.default_rng(0))
    f0, f1 = frame(0, 0), frame(0, 1)
    assert (batch.obs[0].numpy() == np.concatenate([f0, f0, f0])).all()
    assert (batch.next_obs[0].numpy() == np.concatenate([f0, f0, f1])).all()


@pytest.mark.parametrize("k", [1, 2, 3, 6])
def test_target_offset_stays_in_episode_and_every_transition_stays_sampleable(k: int) -> None:
    # Odd episodes end in a termination: with any offset their terminal transition must still be drawn (it is the
    # only place the TD loss learns what ending costs), its target clamped to the episode's last frame.
    buf, lengths, terminal = build([5, 2, 6, 3])
    batch = buf.sample(3000, np.random.default_rng(2), target_offset=k)
    seen = check_batch(batch, 3, lengths, terminal, k=k)
    assert seen == {(ep, t) for ep, n in lengths.items() for t in range(n)}
    assert (batch.discount == 0).any()


def test_offset_one_target_is_the_next_observation_tensor() -> None:
    buf, _, _ = build([10, 7])
    batch = buf.sample(16, np.random.default_rng(4), target_offset=1)
    assert batch.target_obs is batch.next_obs  # agents reuse next_obs's encoding for the IMM target


def test_sparse_valid_set_falls_back_to_enumeration() -> None:
    # 60 one-frame episodes and one of two transitions: 2 of 63 stored frames start a transition (~3 %), so the
    # rejection rounds run out and the exact enumeration must supply the rest, still only valid transitions.
    buf, lengths, terminal = build([0] * 60 + [2])
    seen = check_batch(buf.sample(256, np.random.default_rng(3), target_offset=5), 3, lengths, terminal, k=5)
    assert seen == {(60, 0), (60, 1)}


def test_sampling_is_uniform_over_transitions() -> None:
    buf, lengths, _ = build([3, 5])
    batch = buf.sample(40_000, np.random.default_rng(4))
    ep, t = decode(batch.obs, 3)
    counts = np.bincount(ep[:, -1] * 10 + t[:, -1], minlength=20)
    counts = counts[counts > 0]
    assert counts.size == 8
    assert np.abs(counts / counts.mean() - 1).max() < 0.08


def test_same_rng_same_batch() -> None:
    buf, _, _ = build([6, 4])
    a = buf.sample(32, np.random.default_rng(5), target_offset=2)
    b = buf.sample(32, np.random.default_rng(5), target_offset=2)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


def test_len_counts_sampleable_transitions() -> None:
    buf = FrameReplay(100, SMALL, ACTION_DIM)
    assert len(buf) == 0
    buf.add_first(frame(0, 0))
    assert len(buf) == 0
    for t in range(3):
        buf.add(np.zeros(2, np.float32), 0.0, 1.0, frame(0, t + 1))
        assert len(buf) == t + 1
    buf.add_first(frame(1, 0))  # a new episode adds a frame but no transition
    assert len(buf) == 3


def brute_force_valid(
    history: list[tuple[int, int]], capacity: int, lengths: dict[int, int], stack: int, k: int
) -> set[tuple[int, int]]:
    """The (episode, t) transitions whose every needed frame (obs stack, next frame, and the target frame k steps
    later or the episode's last frame so far) is among the last ``capacity`` frames added."""
    stored = set(history[-capacity:])
    valid = set()
    for ep, t in stored:
        last = lengths.get(ep, -1)
        needed = [(ep, max(0, t - j)) for j in range(stack)] + [(ep, t + 1), (ep, min(t + k, last))]
        if t + 1 <= last and all(f in stored for f in needed):
            valid.add((ep, t))
    return valid


@pytest.mark.parametrize("capacity", [2, 5, 8, 13])
def test_wraparound_never_touches_overwritten_frames(capacity: int) -> None:
    rng = np.random.default_rng(capacity)
    buf = FrameReplay(capacity, SMALL, ACTION_DIM, frame_stack=3)
    history: list[tuple[int, int]] = []
    lengths: dict[int, int] = {}  # lengths of episodes so far (an open episode counts what it has)
    terminal: dict[int, bool] = {}
    # Episodes both shorter and longer than the buffer, so some lose their first frame while still being recorded.
    for ep, length in enumerate([4, 1, 9, 3, 20, 2, 6, 5]):
        terminal[ep] = False
        buf.add_first(frame(ep, 0))
        history.append((ep, 0))
        lengths[ep] = 0
        for t in range(length):
            buf.add(np.array([ep, t], np.float32), 100.0 * ep + t, 1.0, frame(ep, t + 1))
            history.append((ep, t + 1))
            lengths[ep] = t + 1
            expected = brute_force_valid(history, capacity, lengths, 3, 1)
            assert len(buf) == len(expected)
            for k in (1, 2):
                expected = brute_force_valid(history, capacity, lengths, 3, k)
                if not expected:
                    with pytest.raises(ValueError, match="no valid transitions"):
                        buf.sample(4, rng, target_offset=k)
                    continue
                batch = buf.sample(200, rng, target_offset=k)
                assert check_batch(batch, 3, lengths, terminal, k=k) == expected


def test_bytes_per_transition_is_about_one_frame() -> None:
    shape = (3, 84, 84)
    capacity = 1000
    buf = FrameReplay(capacity, shape, action_dim=6, frame_stack=3)
    # 5 episodes of 249 transitions (250 frames): more than capacity, so the buffer is full and has wrapped.
    for ep in range(5):
        buf.add_first(frame(ep, 0, shape))
        for t in range(249):
            buf.add(np.zeros(6, np.float32), 0.0, 1.0, frame(ep, t + 1, shape))
    transitions = len(buf)
    assert transitions == capacity - 4  # four episode ends among the stored frames have no transition
    frame_bytes = 3 * 84 * 84
    assert buf.nbytes / transitions < 1.1 * frame_bytes + 64


def test_add_before_add_first_raises() -> None:
    buf = FrameReplay(10, SMALL, ACTION_DIM)
    with pytest.raises(RuntimeError, match="add_first"):
        buf.add(np.zeros(2, np.float32), 0.0, 1.0, frame(0, 1))


def test_bad_inputs_raise() -> None:
    buf = FrameReplay(10, SMALL, ACTION_DIM)
    with pytest.raises(ValueError, match="shape"):
        buf.add_first(np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        buf.add_first(np.zeros(SMALL, np.float32))
    buf.add_first(frame(0, 0))
    with pytest.raises(ValueError, match="action"):
        buf.add(np.zeros(3, np.float32), 0.0, 1.0, frame(0, 1))
    with pytest.raises(ValueError, match="empty|no valid"):
        buf.sample(1, np.random.default_rng(0))
    buf.add(np.zeros(2, np.float32), 0.0, 1.0, frame(0, 1))
    with pytest.raises(ValueError, match="batch_size"):
        buf.sample(0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="target_offset"):
        buf.sample(1, np.random.default_rng(0), target_offset=0)
    one = buf.sample(1, np.random.default_rng(0), target_offset=2)  # an offset beyond the episode: its last frame
    assert one.target_obs is not None and torch.equal(one.target_obs, one.next_obs)
    with pytest.raises(ValueError, match="empty"):
        FrameReplay(10, SMALL, ACTION_DIM).sample(1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="capacity"):
        FrameReplay(1, SMALL, ACTION_DIM)


def assert_same_samples(a: FrameReplay, b: FrameReplay) -> None:
    for k in (None, 1, 3):
        x = a.sample(64, np.random.default_rng(11), target_offset=k)
        y = b.sample(64, np.random.default_rng(11), target_offset=k)
        for u, v in zip(x, y, strict=True):
            assert (u is None and v is None) or torch.equal(u, v)


def test_save_load_round_trip(tmp_path) -> None:
    src, _, _ = build([6, 9, 3, 7], capacity=20)  # 29 frames: wrapped
    path = tmp_path / "replay.npz"
    src.save(path)
    dst = FrameReplay(20, SMALL, ACTION_DIM)
    dst.load(path)
    assert len(dst) == len(src)
    for key, value in src.state_dict().items():
        np.testing.assert_array_equal(dst.state_dict()[key], value)
    assert_same_samples(src, dst)
    # Recording continues where it left off, including the open episode.
    for buf in (src, dst):
        buf.add(np.array([3, 7], np.float32), 307.0, 1.0, frame(3, 8))
        add_episode(buf, 4, 5)
    assert_same_samples(src, dst)
    assert sorted(os.listdir(tmp_path)) == ["replay.npz"], "temporary file left behind"


def test_save_load_partial_buffer(tmp_path) -> None:
    src, _, _ = build([6, 2], capacity=50)
    src.save(tmp_path / "r.npz")
    dst = FrameReplay(50, SMALL, ACTION_DIM)
    dst.load(tmp_path / "r.npz")
    assert_same_samples(src, dst)


def test_saved_file_of_partial_buffer_is_small(tmp_path) -> None:
    shape = (3, 84, 84)
    buf = FrameReplay(10_000, shape, action_dim=6)  # 212 MB allocated (lazily), 10 frames used
    buf.add_first(frame(0, 0, shape))
    for t in range(9):
        buf.add(np.zeros(6, np.float32), 0.0, 1.0, frame(0, t + 1, shape))
    path = tmp_path / "r.npz"
    buf.save(path)
    assert path.stat().st_size < 10 * 3 * 84 * 84 + 20_000


def test_failed_save_keeps_old_file(tmp_path, monkeypatch) -> None:
    buf, _, _ = build([4])
    path = tmp_path / "r.npz"
    buf.save(path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        buf.save(path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["r.npz"]


@pytest.mark.parametrize(
    "other",
    [
        dict(capacity=21, frame_shape=SMALL, action_dim=ACTION_DIM, frame_stack=3),
        dict(capacity=20, frame_shape=(3, 4, 4), action_dim=ACTION_DIM, frame_stack=3),
        dict(capacity=20, frame_shape=SMALL, action_dim=3, frame_stack=3),
        dict(capacity=20, frame_shape=SMALL, action_dim=ACTION_DIM, frame_stack=2),
    ],
)
def test_load_mismatched_config_raises(tmp_path, other: dict) -> None:
    src, _, _ = build([6, 9], capacity=20)
    src.save(tmp_path / "r.npz")
    dst = FrameReplay(**other)
    with pytest.raises(ValueError) as info:
        dst.load(tmp_path / "r.npz")
    assert "\n" not in str(info.value)


def test_load_corrupt_state_raises_and_leaves_buffer_empty() -> None:
    src, _, _ = build([6, 9], capacity=40)
    dst, _, _ = build([3], capacity=40)
    state = dict(src.state_dict())
    state["rewards"] = state["rewards"][:-1]
    with pytest.raises(ValueError, match="rewards"):
        dst.load_state_dict(state)
    assert len(dst) == 0
    state = dict(src.state_dict())
    state["frames"] = state["frames"].astype(np.float32)
    with pytest.raises(ValueError, match="frames"):
        dst.load_state_dict(state)
    state = dict(src.state_dict())
    del state["ep_start"]
    with pytest.raises(ValueError, match="ep_start"):
        dst.load_state_dict(state)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sample_to_cuda() -> None:
    buf, lengths, terminal = build([5, 4])
    batch = buf.sample(8, np.random.default_rng(0), target_offset=2, device="cuda")
    assert all(t.device.type == "cuda" for t in batch)
    assert batch.obs.dtype == torch.uint8
    cpu = Batch(*(t.cpu() for t in batch))
    check_batch(cpu, 3, lengths, terminal, k=2)
