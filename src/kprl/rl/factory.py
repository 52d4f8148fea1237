"""Build the agent named in a config: SAC + that agent's representations."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from kprl.config import TrainConfig
from kprl.errors import ConfigError
from kprl.imm.checkpoint import load_imm
from kprl.nets.encoder import ConvTrunk, PerFrameTrunk, conv_output_size
from kprl.rl.augment import Augmentation
from kprl.rl.representations import Representation, build_representations
from kprl.rl.sac import SACAgent


def make_agent(
    cfg: TrainConfig, obs_shape: tuple[int, int, int], action_dim: int, device: str | torch.device
) -> SACAgent:
    """The agent ``cfg.agent`` for observations of ``obs_shape`` (as stored: before any crop)."""
    augmentation = Augmentation(cfg.augmentation, out_size=cfg.env.image_size)
    side = augmentation.out_size
    trunk: nn.Module | None = None
    if cfg.keypoint.per_frame:
        frames = cfg.env.frame_stack
        trunk = PerFrameTrunk(
            ConvTrunk(obs_shape[0] // frames, side, cfg.encoder.num_conv_layers, cfg.encoder.num_filters),
            frames,
        )
        maps_shape = trunk.out_shape
    else:
        maps_side = conv_output_size(side, cfg.encoder.num_conv_layers)
        maps_shape = (cfg.encoder.num_filters, maps_side, maps_side)
    representations = build_representations(cfg, maps_shape, obs_shape[0], side)
    if cfg.keypoint.pretrained_imm is not None:
        assert isinstance(trunk, PerFrameTrunk)
        _load_pretrained_keynet(cfg, trunk, representations, side)
    return SACAgent(
        obs_shape=obs_shape,
        action_dim=action_dim,
        representations=representations,
        sac=cfg.sac,
        encoder_cfg=cfg.encoder,
        augmentation=augmentation,
        device=device,
        precision=cfg.precision,
        trunk=trunk,
        update_path=cfg.update_path,
    )


def _load_pretrained_keynet(
    cfg: TrainConfig, trunk: PerFrameTrunk, representations: list[Representation], image_size: int
) -> None:
    """Copy a standalone IMM's KeyNet (conv trunk + keypoint head) into the agent's per-frame trunk and keypoint
    head; with ``freeze_keynet`` make them untrainable. A ConfigError when the shapes do not match."""
    path = Path(cfg.keypoint.pretrained_imm)  # type: ignore[arg-type]
    loaded = load_imm(path)
    model_cfg = loaded.model.cfg
    wanted = {
        "keypoints": (model_cfg.keypoints, cfg.keypoint.keypoints),
        "num_filters": (model_cfg.num_filters, cfg.encoder.num_filters),
        "num_conv_layers": (model_cfg.num_conv_layers, cfg.encoder.num_conv_layers),
        "image_size": (loaded.image_size, image_size),
        "norm": (model_cfg.norm, "none"),
        "same_padding": (model_cfg.same_padding, False),
    }
    wrong = [f"{k} {a} (agent: {b})" for k, (a, b) in wanted.items() if a != b]
    if wrong:
        raise ConfigError(f"--pretrained-imm {path} does not fit this agent: " + ", ".join(wrong))
    head = next(r.head for r in representations if r.name == "imm")
    trunk.frame_trunk.load_state_dict(loaded.model.keynet.trunk.state_dict())
    head.load_state_dict(loaded.model.keynet.head.state_dict())
    if cfg.keypoint.freeze_keynet:
        trunk.requires_grad_(False)
        head.requires_grad_(False)
