"""How fast a run goes on this machine: timed updates, timed acting, and the wall-clock of a whole run from them.

Shared by ``benchmarks/throughput.py`` (which prints the measurements) and ``kprl grid`` (which calibrates a row it
has never seen run on this machine, to decide whether it fits the hours left).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from kprl import config as C
from kprl.envs.factory import PixelEnv, make_env
from kprl.rl.factory import make_agent
from kprl.rl.replay import FrameReplay
from kprl.rl.sac import SACAgent

EPISODE_SECONDS = 10.0  # dm_control benchmark episodes: 1000 physics steps of 0.01 s


def filled_replay(transitions: int = 2000, episode_len: int = 125, side: int = 84, action_dim: int = 1) -> FrameReplay:
    """A replay holding random ``side`` px frames in episodes of cartpole length."""
    rng = np.random.default_rng(0)
    episodes = transitions // episode_len
    replay = FrameReplay(transitions + episodes + 1, (3, side, side), action_dim, frame_stack=3)
    for _ in range(episodes):
        replay.add_first(rng.integers(0, 256, (3, side, side), dtype=np.uint8))
        for _ in range(episode_len):
            replay.add(rng.uniform(-1, 1, action_dim).astype(np.float32), 0.5, 1.0,
                       rng.integers(0, 256, (3, side, side), dtype=np.uint8))  # fmt: skip
    return replay


def sync(device: str) -> None:
    """Wait for queued GPU work, so that a timer measures it."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_updates(
    agents: dict[str, SACAgent], replay: FrameReplay, updates: int, warmup: int, device: str, batch_size: int = 128
) -> dict[str, float]:
    """Median seconds per update of each agent, measured in alternating rounds so machine noise hits all alike."""
    rng = np.random.default_rng(0)
    # Each agent gets batches with the IMM target its objectives ask for (none, the next observation, or one
    # `--imm-target-offset` steps later, which the fast path must encode on its own).
    offsets = {agent.target_offset for agent in agents.values()}
    batches = {k: [replay.sample(batch_size, rng, target_offset=k, device=device) for _ in range(4)] for k in offsets}
    seconds: dict[str, list[float]] = {name: [] for name in agents}
    for step in range(warmup + updates):
        for name, agent in agents.items():
            own = batches[agent.target_offset]
            batch = own[step % len(own)]
            sync(device)
            t0 = time.perf_counter()
            agent.update(batch, step)
            sync(device)
            if step >= warmup:
                seconds[name].append(time.perf_counter() - t0)
    return {name: float(np.median(s)) for name, s in seconds.items()}


def time_acting(agent: SACAgent, env: PixelEnv, steps: int = 250) -> float:
    """Agent steps per second of ``env`` while ``agent`` acts (rendering + one forward pass each); closes ``env``."""
    step = env.reset()
    t0 = time.perf_counter()
    for _ in range(steps):
        step = env.step(agent.act(step.obs, deterministic=False))
        if step.last:
            step = env.reset()
    elapsed = time.perf_counter() - t0
    env.close()
    return steps / elapsed


def run_hours(cfg: C.TrainConfig, seconds_per_update: float, agent_steps_per_second: float, action_repeat: int) -> float:
    """Wall-clock hours of a whole run of ``cfg`` from measured rates: one update per agent step after the seed
    phase plus the seed burst (pytorch_sac_ae), every agent step acted, and every evaluation's episodes."""
    agent_steps = C.agent_steps(cfg.env_steps, action_repeat)
    episode_agent_steps = EPISODE_SECONDS * 100 / action_repeat
    evaluations = cfg.env_steps // cfg.eval_every + 1
    acted = agent_steps + evaluations * cfg.eval_episodes * episode_agent_steps
    return (agent_steps * seconds_per_update + acted / agent_steps_per_second) / 3600


def measure_run_hours(cfg: C.TrainConfig, threads: int, updates: int = 6, warmup: int = 3) -> float:
    """Estimated hours of a whole run of ``cfg`` on this machine's CPU with ``threads`` torch threads, from a few
    timed updates on a random replay and a few hundred timed actions (about half a minute)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        env = make_env(cfg, seed=0)
        agent = make_agent(cfg, env.obs_shape, env.action_dim, cfg.device)
        replay = filled_replay(side=C.render_size(cfg), action_dim=env.action_dim)
        per_update = time_updates({"agent": agent}, replay, updates, warmup, cfg.device, cfg.batch_size)["agent"]
        acting = time_acting(agent, env)
    finally:
        torch.set_num_threads(previous)
    return run_hours(cfg, per_update, acting, env.action_repeat)
