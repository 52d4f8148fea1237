"""Speed levers, each measured on its own (both sides in one process, alternating): prints one JSON object
(results/levers_cpu.json). What docs/performance.md says each optimisation of the fast path is worth.

* update structure x precision for one agent: reference/fast x fp32/bf16 (updates/s);
* channels-last vs NCHW for the conv trunk and the pixel decoder (bf16 forward+backward, batch 128);
* Adam step over the critic's parameters: for-loop, foreach and fused implementations;
* the reconstruction target's dequantisation noise: one float draw per pixel vs random bytes;
* network input: ``obs.float() / 255`` vs uint8 -> bf16 with 1/255 folded into the first conv;
* glibc keeping freed memory (a child process each way: kernel time and page faults per update);
* the pixel losses' MSE on channels-last bf16 images as they are vs as their contiguous NHWC views (forward +
  backward of the loss alone, and whole fast-path updates of the grid's agents with random crop).

Usage: ``python benchmarks/levers.py [--agent sac_ae] [--repeats 6] [--only LEVER ...]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from throughput import ACTION_DIM, BATCH, OBS_SHAPE, build, config, filled_replay  # noqa: E402

import kprl.rl.representations as representations  # noqa: E402
from kprl.config import TrainConfig, render_size  # noqa: E402
from kprl.nets.encoder import ConvTrunk, PixelDecoder  # noqa: E402
from kprl.rl.factory import make_agent  # noqa: E402
from kprl.rl.representations import dequantized_target  # noqa: E402
from kprl.runtime.hardware import keep_freed_memory  # noqa: E402

CL = torch.channels_last


def alternate(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median milliseconds of each function, run in alternating rounds."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(warmup + repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {k: round(float(np.median(v)) * 1000, 2) for k, v in times.items()}


def structure_and_precision(agent_name: str, repeats: int) -> dict:
    replay = filled_replay()
    rng = np.random.default_rng(0)
    agents = {}
    for path in ("reference", "fast"):
        for precision in ("fp32", "bf16"):
            cfg = TrainConfig(agent=agent_name, update_path=path, precision=precision, batch_size=BATCH)  # type: ignore[arg-type]
            torch.manual_seed(0)
            agents[f"{path}/{precision}"] = make_agent(cfg, OBS_SHAPE, ACTION_DIM, "cpu")
    steps = dict.fromkeys(agents, 0)
    # The batches carry the IMM target these agents ask for (all four variants share one target offset).
    batches = [replay.sample(BATCH, rng, target_offset=next(iter(agents.values())).target_offset) for _ in range(2)]

    def step(name: str) -> Callable[[], object]:
        def run() -> object:
            agent, s = agents[name], steps[name]
            batch = batches[s % 2]
            steps[name] += 1
            return agent.update(batch, s)

        return run

    ms = alternate({name: step(name) for name in agents}, repeats)
    return {"ms_per_update": ms, "updates_per_second": {k: round(1000 / v, 3) for k, v in ms.items()}}


def fwd_bwd(module: torch.nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = module(x)
        y.float().square().mean().backward()
        return None

    return run


def memory_layout(repeats: int) -> dict:
    obs = torch.randint(0, 256, (BATCH, *OBS_SHAPE), dtype=torch.uint8)
    latent = torch.randn(BATCH, 50, requires_grad=True)
    trunk_nchw, dec_nchw = ConvTrunk(9, 84), PixelDecoder(50, (32, 35, 35), 9, 84)
    trunk_cl = ConvTrunk(9, 84).to(memory_format=CL)
    dec_cl = PixelDecoder(50, (32, 35, 35), 9, 84).to(memory_format=CL)
    obs_cl = obs.contiguous(memory_format=CL)
    return {
        "conv_trunk_fwd_bwd_ms": alternate(
            {"nchw": fwd_bwd(trunk_nchw, obs), "channels_last": fwd_bwd(trunk_cl, obs_cl)}, repeats
        ),
        "pixel_decoder_fwd_bwd_ms": alternate(
            {"nchw": fwd_bwd(dec_nchw, latent), "channels_last": fwd_bwd(dec_cl, latent)}, repeats
        ),
    }


def adam(repeats: int) -> dict:
    def critic_sized() -> list[torch.nn.Parameter]:
        shapes = [(50, 39200), (50,), (1024, 51), (1024,), (1024, 1024), (1024,), (1, 1024), (1,)] * 2
        params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
        for p in params:
            p.grad = torch.randn_like(p)
        return params

    opts = {
        "for_loop": torch.optim.Adam(critic_sized(), foreach=False),
        "foreach": torch.optim.Adam(critic_sized(), foreach=True),
        "fused": torch.optim.Adam(critic_sized(), fused=True),
    }
    return {"critic_adam_step_ms": alternate({k: o.step for k, o in opts.items()}, repeats)}


def mse_nhwc_views(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``pixel_mse`` on the NHWC views of channels-last images: the same mean, reduced over a contiguous tensor
    (torch copies a non-contiguous bf16 tensor to fp32 before reducing it) and with a channels-last gradient."""
    with torch.autocast(prediction.device.type, enabled=False):
        p, t = prediction.permute(0, 2, 3, 1), target.to(prediction.dtype).permute(0, 2, 3, 1)
        return F.mse_loss(p, t).float()


