"""IMM: unsupervised keypoints through conditional image generation (Jakab et al. 2018), as in the poster.

Given a *source* frame and a *target* frame of the same scene (here: two frames of one episode), the KeyNet sees
only the target and compresses it to K keypoints; the GenNet sees the source frame and the target's keypoints,
rendered as Gaussian maps, and must draw the target. The only way to tell the generator where things moved is
through the keypoints, so they learn to sit on the moving parts (cart, pole).

Architecture (sized for 84 px DMC frames on a CPU; see docs/keypoints.md for how it differs from the reference):
- KeyNet = conv trunk (SAC+AE's: 3x3 convs, first stride 2) -> 1x1 conv to K score maps -> `KeypointHead`
  (softmax marginals -> expected (x, y) -> Gaussian maps at the score-map resolution). The head is the same
  module the keypoint agents put on their shared encoder ("the observation is first encoded and then fed to
  KeyNet", the poster).
- GenNet = its own conv trunk on the source frame; its maps concatenated with the K Gaussian maps; two 3x3 convs;
  then the mirror of the trunk (3x3 transposed convs, the last with stride 2) back to a 3-channel image.
- Loss: mean squared error between the generated and the target frame, both in [-0.5, 0.5] (frame / 255 - 0.5);
  optionally plus Minderer et al.'s temporal separation loss on the source and target keypoints
  (`IMM.training_loss`), which charges keypoints that move alike.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from kprl.config import IMMConfig
from kprl.nets.encoder import ConvTrunk, norm_layer, weight_init
from kprl.nets.keypoints import gaussian_maps, keypoints_from_scores, temporal_separation_loss, to_pixels


class KeypointOutput(NamedTuple):
    """What a `KeypointHead` (and so `KeyNet`) produces for a batch."""

    coords: torch.Tensor
    """[B, K, 2] (x, y) in [-1, 1] (kprl.nets.keypoints conventions)."""
    score_maps: torch.Tensor
    """[B, K, h, w] raw scores."""
    marginal_x: torch.Tensor
    """[B, K, w] softmax marginal over columns."""
    marginal_y: torch.Tensor
    """[B, K, h] softmax marginal over rows."""
    gauss_maps: torch.Tensor
    """[B, K, h, w] Gaussian maps of the keypoints at the score-map resolution."""


class IMMOutput(NamedTuple):
    """What `IMM.forward` produces for a batch of (source, target) pairs."""

    generated: torch.Tensor
    """[B, 3, H, W] the rendered target, in [-0.5, 0.5] units (add 0.5 for an image in [0, 1])."""
    keypoints: KeypointOutput
    """The target's keypoints."""


