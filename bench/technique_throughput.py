"""Step time of each technique against the reference recipe, and what its FLOPs explain (issue 8).

For every switch of ``bench/ablations.py`` on the ``cpu-v1`` recipe (3L×192, 8,192-token batch, no switch
on), real training steps are timed through the trainer itself (:func:`pgolf.train.loop.train` on the
given dataset: the loader, forward/backward, the optimizers with their weight decay and schedules, the
EMA/SWA update, the recurrence switch) — so techniques that change no matrix shape (EMA, Muon weight
decay, MIN_LR, LN scale, QK gain) are timed too. Each run is its own process (a fresh torch.compile
cache), primed (compiled) before its clock, then ``--steps`` steps are timed one by one; the step time is
the fastest of them (a neighbour on the CPU only ever slows a step down; the median is printed beside
it). Runs are interleaved with the reference — ref, A, ref, B, … — so drift of the machine hits both
sides of each ratio alike; ``--repeat N`` makes N such passes and keeps, per technique, the pass with
the median time ratio (single runs differ by several per cent between processes). Per technique:

    time ratio  = ms/step(technique) / ms/step(ref, the neighbouring measurements' mean)
    FLOP ratio  = F_train(technique) / F_train(ref)        (pgolf.model.flops: matmuls + attention)
    excess      = time ratio / FLOP ratio − 1

An excess near 0 means the step costs what its matmuls explain; a large excess means element-wise work,
extra kernels or optimizer work that the FLOP count leaves out (the rule "no technique may cost more
step time than its FLOPs explain" is read against this column). Depth recurrence is timed with its loop
on from the first step (``model.recur.start_frac=0``): before its switch-on step it is the reference.
MFU = achieved model FLOP/s ÷ the machine's measured matmul peak in the run's dtype at the same thread
count (bench/matmul_flops.py).

    python bench/technique_throughput.py --data /work/data/enwiki --steps 10 --json /tmp/tput.json
    python bench/technique_throughput.py --data DIR --only xsa_all parallel_last --threads 1
    python bench/technique_throughput.py --data DIR --set train.batch_tokens=16384 --only bigram_512x48

``--set`` changes the reference and every technique alike (another batch or shape to time them at).

Runs: 2026-12-02 on an AVX2-only EPYC and an AMX Xeon (the earlier version: one compiled
forward/backward/optimizer step on random tokens, no EMA or schedules); 2026-12-07 through the trainer
(docs/benchmarks.md, "Step time of the techniques").
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from ablations import TECHNIQUES  # noqa: E402

from pgolf import fileio  # noqa: E402
from pgolf.config import RunConfig, apply_overrides  # noqa: E402
from pgolf.model.flops import train_flops_per_token  # noqa: E402
from pgolf.precision import cpu_model, resolve_amp  # noqa: E402
from pgolf.presets import get_preset  # noqa: E402

BASE = "cpu-v1"


def timing_config(data: str, steps: int, threads: int, switch: list[str], sets: list[str] = ()) -> RunConfig:
    """``cpu-v1`` plus ``sets`` (common to every run) plus ``switch``, set up to time ``steps`` steps after a
    compile priming step: every schedule over ``steps + 1`` iterations, no wallclock cap, no validation,
    no overlap scan."""
    cfg = apply_overrides(get_preset(BASE), [
        *sets, f"data.path={data}", f"train.threads={threads}", "train.max_wallclock_seconds=0",
        f"train.iterations={steps + 1}", "train.warmup_steps=1", "train.val_every=0", "train.log_every=100000",
        "train.checkpoint_every_seconds=0", "data.overlap_check=false", *switch])
    if cfg.model.recur.loops > 0:  # time the looped plan (before its switch-on the step is the reference's)
        cfg = apply_overrides(cfg, ["model.recur.start_frac=0"])
    return cfg


def time_steps(cfg: RunConfig) -> dict:
    """Train ``cfg`` in a temporary directory; the time between consecutive completed steps (so the first
    step, which follows the priming and the loader's start, is not one of them), in ms."""
    import tempfile
    import time

    from pgolf.train.log import RunLog
    from pgolf.train.loop import train

    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as d:
        train(cfg, d, log=RunLog(None, echo=False), progress=False,
              on_step=lambda step, loss: stamps.append(time.perf_counter()))
    dts = [1000.0 * (b - a) for a, b in zip(stamps, stamps[1:], strict=False)]
    return {"ms_min": min(dts), "ms_median": statistics.median(dts), "timed_steps": len(dts)}


def flops_per_token(cfg: RunConfig) -> float:
    return train_flops_per_token(cfg.model, cfg.train.seq_len, True if cfg.model.recur.loops > 0 else None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a dataset directory (pgolf data build)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per run")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--repeat", type=int, default=1, help="passes over the techniques (the ratio's median is kept)")
    ap.add_argument("--peak", type=float, default=0.0, help="matmul peak FLOP/s for the MFU column (0 = measure)")
    ap.add_argument("--set", action="append", default=[], help="override for the reference and every technique")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    unknown = [n for n in args.only or [] if n not in TECHNIQUES]
    if unknown:
        ap.error(f"unknown technique(s) {unknown}; known: {', '.join(TECHNIQUES)}")
    base = timing_config(args.data, args.steps, args.threads, [], args.set)
    amp = resolve_amp(base.train.amp_dtype, "cpu")
    peak = args.peak
    if not peak:
        from matmul_flops import measure_peak_flops

        torch.set_num_threads(args.threads)
        peak = measure_peak_flops(torch.float32 if amp.dtype == "fp32" else torch.bfloat16, "cpu")
    names = [n for n in TECHNIQUES if n != "ref" and (not args.only or n in args.only)]
    layers = base.model.num_layers
    ctx = mp.get_context("spawn")

    def measure(cfg: RunConfig) -> dict:  # one process per run, one run at a time
        with cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            return pool.submit(time_steps, cfg).result()

    refs = [measure(base)]
    passes: dict[str, list[dict]] = {n: [] for n in names}
    f_ref = flops_per_token(base)
    for rep in range(args.repeat):
        for name in names:
            cfg = timing_config(args.data, args.steps, args.threads, TECHNIQUES[name](layers), args.set)
            r = measure(cfg)
            refs.append(measure(base))
            ref = statistics.mean(x["ms_min"] for x in refs[-2:])
            ms = r["ms_min"]
            f = flops_per_token(cfg)
            passes[name].append({"ms_per_step": ms, "ms_median": r["ms_median"], "ref_ms_per_step": ref,
                                 "time_ratio": ms / ref, "flop_ratio": f / f_ref,
                                 "mfu": f * cfg.train.batch_tokens / (ms / 1000.0) / peak})
            p = passes[name][-1]
            print(f"{name:<18} {ms:9.1f} ms/step (median {r['ms_median']:.1f})  ref {ref:9.1f}  "
                  f"time ×{p['time_ratio']:.3f}  FLOPs ×{p['flop_ratio']:.3f}  "
                  f"excess {p['time_ratio'] / p['flop_ratio'] - 1:+.1%}  MFU {p['mfu']:.2%}  (pass {rep + 1})", flush=True)
    rows = []
    for name in names:  # per technique the pass with the median time ratio (all passes are in the JSON)
        ps = sorted(passes[name], key=lambda p: p["time_ratio"])
        mid = ps[(len(ps) - 1) // 2]
        rows.append({"technique": name, **mid, "excess": mid["time_ratio"] / mid["flop_ratio"] - 1.0,
                     "ratios": [p["time_ratio"] for p in passes[name]]})
    ref_ms = [x["ms_min"] for x in refs]
    ref_mfu = f_ref * base.train.batch_tokens / (statistics.mean(ref_ms) / 1000.0) / peak
    print(f"\nmachine: {cpu_model()}, {args.threads} thread(s), {amp.dtype}; peak {peak / 1e9:.1f} GFLOP/s; "
          f"ref {statistics.mean(ref_ms):.1f} ms/step (min {min(ref_ms):.1f}, max {max(ref_ms):.1f} over "
          f"{len(ref_ms)} runs), MFU {ref_mfu:.2%}")
    print("\n| technique | ms/step | (median) | ref ms/step | time × | FLOPs × | excess | MFU | time × per pass |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['technique']} | {r['ms_per_step']:.1f} | {r['ms_median']:.1f} | {r['ref_ms_per_step']:.1f} | "
              f"{r['time_ratio']:.3f} | {r['flop_ratio']:.3f} | {r['excess']:+.1%} | {r['mfu']:.2%} | "
              f"{' '.join(f'{x:.3f}' for x in r['ratios'])} |")
    if args.json:
        fileio.write_json(args.json, {"rows": rows, "refs": refs, "peak": peak, "cpu": cpu_model(),
                                      "threads": args.threads, "steps": args.steps, "sets": args.set,
                                      "passes": passes})
    return 0


if __name__ == "__main__":
    sys.exit(main())
