"""The ``cpu`` transformer against the byte-level and masked-diffusion CPU presets, one run after the other on
this machine (issue 26 "Show": ``cpu``, ``byte260-cpu``, ``mdlm-cpu``).

Each (preset, dataset) pair is a real ``pgolf run PRESET`` in its own process at one wall-clock budget —
trained, exported, reloaded and scored on the dataset's whole validation split — and the table puts the
scores that compare across tokenizers side by side: bits per *original* UTF-8 byte (``val_bpb_raw`` of the
exact scorer; for byte260 it equals val_bpb) or, for the masked diffusion LM, its variational upper bound
``val_var_bpb_raw`` with the estimator's standard error — a bound, not an exact score. The ``cpu`` preset's
own score is its mixer evaluation; its plain round trip (``plain_val_bpb_raw``) is shown too, since the other
two are scored without test-time adaptation.

    python bench/families_cpu.py --run cpu=/work/data/enwiki --run byte260-cpu=/work/data/enwiki_byte260 \\
        --run mdlm-cpu=/work/data/enwiki --seconds 120 --threads 2 --out /work/runs/families

A run whose directory already holds ``metrics.json`` is read, not re-run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path


def run_one(preset: str, data: str, seconds: float, threads: int, out: Path, extra: list[str]) -> dict:
    metrics = out / "metrics.json"
    if not metrics.exists():
        cmd = [sys.executable, "-m", "pgolf", "run", preset, "--out", str(out), "--set", f"data.path={data}",
               "--set", f"train.max_wallclock_seconds={seconds:g}", "--set", f"train.threads={threads}"]
        for s in extra:
            cmd += ["--set", s]
        env = {**os.environ, "PGOLF_REGISTRY": os.environ.get("PGOLF_REGISTRY", "off")}
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise SystemExit(f"{preset}: pgolf run failed:\n{r.stderr[-2000:]}")
    return json.loads(metrics.read_text())


def row(preset: str, m: dict) -> dict:
    """The comparable numbers of one run's metrics.json."""
    bound = "val_var_bpb" in m
    return {
        "preset": preset,
        "score": "val_var_bpb_raw (bound)" if bound else "val_bpb_raw",
        "bpb_raw": m.get("val_var_bpb_raw") if bound else m.get("val_bpb_raw"),
        "se": m.get("val_var_bpb_raw_se") if bound else 0.0,
        "plain_bpb_raw": None if bound else m.get("plain_val_bpb_raw", m.get("val_bpb_raw")),
        "steps": m["steps"], "tokens_per_second": m["tokens_per_second"], "params": m["params"],
        "artifact_bytes": m["artifact_bytes"], "model_bytes": m["model_bytes"], "train_seconds": m["train_seconds"],
        "eval_seconds": m["eval_seconds"], "val_tokens": m["val_tokens"], "val_bytes_raw": m.get("val_bytes_raw"),
    }


def table(rows: list[dict]) -> str:
    def f(v, nd=4):
        return "n/a" if v is None else f"{v:.{nd}f}"

    head = ("| preset | score over raw bytes | ± s.e. | plain round trip | steps | tokens/s | params | model bytes "
            "| train s | eval s | val tokens |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in rows:
        lines.append(f"| `{r['preset']}` | {f(r['bpb_raw'])} ({r['score']}) | {f(r['se'])} | {f(r['plain_bpb_raw'])} | "
                     f"{r['steps']:,} | {r['tokens_per_second']:,.0f} | {r['params']:,} | {r['model_bytes']:,} | "
                     f"{r['train_seconds']:.0f} | {r['eval_seconds']:.0f} | {r['val_tokens']:,} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", action="append", required=True, metavar="PRESET=DATA",
                    help="a preset and the data directory it trains on (repeatable)")
    ap.add_argument("--seconds", type=float, default=600.0, help="training budget of every run")
    ap.add_argument("--threads", type=int, default=0, help="train.threads (0 = torch's default)")
    ap.add_argument("--set", action="append", default=[], dest="sets", help="an extra --set for every run")
    ap.add_argument("--out", type=Path, required=True, help="directory of the run directories")
    ap.add_argument("--json", type=Path, help="write the rows here")
    a = ap.parse_args(argv)
    rows = []
    for item in a.run:
        preset, _, data = item.partition("=")
        m = run_one(preset, data, a.seconds, a.threads, a.out / f"{preset}-{a.seconds:g}s", a.sets)
        rows.append(row(preset, m))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(table(rows))
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
