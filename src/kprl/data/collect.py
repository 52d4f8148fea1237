"""``kprl collect``: render whole episodes of a dm_control task or a ``gym:ID`` environment into a frame dataset
(format: `kprl.data.frames`; Gymnasium environments have no landmarks: ``landmark_names`` is empty).

Episode ``e`` (global, 0-based) is fully determined by ``(seed, e)``: the task's random state (initial pose) is
re-seeded with `episode_seed` before its reset (with ``start="any"`` the start state is drawn from a generator of
that seed too, `kprl.data.start_states`), the random policy draws from ``np.random.default_rng`` with the
same seed and a trained policy samples its actions under ``torch.manual_seed`` of it. Shard ``k`` always holds
episodes ``k*E .. k*E+E-1``, so rerunning a killed or shorter collection continues after the last complete
shard and produces exactly the files an uninterrupted collection would have (byte for byte).

``env_steps`` counts environment steps including the action repeat (agent steps x action repeat, as in
``kprl train``); collection stops at the first episode end at or after the requested amount.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from kprl import config as C
from kprl.data.frames import (
    FORMAT,
    META_FILE,
    VERSION,
    read_meta,
    read_shard,
    shard_files,
    shard_name,
    write_shard,
)
from kprl.data.start_states import START_STATES, any_state
from kprl.envs.dmc import Step, default_camera, split_task
from kprl.envs.factory import PixelEnv, check_task, make_pixel_env, render_error, task_action_repeat
from kprl.envs.gym import is_gym_task
from kprl.errors import ConfigError, DataError, first_line
from kprl.rl.evaluate import load_agent
from kprl.runtime.files import atomic_write_text

MIN_IMAGE_SIZE = 16
# Settings that decide the content of the shards: a rerun must ask for the same ones.
SETTINGS = (
    "task",
    "image_size",
    "camera_id",
    "action_repeat",
    "time_limit",
    "policy",
    "policy_checkpoint",
    "seed",
    "episodes_per_shard",
    "start",
)
# What a setting was before collections recorded it.
UNRECORDED = {"start": "task"}


def episode_seed(seed: int, episode: int) -> int:
    """The seed (in [0, 2**32)) of global episode ``episode`` of a collection seeded with ``seed``.

    It seeds the task's initial state, the random policy and torch (for a trained policy's sampling).
    """
    return int(np.random.SeedSequence([seed, episode]).generate_state(1)[0])


class _Policy:
    """Chooses the actions of a collection; `reset` is called with the episode seed before each episode."""

    name: str = "random"
    checkpoint: int | None = None

    def reset(self, seed: int) -> None:
        raise NotImplementedError

    def act(self, step: Step) -> np.ndarray:
        raise NotImplementedError


class RandomPolicy(_Policy):
    """Uniform actions in [-1, 1]^A, drawn from a generator re-seeded at every episode."""

    def __init__(self, action_dim: int) -> None:
        self.action_dim = action_dim
        self.rng = np.random.default_rng(0)

    def reset(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def act(self, step: Step) -> np.ndarray:
        return self.rng.uniform(-1.0, 1.0, size=self.action_dim).astype(np.float32)


class AgentPolicy(_Policy):
    """A trained agent sampling from its stochastic policy; torch's RNG is re-seeded at every episode."""

    def __init__(self, agent: Any, name: str, checkpoint: int) -> None:
        self.agent = agent
        self.name = name
        self.checkpoint = checkpoint

    def reset(self, seed: int) -> None:
        torch.manual_seed(seed)

    def act(self, step: Step) -> np.ndarray:
        return np.asarray(self.agent.act(step.obs, deterministic=False), dtype=np.float32)


def _make_env(
    task: str, image_size: int, action_repeat: int, frame_stack: int, camera_id: int | None, time_limit: float | None
) -> PixelEnv:
    """The task's env (seeded per episode later); bad cameras and missing GL backends become one-line errors."""
    try:
        return make_pixel_env(
            task,
            image_size=image_size,
            action_repeat=action_repeat,
            frame_stack=frame_stack,
            camera_id=camera_id,
            seed=0,
            time_limit=time_limit,
        )
    except ValueError as exc:
        raise ConfigError(f"cannot make {task}: {first_line(exc)}") from exc
    except (ImportError, RuntimeError, OSError) as exc:
        if (error := render_error(exc)) is not None:
            raise error from exc
        raise


