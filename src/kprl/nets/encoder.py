"""Convolutional encoder and pixel decoder of SAC+AE (Yarats et al. 2019, Appendix B).

Encoder: ``obs / 255`` -> 3x3 conv (stride 2) -> ReLU -> (3x3 conv, stride 1, ReLU) x (L-1) -> feature maps
(32 x 35 x 35 for 84 px input). The maps feed one or more *heads* (the SAC+AE latent: FC -> LayerNorm -> tanh,
later keypoints); the heads' outputs are concatenated into the feature vector that actor and critic read.
"""

from __future__ import annotations

import copy
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


def weight_init(module: nn.Module) -> None:
    """Orthogonal init for linear layers and delta-orthogonal init for convolutions (Xiao et al. 2018),
    as in pytorch_sac_ae: a conv starts as an orthogonal map applied at the kernel centre only."""
    if isinstance(module, nn.Linear):
        nn.init.orthogonal_(module.weight.data)
        if module.bias is not None:
            module.bias.data.fill_(0.0)
    elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        assert module.weight.size(2) == module.weight.size(3)
        module.weight.data.fill_(0.0)
        if module.bias is not None:
            module.bias.data.fill_(0.0)
        mid = module.weight.size(2) // 2
        gain = nn.init.calculate_gain("relu")
        nn.init.orthogonal_(module.weight.data[:, :, mid, mid], gain)


def conv_output_size(image_size: int, num_layers: int, padded: bool = False) -> int:
    """Spatial side of the feature maps: one stride-2 and (num_layers - 1) stride-1 3x3 convolutions, valid or
    (``padded``) with one pixel of zero padding, which keeps the stride-1 layers' side."""
    if padded:
        return (image_size - 1) // 2 + 1
    size = (image_size - 3) // 2 + 1
    return size - 2 * (num_layers - 1)


def norm_layer(kind: str, channels: int) -> nn.Module:
    """A normalisation layer for conv maps: ``none`` (identity), ``batch`` or ``instance`` (with affine)."""
    if kind == "none":
        return nn.Identity()
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    raise ValueError(f"unknown normalisation {kind!r} (none, batch, instance)")


def pixels_as_input(obs: torch.Tensor) -> torch.Tensor:
    """Pixel values 0..255 (uint8 or float) as the dtype the first conv computes in: bf16 under a bf16 autocast
    (every integer 0..255 is exact in bf16, so uint8 goes there directly without an fp32 copy), else fp32."""
    device_type = obs.device.type
    if torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type) == torch.bfloat16:
        return obs.to(torch.bfloat16)
    return obs.float()


