"""Evaluation corpora the enwiki models never saw, from registry packages, for bench/cm_vs_compressors.py.

``kjv``: the King James Bible (public domain English prose) as Debian's ``bible-kjv`` prints it
(``apt-get install bible-kjv``; the text is in ``bible-kjv-text``), one document per chapter
("Genesis 1" … "Revelation 22", 1,189 chapters), each verse one line "N text" with the print's line
wrapping undone. ``pydocs``: the Python standard library's docstrings (English technical prose), as
bench/pydocs_corpus.py writes them. One JSON line ``{"text": ...}`` per document, in order; then

    python bench/cm_corpora.py kjv --out /work/data/kjv.jsonl
    python -m pgolf data build --tokenizer ../shared/tokenizers/enwiki_1024_bpe.model \\
        --input /work/data/kjv.jsonl --val-docs 400 --out /work/data/kjv
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pgolf import fileio  # noqa: E402
from pgolf.errors import PgolfError  # noqa: E402

HEADER = re.compile(r"^([1-3]?\s?[A-Z][A-Za-z ]+?) (\d+)$")
VERSE = re.compile(r"^\s+(\d+) (.*)$")


def kjv_chapters(printed: str) -> list[str]:
    """The chapters of ``bible``'s output: a header line "Book N", then verses "  N text" whose long lines
    wrap onto unindented lines."""
    docs: list[list[str]] = []
    for line in printed.splitlines():
        if not line.strip():
            continue
        if HEADER.match(line):
            docs.append([])
        elif (m := VERSE.match(line)) and docs:
            docs[-1].append(f"{m.group(1)} {m.group(2).strip()}")
        elif docs and docs[-1]:
            docs[-1][-1] += " " + line.strip()
    return ["\n".join(d) for d in docs if d]


def kjv_text() -> str:
    exe = shutil.which("bible")
    if exe is None:
        raise PgolfError("no `bible` command: apt-get install bible-kjv (Debian's King James Bible)")
    return subprocess.run([exe, "Gen1:1-Rev22:21"], check=True, capture_output=True, text=True).stdout


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", choices=["kjv"])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    try:
        docs = kjv_chapters(kjv_text())
    except PgolfError as e:
        print(f"cm_corpora: error: {e}", file=sys.stderr)
        return 1
    fileio.write_text(args.out, "".join(json.dumps({"text": d}) + "\n" for d in docs))
    print(f"{args.out}: {len(docs)} documents, {sum(len(d.encode()) for d in docs):,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
