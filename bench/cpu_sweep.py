"""Side-by-side short runs of candidate CPU recipes (how the `cpu` preset was chosen).

Each candidate is the `cpu-v1` preset (the fixed recipe before the technique winners) plus overrides, trained for the same wallclock budget in one
process, one after the other, then exported (int8 + zlib), reloaded and scored. Prints a table.

    python bench/cpu_sweep.py --data /work/data/enwiki --seconds 90 --val-tokens 262144
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pgolf.config import apply_overrides  # noqa: E402
from pgolf.presets import get_preset  # noqa: E402
from pgolf.runner import run  # noqa: E402

BASE = ["train.batch_tokens=16384"]
"""Rounds 1–3 ran against the preset of their day (batch 16,384); every candidate starts from it, so
the recorded tables stay reproducible now that the preset uses batch 8,192 (chosen in round 3)."""

CANDIDATES: dict[str, list[str]] = {
    # round 1 (shapes at ~1M params; the cpu preset was 6L d128 mlp3 then)
    "6L d128 mlp3": ["model.num_layers=6", "model.model_dim=128", "model.mlp_mult=3"],
    "8L d112 mlp2": ["model.num_layers=8", "model.model_dim=112", "model.mlp_mult=2"],
    "6L d128 mlp3 batch 8k": ["model.num_layers=6", "model.model_dim=128", "model.mlp_mult=3", "train.batch_tokens=8192"],
    # round 2 (around the winner, 3L d192 mlp2)
    "3L d192 mlp2 batch 16k": [],
    "3L d192 lr x1.5": ["optim.matrix_lr=0.06", "optim.tied_embed_lr=0.075", "optim.scalar_lr=0.06"],
    "3L d192 fp32": ["train.amp_dtype=fp32"],
    "3L d192 eager": ["train.compile=false", "train.warmup_steps=0"],
    # round 3 (idle machine): shape and batch around the preset, each ~1 M params
    "2L d240 mlp2": ["model.num_layers=2", "model.model_dim=240"],
    "4L d168 mlp2": ["model.num_layers=4", "model.model_dim=168"],
    "3L d192 batch 8k": ["train.batch_tokens=8192"],
    "3L d192 batch 32k": ["train.batch_tokens=32768"],
    "3L d192 seq 512": ["train.seq_len=512"],
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--seconds", type=float, default=90)
    ap.add_argument("--val-tokens", type=int, default=262144)
    ap.add_argument("--only", nargs="*", help="candidate names to run (default all)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    rows = []
    for name, sets in CANDIDATES.items():
        if args.only and name not in args.only:
            continue
        cfg = apply_overrides(get_preset("cpu-v1"), [f"data.path={args.data}", f"train.max_wallclock_seconds={args.seconds}", *BASE,
                                                  f"data.val_max_tokens={args.val_tokens}", "train.val_every=0",
                                                  "train.log_every=100000", *sets])
        with tempfile.TemporaryDirectory() as d:
            m = run(cfg, d, progress=False)
        rows.append({"candidate": name, **{k: m[k] for k in ("params", "model_bytes", "steps", "tokens_per_second",
                                                            "pre_quant_val_bpb", "val_bpb", "val_bpb_raw")}})
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{args.seconds:.0f} s of training each; val = first {args.val_tokens} tokens\n")
    print("| candidate | params | model bytes | steps | tokens/s | pre-quant bpb | val_bpb | val_bpb_raw |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['candidate']} | {r['params']:,} | {r['model_bytes']:,} | {r['steps']} | {r['tokens_per_second']:,.0f} | "
              f"{r['pre_quant_val_bpb']:.4f} | {r['val_bpb']:.4f} | {r['val_bpb_raw']:.4f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
