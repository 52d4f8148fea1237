"""Throughput benchmark: prints one JSON object (committed as results/bench_throughput_<device>.json).

* updates/s of each agent (sac_ae, sac_ae_imm, sac_imm) at the reference hyperparameters (batch 128, 9x84x84
  observations, 1-d action, hidden 1024) on two paths measured in the same process, so their ratio is meaningful on a
  shared, noisy machine: ``plain`` = fp32 and pytorch_sac_ae's update structure (``--update-path reference``), and
  ``fast`` = the default (``--update-path fast``, ``--precision auto``);
* FLOPs of one update of each (counted by torch's FlopCounterMode: convolutions and matrix products, forward and
  backward) and the GFLOP/s achieved;
* env steps/s of cartpole swingup with rendering and acting (action repeat 8, 84 px), and the cost of one evaluation;
* an estimate of a 100k-env-step run from those rates (updates + env + evaluations), and its memory: the replay at
  capacity, parameters and optimiser state, and this process's peak RSS (activations of a batch-128 update).

With ``--augmentation crop`` (or ``shift``) every agent is built with that augmentation: frames are stored and
rendered at 100 px (84 + the crop margin) and each update crops them, as in the experiment's keypoint rows.

Usage: ``python benchmarks/throughput.py [--updates 10] [--warmup 3] [--device cpu] [--agents sac_ae,...]
[--augmentation none|crop|shift]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from kprl.config import SEED_AGENT_STEPS, TrainConfig, render_size  # noqa: E402
from kprl.envs.dmc import DMCEnv  # noqa: E402
from kprl.rl.factory import make_agent  # noqa: E402
from kprl.rl.replay import FrameReplay  # noqa: E402
from kprl.rl.sac import SACAgent  # noqa: E402
from kprl.runtime.hardware import keep_freed_memory  # noqa: E402
from kprl.runtime.speed import filled_replay, time_acting, time_updates  # noqa: E402

OBS_SHAPE = (9, 84, 84)
ACTION_DIM = 1
BATCH = 128
PATHS = {"plain": ("reference", "fp32"), "fast": ("fast", "auto")}
RUN_ENV_STEPS = 100_000
ACTION_REPEAT = 8
EVALS = RUN_ENV_STEPS // 10_000 + 1  # every 10k env steps and at the start
EVAL_EPISODES = 10


def config(agent_name: str, path: str, augmentation: str = "none") -> TrainConfig:
    update_path, precision = PATHS[path]
    return TrainConfig(agent=agent_name, precision=precision, batch_size=BATCH, update_path=update_path,  # type: ignore[arg-type]
                       augmentation=augmentation)  # type: ignore[arg-type]  # fmt: skip


def build(agent_name: str, path: str, device: str, augmentation: str = "none") -> SACAgent:
    cfg = config(agent_name, path, augmentation)
    side = render_size(cfg)
    torch.manual_seed(0)
    return make_agent(cfg, (OBS_SHAPE[0], side, side), ACTION_DIM, device)


def flops_per_update(agent: SACAgent, replay: FrameReplay, device: str) -> float:
    """FLOPs of one update at step 0 and one at step 1 (the actor and targets update every second step), averaged."""
    rng = np.random.default_rng(1)
    counter = FlopCounterMode(display=False)
    with counter:
        for step in (0, 1):
            agent.update(replay.sample(BATCH, rng, target_offset=agent.target_offset, device=device), step)
    return counter.get_total_flops() / 2


def time_env(agent: SACAgent, side: int = 84, steps: int = 250) -> dict:
    """Env steps/s while the agent acts (rendering + one forward pass per action), and one evaluation's seconds."""
    env = DMCEnv("cartpole_swingup", image_size=side, seed=0)
    action_repeat = env.action_repeat
    agent_steps_per_s = time_acting(agent, env, steps)
    return {
        "agent_steps_per_second": round(agent_steps_per_s, 1),
        "env_steps_per_second": round(agent_steps_per_s * action_repeat, 1),
        "action_repeat": action_repeat,
        "eval_seconds_10_episodes": round(EVAL_EPISODES * 1000 / action_repeat / agent_steps_per_s, 1),
    }


def state_bytes(agent: SACAgent) -> int:
    total = 0
    for value in agent.state_dict().values():
        tensors = [value] if isinstance(value, torch.Tensor) else []
        if isinstance(value, dict):
            stack = [value]
            while stack:
                item = stack.pop()
                for v in item.values() if isinstance(item, dict) else item:
                    if isinstance(v, torch.Tensor):
                        tensors.append(v)
                    elif isinstance(v, (dict, list, tuple)):
                        stack.append(v)
        total += sum(t.numel() * t.element_size() for t in tensors)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--agents", default="sac_ae,sac_ae_imm,sac_imm")
    parser.add_argument("--augmentation", default="none", choices=["none", "crop", "shift"])
    args = parser.parse_args()
    allocator_tuned = keep_freed_memory()  # as `kprl train` does

    side = render_size(config("sac_ae", "fast", args.augmentation))
    replay = filled_replay(side=side)
    transitions = len(replay)
    result: dict = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "device": args.device,
            "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
            "glibc_keeps_freed_memory": allocator_tuned,
        },
        "batch_size": BATCH,
        "augmentation": args.augmentation,
        "obs_shape": [OBS_SHAPE[0], side, side],
        "paths": {name: {"update_path": p, "precision": q} for name, (p, q) in PATHS.items()},
        "updates": {},
    }
    fast_rates = {}
    for agent_name in args.agents.split(","):
        agents = {path: build(agent_name, path, args.device, args.augmentation) for path in PATHS}
        flops = {path: flops_per_update(agent, replay, args.device) for path, agent in agents.items()}
        seconds = time_updates(agents, replay, args.updates, args.warmup, args.device)
        entry: dict = {}
        for path, agent in agents.items():
            entry[path] = {
                "precision": agent.precision,
                "updates_per_second": round(1 / seconds[path], 3),
                "seconds_per_update": round(seconds[path], 4),
                "gflop_per_update": round(flops[path] / 1e9, 1),
                "gflop_per_sample": round(flops[path] / 1e9 / BATCH, 3),
                "achieved_gflop_per_second": round(flops[path] / 1e9 / seconds[path], 1),
            }
        entry["fast_over_plain"] = round(seconds["plain"] / seconds["fast"], 2)
        result["updates"][agent_name] = entry
        fast_rates[agent_name] = 1 / seconds["fast"]
        if agent_name == "sac_ae":
            result["env"] = time_env(agents["fast"], side)
    if "sac_ae" in fast_rates:
        base = fast_rates["sac_ae"]
        result["keypoint_agents_slowdown_vs_sac_ae"] = {a: round(base / r, 2) for a, r in fast_rates.items()}
    if "env" in result:
        env = result["env"]
        updates = RUN_ENV_STEPS // ACTION_REPEAT  # one per agent step; the seed burst makes up for the seed phase
        estimate = {
            agent: {
                "updates": updates,
                "update_minutes": round(updates / rate / 60, 1),
                "env_minutes": round(RUN_ENV_STEPS / env["env_steps_per_second"] / 60, 1),
                "eval_minutes": round(EVALS * env["eval_seconds_10_episodes"] / 60, 1),
            }
            for agent, rate in fast_rates.items()
        }
        for e in estimate.values():
            e["total_minutes"] = round(e["update_minutes"] + e["env_minutes"] + e["eval_minutes"], 1)
        result["run_100k_estimate"] = estimate
        result["run_100k_estimate_note"] = (
            f"{updates} updates ({SEED_AGENT_STEPS} seed actions, then the burst of {SEED_AGENT_STEPS} updates and "
            "one per action), 100k env steps of acting and rendering, and "
            f"{EVALS} evaluations of {EVAL_EPISODES} episodes; measured rates, not a run"
        )
    per_transition = replay.nbytes / transitions
    result["memory"] = {
        "replay_bytes_per_transition": round(per_transition, 1),
        "replay_gib_at_100k_transitions": round(per_transition * 100_000 / 2**30, 2),
        "pytorch_sac_ae_replay_gib_at_100k": round((2 * OBS_SHAPE[0] * side * side + 12) * 100_000 / 2**30, 2),
        "agent_state_mib": {
            a: round(state_bytes(build(a, "fast", args.device, args.augmentation)) / 2**20, 1) for a in fast_rates
        },
        "peak_rss_mib_of_this_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