def _camera(task: str, camera_id: int | None) -> int | None:
    """The camera frames come from: the given one, else the task's default (None: a Gymnasium env's own view)."""
    if camera_id is not None or is_gym_task(task):
        return camera_id
    return default_camera(task)


def run_episode(
    env: PixelEnv, policy: _Policy, seed: int, image_size: int, on_step: Callable[[], None] | None = None,
    start: str = "task",
) -> dict[str, np.ndarray]:  # fmt: skip
    """Play one episode seeded with ``seed`` from a ``start`` state (`kprl.data.start_states`) and return its
    shard arrays (see `kprl.data.frames`).

    Frames come from ``env``'s own render when its size is ``image_size``; otherwise each state is rendered a
    second time at ``image_size`` and the landmarks are projected for that size. ``on_step`` is called after
    every agent step (progress display). The ``episode`` column is left 0 for the caller to fill in.
    """
    own_size = env.image_size == image_size

    def observe(step: Step) -> tuple[np.ndarray, np.ndarray]:
        if own_size:
            return step.frame.transpose(1, 2, 0), step.landmarks
        return env.render(image_size), env.landmarks(image_size)

    env.seed_episode(seed)
    policy.reset(seed)
    if start == "any":
        # A generator of its own: the random policy draws from default_rng(seed).
        place = any_state(split_task(env.task)[0], env.camera_id, image_size, np.random.default_rng([seed, 1]))
        step = env.reset(place)  # type: ignore[call-arg]  # DMCEnv only: collect refuses it for gym tasks
    else:
        step = env.reset()
    frames, landmarks, actions, rewards = [], [], [], []
    action = np.zeros(env.action_dim, dtype=np.float32)
    while True:
        frame, points = observe(step)
        frames.append(frame)
        landmarks.append(points)
        actions.append(action)
        rewards.append(step.reward)
        if step.last:
            break
        action = policy.act(step)
        step = env.step(action)
        if on_step is not None:
            on_step()
    n = len(frames)
    return {
        "frames": np.stack(frames).astype(np.uint8, copy=False),
        "landmarks": np.stack(landmarks).astype(np.float32, copy=False),
        "actions": np.stack(actions).astype(np.float32, copy=False),
        "rewards": np.asarray(rewards, dtype=np.float32),
        "episode": np.zeros(n, dtype=np.int64),
        "step": np.arange(n, dtype=np.int64),
    }


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def prepare_out(out: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Create ``out`` with ``meta.json``, or check that it holds a collection with the same settings.

    Returns the meta data to write (an existing one keeps the larger ``env_steps_requested``). Raises
    `ConfigError` (touching nothing) when ``out`` is not a dataset directory or its settings differ.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    if (out / META_FILE).exists():
        stored = read_meta(out)
        diffs = [
            f"{key} {json.dumps(stored.get(key))} (stored) vs {json.dumps(meta[key])} (requested)"
            for key in SETTINGS
            if stored.get(key, UNRECORDED.get(key)) != meta[key]
        ]
        if diffs:
            raise ConfigError(
                f"{out} holds a collection with other settings: {'; '.join(diffs)}; "
                "rerun with the stored settings or use another --out"
            )
        return {
            **meta,
            "env_steps_requested": max(int(stored["env_steps_requested"]), meta["env_steps_requested"]),
        }
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out} exists, is not empty and holds no frame dataset (no {META_FILE})")
    return meta


def _remove_stray_temp_files(out: Path) -> list[Path]:
    """Delete the temp files that a killed `atomic_write_bytes` left in ``out``; returns what was removed."""
    removed = []
    for child in out.iterdir():
        name = child.name
        if (
            child.is_file()
            and name.endswith(".tmp")
            and (name.startswith(".shard_") or name.startswith(f".{META_FILE}."))
        ):
            child.unlink()
            removed.append(child)
    return removed


