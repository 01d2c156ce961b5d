"""A second evaluation corpus the enwiki models never saw: Python standard-library docstrings.

Writes one JSONL line ``{"text": ..., "id": path}`` per stdlib module (``pgolf.data.embedded``'s
documents, in its fixed order) so `pgolf data build` can tokenize it with the enwiki tokenizer:

    python bench/pydocs_corpus.py --out /work/data/pydocs.jsonl
    python -m pgolf data build --tokenizer /work/shared/tokenizers/enwiki_1024_bpe.model \\
        --input /work/data/pydocs.jsonl --val-docs 200 --out /work/data/pydocs

The text is English technical prose (the interpreter's own documentation strings), a different domain
from Wikipedia; the first ``--val-docs`` documents become the validation split.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pgolf import fileio  # noqa: E402
from pgolf.data.embedded import stdlib_documents  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--stdlib", default=None, help="standard-library directory (default: this interpreter's)")
    args = ap.parse_args(argv)
    docs = stdlib_documents(args.stdlib)
    fileio.write_text(args.out, "".join(json.dumps({"text": t, "id": name}) + "\n" for name, t in docs))
    print(f"{len(docs)} documents, {sum(len(t.encode()) for _, t in docs):,} bytes -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
