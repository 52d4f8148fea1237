"""Adam for the agent's losses, and stepping an optimiser with gradients computed apart from ``backward``.

Taking a loss's gradient with ``torch.autograd.grad`` and stepping later lets two losses that reach the same
parameters (the conv trunk under the TD loss and an auxiliary loss) each step them with their own Adam at their own
learning rate, from gradients taken at the same parameters.
"""

from __future__ import annotations

from typing import Any

import torch


def adam(params: Any, fused: bool, **kwargs: Any) -> torch.optim.Adam:
    """Adam; ``fused`` selects its one-kernel implementation over all tensors (CPU and CUDA; several times faster
    than the per-tensor loop on small networks), otherwise PyTorch's default."""
    return torch.optim.Adam(params, fused=fused or None, **kwargs)


def trainable_params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """An optimiser's trainable parameters in a fixed order (all groups; frozen ones, e.g. a fixed pretrained
    KeyNet, left out)."""
    return [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]


def step_with(
    optimizer: torch.optim.Optimizer, params: list[torch.Tensor], grads: tuple[torch.Tensor | None, ...]
) -> None:
    """Step ``optimizer`` with explicitly computed gradients (params the loss did not reach get none and are skipped,
    as after ``zero_grad(set_to_none=True)`` + ``backward``)."""
    for p, g in zip(params, grads, strict=True):
        # autograd.grad may return a contiguous gradient for a channels-last weight; Adam wants the param's layout.
        p.grad = (
            None if g is None else (g if g.stride() == p.stride() else g.contiguous(memory_format=layout(p)))
        )
    optimizer.step()


def layout(p: torch.Tensor) -> torch.memory_format:
    """The memory format of a parameter: channels-last for a 4-D weight stored so, else contiguous."""
    if p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def match_loaded_state(optimizer: torch.optim.Optimizer, fused: bool) -> None:
    """After ``load_state_dict``: use this agent's Adam kernel and give the moments their parameter's layout.

    ``Optimizer.load_state_dict`` takes ``fused`` from the file and keeps the saved moments' memory layout, so a
    state saved by the other update path would otherwise run the wrong kernel on mismatched layouts."""
    for group in optimizer.param_groups:
        group["fused"] = fused or None
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    optimizer.state[p][key] = value.contiguous(memory_format=layout(p))