def _count(file: Path, meta: dict[str, Any]) -> tuple[np.ndarray, int, int]:
    """(sorted episode ids, frames, agent steps) of one existing shard, reading only its small columns."""
    arrays = read_shard(file, meta, ("episode", "step"))
    return np.unique(arrays["episode"]), len(arrays["step"]), int(np.count_nonzero(arrays["step"]))


def _load_policy(policy: str, device: str) -> tuple[AgentPolicy, Any]:
    """The trained agent of run directory ``policy`` and its training config."""
    run_dir = Path(policy)
    if not run_dir.is_dir():
        raise ConfigError(
            f"--policy must be 'random' or a `kprl train` run directory; {policy} is not a directory"
        )
    agent, cfg, info = load_agent(run_dir=run_dir, device=device)
    agent.train(False)
    return AgentPolicy(agent, str(run_dir.resolve()), int(info["env_step"])), cfg


def collect(
    out: Path,
    env_steps: int,
    task: str | None = None,
    policy: str = "random",
    image_size: int = 100,
    seed: int = 0,
    episodes_per_shard: int = 10,
    action_repeat: int | None = None,
    camera_id: int | None = None,
    time_limit: float | None = None,
    device: str = "cpu",
    quiet: bool = False,
    start: str = "task",
) -> dict[str, Any]:
    """Collect (or resume, or extend) a frame dataset in ``out`` until it holds ``env_steps`` env steps.

    ``policy`` is ``"random"`` or the run directory of ``kprl train``; with a run directory the task, action
    repeat and camera are the agent's (``task``/``action_repeat``/``camera_id`` may be given only if equal) and
    the env renders at the agent's size, ``image_size`` being rendered separately when it differs. ``start``
    says where episodes begin (`kprl.data.start_states`: the task's reset, or ``any`` state in view). Prints a
    progress bar on a terminal, one line per written shard otherwise (nothing when ``quiet``). Returns a summary
    of the dataset: out, episodes, frames, env_steps, shards, shards_written.
    """
    for name, value, low in (
        ("--env-steps", env_steps, 1),
        ("--image-size", image_size, MIN_IMAGE_SIZE),
        ("--episodes-per-shard", episodes_per_shard, 1),
        ("--seed", seed, 0),
        ("--action-repeat", action_repeat, 1),
        ("--camera-id", camera_id, 0),
    ):
        if value is not None and value < low:
            raise ConfigError(f"{name} must be >= {low}, got {value}")
    if time_limit is not None and not time_limit > 0:
        raise ConfigError(f"--time-limit must be > 0, got {time_limit}")
    if task is not None:
        check_task(task)
    if start not in START_STATES:
        raise ConfigError(f"--start must be one of {', '.join(START_STATES)}, got {start!r}")
    out = Path(out)

    chooser: _Policy
    if policy == "random":
        if task is None:
            raise ConfigError("--task is required with --policy random")
        repeat = task_action_repeat(task) if action_repeat is None else action_repeat
        camera = _camera(task, camera_id)
        env_size, frame_stack = image_size, 1
    else:
        chooser, cfg = _load_policy(policy, device)
        agent_task = cfg.env.task
        repeat = cfg.env.action_repeat or task_action_repeat(agent_task)
        camera = _camera(agent_task, cfg.env.camera_id)
        for flag, given, own in (
            ("--task", task, agent_task),
            ("--action-repeat", action_repeat, repeat),
            ("--camera-id", camera_id, camera),
        ):
            if given is not None and given != own:
                raise ConfigError(f"{flag} {given} differs from the agent's {own} ({policy}/config.json)")
        task = agent_task
        env_size, frame_stack = C.render_size(cfg), cfg.env.frame_stack

    if start != "task" and is_gym_task(task):
        raise ConfigError(f"--start {start} needs a dm_control task (it sets MuJoCo joint states); {task} is not one")
    env = _make_env(task, env_size, repeat, frame_stack, camera, time_limit)
    try:
        if policy == "random":
            chooser = RandomPolicy(env.action_dim)
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "task": task,
            "image_size": image_size,
            "camera_id": camera,
            "action_repeat": repeat,
            "action_dim": env.action_dim,
            "landmark_names": list(env.landmark_names),
            "policy": chooser.name,
            "policy_checkpoint": chooser.checkpoint,
            "seed": seed,
            "episodes_per_shard": episodes_per_shard,
            "time_limit": time_limit,
            "start": start,
            "env_steps_requested": env_steps,
        }
        stored = read_meta(out) if (out / META_FILE).exists() else None
        meta = prepare_out(out, meta)
        out.mkdir(parents=True, exist_ok=True)
        _remove_stray_temp_files(out)
        if meta != stored:
            atomic_write_text(out / META_FILE, json.dumps(meta, indent=2) + "\n")
        written = _collect_shards(out, meta, env, chooser, env_steps, quiet)
    finally:
        env.close()

    episodes = frames = agent_steps = 0
    shards = shard_files(out)
    for _, file in shards:
        ids, n, steps = _count(file, meta)
        episodes, frames, agent_steps = episodes + len(ids), frames + n, agent_steps + steps
    if not written and not quiet:
        print(
            f"{out}: already holds {agent_steps * repeat} env steps (requested {env_steps}); nothing to do",
            flush=True,
        )
    return {
        "out": str(out),
        "episodes": episodes,
        "frames": frames,
        "env_steps": agent_steps * repeat,
        "shards": len(shards),
        "shards_written": written,
    }


