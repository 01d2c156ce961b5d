"""Is a new result a record? (``pgolf stats NEW_RUNS... --against OLD... | --sota BPB``)

Two rules, both one-sided, both on per-seed scores (CATALOGUE §4):

* **As written** (root README of openai/parameter-golf): a new record must beat the SOTA by at least
  ``MARGIN_NATS`` = 0.005 nats with p < 0.01. Test: H0 μ_new ≥ record − 0.005 against H1 μ_new <
  record − 0.005, one-sample t-test of the new seeds' scores (``scipy.stats.ttest_1samp(...,
  alternative="less")``, df = n − 1), where *record* is the mean of the old seeds' scores (or
  ``--sota``). Records [03-18b], [03-19g] ran exactly this test.
* **As applied** by the maintainers on the final leaderboard (the update commit for PR #1902, "p<0.25
  accepted" in PR #1899/#1900, §6): no margin; one-sided Welch t-test of the new seeds against the
  previous frontier record's seeds (``scipy.stats.ttest_ind(new, old, equal_var=False,
  alternative="less")``, Welch–Satterthwaite df), accepted at p < 0.25. It needs the old seeds'
  scores; with only ``--sota`` it is not applicable.

Units. The score is val_bpb; nats are per token of the *new* runs' validation data. A run's
tokens/bytes ratio ``r = val_tokens / val_bytes`` (its ``metrics.json``; the original bytes for a
sidecar-scored run) links them: val_bpb = val_loss / ln 2 · r (§1.2). Every score, old or new, is
taken as bpb ``b`` and expressed in the new runs' nats as ``b · ln 2 / r_new`` — for a new run that is
its own val_loss — so the 0.005-nat margin is ``0.005 / ln 2 · r_new`` bpb (≈ 0.0019 at SP8192), and
a record scored with another tokenizer is compared on bpb, the challenge's score. Both t statistics
are unchanged by that common scale. The new runs must share one ratio (one validation set).

The record's per-seed scores come from its run directories, or from its ``submission.json``:
``seed_results`` when it has them, else the training logs in the same folder (many records list only
the mean) — ``train_seed*.log``, else ``*.log``, else ``*.txt``, the first of these that holds logs with
a final score — each log's score being its last final ``val_loss``/``val_bpb`` line
(:func:`pgolf.logformat.parse_log`) and its seed the log's ``seed:`` line or the file name.
``Scores.source`` says which was used; the report prints it.

Zero variance (every score identical, in both samples for Welch): t = ±inf and p = 0 or 1 by the
sign of the difference (scipy's limits, taken exactly rather than through rounding noise); a mean
exactly at the threshold has no p-value and does not pass.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import scipy.stats

from pgolf.errors import PgolfError
from pgolf.submit.runs import Run, check_seeds, load_run
from pgolf.submit.schema import load_record_submission

MARGIN_NATS = 0.005
P_WRITTEN = 0.01
P_APPLIED = 0.25
LN2 = math.log(2)


@dataclass(frozen=True)
class Scores:
    """Per-seed scores of one candidate."""

    label: str
    seeds: list[str]
    bpb: list[float]
    nats: list[float] | None
    """Its own val_loss per seed (None when a submission.json lists only bpb)."""
    tokens_per_byte: float | None
    source: str = ""
    """Where the scores were read (run directories, ``seed_results``, which logs)."""


@dataclass(frozen=True)
class Verdict:
    rule: str
    passed: bool | None
    """None: not applicable (``reason`` says why)."""
    threshold_p: float
    delta_nats: float | None = None
    delta_bpb: float | None = None
    t: float | None = None
    df: float | None = None
    p: float | None = None
    reference_nats: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class StatsResult:
    new: Scores
    old: Scores | None
    sota_bpb: float | None
    tokens_per_byte: float
    written: Verdict
    applied: Verdict

    def to_dict(self) -> dict[str, Any]:
        """Every field, plus ``summary``: n, mean and std (ddof = 1) of each side's val_bpb, computed as the
        leaderboard computes them (:func:`pgolf.track.leaderboard.summary`)."""
        from pgolf.track.leaderboard import summary

        return {**asdict(self), "summary": {"new": summary(self.new.bpb),
                                            "old": summary(self.old.bpb) if self.old is not None else None}}


# ------------------------------------------------------------------------------------------ inputs


def scores_of_runs(runs: Sequence[Run], label: str) -> Scores:
    """Scores of run directories that are seeds of one configuration (:func:`check_seeds`)."""
    check_seeds(runs)
    ratios = [r.tokens_per_byte for r in runs]
    if any(not math.isclose(x, ratios[0], rel_tol=1e-9) for x in ratios):
        i = next(i for i, x in enumerate(ratios) if not math.isclose(x, ratios[0], rel_tol=1e-9))
        raise PgolfError(f"{runs[i].path / 'metrics.json'}: tokens/bytes {ratios[i]:.9f} differs from {runs[0].path}'s "
                         f"{ratios[0]:.9f}: the seeds were scored on different validation data")
    return Scores(label, [str(r.seed) for r in runs], [r.metrics["val_bpb"] for r in runs],
                  [r.metrics["val_loss"] for r in runs], ratios[0], f"{len(runs)} run directories' metrics.json")


def _ratio(bpb: Sequence[float], nats: Sequence[float] | None) -> float | None:
    """tokens/bytes from per-seed (bpb, nats) pairs: bpb · ln 2 / nats, averaged."""
    if not nats:
        return None
    ratios = [b * LN2 / n for b, n in zip(bpb, nats, strict=True) if n]
    return statistics.fmean(ratios) if ratios else None


def scores_of_submission(path: Path) -> Scores:
    """Per-seed scores of a records folder's ``submission.json``: its ``seed_results``, else the training
    logs beside it (:func:`scores_of_logs`)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PgolfError(f"{path}: not readable JSON ({e})") from None
    sub = load_record_submission(data, str(path))
    if not sub.seed_results:
        logs = scores_of_logs(path.parent, str(path))
        if logs is None:
            raise PgolfError(f"{path}: has no seed_results, and no training log beside it ({', '.join(LOG_GLOBS)}) "
                             "has a final val_bpb line: per-seed scores are needed for a t-test")
        if isinstance(sub.val_bpb, (int, float)) and abs(statistics.fmean(logs.bpb) - sub.val_bpb) > 5e-5:
            logs = replace(logs, source=f"{logs.source}; their mean {statistics.fmean(logs.bpb):.6f} differs from "
                                        f"submission.json's val_bpb {sub.val_bpb}")
        return logs
    seeds = list(sub.seed_results)
    rs = [sub.seed_results[s] for s in seeds]
    nats = [r.val_loss for r in rs] if all(r.val_loss is not None for r in rs) else None
    bpb = [r.val_bpb for r in rs]
    return Scores(str(path), seeds, bpb, nats, _ratio(bpb, nats), "submission.json seed_results")  # type: ignore[arg-type]


