"""The fast update path computes the reference path's losses and gradients: speed without changing the maths.

Both paths are run on the same batch from the same parameters and seeds with every learning rate at zero, so no
optimiser step moves a parameter and the reference path's re-encodings see the same weights as the fast path's one
encoding. Every optimiser's gradient is recorded at its step. fp32 fast vs fp32 reference must agree to float
rounding; bf16 fast vs fp32 reference within the bf16 tolerance stated below.

With real learning rates the paths take different steps, by design: the fast path's auxiliary gradient and the
actor's features come from the encoder before this update's critic step. Adam's first steps are close to
lr * sign(gradient), so that small difference flips the sign of the step of small gradient entries and the two runs'
parameters part quickly; whether learning is unchanged is a question for learning curves (docs/performance.md).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kprl.config import TrainConfig
from kprl.rl.factory import make_agent
from kprl.rl.replay import Batch
from kprl.rl.sac import SACAgent

OBS_SHAPE = (9, 84, 84)
ACTION_DIM = 2
# bf16 keeps 8 significant bits: losses agree to a few per cent. Gradients of bf16 forward passes are themselves
# noisy (cosine to fp32 down to ~0.9 for some tensors on these random frames), so the fast bf16 path is held to the
# reference path's own bf16 error: its cosine to the fp32 gradient may be at most this much lower.
BF16_LOSS_RTOL = 0.05
BF16_COSINE_SLACK = 0.03


def config(agent: str, path: str, precision: str, augmentation: str = "none") -> TrainConfig:
    cfg = TrainConfig(agent=agent, update_path=path, precision=precision, augmentation=augmentation)  # type: ignore[arg-type]
    cfg.sac.hidden_dim = 64
    cfg.encoder.num_filters = 8
    cfg.encoder.latent_dim = 16
    cfg.keypoint.keypoints = 4
    return cfg


def batch(seed: int = 0, size: int = 8, side: int = 84) -> Batch:
    """Stacks of 3 frames; the IMM target (offset 1) is next_obs itself, as `FrameReplay.sample` returns it."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (size, 5, 3, side, side), generator=g, dtype=torch.uint8)
    obs, next_obs = frames[:, :3].flatten(1, 2), frames[:, 1:4].flatten(1, 2)
    action = torch.rand(size, ACTION_DIM, generator=g) * 2 - 1
    reward = torch.rand(size, 1, generator=g)
    return Batch(obs, action, reward, torch.ones(size, 1), next_obs, next_obs)


def build(agent: str, path: str, precision: str, state: dict | None, augmentation: str = "none") -> SACAgent:
    """An agent (loaded from ``state`` if given) with every learning rate zero."""
    torch.manual_seed(0)
    built = make_agent(config(agent, path, precision, augmentation), OBS_SHAPE, ACTION_DIM, "cpu")
    if state is not None:
        built.load_state_dict(copy.deepcopy(state))
    for opt in built.optimizers().values():
        for group in opt.param_groups:
            group["lr"] = 0.0
    return built


def gradients_at_steps(agent: SACAgent) -> dict[str, list[torch.Tensor | None]]:
    """Hook every optimiser: the gradients it steps with, by optimiser name."""
    seen: dict[str, list[torch.Tensor | None]] = {}

    def hook(name: str):
        def record(opt: torch.optim.Optimizer, args: object, kwargs: object) -> None:
            params = [p for group in opt.param_groups for p in group["params"]]
            seen[name] = [None if p.grad is None else p.grad.detach().float().clone() for p in params]

        return record

    for name, opt in agent.optimizers().items():
        opt.register_step_pre_hook(hook(name))
    return seen


def run_update(
    agent: SACAgent, step: int, side: int
) -> tuple[dict[str, float], dict[str, list[torch.Tensor | None]]]:
    seen = gradients_at_steps(agent)
    torch.manual_seed(123)  # the same policy samples, auxiliary noise and crop windows on both paths
    metrics = agent.update(batch(side=side), step)
    return metrics, seen


CASES = [
    ("sac_ae", "none"),
    ("sac_ae_imm", "none"),  # the IMM target shares next_obs's encoding on the fast path
    ("sac_imm", "none"),
    ("sac_imm", "crop"),  # observation and IMM target cropped together, next_obs on its own
]


@pytest.mark.parametrize(("agent_name", "augmentation"), CASES)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fast_path_matches_reference_losses_and_gradients(agent_name: str, augmentation: str, precision: str) -> None:
    side = 100 if augmentation == "crop" else 84
    reference = build(agent_name, "reference", "fp32", None, augmentation)
    fast = build(agent_name, "fast", precision, reference.state_dict(), augmentation)
    assert fast.fast and not reference.fast
    ref_metrics, ref_grads = run_update(reference, 0, side)  # step 0: critic, actor, targets and every objective
    fast_metrics, fast_grads = run_update(fast, 0, side)
    bf16_reference = build(agent_name, "reference", "bf16", reference.state_dict(), augmentation)
    bf16_grads = run_update(bf16_reference, 0, side)[1]

    assert fast_metrics.keys() == ref_metrics.keys()
    rtol = 1e-4 if precision == "fp32" else BF16_LOSS_RTOL
    for key, value in ref_metrics.items():
        assert np.isfinite(fast_metrics[key])
        assert abs(fast_metrics[key] - value) <= rtol * abs(value) + 1e-6, (key, fast_metrics[key], value)

    assert fast_grads.keys() == ref_grads.keys() and len(ref_grads) == len(reference.optimizers())
    for name, grads in ref_grads.items():
        assert len(fast_grads[name]) == len(grads)
        # Scale of this optimiser's gradients: tensors that are zero up to rounding (e.g. a keypoint head's bias,
        # to which the spatial softmax is invariant) are compared against it, not against themselves.
        scale = max(float(g.abs().max()) for g in grads if g is not None)
        for i, (g_ref, g_fast) in enumerate(zip(grads, fast_grads[name], strict=True)):
            assert (g_ref is None) == (g_fast is None), (name, i)
            if g_ref is None:
                continue
            if precision == "fp32":
                torch.testing.assert_close(g_fast, g_ref, rtol=1e-3, atol=1e-5 * scale)
            elif float(g_ref.abs().max()) > 1e-4 * scale:
                cosine = F.cosine_similarity(g_fast.flatten(), g_ref.flatten(), dim=0)
                bf16_cosine = F.cosine_similarity(bf16_grads[name][i].flatten(), g_ref.flatten(), dim=0)
                assert cosine >= bf16_cosine - BF16_COSINE_SLACK, (name, i, float(cosine), float(bf16_cosine))
