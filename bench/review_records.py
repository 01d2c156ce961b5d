"""Run ``pgolf review`` over the real records folders of openai/parameter-golf and print a table of verdicts
against the maintainers' decisions. Measures the review; asserts nothing.

    python bench/review_records.py [--mirror /work/.mirror/openai+parameter-golf/repo] [--work /tmp/pgolf_review_bench]

Folders are extracted with ``git archive`` into ``--work`` (outside the repository; never commit them): the
merged 10-minute records at HEAD (snapshot 4908dc4) and the records folders of some closed, flagged or later
PRs (``refs/pull/N/head``) whose maintainers' decision is stated in the PR or issue thread cited in
``DECISIONS``. Three merged records are also reviewed ``--against`` their predecessor to compare the as-applied
significance test with the p-values of the leaderboard update for PR #1902 (CATALOGUE §4).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

from pgolf.submit.review import review

TRACK = "records/track_10min_16mb"
# PR → (decision, source). Decisions as stated in the threads (search corpus "issues"); "flagged" = a community
# review flagged it and it was never merged.
DECISIONS: dict[int, tuple[str, str]] = {
    1376: ("closed: pre-quant TTT on val", "issue #677 meta-comment 2026-04-11"),
    1487: ("closed as invalid: pre-quant TTT", "PR #1488 thread (ndokutovich), #677"),
    1488: ("closed as invalid: pre-quant TTT", "PR #1488 thread, #677"),
    1482: ("closed: score-after-update", "PR #1482 thread"),
    1517: ("not merged; flagged score-after-update", "PR #1517 thread"),
    150: ("not merged; flagged pre-quant TTT", "PR #150 community review"),
    298: ("closed; flagged LoRA TTT before scoring", "PR #298 community review"),
    779: ("disallowed: target hashed into the n-gram key", "ruling by valerio-oai on PR #779"),
    770: ("not merged; flagged #779 family", "PR #770 community review"),
    786: ("not merged; flagged #779 family", "PR #786 community review"),
    797: ("not merged; flagged #779 family", "PR #797 community review"),
    808: ("not merged; n-gram backoff family", "issue #140 table"),
    972: ("closed by author: n-gram collision artifact", "PR #972 description"),
    1094: ("not merged; n-gram mixer", "issue #140 table"),
    2098: ("excluded: PPM-D mixture not normalized", "PR #2146 / CATALOGUE §6"),
    728: ("recreated as #1019 without val calibration", "PR #728/#1019, valerio-oai request"),
    1797: ("blocked: validity/provenance (SmearGate BOS leak)", "PR #1899/#1900"),
    2130: ("removed: train/val overlap", "PR #2146 / issue #2127"),
    1934: ("superseded: Hessians outside 600 s (reserve 0.5 s)", "PR #1950 compliance reproduction"),
    2135: ("accepted (May 1 audited rows, grace policy)", "PR #2146"),
    2014: ("accepted (May 1 audited rows)", "PR #2146"),
    1953: ("accepted (May 1 audited rows)", "PR #2146"),
}
NOT_ON_LEADERBOARD = {"2026-03-18_LowerLR", "2026-03-19_WarmdownQuantization"}
AGAINST = {  # folder → (previous record folder, its logs, maintainers' p-value in the #1902 leaderboard update)
    "2026-04-09_A2_Muon097_3Seed": ("2026-04-09_SP8192_3LayerRecur_ParResid_QK525_LegalTTT", "*.log", 0.020),
    "2026-04-22_SP8192_CaseOps_GatedAttn_QuantGate_Loop45_PhasedTTT_MLPClip12":
        ("2026-04-19_SP8192_CaseOps_GatedAttn_QuantGate_Loop45_PhasedTTT", "*.log", 0.063),
    # "#1855 p = 0.188 vs the #1868 re-run": the 8 s-reserve re-run logs of the [04-29] folder
    "2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611":
        ("2026-04-29_SmearGateBOSFix_3Seed_1.06141", "*rerun*.log", 0.188),
}
SHORT = {"pass": ".", "fail": "F", "needs-proof": "?", "cannot-tell": "-"}


def extract(git_dir: str, ref: str, paths: list[str], out: Path) -> None:
    data = subprocess.run(["git", "--git-dir", git_dir, "archive", ref, *paths], capture_output=True, check=False).stdout
    if data:
        with tarfile.open(fileobj=BytesIO(data)) as tf:
            tf.extractall(out, filter="data")


def pr_folders(git_dir: str, pr: int) -> list[str]:
    ref = f"refs/pull/{pr}/head"
    r = subprocess.run(["git", "--git-dir", git_dir, "diff", "--name-only", "--no-renames", f"HEAD...{ref}"],
                       capture_output=True, text=True, check=False)
    dirs = sorted({str(Path(p).parent) for p in r.stdout.splitlines() if p.startswith(TRACK + "/")
                   and len(Path(p).parts) == 4})
    return dirs


def row(name: str, decision: str, rep, extra: str = "") -> str:
    marks = "".join(SHORT[c.verdict] for c in rep.checks)
    fails = [c.id for c in rep.checks if c.verdict == "fail"]
    return f"| {name[:58]} | {decision[:44]} | `{marks}` | {', '.join(fails) or '—'} |{extra}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mirror", default="/work/.mirror/openai+parameter-golf/repo")
    ap.add_argument("--work", default=None)
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="pgolf_review_bench_"))
    t0 = time.perf_counter()
    extract(args.mirror, "HEAD", [TRACK], work / "head")
    ids = list(__import__("pgolf.submit.review", fromlist=["CHECKS"]).CHECKS)
    print(f"checks (columns): {' '.join(ids)}\n")
    print("| folder | maintainers | verdicts | fails |\n|---|---|---|---|")
    merged = sorted((work / "head" / TRACK).iterdir())
    n_fail = 0
    for d in merged:
        rep = review(d)
        n_fail += bool(rep.exit_code)
        decision = "merged, not on leaderboard" if d.name in NOT_ON_LEADERBOARD else "merged"
        print(row(d.name, decision, rep))
    print(f"\nmerged records: {len(merged)}, with ≥ 1 fail: {n_fail}\n")
    print("| PR folder | maintainers | verdicts | fails |\n|---|---|---|---|")
    for pr, (decision, source) in DECISIONS.items():
        folders = pr_folders(args.mirror, pr)
        if not folders:
            print(f"| #{pr} (not in the mirror) | {decision[:44]} | | |")
            continue
        extract(args.mirror, f"refs/pull/{pr}/head", folders, work / f"pr{pr}")
        for f in folders:
            d = work / f"pr{pr}" / f
            if not d.is_dir():
                continue
            rep = review(d)
            print(row(f"#{pr} {d.name}", decision, rep, f" {source}"))
    print("\n| record | against | p (maintainers) | significance evidence |\n|---|---|---|---|")
    for name, (prev, logs, p) in AGAINST.items():
        frontier = work / "against" / prev
        frontier.mkdir(parents=True, exist_ok=True)
        for log in (work / "head" / TRACK / prev).glob(logs):
            shutil.copy(log, frontier / log.name)
        rep = review(work / "head" / TRACK / name, against=frontier)
        sig = next(c for c in rep.checks if c.id == "significance")
        ev = "; ".join(e.value for e in sig.evidence if "as applied" in e.value) or sig.evidence[0].value
        print(f"| {name[:40]} | {prev[:30]} | {p} | {ev[-90:]} |")
    print(f"\n{time.perf_counter() - t0:.0f} s (2 shared CPU cores); folders in {work}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
