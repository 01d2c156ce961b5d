"""Evaluation methods side by side on one artifact and one or more datasets (issue 9's table).

Every case is one `pgolf eval` method with its settings, run one after the other in this process,
each on its own budgeted clock from opening the artifact (load, warm-up, precompute, scoring,
adaptation). Prints method, settings, val_bpb, val_bpb_raw, Δ vs plain, seconds, tokens/s and what the
budget logic did; `--json` keeps everything (seconds per phase included).

    python bench/eval_methods.py /work/runs/cpu-enwiki --data /work/data/enwiki --data /work/data/pydocs \\
        --threads 1 --json /tmp/eval_methods.json
    python bench/eval_methods.py RUN --val-tokens 60000 --cases plain,ttt-lora    # a cheap prefix, to tune
    python bench/eval_methods.py RUN --case "ttt-lr01=ttt:eval.ttt.lora_lr=0.01,eval.ttt.chunk=128"

The run directory is only read (results go to a temporary metrics file).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pgolf import fileio  # noqa: E402
from pgolf.config import apply_overrides, load_config  # noqa: E402
from pgolf.errors import PgolfError  # noqa: E402
from pgolf.runner import eval_run  # noqa: E402

CASES: dict[str, tuple[str, list[str]]] = {
    "plain": ("plain", []),
    "sliding-64": ("sliding", ["eval.sliding.stride=64"]),
    "sliding-128": ("sliding", ["eval.sliding.stride=128"]),
    "sliding-256": ("sliding", ["eval.sliding.stride=256"]),
    "ttt-lora": ("ttt", ["eval.ttt.mode=lora"]),
    "ttt-phased": ("ttt", ["eval.ttt.mode=phased"]),
    "ttt-sgd": ("ttt", ["eval.ttt.mode=sgd", "eval.sliding.stride=256"]),
    "mix": ("mix", []),
    "mix-tilt": ("mix", ["eval.mix.mode=tilt"]),
    "sliding-128+mix": ("sliding+mix", ["eval.sliding.stride=128"]),
    "ttt-lora+mix": ("ttt+mix", ["eval.ttt.mode=lora"]),
}
DEFAULT = "plain,sliding-64,sliding-128,sliding-256,ttt-lora,ttt-phased,ttt-sgd,mix,mix-tilt,sliding-128+mix,ttt-lora+mix"


def parse_case(spec: str) -> tuple[str, str, list[str]]:
    """``label=method:set1,set2`` (``--case``) → (label, method, sets)."""
    label, _, rest = spec.partition("=")
    method, _, sets = rest.partition(":")
    if not label or not method:
        raise SystemExit(f"--case expects label=method[:key=value,...], got {spec!r}")
    return label, method, [s for s in sets.split(",") if s]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--data", type=Path, action="append", help="dataset directory (repeatable; default: the run's)")
    ap.add_argument("--cases", default=DEFAULT, help=f"comma-separated names from: {', '.join(CASES)}")
    ap.add_argument("--case", action="append", default=[], help="extra case label=method:key=value,...")
    ap.add_argument("--set", action="append", default=[], help="override for every case")
    ap.add_argument("--val-tokens", type=int, default=0, help="score only the first N validation tokens (tuning)")
    ap.add_argument("--budget", type=float, default=None, help="eval.budget_seconds (default: the config's, 600)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    cases = [(n, *CASES[n]) for n in args.cases.split(",") if n]
    cases += [parse_case(c) for c in args.case]
    sets = list(args.set)
    if args.val_tokens:
        sets.append(f"data.val_max_tokens={args.val_tokens}")
    if args.budget is not None:
        sets.append(f"eval.budget_seconds={args.budget}")
    if args.threads:
        sets.append(f"train.threads={args.threads}")
    base = load_config(str(args.run_dir / "config.json"))
    datasets = args.data or [None]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for data in datasets:
            plain_bpb = None
            for label, method, extra in cases:
                cfg = apply_overrides(base, sets + extra)
                try:
                    out = eval_run(args.run_dir, cfg, methods=[method], data_dir=data,
                                   metrics_path=Path(tmp) / "metrics.json")
                except PgolfError as e:
                    print(f"{label}: error: {e}", flush=True)
                    rows.append({"case": label, "method": method, "data": str(data), "error": str(e)})
                    continue
                e = out["methods"][0]
                if label == "plain":
                    plain_bpb = e["val_bpb"]
                row = {"case": label, "method": method, "data": e["data"], "sets": extra, **e}
                rows.append(row)
                delta = "" if plain_bpb is None else f"{e['val_bpb'] - plain_bpb:+.4f}"
                acts = "; ".join(a.split(": ", 1)[-1] for a in e["actions"]) or "-"
                print(f"{Path(e['data']).name:<10} {label:<18} {e['val_bpb']:.4f} {e['val_bpb_raw'] or float('nan'):.4f} "
                      f"{delta:>8} {e['eval_seconds']:7.1f} s {e['tokens_per_second']:8,.0f} tok/s  "
                      f"{'' if e['within_budget'] else 'OVER BUDGET '}{acts}", flush=True)
    if args.json:
        fileio.write_text(args.json, json.dumps(rows, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
