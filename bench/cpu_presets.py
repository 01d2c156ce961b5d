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
autosize probe sees the budget and sizes for it, and the evaluation's clock (``eval.budget_seconds``,
600 s by the rules like training's) is scaled the same way, so a method that adapts at test time
degrades as it would on the slow machine. Runs whose directory already holds ``metrics.json`` are read,
not re-run, so an interrupted sweep resumes.

``--rescore M [M ...]`` scores every run's artifact again with each evaluation method (``pgolf eval
RUN --method M`` in its own process, on the scaled clock, cached in ``RUN/rescore-<budget>s.json``), so
presets trained one after the other are also compared under one evaluation: the plain round trip
says what training bought, the configured method what the preset scores.

    python bench/cpu_presets.py --presets cpu cpu-v1 baseline-cpu --data /work/data/enwiki \
        --seconds 60 600 --out /work/runs/p7 --rescore mix ttt+mix --json /work/notes/rescore.json
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

RULES_SECONDS = 600.0
"""Training and evaluation each get 600 s (RULES.md); a shorter training budget mimics a slower machine,
and the evaluation clock is scaled by the same factor."""


def eval_budget(seconds: float) -> float:
    """The evaluation clock of a run trained ``seconds``: the same fraction of the rules' 600 s."""
    return min(seconds, RULES_SECONDS)


def run_one(preset: str, data: Path, seconds: float, seed: int, threads: int, out: Path, extra: list[str],
            rescore: list[str] = ()) -> dict:
    metrics = out / "metrics.json"
    if not metrics.exists():
        cmd = [sys.executable, "-m", "pgolf", "run", preset, "--out", str(out),
               "--set", f"data.path={data}", "--set", f"train.max_wallclock_seconds={seconds:g}",
               "--set", f"eval.budget_seconds={eval_budget(seconds):g}",
               "--set", f"train.seed={seed}", "--set", f"train.threads={threads}"]
        for s in extra:
            cmd += ["--set", s]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ})
    m = json.loads(metrics.read_text())
    cfg = json.loads((out / "config.json").read_text())
    model, train = cfg["model"], cfg["train"]
    row = {
        "preset": preset, "data": data.name, "seconds": seconds, "seed": seed,
        "shape": f"{model['num_layers']}L×{model['model_dim']} b{train['batch_tokens'] // 1024}k",
        "params": m["params"], "steps": m["steps"], "train_tokens": m["train_tokens"],
        "tokens_per_second": m["tokens_per_second"], "val_bpb": m["val_bpb"], "val_bpb_raw": m["val_bpb_raw"],
        # the run's own score is its configured method's; the plain round trip is what training bought
        "method": m.get("eval_method", "plain"), "eval_seconds": m["eval_seconds"],
        "plain_val_bpb": m.get("plain_val_bpb", m["val_bpb"]), "plain_val_bpb_raw": m.get("plain_val_bpb_raw", m["val_bpb_raw"]),
        "model_bytes": m["model_bytes"], "artifact_bytes": m["artifact_bytes"], "amp": _amp(out),
    }
    for method in rescore:
        row[f"rescore:{method}"] = rescore_one(out, method, eval_budget(seconds), threads)
    return row