def pixel_mse_layout(repeats: int, agents: tuple[str, ...] = ("sac_imm", "sac_ae")) -> dict:
    shape = (BATCH, *OBS_SHAPE)
    prediction = torch.randn(shape).to(torch.bfloat16).contiguous(memory_format=CL).requires_grad_()
    target = torch.randn(shape).to(torch.bfloat16).contiguous(memory_format=CL)

    def loss_fwd_bwd(mse: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[[], object]:
        return lambda: torch.autograd.grad(mse(prediction, target), prediction)

    result: dict = {
        "loss_fwd_bwd_ms": alternate(
            {"as_stored": loss_fwd_bwd(representations.pixel_mse), "nhwc_views": loss_fwd_bwd(mse_nhwc_views)},
            repeats,
        ),
        "crop_fast_update_ms": {},
    }
    for agent_name in agents:
        result["crop_fast_update_ms"][agent_name] = update_with_each_mse(agent_name, repeats)
    return result


def update_with_each_mse(agent_name: str, repeats: int) -> dict[str, float]:
    """Milliseconds per fast-path update of ``agent_name`` with random crop, each MSE form in alternating rounds."""
    forms = {"as_stored": representations.pixel_mse, "nhwc_views": mse_nhwc_views}
    agent = build(agent_name, "fast", "cpu", "crop")
    replay = filled_replay(side=render_size(config(agent_name, "fast", "crop")))
    rng = np.random.default_rng(0)
    batches = [replay.sample(BATCH, rng, target_offset=agent.target_offset) for _ in range(2)]
    steps = [0]

    def update(form: str) -> Callable[[], object]:
        def run() -> object:
            representations.pixel_mse = forms[form]  # the objectives look the name up at call time
            steps[0] += 1
            return agent.update(batches[steps[0] % 2], steps[0])

        return run

    try:
        return alternate({form: update(form) for form in forms}, repeats)
    finally:
        representations.pixel_mse = forms["as_stored"]


def pixels(repeats: int) -> dict:
    obs = torch.randint(0, 256, (BATCH, *OBS_SHAPE), dtype=torch.uint8)

    def per_pixel_float_noise() -> torch.Tensor:  # the straightforward form (pytorch_sac_ae's preprocess_obs)
        x = torch.floor(obs.float() / 8) / 32 - 0.5
        return x + torch.rand_like(x) / 32

    def scaled_input() -> torch.Tensor:
        return obs.float() / 255.0

    def bf16_input() -> torch.Tensor:
        return obs.to(torch.bfloat16)

    return {
        "reconstruction_target_ms": alternate(
            {"float_noise_per_pixel": per_pixel_float_noise, "random_bytes": lambda: dequantized_target(obs)}, repeats
        ),
        "network_input_ms": alternate({"float_div_255": scaled_input, "uint8_to_bf16": bf16_input}, repeats),
    }


CHILD = """
import sys, time, resource, numpy as np, torch
sys.path.insert(0, {bench!r})
from kprl.runtime.hardware import keep_freed_memory
if {keep}: keep_freed_memory()
from throughput import build, filled_replay, BATCH
agent = build({agent!r}, 'fast', 'cpu'); replay = filled_replay(); rng = np.random.default_rng(0)
batches = [replay.sample(BATCH, rng, target_offset=agent.target_offset) for _ in range(2)]
run = lambda s: agent.update(batches[s % 2], s)
for s in range(3): run(s)
r0 = resource.getrusage(resource.RUSAGE_SELF); t0 = time.perf_counter()
for s in range(3, 3 + {n}): run(s)
dt = (time.perf_counter() - t0) / {n}; r1 = resource.getrusage(resource.RUSAGE_SELF)
print(dt * 1000, (r1.ru_stime - r0.ru_stime) / {n} * 1000, (r1.ru_minflt - r0.ru_minflt) / {n})
"""


def allocator(agent_name: str, repeats: int) -> dict:
    out: dict[str, dict[str, float]] = {}
    bench = os.path.dirname(os.path.abspath(__file__))
    for keep in (False, True, False, True):  # twice each, alternating
        code = CHILD.format(bench=bench, keep=keep, agent=agent_name, n=repeats)
        ms, sys_ms, faults = map(float, subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                                         text=True).stdout.split())  # fmt: skip
        key = "glibc_keeps_freed_memory" if keep else "glibc_default"
        entry = out.setdefault(key, {"ms_per_update": [], "kernel_ms_per_update": [], "page_faults_per_update": []})
        entry["ms_per_update"].append(round(ms, 1))  # type: ignore[attr-defined]
        entry["kernel_ms_per_update"].append(round(sys_ms, 1))  # type: ignore[attr-defined]
        entry["page_faults_per_update"].append(round(faults))  # type: ignore[attr-defined]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", default="sac_ae")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--only", nargs="+", choices=list(LEVERS), help="measure only these levers")
    args = parser.parse_args()
    keep_freed_memory()
    result: dict = {"agent": args.agent, "batch_size": BATCH, "torch_threads": torch.get_num_threads()}
    for name in args.only or LEVERS:
        result[name] = LEVERS[name](args)
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result, indent=2))


LEVERS: dict[str, Callable[[argparse.Namespace], dict]] = {
    "structure_and_precision": lambda a: structure_and_precision(a.agent, a.repeats),
    "memory_layout_bf16": lambda a: memory_layout(a.repeats),
    "adam": lambda a: adam(a.repeats),
    "pixels": lambda a: pixels(a.repeats),
    "allocator_fast_path": lambda a: allocator(a.agent, a.repeats),
    "pixel_mse_layout": lambda a: pixel_mse_layout(a.repeats),
}
"""Each lever's measurement, by its key in the printed JSON (in that order)."""


if __name__ == "__main__":
    main()
