"""Code bytes per preset: the single-file bundle (``pgolf bundle``) against what pgolf charged before it.

What is measured (exact byte counts, not timings; deterministic for a given source tree and Python):

- ``package``: the rule pgolf used before the bundle existed — the raw bytes of every training-path
  source (``__init__, config, errors, fileio, dist, runner`` + every ``.py`` of ``data, model, optim,
  train, quant, artifact, eval``), the same for every configuration;
- ``modules``: how many pgolf modules the configuration's bundle holds (:mod:`pgolf.bundler`);
- ``readable``: the readable form (every module verbatim under a banner);
- ``program``: the compact form's program before compression (minified, unreferenced definitions dropped);
- ``brotli`` / ``lzma``: that program compressed by brotli-11 and by LZMA preset 9e (alone format);
- ``compact``: the shipped self-extracting file (brotli + base85 + two lines), what ``export.code_form=compact``
  charges.

Usage (from the repository root)::

    python bench/bundle_size.py                  # cpu, baseline, record-0322, record-0427
    python bench/bundle_size.py --presets tiny --json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from pgolf import bundler
from pgolf.presets import get_preset

OLD_TOP = ("__init__.py", "config.py", "errors.py", "fileio.py", "dist.py", "runner.py")
OLD_SUBPACKAGES = ("data", "model", "optim", "train", "quant", "artifact", "eval")


def package_bytes(root: Path) -> int:
    """pgolf's code-bytes rule before the bundle (``pgolf.artifact.budget.code_files`` until this change)."""
    files = [root / f for f in OLD_TOP if (root / f).is_file()]
    for sub in OLD_SUBPACKAGES:
        files += sorted(p for p in (root / sub).rglob("*.py") if "__pycache__" not in p.parts)
    return sum(len(p.read_bytes()) for p in files)


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
        "compact": len(compact.data),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", nargs="+", default=["cpu", "baseline", "record-0322", "record-0427"])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = [measure(p) for p in args.presets]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"sources at {rev or '?'}; Python {sys.version.split()[0]}")
    cols = ("preset", "package", "modules", "pruned_definitions", "readable", "program", "lzma", "brotli", "compact")
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(f"{r[c]:,}" if isinstance(r[c], int) else str(r[c]) for c in cols))
    for r in rows:
        print(f"{r['preset']}: left out {', '.join(r['left_out']) or '(nothing)'}")


if __name__ == "__main__":
    main()
