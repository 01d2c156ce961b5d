"""Each technique on vs off against the `cpu` preset at a fixed budget, paired by seed (issue 8, Part B).

Every candidate is the `cpu` preset plus one switch, trained for ``--seconds`` of wallclock on the same
data, exported with the preset's scheme (int8 + zlib), reloaded and scored on the first ``--val-tokens``
validation tokens. Runs one after the other in this process (the machine is shared by nothing else).
Prints a table: per candidate the mean post-export val_bpb / val_bpb_raw over the seeds and the mean
paired difference against the reference (negative = the technique helps here).

    python bench/ablations.py --data /work/data/enwiki --seconds 60 --seeds 1337 42 --json /tmp/abl.json
    python bench/ablations.py --data DIR --only ref leaky_relu2 --seconds 600
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from pgolf.config import apply_overrides  # noqa: E402
from pgolf.precision import cpu_model  # noqa: E402
from pgolf.presets import get_preset  # noqa: E402
from pgolf.runner import run  # noqa: E402

# The cpu preset is 3 layers × 192 (4 heads of 48, 2 KV heads), vocab 1024, 8,192-token batches.
TECHNIQUES: dict[str, list[str]] = {
    "ref": [],
    "leaky_relu2": ["model.mlp_act=leaky_relu2"],
    "xsa_all": ["model.attn.xsa_layers=0,1,2"],
    "partial_rope16": ["model.attn.rope_dims=16"],
    "ln_scale": ["model.ln_scale=true"],
    "smear_v3_bosfix": ["model.embed.smear=v3", "model.embed.smear_bos_fix=true"],
    "bigram_512x48": ["model.embed.bigram_buckets=512", "model.embed.bigram_dim=48"],
    "value_embed_l2": ["model.attn.ve_layers=2", "model.attn.ve_dim=48"],
    "gated_skips": ["model.skips=gated"],
    "sparse_attn_gate": ["model.attn.gate=sparse", "model.attn.gate_scale=0.5"],
    "qk_gain5": ["model.qk_gain_init=5.0"],
    "ortho_init": ["model.init=orthogonal"],
    "recur_l1_x2": ["model.recur.loops=1", "model.recur.start=1", "model.recur.end=1", "model.recur.start_frac=0.35"],
    "parallel_l2": ["model.parallel_start=2"],
    "muon_wd": ["optim.muon_wd=0.04", "optim.adam_wd=0.04"],
    "muoneq_r": ["optim.muon_row_normalize=true"],
    "polar_express": ["optim.muon_ns=polar_express"],
    "min_lr_0.1": ["train.min_lr_mult=0.1"],
    "ema_h0.07": ["train.ema.horizon_frac=0.07"],
    "ema_0.997": ["train.ema.decay=0.997"],
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1337, 42])
    ap.add_argument("--val-tokens", type=int, default=262144)
    ap.add_argument("--only", nargs="*", help="technique names (default all; ref is always run)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    names = [n for n in TECHNIQUES if not args.only or n in args.only or n == "ref"]
    rows: dict[str, dict[int, dict]] = {}
    print(f"machine: {cpu_model()}; {args.seconds:.0f} s each; seeds {args.seeds}; val = first {args.val_tokens} tokens",
          flush=True)
    for seed in args.seeds:
        for name in names:
            cfg = apply_overrides(get_preset("cpu"), [
                f"data.path={args.data}", f"train.max_wallclock_seconds={args.seconds}", f"train.seed={seed}",
                f"data.val_max_tokens={args.val_tokens}", "train.val_every=0", "train.log_every=100000",
                *TECHNIQUES[name]])
            # A fresh compile cache per run: torch.compile keeps at most cache_size_limit graphs of
            # GPT.forward per process and then silently runs eager, which made the structural variants
            # of the first screen 25-35 % slower than their FLOPs explain (docs/benchmarks.md).
            torch._dynamo.reset()
            with tempfile.TemporaryDirectory() as d:
                m = run(cfg, d, progress=False)
            r = {k: m[k] for k in ("params", "model_bytes", "steps", "tokens_per_second", "pre_quant_val_bpb",
                                   "val_bpb", "val_bpb_raw")}
            rows.setdefault(name, {})[seed] = r
            print(json.dumps({"technique": name, "seed": seed, **r}), flush=True)
            if args.json:
                args.json.write_text(json.dumps(rows, indent=2))
    ref = rows["ref"]
    print("\n| technique | params | steps | tokens/s | val_bpb | Δ vs ref | val_bpb_raw | Δ raw |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in names:
        rs = rows[name]
        mean = lambda k, rs=rs: statistics.fmean(rs[s][k] for s in args.seeds)  # noqa: E731
        d = statistics.fmean(rs[s]["val_bpb"] - ref[s]["val_bpb"] for s in args.seeds)
        dr = statistics.fmean(rs[s]["val_bpb_raw"] - ref[s]["val_bpb_raw"] for s in args.seeds)
        print(f"| {name} | {rs[args.seeds[0]]['params']:,} | {mean('steps'):.0f} | {mean('tokens_per_second'):,.0f} | "
              f"{mean('val_bpb'):.4f} | {d:+.4f} | {mean('val_bpb_raw'):.4f} | {dr:+.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
