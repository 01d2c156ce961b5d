"""Code bytes per preset: the single-file bundle (``pgolf bundle``) against what pgolf charged before it.

What is measured (exact byte counts, not timings; deterministic for a given source tree and Python):

- ``package``: the rule pgolf used before the bundle existed — the raw bytes of every training-path
  source (``__init__, config, errors, fileio, dist, runner`` + every ``.py`` of ``data, model, optim,
  train, quant, artifact, eval``), the same for every configuration;
- ``modules``: how many pgolf modules the configuration's bundle holds (:mod:`pgolf.bundler`);
- ``readable``: the readable form (every module verbatim under a banner);
- ``program``: the compact form's program before compression (minified, unreferenced definitions dropped);
- ``brotli`` / ``lzma``: that program compressed by brotli-11 and by LZMA preset 9e (alone format);
- ``b85``: the self-extractor the records wrote (and pgolf until 2026-12-07): brotli + base85 in two lines;
- ``compact``: the shipped self-extracting file (brotli bytes in a Latin-1 literal, three lines), what
  ``export.code_form=compact`` charges;
- ``room``: for a record preset, 16,000,000 − the record's largest logged model bytes over its seeds
  (:data:`RECORD_MODEL_BYTES`) − ``compact``: negative = the artifact is over the cap unless the export fits it
  (``export.fit = prune``).

Usage (from the repository root)::

    python bench/bundle_size.py                  # cpu, baseline, record-0322, record-0427
    python bench/bundle_size.py --presets tiny --json
"""

from __future__ import annotations

import argparse
import base64
import json
import subprocess
import sys
from pathlib import Path

from pgolf import bundler
from pgolf.presets import get_preset

RECORD_MODEL_BYTES = {
    "record-0322": 15_519_202,  # 2026-03-22_11L_EMA_GPTQ-lite…/train_seed2024.log "Serialized model int6+zstd"
    "record-0414": 15_912_231,  # 2026-04-14_MultiPhaseGlobalSGD_PhasedTTT/train_seed0.log "quantized+brotli"
    "record-0419": 15_950_809,  # 2026-04-19_SP8192_CaseOps_GatedAttn_QuantGate_Loop45_PhasedTTT/train_seed42.log
    "record-0427": 15_875_551,  # 2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611/train_seed1234.log
}
"""The records' largest serialized model over their three seeds (their logs, openai/parameter-golf 4908dc46)."""

OLD_TOP = ("__init__.py", "config.py", "errors.py", "fileio.py", "dist.py", "runner.py")
OLD_SUBPACKAGES = ("config", "data", "model", "optim", "train", "quant", "artifact", "eval")


def package_bytes(root: Path) -> int:
    """pgolf's code-bytes rule before the bundle (``pgolf.artifact.budget.code_files`` until this change)."""
    files = [root / f for f in OLD_TOP if (root / f).is_file()]
    for sub in OLD_SUBPACKAGES:
        files += sorted(p for p in (root / sub).rglob("*.py") if "__pycache__" not in p.parts)
    return sum(len(p.read_bytes()) for p in files)


B85_FRAME = 'import brotli as Z,base64 as B\nexec(Z.decompress(B.b85decode("")))\n'


def measure(preset: str) -> dict:
    cfg = get_preset(preset)
    compact = bundler.render(cfg, compact=True)
    readable = bundler.render(cfg, compact=False)
    program = compact.program.encode("utf-8")
    return {
        "preset": preset,
        "package": package_bytes(bundler.package_root()),
        "modules": len(compact.selection.modules),
        "left_out": sorted(m for m, why in compact.selection.left_out.items() if why.startswith("needs")),
        "pruned_definitions": sum(len(v) for v in compact.pruned.values()),
        "readable": len(readable.data),
        "program": len(program),
        "brotli": len(bundler.CODECS["brotli"](program)),
        "lzma": len(bundler.CODECS["lzma"](program)),
        "b85": len(base64.b85encode(bundler.CODECS["brotli"](program))) + len(B85_FRAME),
        "compact": len(compact.data),
        "room": (16_000_000 - RECORD_MODEL_BYTES[preset] - len(compact.data)) if preset in RECORD_MODEL_BYTES else "",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", nargs="+", default=["baseline", "cpu", *RECORD_MODEL_BYTES])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = [measure(p) for p in args.presets]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"sources at {rev or '?'}; Python {sys.version.split()[0]}")
    cols = ("preset", "modules", "pruned_definitions", "readable", "program", "lzma", "brotli", "b85", "compact", "room")
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(f"{r[c]:,}" if isinstance(r[c], int) else str(r[c]) for c in cols))
    for r in rows:
        print(f"{r['preset']}: left out {', '.join(r['left_out']) or '(nothing)'}")


if __name__ == "__main__":
    main()
