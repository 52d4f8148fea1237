"""Representations: what the shared conv maps are turned into, and the auxiliary loss that shapes them.

An agent is SAC plus a list of representations. Each representation contributes

* a **head**: conv maps -> feature vector part, read by actor and critic (the actor gets its own copy of the head
  on detached conv maps, the critic trains the original through the TD loss);
* optionally an **objective**: an auxiliary loss on the critic's encoding of the observation. Each objective has an
  Adam optimiser of its own over everything its loss trains: the conv trunk and its head at ``encoder_lr``, its own
  networks (a decoder, a generator) at ``lr`` (SAC+AE's reconstruction; IMM's generation of a later observation).

New agents add a representation here, not a new code path in the SAC core.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from kprl.config import IMMConfig, TrainConfig
from kprl.nets.encoder import Encoded, LatentHead, PixelDecoder
from kprl.nets.imm import GenNet, KeypointHead, centred_frames


def dequantized_target(obs: torch.Tensor, bits: int = 5, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Reconstruction target of SAC+AE: reduce uint8 pixels to ``bits`` bits, centre to [-0.5, 0.5) and add uniform
    dequantisation noise of one bin (Kingma & Dhariwal 2018, Glow; as pytorch_sac_ae's ``preprocess_obs``).

    The noise takes 256 evenly spaced values inside the bin (bin / 256 apart, the first bin / 512 from its edge) from
    random bytes, eight per 64-bit draw: on the CPU drawing one float per pixel took about as long as a conv layer's
    backward pass. The target is computed exactly in integers and rounded once to ``dtype`` (bf16: the decoder's
    output precision, at half the memory); the layout follows ``obs`` (channels-last stays channels-last)."""
    if obs.dtype != torch.uint8:
        raise ValueError(f"the reconstruction target is made from uint8 pixels, got {obs.dtype}")
    levels = torch.bitwise_right_shift(obs, 8 - bits)
    draws = torch.randint(-(2**63), 2**63 - 1, ((obs.numel() + 7) // 8,), dtype=torch.int64, device=obs.device)
    # With k = 256 * level + byte and n = 256 * 2**bits fine levels, the target (k + 0.5) / n - 0.5 is
    # m / (2 n) for the odd integer m = 2 k + 1 - n, |m| < n. Byte i goes to pixel i in NCHW order whatever the
    # layout of obs, so the same seed gives the same target on both update paths.
    n = 256 * 2**bits
    m = torch.empty_like(obs, dtype=torch.int16 if n <= 2**14 else torch.int32)
    m.copy_(draws.view(torch.uint8)[: obs.numel()].view(obs.shape))
    m.mul_(2).add_(levels, alpha=512).sub_(n - 1)
    return m.to(dtype).mul_(1.0 / (2 * n))


def pixel_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of images in the prediction's precision (bf16 under bf16: the decoder's output precision),
    returned as fp32. torch accumulates the mean in fp32 but rounds the result to bf16, so under bf16 the logged
    value has about three significant digits; gradients are unaffected. One fused kernel each way: measured faster
    than an fp32-returning ``(p - t).square().mean(dtype=torch.float32)``. Autocast is switched off here because it
    would cast both images to fp32, two more full-batch image tensors per loss."""
    with torch.autocast(prediction.device.type, enabled=False):
        return F.mse_loss(prediction, target.to(prediction.dtype)).float()


class AuxInputs(NamedTuple):
    """What an auxiliary objective may read: the (augmented) observation and the critic encoder's encoding of it
    (only computed when a due objective has ``needs_encoding``), and a later observation of the same episode
    cropped with the same window (the IMM target) with the critic encoder's conv maps of it."""

    obs: torch.Tensor
    encoded: Encoded | None
    target_obs: torch.Tensor | None = None
    target_maps: torch.Tensor | None = None


class AuxiliaryObjective(nn.Module):
    """An auxiliary loss on the critic encoder's output. Its own parameters (a decoder, a generator) are trained
    only by this loss; the conv trunk and the head ``head_index`` by this loss (at ``encoder_lr``) and, unless
    representation learning is decoupled from RL (``SACConfig.rl_trains_encoder``), by the critic's TD loss."""

    name: str = "aux"
    head_index: int = 0
    """The encoder head this loss trains (with the conv trunk)."""
    update_every: int = 1
    encoder_lr: float = 1e-3
    """Adam learning rate of this loss's step on the conv trunk and its head."""
    lr: float = 1e-3
    """Adam learning rate of the objective's own networks."""
    weight_decay: float = 0.0
    """Adam weight decay of the objective's own networks (not of the encoder)."""
    target_offset: int | None = None
    """Steps to the target observation this objective needs (None: it needs none)."""
    needs_encoding: bool = True
    """Whether the loss reads the encoder's heads on the observation (IMM reads only the target's conv maps)."""

    def loss(self, inputs: AuxInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
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

    def loss(self, inputs: AuxInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        assert inputs.encoded is not None
        latent = inputs.encoded.parts[self.head_index]
        reconstruction = self.decoder(latent)
        reconstruction_loss = pixel_mse(reconstruction, dequantized_target(inputs.obs, self.bits, reconstruction.dtype))
        # L2 penalty on the latent keeps the code small so the decoder cannot exploit its scale (RAE).
        latent_loss = (0.5 * latent.float().pow(2).sum(dim=1)).mean()
        loss = reconstruction_loss + self.latent_lambda * latent_loss
        return loss, {
            "reconstruction_loss": reconstruction_loss.detach(),
            "latent_loss": latent_loss.detach(),
        }


class IMMObjective(AuxiliaryObjective):
    """IMM inside the agent (the poster's SAC+AE+IMM / SAC+IMM): the keypoint head finds K keypoints on the
    encoder's maps of the *target* observation; the GenNet renders the target stack from the source observation
    and the keypoints' Gaussian maps; the loss is the pixel MSE (frames in [-0.5, 0.5]). Gradients train the
    GenNet, the keypoint head and the shared conv layers, all at the IMM learning rate (Jakab et al. 2018 with the
    poster's encoder sharing)."""

    name = "imm"
    needs_encoding = False

    def __init__(self, head: KeypointHead, head_index: int, gennet: GenNet, target_offset: int) -> None:
        super().__init__()
        self.gennet = gennet
        self.head_index = head_index
        self.target_offset = target_offset
        # Not a submodule: the head belongs to the encoder (checkpointed with it, and EMA-copied to the target).
        self._head = [head]

    def loss(self, inputs: AuxInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if inputs.target_obs is None or inputs.target_maps is None:
            raise ValueError("the IMM objective needs the target observation and its conv maps")
        keypoints = self._head[0].keypoints(inputs.target_maps)
        generated = self.gennet(inputs.obs, keypoints.gauss_maps)
        imm_loss = pixel_mse(generated, centred_frames(inputs.target_obs, generated.dtype))
        return imm_loss, {"imm_loss": imm_loss.detach(), **keypoint_spread(keypoints.coords.detach())}


def keypoint_spread(coords: torch.Tensor) -> dict[str, torch.Tensor]:
    """Collapse diagnostics of a batch of keypoints [B, K, 2] in [-1, 1] map coordinates (2 = the map's width).

    ``keypoint_separation``: mean distance between two keypoints of one observation (only with K > 1); near 0 when
    the keypoints sit on one spot. ``keypoint_batch_std``: how far a keypoint moves across the batch's observations,
    sqrt(var x + var y) over the batch averaged over keypoints; near 0 when a keypoint stays put whatever the scene
    shows, i.e. carries no state."""
    coords = coords.float()
    out = {"keypoint_batch_std": coords.var(dim=0, unbiased=False).sum(-1).sqrt().mean()}
    k = coords.shape[1]
    if k > 1:
        distances = torch.cdist(coords, coords)  # [B, K, K]
        out["keypoint_separation"] = distances.sum(dim=(1, 2)).mean() / (k * (k - 1))
    return out


@dataclass
class Representation:
    """A head on the conv maps and, optionally, the auxiliary objective that trains it.

    ``share_with_actor``: the actor reads this very head (on its detached conv maps) instead of a copy of its own;
    keypoints are meant to be the same points for critic, actor and the IMM loss."""

    name: str
    head: nn.Module
    objective: AuxiliaryObjective | None = None
    share_with_actor: bool = False


def build_representations(
    cfg: TrainConfig, maps_shape: tuple[int, int, int], obs_channels: int, image_size: int
) -> list[Representation]:
    """The representations of ``cfg.agent``: sac_ae = [AE], sac_ae_imm = [AE, IMM],
    sac_imm = [IMM]. The feature vector is the heads' outputs concatenated in this order."""
    if cfg.agent not in ("sac_ae", "sac_ae_imm", "sac_imm"):
        raise ValueError(f"unknown agent {cfg.agent!r}")
    representations: list[Representation] = []
    if cfg.agent in ("sac_ae", "sac_ae_imm"):
        representations.append(_autoencoder(cfg, maps_shape, obs_channels, image_size, len(representations)))
    if cfg.agent in ("sac_ae_imm", "sac_imm"):
        representations.append(_imm(cfg, maps_shape, obs_channels, image_size, len(representations)))
    return representations


def _autoencoder(
    cfg: TrainConfig, maps_shape: tuple[int, int, int], obs_channels: int, image_size: int, index: int
) -> Representation:
    """SAC+AE's latent head and reconstruction objective."""
    head = LatentHead(maps_shape, cfg.encoder.latent_dim)
    decoder = PixelDecoder(
        cfg.encoder.latent_dim, maps_shape, obs_channels, image_size, cfg.encoder.num_conv_layers
    )
    objective = ReconstructionObjective(
        decoder, index, cfg.ae.reconstruction_bits, cfg.ae.decoder_latent_lambda
    )
    objective.update_every = cfg.ae.decoder_update_every
    objective.encoder_lr = cfg.ae.encoder_lr
    objective.lr = cfg.ae.decoder_lr
    objective.weight_decay = cfg.ae.decoder_weight_decay
    return Representation("ae", head, objective)


def _imm(
    cfg: TrainConfig, maps_shape: tuple[int, int, int], obs_channels: int, image_size: int, index: int
) -> Representation:
    """The poster's IMM: a keypoint head on the shared maps, and a GenNet whose own trunk has the encoder's shape."""
    kp = cfg.keypoint
    frames = cfg.env.frame_stack if kp.per_frame else 1
    head = KeypointHead(maps_shape[0], kp.keypoints, kp.sigma, frames=frames, appearance=kp.keypoint_features)
    if kp.freeze_keynet:  # a fixed pretrained KeyNet: no IMM loss to train it
        return Representation("imm", head, None, share_with_actor=True)
    gen_cfg = IMMConfig(
        keypoints=kp.keypoints * frames,
        sigma=kp.sigma,
        num_conv_layers=cfg.encoder.num_conv_layers,
        num_filters=cfg.encoder.num_filters,
        mix_layers=kp.imm_mix_layers,
    )
    objective = IMMObjective(head, index, GenNet(obs_channels, image_size, gen_cfg), kp.imm_target_offset)
    objective.update_every = kp.imm_update_every
    objective.encoder_lr = kp.imm_lr
    objective.lr = kp.imm_lr
    return Representation("imm", head, objective, share_with_actor=True)
