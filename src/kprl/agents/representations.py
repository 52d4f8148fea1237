"""Representations: what the shared conv maps are turned into, and the auxiliary loss that shapes them.

An agent is SAC plus a list of representations (DESIGN.md). Each representation contributes

* a **head**: conv maps -> feature vector part, read by actor and critic (the actor gets its own copy of the head
  on detached conv maps, the critic trains the original through the TD loss);
* optionally an **objective**: an auxiliary loss on the critic's encoding of the observation, trained by its own
  optimizer together with the encoder (SAC+AE's reconstruction; IMM's generation later).

New agents add a representation here, not a new code path in the SAC core.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kprl.config import TrainConfig
from kprl.nets.encoder import Encoded, LatentHead, PixelDecoder


def dequantized_target(obs: torch.Tensor, bits: int = 5) -> torch.Tensor:
    """Reconstruction target of SAC+AE: reduce uint8 pixels to ``bits`` bits, centre to [-0.5, 0.5) and add uniform
    dequantisation noise of one bin (Kingma & Dhariwal 2018, Glow; as pytorch_sac_ae's ``preprocess_obs``)."""
    bins = 2**bits
    x = torch.floor(obs.float() / 2 ** (8 - bits))
    x = x / bins - 0.5
    return x + torch.rand_like(x) / bins


class AuxiliaryObjective(nn.Module):
    """An auxiliary loss on the critic encoder's output. Its own parameters (a decoder, a generator) are trained
    only by this loss; the encoder's by this loss and the critic's TD loss."""

    name: str = "aux"
    update_every: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0

    def loss(self, encoded: Encoded, obs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the scalar loss and named scalar tensors for logging (keys without namespace)."""
        raise NotImplementedError


class ReconstructionObjective(AuxiliaryObjective):
    """SAC+AE's regularised autoencoder loss (Yarats et al. 2019, Eq. 7 with the RAE regularisers):
    ``||dec(z) - target(obs)||^2 + lambda * 0.5 * ||z||^2`` with weight decay on the decoder."""

    name = "ae"

    def __init__(self, decoder: PixelDecoder, head_index: int, bits: int, latent_lambda: float) -> None:
        super().__init__()
        self.decoder = decoder
        self.head_index = head_index
        self.bits = bits
        self.latent_lambda = latent_lambda

    def loss(self, encoded: Encoded, obs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        latent = encoded.parts[self.head_index]
        reconstruction = self.decoder(latent).float()
        target = dequantized_target(obs, self.bits)
        reconstruction_loss = torch.mean((reconstruction - target) ** 2)
        # L2 penalty on the latent keeps the code small so the decoder cannot exploit its scale (RAE).
        latent_loss = (0.5 * latent.float().pow(2).sum(dim=1)).mean()
        loss = reconstruction_loss + self.latent_lambda * latent_loss
        return loss, {"reconstruction_loss": reconstruction_loss.detach(), "latent_loss": latent_loss.detach()}


@dataclass
class Representation:
    """A head on the conv maps and, optionally, the auxiliary objective that trains it."""

    name: str
    head: nn.Module
    objective: AuxiliaryObjective | None = None


def build_representations(
    cfg: TrainConfig, maps_shape: tuple[int, int, int], obs_channels: int, image_size: int
) -> list[Representation]:
    """The representations of ``cfg.agent`` (DESIGN.md's agent table)."""
    if cfg.agent == "sac_ae":
        head = LatentHead(maps_shape, cfg.encoder.latent_dim)
        decoder = PixelDecoder(
            cfg.encoder.latent_dim, maps_shape, obs_channels, image_size, cfg.encoder.num_conv_layers
        )
        objective = ReconstructionObjective(decoder, 0, cfg.ae.reconstruction_bits, cfg.ae.decoder_latent_lambda)
        objective.update_every = cfg.ae.decoder_update_every
        objective.lr = cfg.ae.decoder_lr
        objective.weight_decay = cfg.ae.decoder_weight_decay
        return [Representation("ae", head, objective)]
    raise ValueError(f"unknown agent {cfg.agent!r}")
