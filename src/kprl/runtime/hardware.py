"""Where and in which arithmetic the networks run: device checks and the precision that ``auto`` picks."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
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
    """Whether ``device`` computes bf16 natively: a CUDA GPU of compute capability 8 or more (Ampere and newer), or a
    CPU with bf16 instructions (x86: AVX512-BF16 or AMX; Arm: the ``bf16`` extension) and oneDNN. Elsewhere bf16 is
    emulated and slower than fp32. (oneDNN's own check accepts any AVX512 CPU, emulated bf16 included.)"""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and bool(cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"})
    return False


def _cpuinfo(*keys: str) -> str | None:
    """The first value of any of ``keys`` in /proc/cpuinfo; None where absent or unreadable (not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in keys:
                    return value.strip()
    except OSError:
        pass
    return None


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (x86 ``flags``, Arm ``Features``); empty where unreadable."""
    return set((_cpuinfo("flags", "Features") or "").split())


# The instruction sets that decide a CPU's speed here: fp32 vector width, and native bf16 (docs/performance.md).
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "bf16", "sve")


def cpu_identity() -> dict[str, str | int | list[str] | None]:
    """The CPU's vendor, family and model numbers, and which of :data:`SPEED_FLAGS` it has. A VM's model name may say
    only "AMD EPYC"; family and model tell its generation (docs/performance.md has the table), so a run's record
    says which CPU it ran on even then. Fields are None where /proc/cpuinfo does not give them."""

    def number(key: str) -> int | None:
        value = _cpuinfo(key)
        try:
            return int(value, 0) if value is not None else None
        except ValueError:
            return None

    return {
        "vendor": _cpuinfo("vendor_id", "CPU implementer"),
        "family": number("cpu family"),
        "model": number("model"),
        "flags": [flag for flag in SPEED_FLAGS if flag in cpu_flags()],
    }


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


# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of handing it back to the OS; True if applied.

    An update allocates and frees hundreds of MB of activations. By default glibc returns large blocks (mmap) and the
    top of the heap (trim) to the kernel, so every update page-faults the same memory in again: measured ~30 ms of
    kernel time and ~15-20k page faults per SAC+AE update on this project's 2-core CPU, ~1 ms and a few hundred with
    this. The process's resident memory then stays at its peak (what a training process reaches anyway). No-op
    where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    # 32 MiB is the largest mmap threshold glibc accepts; blocks below it are served from the heap.
    return bool(mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(2**30)) and mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(2**25)))


def describe_machine(device: torch.device) -> str:
    """One line naming the hardware a run used, for results tables: CPU model and cores, or the GPU."""
    cpu = _cpuinfo("model name") or platform.processor() or platform.machine()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    text = f"{cpu}, {cores} cores"
    if device.type == "cuda" and torch.cuda.is_available():
        text = f"{torch.cuda.get_device_name(device)} + {text}"
    return text
