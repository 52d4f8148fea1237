"""Where an update's time goes: torch.profiler self time of one agent's update, by kind of operation, for the plain
path (fp32, pytorch_sac_ae's structure) and the fast path. Prints one JSON object (results/profile_update_cpu.json).

Usage: ``python benchmarks/profile_update.py [--agent sac_ae] [--updates 4] [--device cpu]``.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from throughput import BATCH, PATHS, build, filled_replay  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from kprl.runtime.hardware import keep_freed_memory  # noqa: E402

CATEGORIES = {
    "convolution backward": ("aten::convolution_backward",),
    "convolution forward": ("aten::mkldnn_convolution", "aten::_convolution", "aten::convolution", "aten::conv2d",
                            "aten::conv_transpose2d", "aten::cudnn_convolution"),  # fmt: skip
    "matrix products": ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear"),
    "copies, casts, layout": ("aten::copy_", "aten::_to_copy", "aten::to", "aten::contiguous", "aten::clone",
                              "aten::fill_", "aten::zero_", "aten::cat"),  # fmt: skip
    "random numbers": ("aten::uniform_", "aten::random_", "aten::normal_", "aten::randint"),
    "optimisers and target EMA": ("aten::_fused_adam_", "aten::lerp_", "aten::addcdiv_", "aten::addcmul_",
                                  "aten::sqrt", "aten::lerp", "aten::_foreach"),  # fmt: skip
    "ReLU and its backward": ("aten::clamp_min", "aten::relu", "aten::threshold_backward", "aten::relu_"),
    "pixel losses": ("aten::mse_loss", "aten::mse_loss_backward"),
}


def category(name: str) -> str:
    for cat, prefixes in CATEGORIES.items():
        if any(name == p or name.startswith(p + "_") or name.startswith(p) for p in prefixes):
            return cat
    return "other (elementwise, autograd, Python)"


def profile_path(agent_name: str, path: str, updates: int, device: str) -> dict:
    agent = build(agent_name, path, device)
    replay = filled_replay()
    rng = np.random.default_rng(0)
    batches = [replay.sample(BATCH, rng, target_offset=agent.target_offset, device=device) for _ in range(2)]
    for step in range(3):
        agent.update(batches[step % 2], step)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        for step in range(3, 3 + updates):
            agent.update(batches[step % 2], step)
    totals: dict[str, float] = {}
    for event in prof.key_averages():
        totals[category(event.key)] = totals.get(category(event.key), 0.0) + event.self_cpu_time_total
    total = sum(totals.values())
    return {
        "ms_per_update": round(total / 1000 / updates, 1),
        "by_kind_ms_per_update": {
            k: round(v / 1000 / updates, 1) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])
        },
        "by_kind_share": {k: round(v / total, 3) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", default="sac_ae")
    parser.add_argument("--updates", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    keep_freed_memory()
    result = {
        "agent": args.agent,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "note": "profiler self CPU time (profiling adds overhead; compare shares and the two paths, not to the "
        "throughput benchmark's timings)",
        "paths": {path: profile_path(args.agent, path, args.updates, args.device) for path in PATHS},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