class KeypointHead(nn.Module):
    """Feature maps [B, C, h, w] -> K keypoints: 1x1 conv to score maps, softmax marginals, expectations, and the
    keypoints' Gaussian maps (Jakab et al. 2018, Sec. 3.1). ``out_dim`` = 2K: as an encoder head its output is the
    flattened (x, y) coordinates."""

    def __init__(
        self, in_channels: int, num_keypoints: int, sigma: float, frames: int = 1, appearance: bool = False
    ) -> None:
        super().__init__()
        if num_keypoints < 1:
            raise ValueError(f"num_keypoints must be >= 1, got {num_keypoints}")
        if sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        if in_channels % frames:
            raise ValueError(f"{in_channels} map channels do not split into {frames} frames")
        self.score = nn.Conv2d(in_channels // frames, num_keypoints, 1)
        self.num_keypoints = num_keypoints
        self.frames = frames
        self.sigma = sigma
        self.appearance = appearance
        self.out_dim = 2 * num_keypoints * frames + (num_keypoints * in_channels if appearance else 0)
        self.apply(weight_init)

    def keypoints(self, maps: torch.Tensor) -> KeypointOutput:
        """All intermediate results for the feature maps ``maps``. With ``frames`` = S > 1 the maps are S
        frame-major groups (`kprl.nets.encoder.PerFrameTrunk`), each scored alone: S*K keypoints, frame 0's first."""
        scores = self.scores(maps)
        kp = keypoints_from_scores(scores)
        gauss = gaussian_maps(kp.coords, scores.shape[-2], scores.shape[-1], self.sigma)
        return KeypointOutput(kp.coords, scores, kp.marginal_x, kp.marginal_y, gauss)

    def scores(self, maps: torch.Tensor) -> torch.Tensor:
        """Score maps [B, S*K, h, w] of feature maps [B, C, h, w]."""
        b, c, h, w = maps.shape
        return self.score(maps.reshape(b * self.frames, c // self.frames, h, w)).reshape(b, -1, h, w)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """Flattened keypoints [B, 2K] (x1, y1, x2, y2, ...): the head's contribution to an agent's features.

        With ``appearance``, followed by each keypoint's features [K * C/S]: the frame's conv maps averaged under
        the keypoint's Gaussian map (what is at the keypoint, not only where it is)."""
        if not self.appearance:
            return keypoints_from_scores(self.scores(maps)).coords.flatten(1)
        kp = self.keypoints(maps)
        b, c, h, w = maps.shape
        per_frame = maps.reshape(b, self.frames, 1, c // self.frames, h * w)
        weights = kp.gauss_maps.reshape(b, self.frames, self.num_keypoints, 1, h * w).to(maps.dtype)
        pooled = (per_frame * weights).sum(-1) / weights.sum(-1).clamp_min(1e-6)
        return torch.cat([kp.coords.flatten(1), pooled.float().flatten(1)], dim=1)


class KeyNet(nn.Module):
    """Frames uint8 (or float 0..255) [B, C, H, W] -> keypoints: conv trunk + `KeypointHead`."""

    def __init__(self, in_channels: int, image_size: int, cfg: IMMConfig) -> None:
        super().__init__()
        self.trunk = ConvTrunk(
            in_channels, image_size, cfg.num_conv_layers, cfg.num_filters, cfg.norm, cfg.same_padding
        )
        self.head = KeypointHead(cfg.num_filters, cfg.keypoints, cfg.sigma)

    def forward(self, frames: torch.Tensor) -> KeypointOutput:
        return self.head.keypoints(self.trunk(frames))


def centred_frames(frames: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Pixel values 0..255 -> ``dtype`` in [-0.5, 0.5], the units GenNet generates in (a new tensor)."""
    x = frames.to(dtype, copy=True)
    return x.mul_(1.0 / 255.0).sub_(0.5)


class GenNet(nn.Module):
    """(source frames, target Gaussian maps) -> generated target frames, in [-0.5, 0.5] units."""

    def __init__(self, in_channels: int, image_size: int, cfg: IMMConfig) -> None:
        super().__init__()
        f = cfg.num_filters
        self.trunk = ConvTrunk(in_channels, image_size, cfg.num_conv_layers, f, cfg.norm, cfg.same_padding)
        side = self.trunk.out_shape[1]
        pad = int(cfg.same_padding)
        self.mix = nn.ModuleList(
            [
                nn.Conv2d(f + cfg.keypoints if i == 0 else f, f, 3, padding=2**i, dilation=2**i)
                for i in range(cfg.mix_layers)
            ]
        )
        self.mix_norms = nn.ModuleList([norm_layer(cfg.norm, f) for _ in self.mix])
        self.deconvs = nn.ModuleList(
            [nn.ConvTranspose2d(f, f, 3, stride=1, padding=pad) for _ in range(cfg.num_conv_layers - 1)]
        )
        if not cfg.same_padding:  # each unpadded transposed conv grows the maps by 2, mirroring the trunk
            side += 2 * (cfg.num_conv_layers - 1)
        output_padding = image_size - ((side - 1) * 2 - 2 * pad + 3)
        if output_padding not in (0, 1):
            raise ValueError(f"GenNet cannot produce {image_size} px from {side} px maps")
        self.source_skip = cfg.source_skip
        if cfg.source_skip:
            half = max(f // 2, 1)
            self.out = nn.ConvTranspose2d(f, half, 3, stride=2, padding=pad, output_padding=output_padding)
            self.skip = nn.ModuleList(
                [
                    nn.Conv2d(half + in_channels, half, 3, padding=1),
                    nn.Conv2d(half, in_channels, 3, padding=1),
                ]
            )
        else:
            self.out = nn.ConvTranspose2d(f, in_channels, 3, stride=2, padding=pad, output_padding=output_padding)
        self.apply(weight_init)

    def forward(self, source: torch.Tensor, gauss_maps: torch.Tensor) -> torch.Tensor:
        features = self.trunk(source)
        x = torch.cat([features, gauss_maps.to(features.dtype)], dim=1)
        for conv, norm in zip(self.mix, self.mix_norms, strict=True):
            x = torch.relu(norm(conv(x)))
        for deconv in self.deconvs:
            x = torch.relu(deconv(x))
        if not self.source_skip:
            return self.out(x)
        x = torch.relu(self.out(x))
        x = torch.relu(self.skip[0](torch.cat([x, centred_frames(source).to(x.dtype)], dim=1)))
        return self.skip[1](x)


class IMM(nn.Module):
    """KeyNet + GenNet. ``forward(source, target)`` -> generated target and the target's keypoints;
    ``loss(source, target)`` -> (MSE, output)."""

    def __init__(self, cfg: IMMConfig, image_size: int, in_channels: int = 3) -> None:
        super().__init__()
        self.cfg = cfg
        self.image_size = image_size
        self.in_channels = in_channels
        self.keynet = KeyNet(in_channels, image_size, cfg)
        self.gennet = GenNet(in_channels, image_size, cfg)

    @property
    def map_size(self) -> int:
        """Side of the score and Gaussian maps."""
        return self.keynet.trunk.out_shape[1]

    def keypoint_pixels(self, frames: torch.Tensor) -> torch.Tensor:
        """Keypoints [B, K, 2] of frames [B, C, S, S] as float32 (x, y) pixel coordinates of those frames, placed
        where their map cells look (`ConvTrunk.image_coords`; `kprl.nets.keypoints.to_pixels` convention)."""
        coords = self.keynet.trunk.image_coords(self.keynet(frames).coords.float())
        return to_pixels(coords, self.image_size, self.image_size)

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> IMMOutput:
        kp = self.keynet(target)
        return IMMOutput(self.gennet(source, kp.gauss_maps), kp)

    def loss(self, source: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, IMMOutput]:
        """Pixel MSE between the generated and the true target (the poster's loss; Jakab et al. use a perceptual
        loss, which needs pretrained VGG weights this project does not download)."""
        out = self(source, target)
        return F.mse_loss(out.generated.float(), centred_frames(target)), out

    def training_loss(self, source: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss training minimises and its parts: ``reconstruction`` (the MSE of :meth:`loss`) and, when
        ``cfg.separation_weight`` > 0, ``separation``: `kprl.nets.keypoints.temporal_separation_loss` of each
        pair's two-frame trajectory (source keypoints, target keypoints), added with that weight. Only the
        target's keypoints reach the generator; the source's are found for this loss alone."""
        mse, out = self.loss(source, target)
        if self.cfg.separation_weight <= 0:
            return mse, {"reconstruction": mse}
        trajectories = torch.stack([self.keynet(source).coords, out.keypoints.coords], dim=1).float()  # [B, 2, K, 2]
        separation = temporal_separation_loss(trajectories, self.cfg.separation_sigma)
        return mse + self.cfg.separation_weight * separation, {"reconstruction": mse, "separation": separation}
