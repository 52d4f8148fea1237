"""SAC's ``fast`` update path: the losses of the reference update from one encoder pass, on channels-last tensors.

The reference update (pytorch_sac_ae's order, :meth:`kprl.rl.sac.SACAgent.update`) runs the encoder again for every
loss. This path encodes the observation once: the critic's TD loss, the auxiliary losses and (on detached maps) the
actor all read that one pass, and every gradient is taken before any optimiser steps. The steps then follow in the
reference order (critic, actor and temperature, target EMAs, auxiliary). What differs: the actor's features and the
auxiliary gradients are those of the encoder before this update's critic step, where the reference re-encodes after
it; with all learning rates at zero both paths agree (tests/test_fast_update.py). Measured speed-ups are in
docs/performance.md.

Both paths call the same loss functions (:mod:`kprl.rl.losses`); this module holds only what the fast path adds: its
gradient plumbing and the channels-last layout.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import nn

from kprl.rl.losses import actor_loss, critic_loss, critic_metrics
from kprl.rl.optim import step_with, trainable_params
from kprl.rl.replay import Batch

if TYPE_CHECKING:
    from kprl.rl.sac import SACAgent


def channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def to_channels_last(modules: Iterable[nn.Module]) -> None:
    """Store conv weights channels-last, so that conv outputs are channels-last too: oneDNN's bf16 convolutions (and
    transposed convolutions above all) run several times faster on NHWC tensors."""
    for module in modules:
        module.to(memory_format=torch.channels_last)


def channels_last_views(views: Batch, target_is_next: bool) -> Batch:
    """The augmented batch in NHWC from the start: a 9-channel NCHW batch would be transposed inside every
    convolution and in each loss against a channels-last output (measured: the mixed-layout reconstruction MSE alone
    took longer than a conv layer)."""
    obs, next_obs = channels_last(views.obs), channels_last(views.next_obs)
    target_obs = views.target_obs
    if target_obs is not None:
        target_obs = next_obs if target_is_next else channels_last(target_obs)
    return views._replace(obs=obs, next_obs=next_obs, target_obs=target_obs)


def fast_update(agent: SACAgent, views: Batch, step: int) -> dict[str, torch.Tensor]:
    """One update of ``agent`` with the losses of its reference update, from one encoder pass on ``views.obs``.

    Random draws happen in the reference order (next action, policy sample, auxiliary noise), so with equal
    parameters and seeds both paths see the same numbers."""
    obs, action, reward, discount, next_obs, target_obs = views
    metrics: dict[str, torch.Tensor] = {}
    actor_due = step % agent.cfg.actor_update_every == 0
    due = [i for i, o in enumerate(agent.objectives) if step % o.update_every == 0]
    next_maps = None
    if target_obs is next_obs and any(agent.objectives[i].target_offset is not None for i in due):
        # The IMM target is next_obs: one online trunk pass (with gradient, for the IMM loss) also gives the
        # policy's next action in the TD target (detached).
        with agent.autocast():
            next_maps = agent.critic.encoder.trunk(next_obs)
    target_q = agent.td_target(reward, next_obs, discount, next_maps)
    with agent.autocast():
        encoded = agent.critic.encoder(obs)
        q1, q2 = agent.critic.q_values(encoded.features, action)
        if actor_due:
            # The actor's own heads on the critic's conv maps, detached: the actor never trains the conv.
            _, pi, log_pi = agent.actor.from_maps(encoded.maps.detach())
    td_loss = critic_loss(q1, q2, target_q)
    metrics.update(critic_metrics(td_loss, q1, target_q))
    losses: dict[int, torch.Tensor] = {}
    if due:
        losses, parts = agent.auxiliary_losses(obs, encoded, target_obs, due, next_maps)
        metrics.update(parts)
    # Every gradient at the parameters this update started from, before any optimiser changes them in place.
    # The reconstruction reads the critic's encoding of obs, so the critic's graph is kept for it (IMM reads only
    # the target's maps and its own GenNet trunk).
    critic_params = trainable_params(agent.critic_opt)
    shares_graph = any(agent.objectives[i].needs_encoding for i in losses)
    critic_grads = torch.autograd.grad(td_loss, critic_params, retain_graph=shares_graph, allow_unused=True)
    aux_steps = agent.objective_gradients(losses)
    step_with(agent.critic_opt, critic_params, critic_grads)
    if actor_due:
        # Q is read with the critic's current (just stepped) MLPs on the detached features, as the reference does.
        actor_q1, actor_q2 = agent.critic.q_values(encoded.features.detach(), pi)
        policy_loss = actor_loss(agent.alpha, log_pi, actor_q1, actor_q2)
        actor_params = trainable_params(agent.actor_opt)
        step_with(
            agent.actor_opt, actor_params, torch.autograd.grad(policy_loss, actor_params, allow_unused=True)
        )
        metrics.update(agent.temperature_step(policy_loss, log_pi))
    if step % agent.cfg.critic_target_update_every == 0:
        agent.update_targets()
    for opt, params, grads in aux_steps:
        step_with(opt, params, grads)
    return metrics
