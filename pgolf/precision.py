"""Autocast precision chosen by the hardware (``train.amp_dtype=auto``, the default).

Why: machines of the same kind differ by 100×. On an AVX2-only AMD EPYC (no native bf16) a bf16
matmul ran 7× slower than fp32 and ``pgolf run cpu`` with bf16 trained 42 steps in 600 s instead of
about 2,000; on a Xeon with AMX, bf16 ran 9× faster than fp32. So bf16 is used only where the device
runs it natively *and* faster:

- CUDA: bf16 when ``torch.cuda.is_bf16_supported()`` (Ampere and newer, the challenge's H100), else fp32;
- CPU: fp32 unless the CPU flags show native bf16 (``amx_bf16`` or ``avx512_bf16``); with them, a short
  measured probe (:func:`matmul_probe`: a square matmul in fp32 and in bf16, best of a few timed
  repetitions, ≈0.2 s) must find bf16 at least :data:`MIN_SPEEDUP` × faster;
- anything else: fp32.

``bf16``/``fp32`` set explicitly are used as given. The choice and its reason go into the run log.
"""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pgolf.errors import ConfigError

MIN_SPEEDUP = 1.2
"""bf16 must beat fp32 by this factor in the probe (a margin against timing noise)."""
PROBE_N = 384
"""Side of the probe's square matmul (model-sized: the cpu preset is 192–512 wide)."""


@dataclass(frozen=True)
class Precision:
    dtype: str
    """``bf16`` or ``fp32``."""
    reason: str

    @property
    def torch_dtype(self) -> torch.dtype | None:
        """The autocast dtype (None: no autocast)."""
        return torch.bfloat16 if self.dtype == "bf16" else None


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str]:
    """The CPU feature flags (Linux ``/proc/cpuinfo``; empty where unavailable)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model(path: str = "/proc/cpuinfo") -> str:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def matmul_probe(device: torch.device | str = "cpu", n: int = PROBE_N, seconds: float = 0.05) -> dict[str, float]:
    """Measured matmul throughput, ``{"fp32": flop/s, "bf16": flop/s}``: for each dtype, a warm-up and
    then the best of 3 timed runs of as many ``n×n @ n×n`` products as fit in ``seconds``."""
    device = torch.device(device)
    out: dict[str, float] = {}
    gen = torch.Generator(device="cpu").manual_seed(0)
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(n, n, generator=gen).to(device, dt)
        b = torch.randn(n, n, generator=gen).to(device, dt)
        a @ b
        best = 0.0
        for _ in range(3):
            _sync(device)
            t0, k = time.perf_counter(), 0
            while True:
                a @ b
                k += 1
                _sync(device)
                el = time.perf_counter() - t0
                if el >= seconds:
                    break
            best = max(best, 2 * n**3 * k / el)
        out[name] = best
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@functools.lru_cache(maxsize=8)
def _auto(device_type: str, device_index: int | None) -> Precision:
    if device_type == "cuda":
        dev = torch.device("cuda", device_index or 0)
        name = torch.cuda.get_device_name(dev)
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", f"auto: {name} supports bf16 natively")
        return Precision("fp32", f"auto: {name} has no native bf16")
    if device_type != "cpu":
        return Precision("fp32", f"auto: {device_type} device, fp32")
    flags = cpu_flags()
    native = sorted(flags & {"amx_bf16", "avx512_bf16"})
    model = cpu_model()
    if not native:
        return Precision("fp32", f"auto: {model} has no native bf16 (no amx_bf16/avx512_bf16 flag)")
    r = matmul_probe("cpu")
    speedup = r["bf16"] / r["fp32"] if r["fp32"] > 0 else 0.0
    measured = (f"probe {PROBE_N}² matmul: bf16 {r['bf16'] / 1e12:.3f} vs fp32 {r['fp32'] / 1e12:.3f} TFLOP/s "
                f"({speedup:.2f}×)")
    if speedup >= MIN_SPEEDUP:
        return Precision("bf16", f"auto: {model} has {'+'.join(native)}; {measured}")
    return Precision("fp32", f"auto: {model} has {'+'.join(native)} but bf16 is not faster; {measured}")


def resolve_amp(amp_dtype: str, device: torch.device | str) -> Precision:
    """The precision to run ``train.amp_dtype`` with on ``device`` (module docstring)."""
    device = torch.device(device)
    if amp_dtype in ("bf16", "fp32"):
        return Precision(amp_dtype, f"train.amp_dtype={amp_dtype} (set explicitly)")
    if amp_dtype != "auto":
        raise ConfigError(f"train.amp_dtype must be auto, bf16 or fp32, got {amp_dtype!r}")
    return _auto(device.type, device.index)


def agreed_amp(amp_dtype: str, device: torch.device | str) -> Precision:
    """:func:`resolve_amp` with every rank of a process group adopting rank 0's choice (a CPU probe
    can land on either side of the threshold on different ranks; the ranks must agree)."""
    from pgolf import dist

    p = resolve_amp(amp_dtype, device)
    if not dist.is_initialized() or dist.world_size() == 1:
        return p
    flag = torch.tensor([1.0 if p.dtype == "bf16" else 0.0], device=torch.device(device))
    if dist.rank() != 0:
        flag.zero_()
    dist.all_reduce_(flag)
    chosen = "bf16" if flag.item() > 0.5 else "fp32"
    return p if chosen == p.dtype else Precision(chosen, f"{p.reason}; rank 0 chose {chosen}")


def autocast(precision: Precision | str, device: torch.device | str):
    """A context manager: bf16 autocast on ``device`` for ``bf16``, nothing for ``fp32``."""
    dt = precision.dtype if isinstance(precision, Precision) else precision
    device = torch.device(device)
    if dt == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
