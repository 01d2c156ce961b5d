"""Each technique on vs off against a CPU preset at a fixed budget, paired by seed (issue 8, Part B).

The reference is ``--base`` (default ``cpu``; ``cpu-v1`` is the recipe before the winners of the first
ablations were adopted, which docs/benchmarks.md measured against). A switch the base already has is
no change and is skipped with a note. The shape is chosen once: ``train.autosize`` sizes the base for a
``--shape-seconds`` budget on this machine at ``--shape-threads`` threads, exactly as ``pgolf run cpu``
would, and every candidate then trains that pinned shape — a switch never changes depth, width or
batch. Each candidate is the pinned reference plus one switch, exported with the preset's scheme
(int8 + zlib), reloaded and scored on the first ``--val-tokens`` validation tokens.

Two budgets:

* ``--steps N`` (quality at equal steps): the wallclock cap is off and every schedule runs over N
  steps. Results do not depend on how fast the machine happened to be, so ``--jobs 2`` runs two
  candidates at once (one thread each) and other work on the machine cannot bias them. ``--steps auto``
  takes N from the autosize prediction for the reference in ``--shape-seconds``. The step-time cost of
  each switch is measured separately (``bench/technique_throughput.py``); a switch that costs no more
  than its FLOPs gets the same steps in a wallclock budget.
* ``--seconds S`` (the challenge's stop rule): wallclock-capped runs; run them one at a time on an idle
  machine (``--jobs 1``), since throughput noise becomes bpb here (docs/benchmarks.md, the 50 s screen).

Every run is its own process (a fresh torch.compile cache; torch keeps only so many graphs of one
function per process). Finished runs are kept in ``--json`` and skipped when the script is started
again with the same arguments. Prints a table: per candidate the post-export val_bpb / val_bpb_raw per
seed, the paired difference to the reference per seed and its mean (negative = the technique helps).

    python bench/ablations.py --data /work/data/enwiki --steps auto --shape-seconds 200 --jobs 2 \
        --seeds 1337 42 --json /work/notes/abl.json
    python bench/ablations.py --base cpu-v1 --data /work/data/enwiki --steps 539 --shape-seconds 150 --jobs 2
    python bench/ablations.py --data DIR --only leaky_relu2 --seconds 600 --jobs 1
    python bench/ablations.py --base cpu-v1 --shape 2x160:16384 --steps 539 --data DIR --seeds 42 --jobs 2
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pgolf.config import apply_overrides, flatten  # noqa: E402
from pgolf.precision import cpu_model  # noqa: E402
from pgolf.presets import get_preset  # noqa: E402


def _layers(n: int) -> str:
    return ",".join(str(i) for i in range(n))


BEST3 = ("model.mlp_act=leaky_relu2", "model.parallel_start=-1", "train.ema.horizon_frac=0.07")
"""The three that helped at equal steps on both seeds (docs/benchmarks.md), now the ``cpu`` preset's."""

# Each technique as its overrides, given the pinned depth L (layer lists follow the shape autosize chose).
TECHNIQUES = {
    "ref": lambda L: [],
    "leaky_relu2": lambda L: ["model.mlp_act=leaky_relu2"],
    "xsa_all": lambda L: [f"model.attn.xsa_layers={_layers(L)}"],
    "partial_rope16": lambda L: ["model.attn.rope_dims=16"],
    "ln_scale": lambda L: ["model.ln_scale=true"],
    "smear_v3_bosfix": lambda L: ["model.embed.smear=v3", "model.embed.smear_bos_fix=true"],
    "bigram_512x48": lambda L: ["model.embed.bigram_buckets=512", "model.embed.bigram_dim=48"],
    "value_embed_last": lambda L: [f"model.attn.ve_layers={L - 1}", "model.attn.ve_dim=48"],
    "gated_skips": lambda L: ["model.skips=gated"],
    "sparse_attn_gate": lambda L: ["model.attn.gate=sparse", "model.attn.gate_scale=0.5"],
    "qk_gain5": lambda L: ["model.qk_gain_init=5.0"],
    "ortho_init": lambda L: ["model.init=orthogonal"],
    "recur_mid_x2": lambda L: ["model.recur.loops=1", f"model.recur.start={L // 2}", f"model.recur.end={L // 2}",
                               "model.recur.start_frac=0.35"],
    "parallel_last": lambda L: ["model.parallel_start=-1"],
    "muon_wd": lambda L: ["optim.muon_wd=0.04", "optim.adam_wd=0.04"],
    "muoneq_r": lambda L: ["optim.muon_row_normalize=true"],
    "polar_express": lambda L: ["optim.muon_ns=polar_express"],
    "min_lr_0.1": lambda L: ["train.min_lr_mult=0.1"],
    "ema_h0.07": lambda L: ["train.ema.horizon_frac=0.07"],
    "ema_0.997": lambda L: ["train.ema.horizon_frac=0", "train.ema.decay=0.997"],
    # the three that helped at equal steps on both seeds (docs/benchmarks.md), together: do they add up?
    "stack_best3": lambda L: list(BEST3),
    # + the next three by their two-seed mean (BigramHash, gated skips, MuonEq-R), each inconsistent across seeds
    "stack_best6": lambda L: [*BEST3, "model.embed.bigram_buckets=512", "model.embed.bigram_dim=48",
                              "model.skips=gated", "optim.muon_row_normalize=true"],
}
KEYS = ("params", "model_bytes", "steps", "tokens_per_second", "pre_quant_val_bpb", "val_bpb", "val_bpb_raw")


