"""A second *training* corpus the enwiki presets were never tuned on: Python standard-library source.

`bench/pydocs_corpus.py` (docstrings) holds about 0.55 M training tokens, which a 600 s CPU run passes
over several times; comparing recipes there measures memorisation as much as learning. The standard
library's own source files (code and comments, test packages left out) give ~5 M tokens with the
enwiki tokenizer, more than a 600 s run on 2 CPU cores reads, in a domain far from Wikipedia:

    python bench/pysrc_corpus.py --out /work/data/pysrc.jsonl
    python -m pgolf data build --tokenizer /work/shared/tokenizers/enwiki_1024_bpe.model \\
        --input /work/data/pysrc.jsonl --val-docs 40 --out /work/data/pysrc

One JSONL line ``{"text": ..., "id": relative path}`` per file, in an order fixed by a hash of the
path (so the first ``--val-docs`` documents — the validation split — are spread over the packages
rather than all from ``asyncio``), files that are not UTF-8 skipped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import sysconfig
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pgolf import fileio  # noqa: E402

SKIP_PARTS = {"site-packages", "test", "tests", "idle_test", "__pycache__"}


def documents(root: Path) -> list[tuple[str, str]]:
    out = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if SKIP_PARTS & set(rel.parts[:-1]):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if text.strip():
            out.append((rel.as_posix(), text))
    out.sort(key=lambda d: hashlib.sha256(d[0].encode()).hexdigest())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--stdlib", type=Path, default=Path(sysconfig.get_paths()["stdlib"]))
    args = ap.parse_args(argv)
    docs = documents(args.stdlib)
    fileio.write_text(args.out, "".join(json.dumps({"text": t, "id": name}) + "\n" for name, t in docs))
    print(f"{len(docs)} documents, {sum(len(t.encode()) for _, t in docs):,} bytes -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