def _collect_shards(
    out: Path,
    meta: dict[str, Any],
    env: PixelEnv,
    policy: _Policy,
    env_steps: int,
    quiet: bool,
) -> int:
    """The collection loop: skip complete shards, extend a partial one, write new ones. Returns shards written."""
    per_shard, repeat, size, seed = (
        meta["episodes_per_shard"],
        meta["action_repeat"],
        meta["image_size"],
        meta["seed"],
    )
    bar = not quiet and sys.stdout.isatty()
    progress = Progress(
        TextColumn("[bold]collect[/bold] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("env steps"),
        TimeRemainingColumn(),
        disable=not bar,
    )
    total, index, written = 0, 0, 0
    with progress:
        job = progress.add_task(str(out), total=env_steps)

        def advance() -> None:
            progress.advance(job, repeat)

        while total < env_steps:
            file = out / shard_name(index)
            first = index * per_shard
            parts: list[dict[str, np.ndarray]] = []
            if file.exists():
                try:
                    ids, _, steps = _count(file, meta)
                except DataError as exc:
                    raise DataError(f"{exc}; delete it and rerun to collect it again") from exc
                if len(ids) > per_shard or not np.array_equal(ids, np.arange(first, first + len(ids))):
                    raise DataError(f"{file}: holds episodes {ids.tolist()}, expected {first} onwards")
                total += steps * repeat
                progress.update(job, completed=min(total, env_steps))
                if len(ids) >= per_shard or total >= env_steps:
                    index += 1
                    continue
                parts.append(read_shard(file, meta))  # a partial last shard: extend it
            t0, new_frames = time.perf_counter(), 0
            episodes_in_shard = len(np.unique(parts[0]["episode"])) if parts else 0
            while episodes_in_shard < per_shard and total < env_steps:
                e = first + episodes_in_shard
                arrays = run_episode(env, policy, episode_seed(seed, e), size, advance if bar else None,
                                     meta["start"])  # fmt: skip
                arrays["episode"][:] = e
                parts.append(arrays)
                episodes_in_shard += 1
                new_frames += len(arrays["step"])
                total += (len(arrays["step"]) - 1) * repeat
                progress.update(job, completed=min(total, env_steps))
            write_shard(file, _concat(parts))
            written += 1
            if not bar and not quiet:
                rate = new_frames / max(time.perf_counter() - t0, 1e-9)
                print(
                    f"{file.name}: episodes {first}-{first + episodes_in_shard - 1} | {total}/{env_steps} env steps "
                    f"| {rate:.0f} frames/s",
                    flush=True,
                )
            index += 1
    return written
