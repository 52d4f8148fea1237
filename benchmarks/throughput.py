"""Throughput benchmark: prints one JSON object.

* updates/s of each agent (sac_ae, sac_ae_imm, sac_imm) at the reference hyperparameters (batch 128, 9x84x84 observations, 1-d action,
  hidden 1024), for fp32 (the reference arithmetic) and bf16 autocast, measured in the same process so the ratio is
  meaningful on a shared, noisy machine;
* env steps/s of cartpole swingup including rendering (action repeat 8, 84 px) with random actions;
* replay bytes per transition (frame-once storage) against pytorch_sac_ae's obs + next_obs stacks;
* peak RSS of the process.

Usage: ``python benchmarks/throughput.py [--updates 20] [--warmup 3] [--device cpu]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from kprl.agents.factory import make_agent  # noqa: E402
from kprl.config import TrainConfig  # noqa: E402
from kprl.envs.dmc import DMCEnv  # noqa: E402
from kprl.replay import FrameReplay  # noqa: E402

OBS_SHAPE = (9, 84, 84)
ACTION_DIM = 1
BATCH = 128


def filled_replay(transitions: int = 2000, episode_len: int = 125) -> FrameReplay:
    """A replay holding random frames in episodes of cartpole length."""
    rng = np.random.default_rng(0)
    episodes = transitions // episode_len
    replay = FrameReplay(transitions + episodes + 1, (3, 84, 84), ACTION_DIM, frame_stack=3)
    for _ in range(episodes):
        replay.add_first(rng.integers(0, 256, (3, 84, 84), dtype=np.uint8))
        for _ in range(episode_len):
            replay.add(rng.uniform(-1, 1, ACTION_DIM).astype(np.float32), 0.5, 1.0,
                       rng.integers(0, 256, (3, 84, 84), dtype=np.uint8))  # fmt: skip
    return replay


def time_updates(agent_name: str, precision: str, replay: FrameReplay, updates: int, warmup: int, device: str) -> dict:
    cfg = TrainConfig(agent=agent_name, precision=precision, batch_size=BATCH)  # type: ignore[arg-type]
    torch.manual_seed(0)
    agent = make_agent(cfg, OBS_SHAPE, ACTION_DIM, device)
    rng = np.random.default_rng(0)
    for step in range(warmup):
        agent.update(replay.sample(BATCH, rng, target_offset=agent.target_offset, device=device), step)
    sample_seconds = 0.0
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for step in range(warmup, warmup + updates):
        ts = time.perf_counter()
        batch = replay.sample(BATCH, rng, target_offset=agent.target_offset, device=device)
        sample_seconds += time.perf_counter() - ts
        agent.update(batch, step)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    return {
        "updates_per_second": round(updates / elapsed, 3),
        "seconds_per_update": round(elapsed / updates, 4),
        "sampling_seconds_per_update": round(sample_seconds / updates, 5),
    }


def time_env(steps: int = 250) -> dict:
    env = DMCEnv("cartpole_swingup", image_size=84, seed=0)
    rng = np.random.default_rng(0)
    step = env.reset()
    t0 = time.perf_counter()
    for _ in range(steps):
        step = env.step(rng.uniform(-1, 1, env.action_dim))
        if step.last:
            step = env.reset()
    elapsed = time.perf_counter() - t0
    env.close()
    return {
        "agent_steps_per_second": round(steps / elapsed, 1),
        "env_steps_per_second": round(steps * env.action_repeat / elapsed, 1),
        "action_repeat": env.action_repeat,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--agents", default="sac_ae,sac_ae_imm,sac_imm")
    args = parser.parse_args()

    replay = filled_replay()
    transitions = len(replay)
    result: dict = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "device": args.device,
        },
        "batch_size": BATCH,
        "obs_shape": list(OBS_SHAPE),
        "updates": {},
    }
    for agent_name in args.agents.split(","):
        fp32 = time_updates(agent_name, "fp32", replay, args.updates, args.warmup, args.device)
        bf16 = time_updates(agent_name, "bf16", replay, args.updates, args.warmup, args.device)
        result["updates"][agent_name] = {
            "fp32": fp32,
            "bf16": bf16,
            "bf16_speedup": round(bf16["updates_per_second"] / fp32["updates_per_second"], 3),
        }
    result["env"] = time_env()
    reference_bytes = 2 * int(np.prod(OBS_SHAPE)) + 4 * (ACTION_DIM + 2)  # obs + next_obs uint8 stacks, float extras
    result["replay"] = {
        "bytes_per_transition": round(replay.nbytes / transitions, 1),
        "frame_bytes": 3 * 84 * 84,
        "pytorch_sac_ae_bytes_per_transition": reference_bytes,
        "ratio_vs_pytorch_sac_ae": round(reference_bytes / (replay.nbytes / transitions), 2),
    }
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
