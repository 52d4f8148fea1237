"""Device, precision and allocator helpers."""

from __future__ import annotations

import pytest
import torch

from kprl.errors import ConfigError
from kprl.runtime.hardware import keep_freed_memory, native_bf16, peak_rss_mib, resolve_precision


def test_auto_precision_is_bf16_exactly_where_the_cpu_has_native_bf16() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if native_bf16(cpu) else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"


def test_unknown_precision_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="precision"):
        resolve_precision("fp8", torch.device("cpu"))


def test_allocator_setting_and_peak_memory_report() -> None:
    assert isinstance(keep_freed_memory(), bool)
    before = peak_rss_mib()
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB touched
    assert peak_rss_mib() >= before and peak_rss_mib() > 64
    del block