def rescore_one(run: Path, method: str, budget: float, threads: int) -> dict:
    """``pgolf eval RUN --method METHOD`` on a ``budget``-second clock, cached per budget in the run dir.
    A method the clock refuses before scoring (``pgolf eval`` exits with one line) is recorded as
    ``refused`` with that line; the table then shows what ``pgolf run`` falls back to."""
    cache = run / f"rescore-{budget:g}s.json"
    evals = json.loads(cache.read_text()).get("evals", {}) if cache.exists() else {}
    if method not in evals:
        cmd = [sys.executable, "-m", "pgolf", "eval", str(run), "--method", method, "--budget", f"{budget:g}",
               "--metrics", str(cache), "--set", f"train.threads={threads}"]
        print("$", " ".join(cmd), flush=True)
        p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ})
        merged = json.loads(cache.read_text()) if cache.exists() else {}
        if p.returncode != 0:
            if "eval budget of" not in p.stderr:
                raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr}")
            merged.setdefault("evals", {})[method] = {"refused": p.stderr.strip().splitlines()[-1]}
            fileio.write_json(cache, merged)
        evals = merged["evals"]
    e = evals[method]
    if "refused" in e:
        return {"refused": e["refused"]}
    return {k: e[k] for k in ("val_bpb", "val_bpb_raw", "eval_seconds", "actions", "within_budget")}


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
    ap.add_argument("--rescore", nargs="*", default=[], help="also score every artifact with these eval methods")
    ap.add_argument("--metric", choices=("val_bpb_raw", "val_bpb"), default="val_bpb_raw",
                    help="bpb over the original UTF-8 bytes (default) or the challenge's byte table")
    ap.add_argument("--out", type=Path, required=True, help="parent of the run directories")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    rows = []
    for seconds in args.seconds:
        for data in args.data:
            for seed in args.seeds:
                for preset in args.presets:
                    out = args.out / f"{preset}-{data.name}-{seconds:g}s-s{seed}"
                    rows.append(run_one(preset, data, seconds, seed, args.threads, out, args.set, args.rescore))
                    r = rows[-1]
                    rescored = "  ".join(f"{m} {_cell(r, m, args.metric)}" for m in args.rescore)
                    print(f"{r['preset']:<13} {r['data']:<8} {r['seconds']:>5g}s seed {r['seed']:<5} {r['shape']:<14} "
                          f"{r['params']:>9,} params {r['steps']:>5} steps {r['train_tokens']:>10,} tok "
                          f"{r['tokens_per_second']:>7,.0f} tok/s  {r['method']} {r[args.metric]:.4f} "
                          f"plain {r['plain_' + args.metric]:.4f}  {rescored}  model {r['model_bytes']:,} B  {r['amp']}",
                          flush=True)
                    if args.json:
                        fileio.write_text(args.json, json.dumps(rows, indent=1))
    print(table(rows, args.presets, args.seconds, [d.name for d in args.data], args.rescore, args.metric))
    return 0


def table(rows: list[dict], presets: list[str], budgets: list[float], datasets: list[str], rescore: list[str],
          metric: str) -> str:
    """Markdown: per (dataset, budget) and preset, the seed means of the score as configured (its method
    named), the plain round trip and each rescoring method, each with its difference to the first preset."""
    cols = ["as configured", "plain", *rescore]

    def value(r: dict, col: str) -> float:
        if col == "as configured":
            return r[metric]
        if col == "plain":
            return r["plain_" + metric]
        if "refused" in r[f"rescore:{col}"]:  # what pgolf run falls back to: the mixer alone, else plain
            return value(r, "mix") if col.endswith("+mix") and "mix" in rescore else r["plain_" + metric]
        return r[f"rescore:{col}"][metric]

    def mark(rs: list[dict], col: str) -> str:
        return "†" if col not in ("plain", "as configured") and any("refused" in r[f"rescore:{col}"] for r in rs) else ""

    head = " | ".join(f"{c} | Δ" for c in cols)
    lines = [f"| data | budget | preset | shape | params | steps | method | {head} |",
             "|---|---:|---|---|---:|---:|---|" + "---:|---:|" * len(cols)]
    for seconds in budgets:
        for data in datasets:
            group = [r for r in rows if r["seconds"] == seconds and r["data"] == data]
            ref = {c: statistics.mean(value(r, c) for r in group if r["preset"] == presets[0]) for c in cols}
            for preset in presets:
                rs = [r for r in group if r["preset"] == preset]
                means = {c: statistics.mean(value(r, c) for r in rs) for c in cols}
                cells = " | ".join(f"{means[c]:.4f}{mark(rs, c)} | {means[c] - ref[c]:+.4f}" for c in cols)
                lines.append(f"| {data} | {seconds:g} s | {preset} | {rs[0]['shape']} | {rs[0]['params']:,} | "
                             f"{statistics.mean(r['steps'] for r in rs):,.0f} | {rs[0]['method']} | {cells} |")
    if any("refused" in r.get(f"rescore:{c}", {}) for r in rows for c in rescore):
        lines.append("\n† refused by the evaluation clock before scoring: what `pgolf run` falls back to (the mixer "
                     "alone for a mixed method when it is a column, else the plain round trip).")
    return "\n".join(lines)


def _cell(r: dict, method: str, metric: str) -> str:
    e = r[f"rescore:{method}"]
    return "refused" if "refused" in e else f"{e[metric]:.4f}"


if __name__ == "__main__":
    sys.exit(main())
