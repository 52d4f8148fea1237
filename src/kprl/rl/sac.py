"""SAC from pixels with a shared conv encoder and auxiliary representation losses (SAC+AE, Yarats et al. 2019).

The update follows pytorch_sac_ae's structure, in its order: critic (TD loss through the encoder), actor and
temperature every ``actor_update_every`` updates (on detached conv features), target EMAs every
``critic_target_update_every`` updates (Q networks at ``critic_tau``, encoder at ``encoder_tau``), then the
auxiliary objectives (reconstruction, ...) on a fresh encoding of the observation. ``update`` returns metrics and
never logs: the training loop does all I/O.

SAC's losses (the soft TD target, J_Q, J_π, J(α)) are pure functions written once (:mod:`kprl.rl.losses`). Two
update paths compute the same losses and gradients: ``reference`` (below) runs the encoder again for every loss, in
pytorch_sac_ae's order; ``fast`` (:mod:`kprl.rl.fast_update`) encodes the observation once and takes every gradient
before any optimiser steps.

Every loss has an Adam optimiser of its own over exactly what it trains, at its own learning rate: the TD loss
(``critic_lr``: Q networks, and the conv trunk and critic heads unless ``rl_trains_encoder`` is off), the actor loss
(``actor_lr``: the actor's MLP and own heads), the temperature loss (``alpha_lr``), and each auxiliary loss (the
trunk and its head at the objective's ``encoder_lr``, its own networks at its ``lr``). Under bf16 autocast only the
convolutional networks and the linear layers next to conv maps (the latent head's, the decoder's input) run in
bf16: the heads' outputs, the Q and policy MLPs, the log-probabilities, the TD target and the temperature are fp32.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kprl.config import EncoderConfig, SACConfig
from kprl.nets.encoder import ConvTrunk, Encoded, Encoder, reads_old_name, weight_init
from kprl.rl.augment import Augmentation
from kprl.rl.fast_update import channels_last_views, fast_update, to_channels_last
from kprl.rl.losses import actor_loss, critic_loss, critic_metrics, soft_td_target, temperature_loss
from kprl.rl.optim import adam, match_loaded_state, step_with, trainable_params
from kprl.rl.replay import Batch
from kprl.rl.representations import AuxiliaryObjective, AuxInputs, Representation
from kprl.runtime.hardware import resolve_precision


def mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """Two hidden ReLU layers, as every MLP in SAC+AE."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim),
        nn.ReLU(),
        nn.Linear(hidden_dim, hidden_dim),
        nn.ReLU(),
        nn.Linear(hidden_dim, out_dim),
    )


