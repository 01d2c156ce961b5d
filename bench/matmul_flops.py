"""Dense matmul throughput of this machine: the denominator of the MFU pgolf reports.

Maths: ``C[M,N] = A[M,K] · W[N,K]ᵀ`` (what ``nn.Linear`` computes for M tokens) costs
``2·M·N·K`` FLOPs — one multiply and one add per term of each of the M·N dot products of length K.
Throughput = 2·M·N·K / t, with t the median over repetitions of the per-call wall time, after
warm-up (first calls pay for allocation, kernel selection, oneDNN/cuBLAS heuristics). The peak
is the maximum throughput over shapes typical of small transformers (M = 16,384 tokens,
K, N = 128…1536) and large squares (2048³, 4096³). MFU = achieved model FLOP/s ÷ this peak, in
the sense of PaLM (Chowdhery et al. 2022, App. B) and nanoGPT's ``estimate_mfu``; the challenge
itself reports no MFU (CATALOGUE has none), so this is pgolf's own measurement, not a record's.

Usage (from the repository root)::

    python bench/matmul_flops.py                       # CPU (and CUDA if available), table
    python bench/matmul_flops.py --dtypes bf16 --json out.json
    python -c "from bench.matmul_flops import measure_peak_flops; import torch; \\
               print(measure_peak_flops(torch.bfloat16, 'cpu'))"

Other bench scripts import :func:`measure_peak_flops` (FLOP/s, cached per process). pgolf never
imports ``bench``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

# Runnable as `python bench/matmul_flops.py` without installing pgolf.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# (M, K, N): M tokens × K input features → N output features, as in nn.Linear.
TRANSFORMER_SHAPES: tuple[tuple[int, int, int], ...] = (
    (16384, 128, 128),
    (16384, 128, 512),
    (16384, 256, 256),
    (16384, 256, 1024),
    (16384, 512, 512),
    (16384, 512, 1024),
    (16384, 512, 1536),
    (16384, 1536, 512),
)
SQUARE_SHAPES: tuple[tuple[int, int, int], ...] = ((2048, 2048, 2048), (4096, 4096, 4096))
DEFAULT_SHAPES: tuple[tuple[int, int, int], ...] = TRANSFORMER_SHAPES + SQUARE_SHAPES

DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}

_PEAK_CACHE: dict[tuple[str, str, tuple[tuple[int, int, int], ...]], float] = {}


@dataclass(frozen=True)
class MatmulResult:
    m: int
    k: int
    n: int
    dtype: str
    device: str
    seconds: float
    """Median wall time of one matmul call."""
    flops_per_second: float
    reps: int
    inner: int
    """Calls per timed repetition (small shapes are batched so one repetition is ≥ min_rep_seconds)."""

    @property
    def tflops(self) -> float:
        return self.flops_per_second / 1e12


def matmul_flops(m: int, k: int, n: int) -> int:
    """FLOPs of an [M,K]·[K,N] product: 2·M·N·K."""
    return 2 * m * n * k


def _dtype_name(dtype: torch.dtype) -> str:
    for name, dt in DTYPES.items():
        if dt == dtype:
            return name
    return str(dtype).removeprefix("torch.")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _resolve(device: str | torch.device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        from pgolf.errors import ConfigError

        raise ConfigError("matmul_flops: device 'cuda' requested but CUDA is not available")
    return device


def time_matmul(
    m: int,
    k: int,
    n: int,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
    *,
    warmup: int = 2,
    reps: int = 5,
    min_rep_seconds: float = 0.02,
    seed: int = 0,
) -> MatmulResult:
    """Median per-call time of ``out = a @ w.T`` with a:[M,K], w:[N,K] (the nn.Linear layout)."""
    dev = _resolve(device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    a = torch.randn(m, k, generator=gen).to(device=dev, dtype=dtype)
    w = (torch.randn(n, k, generator=gen) / math.sqrt(k)).to(device=dev, dtype=dtype)
    out = torch.empty(m, n, device=dev, dtype=dtype)
    wt = w.t()
    for _ in range(max(warmup, 1)):
        torch.mm(a, wt, out=out)
    _sync(dev)
    # Calibrate how many calls make one repetition long enough to time reliably.
    t0 = time.perf_counter()
    torch.mm(a, wt, out=out)
    _sync(dev)
    one = max(time.perf_counter() - t0, 1e-7)
    inner = max(1, math.ceil(min_rep_seconds / one))
    per_call: list[float] = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            torch.mm(a, wt, out=out)
        _sync(dev)
        per_call.append((time.perf_counter() - t0) / inner)
    sec = statistics.median(per_call)
    return MatmulResult(m, k, n, _dtype_name(dtype), str(dev), sec, matmul_flops(m, k, n) / sec, reps, inner)


def benchmark(
    shapes: Sequence[tuple[int, int, int]] = DEFAULT_SHAPES,
    dtypes: Sequence[torch.dtype] = (torch.bfloat16, torch.float32),
    devices: Sequence[str | torch.device] = ("cpu",),
    *,
    warmup: int = 2,
    reps: int = 5,
    min_rep_seconds: float = 0.02,
) -> list[MatmulResult]:
    """Time every (device, dtype, shape) combination with :func:`time_matmul`."""
    return [
        time_matmul(m, k, n, dt, dev, warmup=warmup, reps=reps, min_rep_seconds=min_rep_seconds)
        for dev in devices
        for dt in dtypes
        for (m, k, n) in shapes
    ]


def measure_peak_flops(
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
    shapes: Sequence[tuple[int, int, int]] = DEFAULT_SHAPES,
) -> float:
    """Peak dense-matmul throughput in FLOP/s (not TFLOP/s) over ``shapes``: the MFU denominator.

    Measured once per (dtype, device, shapes) in a process and cached. Takes ~5–20 s on a
    2-core CPU with the default shapes; pass fewer shapes for a quicker, lower-bound estimate.
    """
    dev = _resolve(device)
    key = (_dtype_name(dtype), str(dev), tuple(tuple(s) for s in shapes))
    if key not in _PEAK_CACHE:
        _PEAK_CACHE[key] = max(r.flops_per_second for r in benchmark(shapes, (dtype,), (dev,)))
    return _PEAK_CACHE[key]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, object]:
    """What the numbers were measured on (they mean nothing without it)."""
    info: dict[str, object] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_num_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def format_table(results: Sequence[MatmulResult]) -> str:
    lines = [
        "| device | dtype | M × K × N | seconds | TFLOP/s |",
        "|---|---|---|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.device} | {r.dtype} | {r.m} × {r.k} × {r.n} | {r.seconds:.3e} | {r.tflops:.3f} |"
        )
    return "\n".join(lines)


def peaks(results: Sequence[MatmulResult]) -> dict[str, dict[str, object]]:
    """Best result per (device, dtype), keyed "device/dtype"."""
    best: dict[str, MatmulResult] = {}
    for r in results:
        key = f"{r.device}/{r.dtype}"
        if key not in best or r.flops_per_second > best[key].flops_per_second:
            best[key] = r
    return {
        k: {"flops_per_second": r.flops_per_second, "tflops": r.tflops, "shape": [r.m, r.k, r.n]}
        for k, r in best.items()
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dtypes", default="bf16,fp32", help="comma list of bf16, fp32, fp16")
    p.add_argument("--devices", default="auto", help="'auto' = cpu (+ cuda if available), or a comma list")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="transformer shapes only (skip 2048³, 4096³)")
    p.add_argument("--json", metavar="PATH", help="also write results as JSON ('-' = stdout)")
    args = p.parse_args(argv)

    from pgolf.errors import ConfigError, PgolfError

    try:
        names = [d.strip() for d in args.dtypes.split(",") if d.strip()]
        unknown = [d for d in names if d not in DTYPES]
        if unknown:
            raise ConfigError(f"matmul_flops: unknown dtype(s) {unknown}; choose from {sorted(DTYPES)}")
        dtypes = [DTYPES[d] for d in names]
        if args.devices == "auto":
            devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        else:
            devices = [str(_resolve(d.strip())) for d in args.devices.split(",") if d.strip()]
        shapes = TRANSFORMER_SHAPES if args.quick else DEFAULT_SHAPES
        info = machine_info()
        print(
            f"# {info['cpu_model']}, {info['cpu_count']} CPUs, torch {info['torch']}, "
            f"torch.get_num_threads() = {info['torch_num_threads']}, {info['date']}"
        )
        t0 = time.perf_counter()
        results = benchmark(shapes, dtypes, devices, reps=args.reps, warmup=args.warmup)
        print(format_table(results))
        best = peaks(results)
        for key, b in best.items():
            m, k, n = b["shape"]  # type: ignore[misc]
            print(f"peak {key}: {b['tflops']:.3f} TFLOP/s at {m} × {k} × {n}")
        print(f"# total {time.perf_counter() - t0:.1f} s")
        if args.json:
            payload = {
                "machine": info,
                "results": [asdict(r) | {"tflops": r.tflops} for r in results],
                "peak": best,
            }
            if args.json == "-":
                print(json.dumps(payload, indent=2))
            else:
                from pgolf.fileio import write_json

                write_json(args.json, payload)
    except PgolfError as e:
        print(f"pgolf: error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
