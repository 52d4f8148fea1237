"""Where and in which arithmetic the networks run: device checks and the precision that ``auto`` picks."""

from __future__ import annotations

import resource
import sys
from typing import Literal

import torch

from kprl.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """A torch device, or a :class:`ConfigError` when CUDA is asked for but absent."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"--device {name} asked for, but torch sees no CUDA device (torch {torch.__version__})"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps asked for, but MPS is not available")
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 convolutions natively: a CUDA GPU that supports bf16 (Ampere or newer), or a
    CPU whose oneDNN has bf16 kernels (AVX512-BF16 / AMX on x86). Elsewhere bf16 is emulated and slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve_precision(precision: str, device: torch.device) -> Literal["fp32", "bf16"]:
    """``auto`` -> bf16 where :func:`native_bf16`, else fp32; ``fp32``/``bf16`` as given."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision not in ("fp32", "bf16"):
        raise ConfigError(f"--precision must be auto, fp32 or bf16, got {precision!r}")
    return precision  # type: ignore[return-value]


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (replay, models, activations, everything)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux
