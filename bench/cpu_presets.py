"""The CPU recipes side by side, one run after the other on this machine (issue 8).

Each (preset, dataset, budget, seed) is a real ``pgolf run PRESET`` in its own process — exactly what a
user types, plus ``data.path``, the budget, the seed and the thread count — trained, exported, reloaded
from disk and scored on the dataset's whole validation split. Prints one row per run and, per
(dataset, budget), each preset's mean and its difference to the first preset named.

    python bench/cpu_presets.py --presets cpu cpu-fixed baseline-cpu \\
        --data /work/data/enwiki /work/data/pysrc --seconds 600 60 --threads 1 \\
        --out /work/runs/presets --json /work/notes/cpu_presets.json

(Until 2026-12-02 the autosized recipe was the preset ``cpu-auto`` and ``cpu`` the fixed shape, now
``cpu-fixed``: the measurements in docs/benchmarks.md name them as they were then.) Budgets below 600 s mimic a slower machine of the same kind (60 s ≈ a machine 10× slower): the
autosize probe sees the budget and sizes for it. Runs whose directory already holds ``metrics.json``
are read, not re-run, so an interrupted sweep resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pgolf import fileio  # noqa: E402


def run_one(preset: str, data: Path, seconds: float, seed: int, threads: int, out: Path, extra: list[str]) -> dict:
    metrics = out / "metrics.json"
    if not metrics.exists():
        cmd = [sys.executable, "-m", "pgolf", "run", preset, "--out", str(out),
               "--set", f"data.path={data}", "--set", f"train.max_wallclock_seconds={seconds:g}",
               "--set", f"train.seed={seed}", "--set", f"train.threads={threads}"]
        for s in extra:
            cmd += ["--set", s]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ})
    m = json.loads(metrics.read_text())
    cfg = json.loads((out / "config.json").read_text())
    model, train = cfg["model"], cfg["train"]
    return {
        "preset": preset, "data": data.name, "seconds": seconds, "seed": seed,
        "shape": f"{model['num_layers']}L×{model['model_dim']} b{train['batch_tokens'] // 1024}k",
        "params": m["params"], "steps": m["steps"], "train_tokens": m["train_tokens"],
        "tokens_per_second": m["tokens_per_second"], "val_bpb": m["val_bpb"], "val_bpb_raw": m["val_bpb_raw"],
        "model_bytes": m["model_bytes"], "artifact_bytes": m["artifact_bytes"], "amp": _amp(out),
    }


def _amp(out: Path) -> str:
    for line in (out / "train.log").read_text().splitlines():
        if line.startswith("precision:"):
            return line.split()[1]
    return "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["cpu", "cpu-fixed", "baseline-cpu"])
    ap.add_argument("--data", nargs="+", type=Path, required=True)
    ap.add_argument("--seconds", nargs="+", type=float, default=[600.0])
    ap.add_argument("--seeds", nargs="+", type=int, default=[1337])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--set", action="append", default=[], help="extra override for every run")
    ap.add_argument("--out", type=Path, required=True, help="parent of the run directories")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    rows = []
    for seconds in args.seconds:
        for data in args.data:
            for seed in args.seeds:
                for preset in args.presets:
                    out = args.out / f"{preset}-{data.name}-{seconds:g}s-s{seed}"
                    rows.append(run_one(preset, data, seconds, seed, args.threads, out, args.set))
                    r = rows[-1]
                    print(f"{r['preset']:<13} {r['data']:<8} {r['seconds']:>5g}s seed {r['seed']:<5} {r['shape']:<14} "
                          f"{r['params']:>9,} params {r['steps']:>5} steps {r['train_tokens']:>10,} tok "
                          f"{r['tokens_per_second']:>7,.0f} tok/s  val_bpb {r['val_bpb']:.4f} raw {r['val_bpb_raw']:.4f}  "
                          f"model {r['model_bytes']:,} B  {r['amp']}", flush=True)
                    if args.json:
                        fileio.write_text(args.json, json.dumps(rows, indent=1))
    print("\n| data | budget | preset | shape | params | steps | tokens | val_bpb | Δ vs " + args.presets[0] + " |")
    print("|---|---:|---|---|---:|---:|---:|---:|---:|")
    for seconds in args.seconds:
        for data in args.data:
            group = [r for r in rows if r["seconds"] == seconds and r["data"] == data.name]
            ref = statistics.mean(r["val_bpb"] for r in group if r["preset"] == args.presets[0])
            for preset in args.presets:
                rs = [r for r in group if r["preset"] == preset]
                mean = statistics.mean(r["val_bpb"] for r in rs)
                print(f"| {data.name} | {seconds:g} s | {preset} | {rs[0]['shape']} | {rs[0]['params']:,} | "
                      f"{statistics.mean(r['steps'] for r in rs):,.0f} | {statistics.mean(r['train_tokens'] for r in rs):,.0f} | "
                      f"{mean:.4f} | {mean - ref:+.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