def squashed_gaussian(
    mu: torch.Tensor, log_std: torch.Tensor, deterministic: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample a tanh-squashed Gaussian and its log-density (Haarnoja et al. 2018, Appendix C, Eq. 21).

    Returns (tanh(mu), tanh(pi), log pi(a|s)) with the tanh change-of-variables correction
    ``- sum log(1 - tanh(u)^2)``."""
    std = log_std.exp()
    noise = torch.zeros_like(mu) if deterministic else torch.randn_like(mu)
    u = mu + noise * std
    log_prob = (-0.5 * noise.pow(2) - log_std).sum(-1, keepdim=True) - 0.5 * math.log(2 * math.pi) * mu.size(
        -1
    )
    pi = torch.tanh(u)
    log_prob = log_prob - torch.log(F.relu(1 - pi.pow(2)) + 1e-6).sum(-1, keepdim=True)
    return torch.tanh(mu), pi, log_prob


def full_precision(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """A region where autocast is off: value and policy MLPs run in fp32 inside a bf16 update. bf16 keeps 8
    significant bits, so a Q-value of 300 would be rounded to a multiple of 2 and log-probabilities to ~0.4 %."""
    return torch.autocast(device.type, enabled=False)


class Actor(nn.Module):
    """Policy: encoder (own heads, conv tied to the critic's and detached) -> MLP -> squashed Gaussian."""

    def __init__(
        self, encoder: Encoder, action_dim: int, hidden_dim: int, log_std_min: float, log_std_max: float
    ):
        super().__init__()
        self.encoder = encoder
        self.mlp = mlp(encoder.feature_dim, hidden_dim, 2 * action_dim)
        self.log_std_min = log_std_min
        self.log_std_max = log_std_max
        self.mlp.apply(weight_init)
        reads_old_name(self, "trunk", "mlp")

    def forward(
        self, obs: torch.Tensor, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.from_maps(self.encoder.trunk(obs).detach(), deterministic)

    def from_maps(
        self, maps: torch.Tensor, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The policy on conv maps of the shared trunk (detach them first: the actor never trains the conv)."""
        return self.from_features(self.encoder.from_maps(maps).features, deterministic)

    def from_features(
        self, features: torch.Tensor, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(tanh(mu), action sample, log-prob) of the policy on its encoder's features, computed in fp32."""
        with full_precision(features.device):
            mu, log_std = self.mlp(features.float()).chunk(2, dim=-1)
            # Bound log std smoothly into [min, max] (pytorch_sac_ae; Yarats et al. 2019).
            log_std = torch.tanh(log_std)
            log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (log_std + 1)
            return squashed_gaussian(mu, log_std, deterministic)


class Critic(nn.Module):
    """Twin Q networks on the encoder's features (clipped double Q, Fujimoto et al. 2018).

    ``trains_encoder=False`` detaches the features the Q networks read, so the TD loss stops at the encoder: the
    representation is learnt by the auxiliary losses alone (ATC's ``stop_rl_conv_grad``, Stooke et al. 2020)."""

    def __init__(self, encoder: Encoder, action_dim: int, hidden_dim: int, trains_encoder: bool = True):
        super().__init__()
        self.encoder = encoder
        self.trains_encoder = trains_encoder
        self.q1 = mlp(encoder.feature_dim + action_dim, hidden_dim, 1)
        self.q2 = mlp(encoder.feature_dim + action_dim, hidden_dim, 1)
        self.q1.apply(weight_init)
        self.q2.apply(weight_init)

    def q_values(self, features: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both Q-values [B, 1] of (features, action), computed in fp32 whatever the autocast."""
        if not self.trains_encoder:
            features = features.detach()
        with full_precision(features.device):
            x = torch.cat([features.float(), action.float()], dim=-1)
            return self.q1(x), self.q2(x)

    def forward(
        self, obs: torch.Tensor, action: torch.Tensor, detach_conv: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.q_values(self.encoder(obs, detach_conv=detach_conv).features, action)


def soft_update(net: nn.Module, target: nn.Module, tau: float) -> None:
    """Polyak averaging ``target <- tau * net + (1 - tau) * target``."""
    with torch.no_grad():
        for p, tp in zip(net.parameters(), target.parameters(), strict=True):
            tp.lerp_(p, tau)


class SACAgent:
    """SAC + representations. Owns networks and optimisers; ``update`` returns a flat metrics dict."""

    def __init__(
        self,
        obs_shape: tuple[int, int, int],
        action_dim: int,
        representations: list[Representation],
        sac: SACConfig,
        encoder_cfg: EncoderConfig,
        augmentation: Augmentation,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        trunk: nn.Module | None = None,
        update_path: str = "reference",
    ) -> None:
        self.device = torch.device(device)
        self.cfg = sac
        self.encoder_cfg = encoder_cfg
        self.augmentation = augmentation
        self.action_dim = action_dim
        self.precision = resolve_precision(precision, self.device)
        self.use_bf16 = self.precision == "bf16"
        if update_path not in ("fast", "reference"):
            raise ValueError(f"unknown update path {update_path!r} (fast, reference)")
        self.fast = update_path == "fast"
        # Fused Adam (one kernel over all tensors) exists for CPU and CUDA; the fast path uses it.
        self.fused_adam = self.fast and self.device.type in ("cpu", "cuda")
        self.representations = representations
        channels, _, _ = obs_shape
        side = augmentation.out_size
        if trunk is None:
            trunk = ConvTrunk(channels, side, encoder_cfg.num_conv_layers, encoder_cfg.num_filters)
        critic_encoder = Encoder(trunk, [r.head for r in representations])
        self.critic = Critic(critic_encoder, action_dim, sac.hidden_dim, sac.rl_trains_encoder).to(
            self.device
        )
        shared = frozenset(i for i, r in enumerate(representations) if r.share_with_actor)
        self.actor = Actor(
            critic_encoder.tied_copy(shared),
            action_dim,
            sac.hidden_dim,
            sac.actor_log_std_min,
            sac.actor_log_std_max,
        ).to(self.device)
        self.critic_target = copy.deepcopy(self.critic)
        self.critic_target.requires_grad_(False)
        self.objectives: list[AuxiliaryObjective] = [
            r.objective.to(self.device) for r in representations if r.objective is not None
        ]
        offsets = {o.target_offset for o in self.objectives if o.target_offset is not None}
        if len(offsets) > 1:
            raise ValueError(f"objectives need different target offsets {sorted(offsets)}")
        self.target_offset: int | None = offsets.pop() if offsets else None
        """Steps to the target observation the objectives need; the training loop samples batches with it."""
        if self.fast:
            to_channels_last((self.critic, self.actor, self.critic_target, *self.objectives))
        self.log_alpha = torch.tensor(math.log(sac.init_temperature), device=self.device, requires_grad=True)
        self.target_entropy = -float(action_dim) if sac.target_entropy is None else sac.target_entropy

        critic_encoder_ids = {id(p) for p in self.critic.encoder.parameters()}
        # The actor never updates the shared conv layers (its conv maps are detached) nor the heads it shares
        # with the critic, so its optimiser holds only its own heads and MLP.
        actor_params = [p for p in self.actor.parameters() if id(p) not in critic_encoder_ids]
        self.actor_opt = self._adam(actor_params, lr=sac.actor_lr, betas=(sac.actor_beta, 0.999))
        q_networks = [*self.critic.q1.parameters(), *self.critic.q2.parameters()]
        td_trained = list(self.critic.parameters()) if sac.rl_trains_encoder else q_networks
        self.critic_opt = self._adam(td_trained, lr=sac.critic_lr, betas=(sac.critic_beta, 0.999))
        self.alpha_opt = self._adam([self.log_alpha], lr=sac.alpha_lr, betas=(sac.alpha_beta, 0.999))
        # As pytorch_sac_ae, an auxiliary loss steps the critic's encoder with an optimiser apart from the critic's.
        self.objective_opts = [self._objective_optimizer(o) for o in self.objectives]
        self.train(True)

    def _objective_optimizer(self, objective: AuxiliaryObjective) -> torch.optim.Adam:
        """Adam over everything ``objective``'s loss trains: the conv trunk and the objective's head at its
        ``encoder_lr``, its own networks at its ``lr`` with its weight decay."""
        encoder = self.critic.encoder
        reached = [*encoder.trunk.parameters(), *encoder.heads[objective.head_index].parameters()]
        groups: list[dict[str, Any]] = [
            {"params": reached, "lr": objective.encoder_lr},
            {"params": list(objective.parameters()), "weight_decay": objective.weight_decay},
        ]
        return self._adam(groups, lr=objective.lr)

    def _adam(self, params: Any, **kwargs: Any) -> torch.optim.Adam:
        """Adam; on the fast path its fused kernel (one pass over all tensors)."""
        return adam(params, self.fused_adam, **kwargs)

    # ----------------------------------------------------------------------------------------------- helpers
    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast for forward passes when ``precision == "bf16"``; losses are computed in fp32."""
        if not self.use_bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def modules(self) -> dict[str, nn.Module]:
        mods: dict[str, nn.Module] = {
            "actor": self.actor,
            "critic": self.critic,
            "critic_target": self.critic_target,
        }
        for i, objective in enumerate(self.objectives):
            mods[f"objective{i}_{objective.name}"] = objective
        return mods

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        opts: dict[str, torch.optim.Optimizer] = {
            "actor_opt": self.actor_opt,
            "critic_opt": self.critic_opt,
            "alpha_opt": self.alpha_opt,
        }
        for i, opt in enumerate(self.objective_opts):
            opts[f"objective{i}_opt"] = opt
        return opts

    def train(self, training: bool = True) -> None:
        for module in self.modules().values():
            module.train(training)

    def parameters(self) -> Iterator[nn.Parameter]:
        """Every trainable parameter once (for finiteness checks and counting)."""
        seen: set[int] = set()
        for module in (self.actor, self.critic, *self.objectives):
            for p in module.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield p
        yield self.log_alpha  # type: ignore[misc]

    # ------------------------------------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool) -> np.ndarray:
        """Action in [-1, 1]^A for one uint8 observation stack [C, H, W] (mean action when deterministic)."""
        x = torch.as_tensor(obs, device=self.device).unsqueeze(0)
        x = self.augmentation.for_acting(x)
        with self.autocast():
            mu, pi, _ = self.actor(x, deterministic=deterministic)
        action = mu if deterministic else pi
        return action[0].float().cpu().numpy()

    @property
    def keypoint_head_index(self) -> int | None:
        """Index of the keypoint head among the encoder's heads (None for agents without keypoints)."""
        for i, r in enumerate(self.representations):
            if r.name == "imm":
                return i
        return None

    @torch.no_grad()
    def keypoints(self, obs: torch.Tensor) -> torch.Tensor | None:
        """Keypoints [B, K, 2] (per-frame keypoints: [B, S*K, 2], oldest frame's first), (x, y) in [-1, 1] of the
        network's (centre-cropped) *view image* (`ConvTrunk.image_coords`: placed where their map cells look), of
        uint8 observation stacks [B, C, H, W] as stored; None for agents without keypoints. Pixel coordinates of
        the view: ``kprl.nets.keypoints.to_pixels(kp, augmentation.out_size, augmentation.out_size)``."""
        index = self.keypoint_head_index
        if index is None:
            return None
        x = self.augmentation.for_acting(obs.to(self.device))
        with self.autocast():
            maps = self.critic.encoder.trunk(x)
            coords = self.critic.encoder.heads[index].keypoints(maps).coords
        return self.critic.encoder.trunk.image_coords(coords.float())

    # ------------------------------------------------------------------------------------------------ update
    def update(self, batch: Batch, step: int, generator: torch.Generator | None = None) -> dict[str, float]:
        """One SAC+representation update on a batch; ``step`` (agent updates so far) schedules the slower parts.

        Returns namespaced scalars (``train/critic_loss``, ...)."""
        target_obs = None
        target_is_next = False
        if self.target_offset is not None:
            if batch.target_obs is None:
                raise ValueError(f"this agent needs batches sampled with target_offset={self.target_offset}")
            # Without augmentation an offset-1 target *is* next_obs (the replay returns one tensor for both).
            target_is_next = self.augmentation.kind == "none" and batch.target_obs is batch.next_obs
        if self.target_offset is not None and not target_is_next:
            assert batch.target_obs is not None
            # One crop window for an observation and its IMM target, so the generator can copy the static scene.
            channels = batch.obs.shape[1]
            joint = self.augmentation.for_update(torch.cat([batch.obs, batch.target_obs], dim=1), generator)
            obs, target_obs = joint[:, :channels], joint[:, channels:]
        else:
            obs = self.augmentation.for_update(batch.obs, generator)
        next_obs = self.augmentation.for_update(batch.next_obs, generator)
        if target_is_next:
            target_obs = next_obs
        views = batch._replace(obs=obs, next_obs=next_obs, target_obs=target_obs)  # what the networks see
        if self.fast:
            metrics = fast_update(self, channels_last_views(views, target_is_next), step)
        else:
            metrics = self._update_reference(views, step)
        # One device sync for all metrics instead of one per scalar.
        values = torch.stack([v.detach().float().reshape(()) for v in metrics.values()]).tolist()
        return {f"train/{k}": v for k, v in zip(metrics, values, strict=True)}

    def _update_reference(self, views: Batch, step: int) -> dict[str, torch.Tensor]:
        """pytorch_sac_ae's update: each part encodes its inputs again with the parameters of that moment."""
        obs, action, reward, discount, next_obs, target_obs = views
        metrics: dict[str, torch.Tensor] = {}
        metrics.update(self._update_critic(obs, action, reward, next_obs, discount))
        if step % self.cfg.actor_update_every == 0:
            metrics.update(self._update_actor_and_alpha(obs))
        if step % self.cfg.critic_target_update_every == 0:
            self.update_targets()
        due = [i for i, o in enumerate(self.objectives) if step % o.update_every == 0]
        if due:
            metrics.update(self._update_objectives(obs, target_obs, due))
        return metrics

    def _update_critic(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        next_obs: torch.Tensor,
        discount: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        target_q = self.td_target(reward, next_obs, discount)
        with self.autocast():
            q1, q2 = self.critic(obs, action)
        td_loss = critic_loss(q1, q2, target_q)
        self.critic_opt.zero_grad(set_to_none=True)
        td_loss.backward()
        self.critic_opt.step()
        return critic_metrics(td_loss, q1, target_q)

    def _update_actor_and_alpha(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        with self.autocast():
            _, pi, log_pi = self.actor(obs)
            # The critic's conv maps are detached here too: the actor loss must not reach the encoder.
            actor_q1, actor_q2 = self.critic(obs, pi, detach_conv=True)
        policy_loss = actor_loss(self.alpha, log_pi, actor_q1, actor_q2)
        self.actor_opt.zero_grad(set_to_none=True)
        policy_loss.backward()
        self.actor_opt.step()
        return self.temperature_step(policy_loss, log_pi)

    def _update_objectives(
        self, obs: torch.Tensor, target_obs: torch.Tensor | None, due: list[int]
    ) -> dict[str, torch.Tensor]:
        losses, metrics = self.auxiliary_losses(obs, None, target_obs, due)
        for opt, params, grads in self.objective_gradients(losses):
            step_with(opt, params, grads)
        return metrics

    # ------------------------------------------------------------------------ parts both update paths share
    def td_target(
        self,
        reward: torch.Tensor,
        next_obs: torch.Tensor,
        discount: torch.Tensor,
        next_maps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Soft Bellman backup (Haarnoja et al. 2018, Eq. 3) from the target critic and the current policy's next
        action (from ``next_maps``, the online trunk's maps of ``next_obs``, when already computed). Discount is 0
        only at true termination, so time-limit ends bootstrap."""
        with torch.no_grad(), self.autocast():
            if next_maps is None:
                _, next_action, next_log_pi = self.actor(next_obs)
            else:
                _, next_action, next_log_pi = self.actor.from_maps(next_maps.detach())
            target_q1, target_q2 = self.critic_target(next_obs, next_action)
            return soft_td_target(
                reward, discount, self.cfg.discount, target_q1, target_q2, self.alpha, next_log_pi
            )

    def temperature_step(self, policy_loss: torch.Tensor, log_pi: torch.Tensor) -> dict[str, torch.Tensor]:
        """Step α on J(α) after the actor's step (pytorch_sac_ae's order); the actor's and α's metrics."""
        alpha_loss = temperature_loss(self.alpha, log_pi, self.target_entropy)
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()
        return {
            "actor_loss": policy_loss.detach(),
            "alpha_loss": alpha_loss.detach(),
            "alpha": self.alpha.detach(),
            "entropy": -log_pi.mean().detach(),
        }

    def auxiliary_losses(
        self,
        obs: torch.Tensor,
        encoded: Encoded | None,
        target_obs: torch.Tensor | None,
        due: list[int],
        target_maps: torch.Tensor | None = None,
    ) -> tuple[dict[int, torch.Tensor], dict[str, torch.Tensor]]:
        """The due objectives' losses (fp32, by objective index) and their parts with their sum ``aux_loss`` for
        logging; encodes what the objectives read and ``encoded`` and ``target_maps`` do not provide (the IMM
        target's conv maps; the observation's encoding)."""
        metrics: dict[str, torch.Tensor] = {}
        losses: dict[int, torch.Tensor] = {}
        needs_target = any(self.objectives[i].target_offset is not None for i in due)
        needs_encoding = any(self.objectives[i].needs_encoding for i in due)
        with self.autocast():
            if encoded is None and needs_encoding:
                encoded = self.critic.encoder(obs)
            if target_maps is None and needs_target and target_obs is not None:
                target_maps = self.critic.encoder.trunk(target_obs)
            inputs = AuxInputs(obs, encoded, target_obs, target_maps)
            for i in due:
                loss, parts = self.objectives[i].loss(inputs)
                losses[i] = loss.float()
                metrics.update(parts)
        metrics["aux_loss"] = torch.stack(list(losses.values())).sum().detach()
        return losses, metrics

    def objective_gradients(
        self, losses: dict[int, torch.Tensor]
    ) -> list[tuple[torch.optim.Optimizer, list[torch.Tensor], tuple[torch.Tensor | None, ...]]]:
        """Each auxiliary loss's gradient on what its optimiser trains, at the current parameters, taken apart: two
        losses that reach the conv trunk step it with their own Adam at their own learning rate."""
        steps = []
        for n, (i, loss) in enumerate(losses.items()):
            params = trainable_params(self.objective_opts[i])
            grads = torch.autograd.grad(loss, params, retain_graph=n < len(losses) - 1, allow_unused=True)
            steps.append((self.objective_opts[i], params, grads))
        return steps

    def update_targets(self) -> None:
        soft_update(self.critic.q1, self.critic_target.q1, self.cfg.critic_tau)
        soft_update(self.critic.q2, self.critic_target.q2, self.cfg.critic_tau)
        soft_update(self.critic.encoder, self.critic_target.encoder, self.encoder_cfg.encoder_tau)

    # ------------------------------------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, Any]:
        """Every tensor needed to resume: networks, optimisers, temperature (torch-only, weights_only-safe)."""
        state: dict[str, Any] = {name: m.state_dict() for name, m in self.modules().items()}
        state.update({name: opt.state_dict() for name, opt in self.optimizers().items()})
        state["log_alpha"] = self.log_alpha.detach().clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "encoder_opt" in state:
            raise ValueError(
                "it was written by an earlier kprl (0.1.0), whose auxiliary losses shared one encoder optimiser; "
                "this version cannot resume it"
            )
        for name, module in self.modules().items():
            module.load_state_dict(state[name])
        for name, opt in self.optimizers().items():
            opt.load_state_dict(state[name])
            match_loaded_state(opt, self.fused_adam)
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
