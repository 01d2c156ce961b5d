"""What the train/val overlap check costs the loader (issue 10): per train shard, reading it vs checking it.

For a dataset directory: the validation fingerprints (from the val shards, as training computes them),
then for every train shard the time to read it (``read_shard``) and to check it
(``OverlapChecker.check``, the work the loader adds the first time it opens the shard). Each is the
minimum of ``--repeat`` runs. Prints a table and the overhead per million train tokens.

    python bench/provenance_overhead.py --data /work/data/enwiki --repeat 5 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from pgolf.data.overlap import OverlapChecker  # noqa: E402
from pgolf.data.provenance import ValFingerprints  # noqa: E402
from pgolf.data.shards import list_shards, read_shard  # noqa: E402


def _best(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    val_files, train_files = list_shards(a.data, "val"), list_shards(a.data, "train")
    val = np.concatenate([read_shard(f) for f in val_files])
    t_fp, fp = _best(lambda: ValFingerprints.from_tokens(val), a.repeat)
    rows = []
    for i, f in enumerate(train_files):
        t_read, tokens = _best(lambda f=f: read_shard(f), a.repeat)

        def check(i: int = i, tokens=tokens) -> None:
            OverlapChecker(fp, train_files).check(i, tokens)

        t_check, _ = _best(check, a.repeat)
        rows.append({"shard": f.name, "tokens": int(tokens.size), "read_s": t_read, "check_s": t_check})
    total = sum(r["tokens"] for r in rows)
    out = {
        "data": str(a.data), "val_tokens": int(val.size), "val_documents": fp.documents, "fingerprint_s": t_fp,
        "train_tokens": total, "read_s": sum(r["read_s"] for r in rows), "check_s": sum(r["check_s"] for r in rows),
        "check_s_per_million_tokens": sum(r["check_s"] for r in rows) / total * 1e6, "shards": rows,
        "load_average": os.getloadavg()[0], "repeat": a.repeat,
    }
    print(f"validation: {out['val_tokens']:,} tokens, {out['val_documents']:,} documents, fingerprints {t_fp:.3f} s")
    print("| shard | tokens | read s | check s |\n|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['shard']} | {r['tokens']:,} | {r['read_s']:.3f} | {r['check_s']:.3f} |")
    print(f"check: {out['check_s']:.3f} s for {total:,} train tokens = {out['check_s_per_million_tokens'] * 1e3:.2f} ms "
          f"per million tokens (1-min load average {out['load_average']:.2f})")
    if a.json:
        a.json.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
