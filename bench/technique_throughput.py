"""Step time of each technique's shape against the baseline shape, and what its FLOPs explain (issue 8).

For every switch of ``bench/ablations.py`` (on the ``cpu-v1`` recipe, 3L×192, 8,192-token batch, no switch on), a
compiled training step is timed on random tokens as the run would train (the preset's precision and
threads; :func:`pgolf.preflight.measure_cpu_ms_per_token`, the fastest of ``--steps`` timed steps after
a warm-up), interleaved with the reference — ref, A, ref, B, … — so drift of the machine hits both
sides of each ratio alike. Per technique:

    time ratio  = ms/step(technique) / ms/step(ref, the neighbouring measurements' mean)
    FLOP ratio  = F_train(technique) / F_train(ref)        (pgolf.model.flops: matmuls + attention)
    excess      = time ratio / FLOP ratio − 1

An excess near 0 means the step costs what its matmuls explain; a large excess means element-wise work,
extra kernels or optimizer work that the FLOP count leaves out (the rule "no technique may cost more
step time than its FLOPs explain" is read against this column). MFU = achieved model FLOP/s ÷ the
machine's measured matmul peak in the run's dtype (bench/matmul_flops.py).

    python bench/technique_throughput.py --steps 5 --json /tmp/tput.json
    python bench/technique_throughput.py --only xsa_all parallel_last --threads 1

First run: 2026-12-02 on an AVX2-only EPYC, 11 switches at --steps 3 (docs/benchmarks.md, "Step time of
the techniques' shapes").
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from ablations import TECHNIQUES  # noqa: E402

from pgolf import fileio  # noqa: E402
from pgolf.config import apply_overrides  # noqa: E402
from pgolf.model.flops import train_flops_per_token  # noqa: E402
from pgolf.precision import cpu_model, resolve_amp  # noqa: E402
from pgolf.preflight import measure_cpu_ms_per_token  # noqa: E402
from pgolf.presets import get_preset  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--peak", type=float, default=0.0, help="matmul peak FLOP/s for the MFU column (0 = measure)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    base = apply_overrides(get_preset("cpu-v1"), [f"train.threads={args.threads}"])  # no switch on yet
    amp = resolve_amp(base.train.amp_dtype, "cpu")
    peak = args.peak
    if not peak:
        from matmul_flops import measure_peak_flops

        peak = measure_peak_flops(torch.float32 if amp.dtype == "fp32" else torch.bfloat16, "cpu")
    names = [n for n in TECHNIQUES if n != "ref" and (not args.only or n in args.only)]

    def ms_per_step(cfg) -> float:
        return measure_cpu_ms_per_token(cfg, None, steps=args.steps, max_seconds=1e9) * cfg.train.batch_tokens

    ref_ms = [ms_per_step(base)]
    rows = []
    f_ref = train_flops_per_token(base.model, base.train.seq_len)
    for name in names:
        cfg = apply_overrides(base, TECHNIQUES[name](base.model.num_layers))
        ms = ms_per_step(cfg)
        ref_ms.append(ms_per_step(base))
        ref = statistics.mean(ref_ms[-2:])
        looping = cfg.model.recur.loops > 0 or None
        f = train_flops_per_token(cfg.model, cfg.train.seq_len, looping)
        rows.append({"technique": name, "ms_per_step": ms, "ref_ms_per_step": ref, "time_ratio": ms / ref,
                     "flop_ratio": f / f_ref, "excess": (ms / ref) / (f / f_ref) - 1.0,
                     "mfu": f * cfg.train.batch_tokens / (ms / 1000.0) / peak})
        r = rows[-1]
        print(f"{name:<18} {ms:9.1f} ms/step  ref {ref:9.1f}  time ×{r['time_ratio']:.3f}  FLOPs ×{r['flop_ratio']:.3f}  "
              f"excess {r['excess']:+.1%}  MFU {r['mfu']:.2%}", flush=True)
    ref_mfu = f_ref * base.train.batch_tokens / (statistics.mean(ref_ms) / 1000.0) / peak
    print(f"\nmachine: {cpu_model()}, {torch.get_num_threads()} threads, {amp.dtype}; peak {peak / 1e9:.1f} GFLOP/s; "
          f"ref {statistics.mean(ref_ms):.1f} ms/step (min {min(ref_ms):.1f}, max {max(ref_ms):.1f}), MFU {ref_mfu:.2%}")
    print("\n| technique | ms/step | ref ms/step | time × | FLOPs × | excess | MFU |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['technique']} | {r['ms_per_step']:.1f} | {r['ref_ms_per_step']:.1f} | {r['time_ratio']:.3f} | "
              f"{r['flop_ratio']:.3f} | {r['excess']:+.1%} | {r['mfu']:.2%} |")
    if args.json:
        fileio.write_json(args.json, {"rows": rows, "ref_ms": ref_ms, "peak": peak, "cpu": cpu_model()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
