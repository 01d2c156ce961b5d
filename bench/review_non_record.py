"""Run ``pgolf review`` over the merged non-record folders of openai/parameter-golf
(``records/track_non_record_16mb/``, all listed on the README's "Unlimited Compute Leaderboard & Non-record
Submissions") where they lie, and each again moved under ``records/track_10min_16mb/``: which checks the track
changes. Measures the review; asserts nothing.

    python bench/review_non_record.py [--mirror /work/.mirror/openai+parameter-golf/repo] [--work DIR]

Folders are extracted with ``git archive`` into ``--work`` (outside the repository; never commit them).
Columns: the track the review read (and from where), the verdict marks per check (``.`` pass, ``F`` fail,
``?`` needs-proof, ``-`` cannot-tell; columns in ``pgolf.submit.review.CHECKS`` order), the fails, and the
train_time / eval_time / seeds / significance verdicts the same folder gets on the record track.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from review_records import SHORT, extract  # noqa: E402

from pgolf.submit.review import CHECKS, review  # noqa: E402

TRACK = "records/track_non_record_16mb"
TIMED = ("train_time", "eval_time", "seeds", "significance")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mirror", default="/work/.mirror/openai+parameter-golf/repo")
    ap.add_argument("--work", default=None)
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="pgolf_review_nonrecord_"))
    t0 = time.perf_counter()
    extract(args.mirror, "HEAD", [TRACK], work / "head")
    print(f"checks (columns): {' '.join(CHECKS)}\n")
    print("| folder | track (from) | verdicts | fails | as a record: " + " / ".join(TIMED) + " | record fails |")
    print("|---|---|---|---|---|---|")
    folders = sorted((work / "head" / TRACK).iterdir())
    n_fail = n_fail_record = 0
    for d in folders:
        rep = review(d)
        moved = work / "as_record" / "records" / "track_10min_16mb" / d.name
        if not moved.exists():
            shutil.copytree(d, moved)
        rec = review(moved)
        v = {c.id: c.verdict for c in rec.checks}
        n_fail += bool(rep.exit_code)
        n_fail_record += bool(rec.exit_code)
        marks = "".join(SHORT[c.verdict] for c in rep.checks)
        fails = ", ".join(c.id for c in rep.checks if c.verdict == "fail") or "—"
        rfails = ", ".join(c.id for c in rec.checks if c.verdict == "fail") or "—"
        print(f"| {d.name[:52]} | {rep.track} ({rep.track_from}) | `{marks}` | {fails} | "
              + " / ".join(v[c] for c in TIMED) + f" | {rfails} |")
    print(f"\nnon-record folders: {len(folders)}; with ≥ 1 fail where they lie: {n_fail}; moved to the record track: "
          f"{n_fail_record}")
    print(f"\n{time.perf_counter() - t0:.0f} s; folders in {work}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
