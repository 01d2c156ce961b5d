"""pgolf's evaluation methods and the general-purpose compressors on the same text, side by side.

For each corpus (a pgolf dataset directory and the JSON-lines file its validation split was built
from, with the number of validation documents): the compressors compress the validation documents'
UTF-8 joined by "\\n" (bench/compressors.py's stream) — zpaq -m5 (Debian's ``zpaq``, context mixing),
PPMd (7-Zip; the best of a few orders at 256 MiB), xz -9e (raw LZMA2) and brotli q11/w24 — and the run's
artifact is scored with each case (``pgolf eval`` on its own 600 s clock, one after the other in this
process). Every figure is bits per original UTF-8 byte: ``val_bpb_raw`` for pgolf, 8·bytes/raw_bytes
for a compressor (its output file, headers included; zpaq's archive carries ≈ 100 bytes of its own).
pgolf scores the plain cut (the last < 256 tokens of the stream are not scored, < 0.03 % of the bytes).

    python bench/cm_vs_compressors.py RUN \\
        --corpus enwiki=/work/data/enwiki:../shared/data/enwiki/val.jsonl:147 \\
        --corpus kjv=/work/data/kjv:/work/data/kjv.jsonl:400 --cases plain,mix,cm,ttt+cm --json out.json
    python bench/cm_vs_compressors.py RUN --corpus ... --cases cm --ablation   # each component off in turn

Cases: ``plain``, ``mix`` (the n-gram mixer), ``cm`` (``eval.mix.mode=cm``), ``ttt+cm`` (LoRA TTT, then cm),
``ttt+mix``; ``--case label=method:key=value,...`` adds any other. ``--ablation`` adds ``cm`` with each of
its components switched off (``eval.mix.cm_components``).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compressors import (  # noqa: E402
    _XZ_RAW_FILTERS,
    build_stream,
    find_7z,
    load_texts,
    ppmd_sweep,
    run_codec,
)

from pgolf import fileio  # noqa: E402
from pgolf.config import apply_overrides, load_config  # noqa: E402
from pgolf.errors import PgolfError  # noqa: E402
from pgolf.runner import eval_run  # noqa: E402

CASES: dict[str, tuple[str, list[str]]] = {
    "plain": ("plain", []),
    "mix": ("mix", ["eval.mix.mode=linear"]),
    "cm": ("mix", ["eval.mix.mode=cm"]),
    "ttt+mix": ("ttt+mix", ["eval.mix.mode=linear", "eval.ttt.mode=lora"]),
    "ttt+cm": ("ttt+mix", ["eval.mix.mode=cm", "eval.ttt.mode=lora"]),
}
COMPONENTS = ("orders", "words", "sparse", "doc", "lmtop", "match", "apm", "mixer2", "tree")


def zpaq(data: bytes, raw: int, method: str = "5") -> dict:
    """``zpaq a ARCHIVE FILE -mN`` then ``zpaq x``; the archive's size is the compressed size."""
    exe = shutil.which("zpaq")
    if exe is None:
        raise PgolfError("no `zpaq` command: apt-get install zpaq")
    with tempfile.TemporaryDirectory(prefix="pgolf_zpaq_") as tmp:
        src = Path(tmp) / "val.txt"
        src.write_bytes(data)
        arc = Path(tmp) / "val.zpaq"
        t0 = time.perf_counter()
        subprocess.run([exe, "a", str(arc), "val.txt", f"-m{method}"], cwd=tmp, check=True, capture_output=True)
        t1 = time.perf_counter()
        out = Path(tmp) / "out"
        out.mkdir()
        subprocess.run([exe, "x", str(arc), "-to", str(out)], cwd=tmp, check=True, capture_output=True)
        back = (out / "val.txt").read_bytes() if (out / "val.txt").exists() else next(out.rglob("val.txt")).read_bytes()
        t2 = time.perf_counter()
        if back != data:
            raise RuntimeError("zpaq: round trip does not reproduce the input")
        size = arc.stat().st_size
    return {"name": f"zpaq -m{method}", "bytes": size, "bpb": 8 * size / raw, "seconds": t1 - t0,
            "decompress_seconds": t2 - t1}


