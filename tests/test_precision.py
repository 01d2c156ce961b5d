"""amp_dtype=auto: bf16 only where the device runs it natively and faster; the choice and why."""

from __future__ import annotations

import pytest
import torch

from pgolf import precision
from pgolf.errors import ConfigError
from pgolf.precision import Precision, agreed_amp, autocast, cpu_flags, resolve_amp


def test_explicit_choices_are_kept():
    assert resolve_amp("bf16", "cpu") == Precision("bf16", "train.amp_dtype=bf16 (set explicitly)")
    assert resolve_amp("fp32", "cpu").dtype == "fp32"
    with pytest.raises(ConfigError, match="auto, bf16 or fp32"):
        resolve_amp("fp8", "cpu")


def _fake_cpu(monkeypatch, tmp_path, flags: str, probe: dict[str, float] | None):
    info = tmp_path / "cpuinfo"
    info.write_text(f"model name\t: Test CPU 9000\nflags\t\t: fpu sse2 avx2 {flags}\n")
    monkeypatch.setattr(precision, "cpu_flags", lambda path="": cpu_flags(str(info)))
    monkeypatch.setattr(precision, "cpu_model", lambda path="": "Test CPU 9000")
    calls = []

    def fake_probe(device="cpu", n=precision.PROBE_N, seconds=0.05):
        calls.append(device)
        assert probe is not None, "the probe must not run without native bf16 flags"
        return probe

    monkeypatch.setattr(precision, "matmul_probe", fake_probe)
    precision._auto.cache_clear()
    return calls


def test_auto_avx2_only_cpu_is_fp32_without_probing(monkeypatch, tmp_path):
    """The AVX2-only EPYC of the issue: no bf16 flag, fp32, and the log line says why."""
    calls = _fake_cpu(monkeypatch, tmp_path, "", None)
    p = resolve_amp("auto", "cpu")
    assert p.dtype == "fp32" and "no native bf16" in p.reason and "Test CPU 9000" in p.reason and not calls
    precision._auto.cache_clear()


@pytest.mark.parametrize("flag", ["amx_bf16", "avx512_bf16"])
def test_auto_native_bf16_cpu_follows_the_probe(monkeypatch, tmp_path, flag):
    _fake_cpu(monkeypatch, tmp_path, flag, {"fp32": 1e11, "bf16": 4e11})
    p = resolve_amp("auto", "cpu")
    assert p.dtype == "bf16" and flag in p.reason and "4.00×" in p.reason
    _fake_cpu(monkeypatch, tmp_path, flag, {"fp32": 1e11, "bf16": 1.1e11})  # native but not faster enough
    p = resolve_amp("auto", "cpu")
    assert p.dtype == "fp32" and "not faster" in p.reason
    precision._auto.cache_clear()


def test_probe_counts_flops_over_the_time_it_measured(monkeypatch):
    """On a clock that advances 1 ms per reading, a 5 ms window holds 5 products of 2n³ flops: the probe
    must report exactly 2n³·5 / 0.005 for both dtypes (the warm-up product is not counted)."""
    ticks = iter(range(10_000))
    monkeypatch.setattr(precision.time, "perf_counter", lambda: next(ticks) / 1000.0)
    n = 16
    r = precision.matmul_probe("cpu", n=n, seconds=0.005)
    assert set(r) == {"fp32", "bf16"}
    for v in r.values():
        assert v == pytest.approx(2 * n**3 * 5 / 0.005, rel=1e-9)


def test_agreed_amp_single_process_and_autocast():
    p = agreed_amp("fp32", "cpu")
    assert p.dtype == "fp32" and p.torch_dtype is None
    x = torch.randn(4, 4)
    with autocast(Precision("bf16", ""), "cpu"):
        assert (x @ x).dtype == torch.bfloat16
    with autocast(p, "cpu"):
        assert (x @ x).dtype == torch.float32
