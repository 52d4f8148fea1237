"""Frame datasets: `kprl collect` output, reproducibility, resume, settings checks and reader validation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kprl.analysis.landmarks import angle_bins, inside_frame, pole_angles
from kprl.cli import main
from kprl.data.collect import collect, episode_seed
from kprl.data.frames import ARRAYS, FrameDataset, load_dataset, shard_files, write_shard
from kprl.envs.dmc import DMCEnv
from kprl.errors import ConfigError, DataError

# Cartpole cut to 0.4 s: 40 physics steps = 5 actions at action repeat 8, so an episode is 6 frames (reset frame
# included) and 40 env steps; 100 env steps are 3 episodes (120 env steps), in shards of 2 episodes.
TINY: dict[str, Any] = dict(
    task="cartpole_swingup", time_limit=0.4, image_size=32, episodes_per_shard=2, quiet=True
)
FRAMES_PER_EPISODE = 6


def shard_bytes(path: Path) -> dict[str, bytes]:
    return {file.name: file.read_bytes() for _, file in shard_files(path)}


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-episode collection (shards of 2 + 1 episodes), shared read-only by the tests of this module."""
    out = tmp_path_factory.mktemp("data") / "cartpole"
    summary = collect(out, env_steps=100, **TINY)
    assert summary == {
        "out": str(out),
        "episodes": 3,
        "frames": 3 * FRAMES_PER_EPISODE,
        "env_steps": 120,
        "shards": 2,
        "shards_written": 2,
    }
    return out


