"""Device, precision and allocator helpers."""

from __future__ import annotations

import pytest
import torch

from kprl.errors import ConfigError
from kprl.runtime import hardware
from kprl.runtime.hardware import (
    cpu_identity,
    keep_freed_memory,
    native_bf16,
    peak_rss_mib,
    resolve_precision,
)


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


def test_cpu_identity_reads_family_model_and_the_flags_that_set_speed(monkeypatch: pytest.MonkeyPatch) -> None:
    zen4 = {"vendor_id": "AuthenticAMD", "cpu family": "25", "model": "17",
            "flags": "fpu sse2 avx2 avx512f avx512_bf16 avx512vl"}  # fmt: skip
    monkeypatch.setattr(hardware, "_cpuinfo", lambda *keys: next((zen4[k] for k in keys if k in zen4), None))
    assert cpu_identity() == {"vendor": "AuthenticAMD", "family": 25, "model": 17,
                              "flags": ["avx2", "avx512f", "avx512_bf16"]}  # fmt: skip
    monkeypatch.setattr(hardware, "_cpuinfo", lambda *keys: None)  # not Linux
    assert cpu_identity() == {"vendor": None, "family": None, "model": None, "flags": []}