LOG_GLOBS = ("train_seed*.log", "*.log", "*.txt")
"""Where a records folder keeps its training logs, most specific first (module docstring)."""
_SEED_IN_NAME = re.compile(r"seed[_-]?(\d+)", re.IGNORECASE)


def scores_of_logs(folder: Path, label: str) -> Scores | None:
    """Per-seed scores from the training logs of a records folder: the first of :data:`LOG_GLOBS` whose
    files include logs with a final score; None when none does. A seed seen in two logs is an error."""
    from pgolf.logformat import parse_log

    for pattern in LOG_GLOBS:
        found: list[tuple[str, float, float | None, str]] = []
        for f in sorted(folder.glob(pattern)):
            try:
                parsed = parse_log(f.read_text(errors="replace"))
            except OSError as e:
                raise PgolfError(f"{f}: cannot read ({e})") from None
            final = parsed.final()
            if final is None:
                continue
            m = _SEED_IN_NAME.search(f.name)
            seed = str(parsed.seed) if parsed.seed is not None else m.group(1) if m else f.name
            if any(seed == s for s, *_ in found):
                first = next(name for s, *_, name in found if s == seed)
                raise PgolfError(f"{f}: seed {seed} is also the seed of {first}: which log scores it?")
            found.append((seed, final.val_bpb, final.val_loss, f.name))
        if found:
            bpb = [b for _, b, _, _ in found]
            losses = [n for _, _, n, _ in found]
            nats = None if any(n is None for n in losses) else [float(n) for n in losses]  # type: ignore[arg-type]
            return Scores(label, [s for s, *_ in found], bpb, nats, _ratio(bpb, nats),
                          f"no seed_results: the final val_bpb lines of {', '.join(name for *_, name in found)}")
    return None


def load_scores(paths: Sequence[str | Path], label: str) -> Scores:
    """Run directories (seeds of one configuration) or one ``submission.json``."""
    ps = [Path(p) for p in paths]
    if not ps:
        raise PgolfError(f"no {label} runs given")
    files = [p for p in ps if p.is_file()]
    if files:
        if len(ps) != 1:
            raise PgolfError(f"{files[0]}: give either run directories or one submission.json for the {label} record")
        return scores_of_submission(files[0])
    return scores_of_runs([load_run(p) for p in ps], label)


# --------------------------------------------------------------------------------------------- tests