def pinned_shape(base: str, data: str, seconds: float, threads: int) -> tuple[list[str], int, int, str]:
    """The overrides that pin the shape autosize picks for preset ``base`` here, its depth, the steps it
    predicts for ``seconds``, and its description (probes once; the choice is cached per machine and config)."""
    from pgolf import autosize

    lines: list[str] = []
    cfg = apply_overrides(get_preset(base), [f"data.path={data}", f"train.max_wallclock_seconds={seconds}",
                                             f"train.threads={threads}", "train.autosize=true"])
    if threads:
        import torch

        torch.set_num_threads(threads)
    out = autosize.resolve(cfg, log=lines.append)
    m, t = out.model, out.train
    pins = [f"model.num_layers={m.num_layers}", f"model.model_dim={m.model_dim}", f"model.num_heads={m.num_heads}",
            f"model.num_kv_heads={m.num_kv_heads}", f"train.batch_tokens={t.batch_tokens}", "train.autosize=false"]
    chose = next((ln for ln in lines if "chose" in ln or "reused" in ln), "")
    return pins, m.num_layers, _predicted_steps(chose), chose


def given_shape(spec: str) -> tuple[list[str], int, str]:
    """``--shape LxD:B`` (e.g. ``2x160:16384``): the pins of that shape (autosize's heads for width D) and
    its depth — to re-run a table at the shape it was measured on, whatever autosize picks here today."""
    import re

    from pgolf.autosize import heads_for

    m = re.fullmatch(r"(\d+)x(\d+):(\d+)", spec)
    if not m:
        raise ValueError(f"--shape {spec!r}: expected LAYERSxWIDTH:BATCH, e.g. 2x160:16384")
    layers, dim, batch = (int(g) for g in m.groups())
    h, kv = heads_for(dim)
    pins = [f"model.num_layers={layers}", f"model.model_dim={dim}", f"model.num_heads={h}",
            f"model.num_kv_heads={kv}", f"train.batch_tokens={batch}", "train.autosize=false"]
    return pins, layers, f"pinned by --shape: {layers}L×{dim} ({h} heads, {kv} kv), batch {batch:,}"


def _predicted_steps(line: str) -> int:
    import re

    m = re.search(r"→ ([\d,]+) steps", line)
    return int(m.group(1).replace(",", "")) if m else 0


def is_change(base: str, overrides: list[str], pins: list[str] = ()) -> bool:
    """Whether ``overrides`` change preset ``base`` pinned by ``pins`` at all (a switch the base already
    has does not). The pins come first: a layer list is only valid at the depth it was written for."""
    pinned = apply_overrides(get_preset(base), list(pins))
    ref = flatten(pinned)
    return any(v != ref[k] for k, v in flatten(apply_overrides(pinned, overrides)).items())