def compressors(texts: list[str]) -> list[dict]:
    import lzma

    import brotli

    data, raw = build_stream(texts)
    rows = [zpaq(data, raw, "5")]
    exe = find_7z()
    if exe:
        _, res = ppmd_sweep(exe, data, raw, (8, 16, 32), (256,))
        r = res[0]
        rows.append({"name": "PPMd (7z, best of o8/16/32)", "bytes": r.compressed_bytes, "bpb": r.bpb,
                     "seconds": r.compress_seconds, "note": r.note})
    for name, cmd, comp, dec in (
        ("xz -9e (raw LZMA2)", "xz --format=raw --lzma2=preset=9e",
         lambda d: lzma.compress(d, format=lzma.FORMAT_RAW, filters=_XZ_RAW_FILTERS),
         lambda c: lzma.decompress(c, format=lzma.FORMAT_RAW, filters=_XZ_RAW_FILTERS)),
        ("brotli -q 11 -w 24", "brotli", lambda d: brotli.compress(d, quality=11, lgwin=24), brotli.decompress),
    ):
        r = run_codec(data, raw, name, cmd, comp, dec)
        rows.append({"name": name, "bytes": r.compressed_bytes, "bpb": r.bpb, "seconds": r.compress_seconds})
    for r in rows:
        r["raw_bytes"] = raw
    return rows


def parse_corpus(spec: str) -> tuple[str, Path, Path, int]:
    """``name=DATA_DIR:TEXT.jsonl:VAL_DOCS``."""
    name, _, rest = spec.partition("=")
    parts = rest.split(":")
    if not name or len(parts) != 3:
        raise SystemExit(f"--corpus expects name=DATA_DIR:TEXT.jsonl:VAL_DOCS, got {spec!r}")
    return name, Path(parts[0]), Path(parts[1]), int(parts[2])


def parse_case(spec: str) -> tuple[str, str, list[str]]:
    label, _, rest = spec.partition("=")
    method, _, sets = rest.partition(":")
    if not label or not method:
        raise SystemExit(f"--case expects label=method[:key=value,...], got {spec!r}")
    return label, method, [s for s in sets.split(",") if s]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--corpus", action="append", required=True, help="name=DATA_DIR:TEXT.jsonl:VAL_DOCS (repeatable)")
    ap.add_argument("--cases", default="plain,mix,cm", help=f"comma list of {', '.join(CASES)}")
    ap.add_argument("--case", action="append", default=[], help="extra case label=method:key=value,...")
    ap.add_argument("--ablation", action="store_true", help="add cm with each component off in turn")
    ap.add_argument("--set", action="append", default=[], help="override for every case")
    ap.add_argument("--no-compressors", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    cases = [(n, *CASES[n]) for n in args.cases.split(",") if n]
    cases += [parse_case(c) for c in args.case]
    if args.ablation:
        for c in COMPONENTS:
            keep = ",".join(x for x in COMPONENTS if x != c)
            cases.append((f"cm -{c}", "mix", ["eval.mix.mode=cm", f"eval.mix.cm_components={keep}"]))
        cases.append(("cm LM only", "mix", ["eval.mix.mode=cm", "eval.mix.cm_components="]))
    base = load_config(str(args.run_dir / "config.json"))
    report: dict = {"run": str(args.run_dir), "machine": platform.processor() or platform.machine(), "corpora": {}}
    for spec in args.corpus:
        name, data_dir, text_path, val_docs = parse_corpus(spec)
        texts = load_texts(text_path)[:val_docs]
        rows: list[dict] = []
        if not args.no_compressors:
            for r in compressors(texts):
                rows.append({"case": r["name"], **r})
                print(f"{name:<8} {r['name']:<28} {r['bpb']:.4f}  {r['seconds']:7.1f} s", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            for label, method, extra in cases:
                cfg = apply_overrides(base, args.set + extra)
                try:
                    out = eval_run(args.run_dir, cfg, methods=[method], data_dir=data_dir,
                                   metrics_path=Path(tmp) / "metrics.json")
                except PgolfError as e:
                    print(f"{name:<8} {label:<28} error: {e}", flush=True)
                    rows.append({"case": label, "error": str(e)})
                    continue
                e = out["methods"][0]
                mixinfo = e.get("info", {}).get("mix", {}) if isinstance(e.get("info"), dict) else {}
                rows.append({"case": label, "method": method, "sets": extra, "bpb": e["val_bpb_raw"],
                             "val_bpb": e["val_bpb"], "seconds": e["eval_seconds"], "within_budget": e["within_budget"],
                             "actions": e["actions"], "mix": mixinfo})
                acts = "; ".join(a.split(": ", 1)[-1] for a in e["actions"]) or "-"
                print(f"{name:<8} {label:<28} {e['val_bpb_raw'] or float('nan'):.4f}  {e['eval_seconds']:7.1f} s  "
                      f"{'' if e['within_budget'] else 'OVER BUDGET '}{acts}", flush=True)
        report["corpora"][name] = rows
    if args.json:
        fileio.write_text(args.json, json.dumps(report, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