def _quiet(fn: Any, *a: Any, **kw: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's "nearly identical data" precision warning
        return fn(*a, **kw)


def _p(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _constant(v: Sequence[float]) -> bool:
    return max(v) == min(v)


def _limit(diff: float, df: float) -> tuple[float, float, float | None]:
    """(t, df, p) of a one-sided "less" test whose samples have no variance."""
    if diff == 0:
        return math.nan, df, None
    return (-math.inf, df, 0.0) if diff < 0 else (math.inf, df, 1.0)


def significance(new: Scores, *, old: Scores | None = None, sota_bpb: float | None = None) -> StatsResult:
    """Both verdicts for ``new`` against ``old`` (per-seed) or a SOTA value ``sota_bpb`` (module docstring)."""
    if (old is None) == (sota_bpb is None):
        raise PgolfError("give the record to beat: either its runs / submission.json (--against) or --sota BPB")
    if len(new.bpb) < 2:
        raise PgolfError(f"{new.label}: {len(new.bpb)} seed(s); a t-test needs at least 2")
    r = new.tokens_per_byte
    assert r is not None
    to_nats = LN2 / r
    x = [b * to_nats for b in new.bpb]
    ref_bpb = statistics.fmean(old.bpb) if old is not None else float(sota_bpb)  # type: ignore[arg-type]
    ref = ref_bpb * to_nats
    delta = statistics.fmean(x) - ref
    if _constant(x):
        t, df, p = _limit(x[0] - (ref - MARGIN_NATS), len(x) - 1)
    else:
        res = _quiet(scipy.stats.ttest_1samp, x, ref - MARGIN_NATS, alternative="less")
        t, df, p = float(res.statistic), float(res.df), _p(res.pvalue)
    written = Verdict("written", p is not None and p < P_WRITTEN, P_WRITTEN, delta, delta / to_nats,
                      t, df, p, ref - MARGIN_NATS)
    if old is None:
        applied = Verdict("applied", None, P_APPLIED, delta, delta / to_nats,
                          reason="needs the record's per-seed scores (--against its runs or submission.json)")
    elif len(old.bpb) < 2:
        applied = Verdict("applied", None, P_APPLIED, delta, delta / to_nats,
                          reason=f"{old.label} has {len(old.bpb)} seed; Welch's test needs at least 2")
    else:
        y = [b * to_nats for b in old.bpb]
        if _constant(x) and _constant(y):
            t, df, p = _limit(x[0] - y[0], math.nan)
        else:
            res = _quiet(scipy.stats.ttest_ind, x, y, equal_var=False, alternative="less")
            t, df, p = float(res.statistic), float(res.df), _p(res.pvalue)
        applied = Verdict("applied", p is not None and p < P_APPLIED, P_APPLIED, delta, delta / to_nats, t, df, p, ref)
    return StatsResult(new, old, sota_bpb, r, written, applied)


# -------------------------------------------------------------------------------------------- report


def _mean_sd(v: Sequence[float]) -> str:
    from pgolf.track.leaderboard import summary

    s = summary(v)
    return f"{s['mean']:.6f} ± {s['std'] or 0.0:.6f}"


def format_report(res: StatsResult) -> str:
    """The inputs, then one verdict line per rule with its numbers."""
    n = res.new
    lines = [f"new: {len(n.bpb)} seeds ({', '.join(n.seeds)}), val_bpb {_mean_sd(n.bpb)}"
             + (f", val_loss {_mean_sd(n.nats)} nats" if n.nats else "") + f"; tokens/bytes {res.tokens_per_byte:.6f}"]
    to_nats = LN2 / res.tokens_per_byte
    if res.old is not None:
        o = res.old
        lines.append(f"record: {o.label}: {len(o.bpb)} seeds ({', '.join(o.seeds)}), val_bpb {_mean_sd(o.bpb)} "
                     f"= {statistics.fmean(o.bpb) * to_nats:.6f} nats at the new runs' tokens/bytes"
                     + (f" [from {o.source}]" if o.source else ""))
    else:
        lines.append(f"record: --sota {res.sota_bpb} bpb = {res.sota_bpb * to_nats:.6f} nats at the new runs' tokens/bytes")
    w, a = res.written, res.applied

    def verdict(v: Verdict) -> str:
        return "n/a" if v.passed is None else "PASS" if v.passed else "FAIL"

    def p(v: Verdict) -> str:
        return "undefined (zero variance at the threshold)" if v.p is None else f"{v.p:.3g}"

    lines.append(f"rule as written (README: beat the record by {MARGIN_NATS} nats at p < {P_WRITTEN}, one-sided one-sample "
                 f"t-test against record - {MARGIN_NATS} = {w.reference_nats:.6f} nats = "
                 f"{w.reference_nats / to_nats:.6f} bpb): delta {w.delta_nats:+.6f} nats ({w.delta_bpb:+.6f} bpb), "
                 f"t = {w.t:.3f}, df = {w.df:.0f}, p = {p(w)} -> {verdict(w)}")
    if a.passed is None:
        lines.append(f"rule as applied (PR #1902: one-sided Welch t-test against the frontier's seeds, p < {P_APPLIED}): "
                     f"{a.reason} -> n/a")
    else:
        lines.append(f"rule as applied (PR #1902: one-sided Welch t-test against the frontier's seeds, p < {P_APPLIED}): "
                     f"delta {a.delta_nats:+.6f} nats ({a.delta_bpb:+.6f} bpb), t = {a.t:.3f}, df = {a.df:.2f}, "
                     f"p = {p(a)} -> {verdict(a)}")
    return "\n".join(lines)
