"""Build the agent named in a config: SAC + that agent's representations."""

from __future__ import annotations

import torch

from kprl.agents.representations import build_representations
from kprl.agents.sac import SACAgent
from kprl.augment import Augmentation
from kprl.config import TrainConfig
from kprl.nets.encoder import conv_output_size


def make_agent(
    cfg: TrainConfig, obs_shape: tuple[int, int, int], action_dim: int, device: str | torch.device
) -> SACAgent:
    """The agent ``cfg.agent`` for observations of ``obs_shape`` (as stored: before any crop)."""
    augmentation = Augmentation(cfg.augmentation, out_size=cfg.env.image_size)
    side = augmentation.out_size
    maps_side = conv_output_size(side, cfg.encoder.num_conv_layers)
    maps_shape = (cfg.encoder.num_filters, maps_side, maps_side)
    representations = build_representations(cfg, maps_shape, obs_shape[0], side)
    return SACAgent(
        obs_shape=obs_shape,
        action_dim=action_dim,
        representations=representations,
        sac=cfg.sac,
        encoder_cfg=cfg.encoder,
        augmentation=augmentation,
        device=device,
        precision=cfg.precision,
        encoder_lr=cfg.ae.encoder_lr,
    )