class ConvTrunk(nn.Module):
    """The shared convolutional part: uint8 (or float 0..255) stacks [B, C, H, W] -> feature maps [B, F, h, w].

    ``norm`` puts a normalisation layer between each conv and its ReLU (IMM's encoders use batch norm); SAC+AE
    has none, and with ``norm="none"`` the parameters are exactly SAC+AE's. SAC+AE's convs are unpadded, so the
    maps stop short of the image's edges; ``padded`` pads each conv by one pixel, and the maps then span it."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_layers: int = 4,
        num_filters: int = 32,
        norm: str = "none",
        padded: bool = False,
    ) -> None:
        super().__init__()
        pad = int(padded)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, num_filters, 3, stride=2, padding=pad)]
        for _ in range(num_layers - 1):
            layers.append(nn.Conv2d(num_filters, num_filters, 3, stride=1, padding=pad))
        self.convs = nn.ModuleList(layers)
        self.norms = (
            nn.ModuleList([norm_layer(norm, num_filters) for _ in layers]) if norm != "none" else None
        )
        side = conv_output_size(image_size, num_layers, padded)
        if side < 1:
            raise ValueError(f"{num_layers} conv layers leave no feature map of a {image_size} px image")
        self.out_shape: tuple[int, int, int] = (num_filters, side, side)
        self.image_size = image_size
        self.num_layers = num_layers
        self.padded = padded
        self.apply(weight_init)

    def image_coords(self, coords: torch.Tensor) -> torch.Tensor:
        """Points in [-1, 1] of the feature-map grid (keypoints) -> the same points in [-1, 1] of the input image.

        Unpadded, the maps do not span the image: 3x3 convs, the first with stride 2, put map cell k over the input
        pixel of index 2k + 2L - 1 (its receptive field's centre; L conv layers), e.g. cells 0..34 over pixels
        7..75 of an 84 px image. Padded, cell k is over pixel 2k (cells 0..41 over pixels 0..82 of 84 px). Use
        before `kprl.nets.keypoints.to_pixels` to place keypoints on the image."""
        side = self.out_shape[-1]
        first_pixel = 0 if self.padded else 2 * self.num_layers - 1
        pixel_index = (coords + 1.0) * (side - 1) + first_pixel
        return pixel_index / max(self.image_size - 1, 1) * 2.0 - 1.0

    @property
    def image_scale(self) -> float:
        """Length of one unit of map coordinates in image coordinates (both [-1, 1] normalised)."""
        return 2.0 * (self.out_shape[-1] - 1) / max(self.image_size - 1, 1)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = pixels_as_input(obs)
        for i, conv in enumerate(self.convs):
            if i == 0:
                # conv(obs / 255) computed as conv_{w / 255}(obs): scaling 32x9x3x3 weights instead of a whole
                # batch of images saves a pass over the largest tensor of the update (same maths).
                x = F.conv2d(x, conv.weight * (1.0 / 255.0), conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
            else:
                x = conv(x)
            if self.norms is not None:
                x = self.norms[i](x)
            x = torch.relu(x)
        return x


def reads_old_name(module: nn.Module, old: str, new: str) -> None:
    """Let ``module.load_state_dict`` read checkpoints written when its submodule ``new`` was called ``old``
    (kprl 0.2.0 and earlier), so renaming a layer never orphans a run directory."""

    def rename(_: nn.Module, state_dict: dict[str, Any], prefix: str, *__: Any) -> None:
        for key in [k for k in state_dict if k.startswith(f"{prefix}{old}.")]:
            state_dict[f"{prefix}{new}.{key[len(prefix) + len(old) + 1 :]}"] = state_dict.pop(key)

    module.register_load_state_dict_pre_hook(rename)


class PerFrameTrunk(nn.Module):
    """A conv trunk applied to each frame of a stack separately (shared weights): [B, 3S, H, W] -> [B, S*F, h, w],
    frame-major channels (frame 0's F maps first). Heads that work per frame (keypoints) split them back."""

    def __init__(self, trunk: ConvTrunk, frames: int) -> None:
        super().__init__()
        self.frame_trunk = trunk
        self.frames = frames
        reads_old_name(self, "trunk", "frame_trunk")
        f, h, w = trunk.out_shape
        self.out_shape: tuple[int, int, int] = (frames * f, h, w)

    def image_coords(self, coords: torch.Tensor) -> torch.Tensor:
        """See `ConvTrunk.image_coords` (every frame has the same geometry)."""
        return self.frame_trunk.image_coords(coords)

    @property
    def image_scale(self) -> float:
        return self.frame_trunk.image_scale

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        b, c, h, w = obs.shape
        maps = self.frame_trunk(obs.reshape(b * self.frames, c // self.frames, h, w))
        return maps.reshape(b, -1, *maps.shape[-2:])


class LatentHead(nn.Module):
    """SAC+AE's compact latent: flatten -> FC -> LayerNorm -> tanh (the tanh bounds the code, Section 5)."""

    def __init__(self, in_shape: tuple[int, int, int], latent_dim: int = 50) -> None:
        super().__init__()
        c, h, w = in_shape
        self.fc = nn.Linear(c * h * w, latent_dim)
        self.ln = nn.LayerNorm(latent_dim)
        self.out_dim = latent_dim
        self.apply(weight_init)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        # Under bf16 autocast the linear layer (the head's cost) runs in bf16; the normalised code is fp32.
        return torch.tanh(self.ln(self.fc(maps.flatten(1)).float()))


class Encoded(NamedTuple):
    """What an :class:`Encoder` produces for one batch of observations."""

    features: torch.Tensor  # [B, D] fp32: concatenation of the heads' outputs; what actor/critic read
    maps: (
        torch.Tensor
    )  # [B, F, h, w]: conv feature maps (detached if the encoder was called with detach_conv)
    parts: tuple[torch.Tensor, ...]  # each head's output, in head order (auxiliary losses read these)


class Encoder(nn.Module):
    """Conv trunk followed by heads whose outputs are concatenated.

    ``detach_conv=True`` stops gradients at the conv maps: the actor trains its own heads on frozen conv features
    and never updates the shared convolutions (SAC+AE, Section 5: "we do not let the actor update the encoder")."""

    def __init__(self, trunk: ConvTrunk, heads: list[nn.Module]) -> None:
        super().__init__()
        self.trunk = trunk
        self.heads = nn.ModuleList(heads)
        self.feature_dim = sum(int(h.out_dim) for h in heads)

    def forward(self, obs: torch.Tensor, detach_conv: bool = False) -> Encoded:
        maps = self.trunk(obs)
        return self.from_maps(maps.detach() if detach_conv else maps)

    def from_maps(self, maps: torch.Tensor) -> Encoded:
        """The heads on conv maps computed elsewhere (one trunk pass shared by several losses)."""
        parts = tuple(head(maps) for head in self.heads)
        features = torch.cat([p.float() for p in parts], dim=1)
        return Encoded(features, maps, parts)

    def tied_copy(self, shared_heads: frozenset[int] = frozenset()) -> Encoder:
        """A copy whose conv trunk *is* this encoder's (shared parameters), as the actor's encoder in SAC+AE ties
        its conv weights to the critic's. Heads are copies of their own, initialised independently as in
        pytorch_sac_ae, except those whose index is in ``shared_heads``, which are this encoder's very heads."""
        heads: list[nn.Module] = []
        for i, head in enumerate(self.heads):
            if i in shared_heads:
                heads.append(head)
                continue
            own = copy.deepcopy(head)
            own.apply(weight_init)
            heads.append(own)
        return Encoder(self.trunk, heads)


class PixelDecoder(nn.Module):
    """SAC+AE decoder: latent -> FC -> (F, h, w) -> (3x3 deconv, stride 1, ReLU) x (L-1) -> 3x3 deconv stride 2
    -> image [B, C, H, W] with no output non-linearity (the target is centred in [-0.5, 0.5])."""

    def __init__(
        self,
        latent_dim: int,
        maps_shape: tuple[int, int, int],
        out_channels: int,
        image_size: int,
        num_layers: int = 4,
    ) -> None:
        super().__init__()
        f, h, w = maps_shape
        self.maps_shape = maps_shape
        self.fc = nn.Linear(latent_dim, f * h * w)
        self.deconvs = nn.ModuleList([nn.ConvTranspose2d(f, f, 3, stride=1) for _ in range(num_layers - 1)])
        side = h + 2 * (num_layers - 1)
        output_padding = image_size - ((side - 1) * 2 + 3)
        if output_padding not in (0, 1):
            raise ValueError(f"decoder cannot produce {image_size} px from {h} px maps")
        self.out = nn.ConvTranspose2d(f, out_channels, 3, stride=2, output_padding=output_padding)
        self.apply(weight_init)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc(latent)).view(-1, *self.maps_shape)
        for deconv in self.deconvs:
            x = torch.relu(deconv(x))
        return self.out(x)