def one_run(base: str, overrides: list[str]) -> dict:
    """Train, export, reload and score one candidate (in a worker process); returns its metrics."""
    from pgolf.runner import run

    cfg = apply_overrides(get_preset(base), overrides)
    with tempfile.TemporaryDirectory() as d:
        m = run(cfg, d, progress=False)
    return {k: m[k] for k in KEYS}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--base", default="cpu", help="the preset every switch is compared against")
    budget = ap.add_mutually_exclusive_group(required=True)
    budget.add_argument("--steps", help="equal-step budget: N, or 'auto' (autosize's prediction for the ref)")
    budget.add_argument("--seconds", type=float, help="wallclock budget per run (run on an idle machine)")
    ap.add_argument("--shape", help="LAYERSxWIDTH:BATCH, e.g. 2x160:16384: this shape instead of autosize's")
    ap.add_argument("--shape-seconds", type=float, default=600, help="budget the shape is autosized for")
    ap.add_argument("--shape-threads", type=int, default=2, help="threads the shape is autosized for")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--jobs", type=int, default=1, help="runs at once (each its own process)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1337, 42])
    ap.add_argument("--val-tokens", type=int, default=262144)
    ap.add_argument("--only", nargs="*", help="technique names (default all; ref is always run)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    unknown = [n for n in args.only or [] if n not in TECHNIQUES]
    if unknown:
        ap.error(f"unknown technique(s) {unknown}; known: {', '.join(TECHNIQUES)}")
    names = [n for n in TECHNIQUES if not args.only or n in args.only or n == "ref"]

    if args.shape:
        try:
            pins, layers, chose = given_shape(args.shape)
        except ValueError as e:
            ap.error(str(e))
        predicted = 0
    else:
        pins, layers, predicted, chose = pinned_shape(args.base, args.data, args.shape_seconds, args.shape_threads)
    have = [n for n in names if n != "ref" and not is_change(args.base, TECHNIQUES[n](layers), pins)]
    if have:
        print(f"skipped, already in {args.base}: {', '.join(have)}")
        names = [n for n in names if n not in have]
    if args.steps is not None:
        steps = predicted if args.steps == "auto" else int(args.steps)
        if steps <= 0:
            ap.error("--steps auto needs autosize's predicted step count (not with --shape; give N)")
        budget_args = ["train.max_wallclock_seconds=0", f"train.iterations={steps}"]
        what = f"{steps} steps each (wallclock cap off)"
    else:
        budget_args = [f"train.max_wallclock_seconds={args.seconds}"]
        what = f"{args.seconds:g} s each"
    print(f"machine: {cpu_model()}; base: {args.base}; shape: {chose}")
    print(f"{what}; {args.threads} thread(s) per run, {args.jobs} at once; seeds {args.seeds}; "
          f"val = first {args.val_tokens} tokens", flush=True)

    done: dict = json.loads(args.json.read_text()) if args.json and args.json.exists() else {}
    todo = []
    for seed in args.seeds:
        for name in names:
            ov = [f"data.path={args.data}", f"train.seed={seed}", f"train.threads={args.threads}",
                  f"data.val_max_tokens={args.val_tokens}", "train.val_every=0", "train.log_every=100000",
                  *pins, *budget_args, *TECHNIQUES[name](layers)]
            prev = done.get(name, {}).get(str(seed))
            if prev and prev.get("overrides") == ov and prev.get("base") == args.base:
                continue
            todo.append((name, seed, ov))
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx, max_tasks_per_child=1) as pool:
        futs = {pool.submit(one_run, args.base, ov): (name, seed, ov) for name, seed, ov in todo}
        for fut in cf.as_completed(futs):
            name, seed, ov = futs[fut]
            r = fut.result()
            done.setdefault(name, {})[str(seed)] = {**r, "base": args.base, "overrides": ov}
            print(json.dumps({"technique": name, "seed": seed, **r}), flush=True)
            if args.json:
                tmp = args.json.with_suffix(".tmp")
                tmp.write_text(json.dumps(done, indent=2))
                tmp.replace(args.json)
    print_table(done, names, [str(s) for s in args.seeds])
    return 0


def print_table(rows: dict, names: list[str], seeds: list[str]) -> None:
    ref = rows["ref"]
    print("\n| technique | params | steps | val_bpb (mean) | Δ per seed | Δ mean | Δ raw mean | Δ pre-quant mean |")
    print("|---|---:|---:|---:|---|---:|---:|---:|")
    for name in names:
        rs = rows[name]
        d = [rs[s]["val_bpb"] - ref[s]["val_bpb"] for s in seeds]
        dr = [rs[s]["val_bpb_raw"] - ref[s]["val_bpb_raw"] for s in seeds]
        dp = [rs[s]["pre_quant_val_bpb"] - ref[s]["pre_quant_val_bpb"] for s in seeds]
        mean = statistics.fmean(rs[s]["val_bpb"] for s in seeds)
        steps = statistics.fmean(rs[s]["steps"] for s in seeds)
        print(f"| {name} | {rs[seeds[0]]['params']:,} | {steps:.0f} | {mean:.4f} | "
              f"{' '.join(f'{x:+.4f}' for x in d)} | {statistics.fmean(d):+.4f} | {statistics.fmean(dr):+.4f} | "
              f"{statistics.fmean(dp):+.4f} |")


if __name__ == "__main__":
    sys.exit(main())