def copy_of(dataset_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(dataset_dir, target)
    return target


def test_collection_has_the_documented_arrays(dataset_dir: Path) -> None:
    meta = json.loads((dataset_dir / "meta.json").read_text())
    assert meta["format"] == "kprl-frames" and meta["version"] == 1
    assert meta["landmark_names"] == ["cart", "pole_tip"] and meta["action_dim"] == 1
    assert (meta["action_repeat"], meta["camera_id"], meta["image_size"], meta["policy"]) == (
        8,
        0,
        32,
        "random",
    )
    assert sorted(p.name for p in dataset_dir.iterdir()) == [
        "meta.json",
        "shard_00000.npz",
        "shard_00001.npz",
    ]
    with np.load(dataset_dir / "shard_00000.npz", allow_pickle=False) as shard:
        assert sorted(shard.files) == sorted(ARRAYS)
        assert shard["episode"].tolist() == [0] * 6 + [1] * 6
    ds = load_dataset(dataset_dir)
    n = 3 * FRAMES_PER_EPISODE
    assert len(ds) == n and ds.image_size == 32 and ds.landmark_names == ["cart", "pole_tip"]
    expected = {
        "frames": (np.uint8, (n, 32, 32, 3)),
        "landmarks": (np.float32, (n, 2, 2)),
        "actions": (np.float32, (n, 1)),
        "rewards": (np.float32, (n,)),
        "episode": (np.int64, (n,)),
        "step": (np.int64, (n,)),
    }
    for name, (dtype, shape) in expected.items():
        array = getattr(ds, name)
        assert array.dtype == dtype and array.shape == shape, name
    assert ds.episode.tolist() == np.repeat([0, 1, 2], 6).tolist()
    assert ds.step.tolist() == list(range(6)) * 3
    first = ds.step == 0
    assert np.all(ds.actions[first] == 0) and np.all(ds.rewards[first] == 0)
    assert np.all(np.abs(ds.actions[~first]) <= 1) and np.all(ds.actions[~first] != 0)
    assert ds.episode_ids().tolist() == [0, 1, 2]
    index = ds.episode_index()
    assert list(index) == [0, 1, 2] and index[2].tolist() == list(range(12, 18))
    # different episodes start from different random poses
    assert not np.array_equal(ds.frames[0], ds.frames[6])


def test_episodes_equal_a_fresh_env_with_the_episode_seed(dataset_dir: Path) -> None:
    ds = load_dataset(dataset_dir)
    rows = ds.episode_index()[2]
    env = DMCEnv("cartpole_swingup", image_size=32, frame_stack=1, seed=episode_seed(0, 2), time_limit=0.4)
    try:
        step = env.reset()
        steps = [step] + [env.step(a) for a in ds.actions[rows[1:]]]
    finally:
        env.close()
    assert steps[-1].last and len(steps) == len(rows)
    np.testing.assert_array_equal(ds.frames[rows], np.stack([s.frame.transpose(1, 2, 0) for s in steps]))
    np.testing.assert_array_equal(ds.landmarks[rows], np.stack([s.landmarks for s in steps]))
    np.testing.assert_array_equal(ds.rewards[rows], np.array([s.reward for s in steps], dtype=np.float32))
    # the random policy draws from default_rng(episode seed)
    rng = np.random.default_rng(episode_seed(0, 2))
    expected = np.stack([rng.uniform(-1, 1, size=1) for _ in range(5)]).astype(np.float32)
    np.testing.assert_array_equal(ds.actions[rows[1:]], expected)


def test_resume_extends_and_restores_identical_shards(dataset_dir: Path, tmp_path: Path) -> None:
    out = copy_of(dataset_dir, tmp_path)
    before = shard_bytes(out)
    stray = out / ".shard_00001.npz.k1ll3d.tmp"
    stray.write_bytes(b"half a shard")
    summary = collect(out, env_steps=200, **TINY)
    assert (summary["episodes"], summary["env_steps"], summary["shards"], summary["shards_written"]) == (
        5,
        200,
        3,
        2,
    )
    assert not stray.exists()
    after = shard_bytes(out)
    assert after["shard_00000.npz"] == before["shard_00000.npz"]  # complete shards are not rewritten
    assert json.loads((out / "meta.json").read_text())["env_steps_requested"] == 200
    one_shot = tmp_path / "one_shot"
    collect(one_shot, env_steps=200, **TINY)
    assert shard_bytes(one_shot) == after  # byte-identical to an uninterrupted collection
    assert (one_shot / "meta.json").read_text() == (out / "meta.json").read_text()
    (out / "shard_00002.npz").unlink()
    assert collect(out, env_steps=200, **TINY)["shards_written"] == 1
    assert shard_bytes(out) == after
    # asking for less than is there writes nothing
    assert collect(out, env_steps=40, **TINY)["shards_written"] == 0
    assert (
        shard_bytes(out) == after
        and json.loads((out / "meta.json").read_text())["env_steps_requested"] == 200
    )


@pytest.mark.parametrize(
    ("change", "needle"),
    [({"seed": 1}, "seed 0 (stored) vs 1"), ({"image_size": 48, "episodes_per_shard": 3}, "image_size 32")],
)
def test_other_settings_on_rerun_are_refused(
    dataset_dir: Path, tmp_path: Path, change: dict[str, Any], needle: str
) -> None:
    out = copy_of(dataset_dir, tmp_path)
    meta_before = (out / "meta.json").read_bytes()
    stray = out / ".shard_00002.npz.x.tmp"
    stray.write_bytes(b"")
    with pytest.raises(ConfigError, match="other settings") as info:
        collect(out, env_steps=200, **{**TINY, **change})
    message = str(info.value)
    assert needle in message and "\n" not in message
    if "episodes_per_shard" in change:
        assert "episodes_per_shard 2 (stored) vs 3" in message
    assert (out / "meta.json").read_bytes() == meta_before and stray.exists()
    assert shard_bytes(out) == shard_bytes(dataset_dir)


def test_unrelated_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds no frame dataset"):
        collect(tmp_path, env_steps=40, **TINY)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def _rewrite_shard(path: Path, **changes: np.ndarray | None) -> None:
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    write_shard(path, arrays)


def _break(case: str, root: Path) -> Path:
    """Damage the dataset copy at ``root`` as ``case`` says; returns the path the error must name."""
    shard = root / "shard_00001.npz"
    if case == "missing dir":
        shutil.rmtree(root)
        return root
    if case == "not a dir":
        shutil.rmtree(root)
        root.write_text("x")
        return root
    if case == "empty dir":
        for p in root.iterdir():
            p.unlink()
        return root / "meta.json"
    if case == "bad json":
        (root / "meta.json").write_text("{oops")
        return root / "meta.json"
    if case == "wrong format":
        (root / "meta.json").write_text('{"format": "other"}')
        return root / "meta.json"
    if case == "no shards":
        for _, file in shard_files(root):
            file.unlink()
        return root
    if case == "truncated":
        data = shard.read_bytes()
        shard.write_bytes(data[: len(data) // 2])
        return shard
    if case == "corrupt data":
        data = bytearray(shard.read_bytes())
        middle = len(data) // 3
        data[middle : middle + 64] = bytes(64)
        shard.write_bytes(bytes(data))
        return shard
    if case == "wrong dtype":
        _rewrite_shard(shard, actions=np.zeros((6, 1), dtype=np.float64))
        return shard
    if case == "missing array":
        _rewrite_shard(shard, landmarks=None)
        return shard
    if case == "wrong shape":
        _rewrite_shard(shard, frames=np.zeros((6, 31, 32, 3), dtype=np.uint8))
        return shard
    if case == "short column":
        _rewrite_shard(shard, rewards=np.zeros(5, dtype=np.float32))
        return shard
    if case == "duplicate episode":
        shutil.copy(root / "shard_00000.npz", root / "shard_00007.npz")
        return root / "shard_00007.npz"
    raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("missing dir", "no such dataset directory"),
        ("not a dir", "not a directory"),
        ("empty dir", "not found"),
        ("bad json", "not valid JSON"),
        ("wrong format", "format is 'other'"),
        ("no shards", "empty dataset"),
        ("truncated", "cannot read shard"),
        ("corrupt data", "cannot read shard"),
        ("wrong dtype", "'actions' has dtype float64, expected float32"),
        ("missing array", "missing array landmarks"),
        ("wrong shape", "'frames' has shape [6, 31, 32, 3], expected [6, 32, 32, 3]"),
        ("short column", "'rewards' has shape [5], expected [6]"),
        ("duplicate episode", "episode 0 is stored in shard_00000.npz and shard_00007.npz"),
    ],
)
def test_load_dataset_rejects_bad_input(dataset_dir: Path, tmp_path: Path, case: str, needle: str) -> None:
    root = copy_of(dataset_dir, tmp_path)
    where = _break(case, root)
    with pytest.raises(DataError) as info:
        load_dataset(root)
    message = str(info.value)
    assert message.startswith(str(where)) and needle in message and "\n" not in message, message


def test_cli_collect_and_its_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    args = ["collect", "--env-steps", "40", "--time-limit", "0.4", "--image-size", "16"]
    assert main([*args, "--task", "cartpole_swingup", "--out", str(out), "--seed", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("shard_00000.npz: episodes 0-0 | 40/40 env steps")
    assert json.loads(lines[-1]) == {
        "out": str(out),
        "episodes": 1,
        "frames": 6,
        "env_steps": 40,
        "shards": 1,
        "shards_written": 1,
    }
    assert load_dataset(out).frames.shape == (6, 16, 16, 3)
    for bad, needle in [
        (["--task", "foo_bar"], "unknown DeepMind Control task 'foo_bar'"),
        (["--task", "cartpole_swingup", "--image-size", "4"], "--image-size must be >= 16, got 4"),
        (["--task", "cartpole_swingup", "--camera-id", "9"], "camera_id=9 is invalid"),
        (["--image-size", "16"], "--task is required with --policy random"),
        (["--task", "cartpole_swingup", "--env-steps", "0"], "--env-steps must be >= 1"),
    ]:
        fresh = tmp_path / "never"
        code = main([*args, "--out", str(fresh), *bad])
        err = capsys.readouterr().err.strip()
        assert (
            code == 2 and err.startswith("kprl: error:") and needle in err and len(err.splitlines()) == 1
        ), err
        assert not fresh.exists()


def test_trained_policy_collects_reproducibly_at_any_size(tmp_path: Path) -> None:
    from kprl.config import TrainConfig, render_size
    from kprl.rl.train import train

    run = tmp_path / "run"
    cfg = TrainConfig(run_dir=run, env_steps=120, seed_steps=80, batch_size=8, eval_every=1000, eval_episodes=1,
                      checkpoint_every=1000, video=False, threads=1)  # fmt: skip
    cfg.env.time_limit, cfg.env.image_size = 0.4, 32
    cfg.sac.hidden_dim, cfg.encoder.num_filters, cfg.encoder.latent_dim = 32, 8, 8
    train(cfg, quiet=True)
    own = render_size(cfg)  # 48: the agent renders 32 + crop margin
    kw: dict[str, Any] = dict(env_steps=80, policy=str(run), time_limit=0.4, quiet=True)
    a = load_dataset(Path(collect(tmp_path / "a", image_size=own, **kw)["out"]))
    b = load_dataset(Path(collect(tmp_path / "b", image_size=24, **kw)["out"]))
    again = tmp_path / "again"
    collect(again, image_size=24, **kw)
    assert shard_bytes(again) == shard_bytes(tmp_path / "b")
    assert a.meta["policy"] == str(run.resolve()) and a.meta["policy_checkpoint"] == 120
    assert a.meta["task"] == "cartpole_swingup" and b.frames.shape == (12, 24, 24, 3)
    # the same agent inputs whatever the stored size: same actions, landmarks scaled with the frame
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_allclose(b.landmarks, a.landmarks * (24 / own), rtol=1e-5, atol=1e-4)
    assert not np.array_equal(a.actions[1:6], a.actions[7:12])
    with pytest.raises(ConfigError, match="--task reacher_easy differs from the agent's cartpole_swingup"):
        collect(tmp_path / "c", task="reacher_easy", **kw)
    assert not (tmp_path / "c").exists()


def test_frame_dataset_episode_index_follows_step_order(tmp_path: Path) -> None:
    ds = FrameDataset(
        path=tmp_path,
        meta={"image_size": 1, "landmark_names": []},
        frames=np.zeros((5, 1, 1, 3), np.uint8),
        landmarks=np.zeros((5, 0, 2), np.float32),
        actions=np.zeros((5, 1), np.float32),
        rewards=np.zeros(5, np.float32),
        episode=np.array([7, 3, 7, 3, 7]),
        step=np.array([2, 1, 0, 0, 1]),
    )
    assert ds.episode_ids().tolist() == [3, 7]
    assert {k: v.tolist() for k, v in ds.episode_index().items()} == {3: [3, 1], 7: [2, 4, 0]}


def test_start_any_covers_every_pole_angle_in_view_reproducibly(tmp_path: Path) -> None:
    settings = {**TINY, "episodes_per_shard": 8, "start": "any"}
    out = tmp_path / "any"
    summary = collect(out, env_steps=24 * 40, **settings)
    assert summary["episodes"] == 24 and json.loads((out / "meta.json").read_text())["start"] == "any"
    data = load_dataset(out)
    first = data.step == 0
    assert inside_frame(data.landmarks[first], 32, 32).all()  # every episode starts with cart and tip in view
    starts = angle_bins(pole_angles_of(data)[first])
    assert sum(mask.any() for mask in starts.values()) >= 6  # 24 starts in 8 bins (the task's reset: all in 1)
    again = tmp_path / "again"
    collect(again, env_steps=24 * 40, **settings)
    assert shard_bytes(again) == shard_bytes(out)
    with pytest.raises(ConfigError, match='start "any" \\(stored\\) vs "task"'):
        collect(out, env_steps=2000, **{**settings, "start": "task"})


def test_start_task_is_the_tasks_reset_and_older_collections_resume(dataset_dir: Path, tmp_path: Path) -> None:
    data = load_dataset(dataset_dir)
    angles = pole_angles_of(data)
    assert (abs(angles[data.step == 0]) > 170).all()  # swingup starts with the pole hanging
    out = copy_of(dataset_dir, tmp_path)
    meta = json.loads((out / "meta.json").read_text())
    del meta["start"]  # written before collections recorded where episodes start
    (out / "meta.json").write_text(json.dumps(meta))
    collect(out, env_steps=200, **TINY)
    assert json.loads((out / "meta.json").read_text())["start"] == "task"
    with pytest.raises(ConfigError, match="needs a dm_control task"):
        collect(tmp_path / "gym", env_steps=10, **{**TINY, "task": "gym:Pendulum-v1", "start": "any"})
    with pytest.raises(ConfigError, match="--start must be one of task, any"):
        collect(tmp_path / "bad", env_steps=10, **{**TINY, "start": "upright"})


def pole_angles_of(data: FrameDataset) -> np.ndarray:
    angles = pole_angles(data.landmarks, data.landmark_names)
    assert angles is not None
    return angles
