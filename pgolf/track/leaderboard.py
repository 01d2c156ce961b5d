"""Runs grouped by configuration across seeds, and the significance of their differences: the one place
that counts seeds and computes n, mean, std and Welch p for ``pgolf leaderboard``, ``pgolf runs compare``,
``pgolf report`` (:mod:`pgolf.track.summary`) and ``pgolf try``.

**Which runs count.** A group is every run with the same config hash (the registry's ``config_hash``, the
one identity of "the same experiment") whose record is a training result — kind ``run`` or ``import``
(:data:`SEED_KINDS`) — and has the metric. An ``eval`` record re-scores an existing run (perhaps with
another method or on other data): it is listed by ``pgolf runs list``, never counted as a seed. Within a
group one run counts per seed (the newest; a re-run of a seed is not a new sample); runs without a seed
(imported logs that do not print one) each count. For each group: n, the mean and the sample standard
deviation (ddof = 1; None for n = 1).

**Ranking.** A configuration needs ``min_seeds`` counted seeds (default :data:`MIN_SEEDS` = 3, what a
record shows in practice, RULES.md) to rank as a result. Groups with enough seeds come first, by mean;
then the others, by mean, with ``enough_seeds`` False (the views mark them and say under the table which
of them would lead on its mean alone). Ties: more seeds first, then the hash.

**p.** ``p_vs_best`` is the one-sided Welch t-test (unequal variances; scipy ``ttest_ind(equal_var=False,
alternative="less")``) of H1 "the reference's mean is lower than this group's", where the *reference* is
the first ranked group with at least 2 seeds (``reference`` True) — the test the challenge's final
leaderboard applied to successive records (CATALOGUE §4: p < 0.25 against the chronological frontier).
None for the reference, for groups of one run, when no group has 2, and when both have zero variance.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from pgolf.identity import result_changing

MIN_SEEDS = 3
"""Counted seeds a configuration needs to rank as a result (module docstring, "Ranking")."""
SEED_KINDS = frozenset({"run", "import"})
"""Record kinds that are training results; ``eval`` (a re-scoring), ``train`` and ``export`` are not."""


def welch_p_less(a: Sequence[float], b: Sequence[float]) -> float | None:
    """One-sided Welch p-value for H1: mean(a) < mean(b). None if undefined (n < 2 or no variance)."""
    if len(a) < 2 or len(b) < 2 or (statistics.variance(a) == 0 and statistics.variance(b) == 0):
        return None
    from scipy import stats

    p = float(stats.ttest_ind(list(a), list(b), equal_var=False, alternative="less").pvalue)
    return p if math.isfinite(p) else None


def summary(values: Sequence[float]) -> dict[str, Any]:
    """``n``, ``mean`` and the sample ``std`` (ddof = 1; None below 2 values) of ``values``."""
    n = len(values)
    return {"n": n, "mean": statistics.fmean(values) if n else None,
            "std": statistics.stdev(values) if n >= 2 else None}


def label_of(rec: Any) -> str:
    """The preset and the result-changing fields that differ from it (``cpu +model.mlp_act=leaky_relu2``);
    for an imported official log, its folder name."""
    config = rec.config if hasattr(rec, "config") else rec["config"]
    preset = rec.preset if hasattr(rec, "preset") else rec.get("preset")
    if "official.source" in config:
        return str(config["official.source"])
    if not preset:
        return "(no preset)"
    from pgolf.errors import PgolfError
    from pgolf.identity import flat as flat_config
    from pgolf.presets import get_preset

    try:
        base = flat_config(get_preset(preset).to_dict())
    except PgolfError:
        return preset
    diff = [f"{k}={_show(v)}" for k, v in sorted(config.items())
            if result_changing(k) and base.get(k, object()) != v]
    return " ".join([preset] + [f"+{d}" for d in diff])


def _show(v: Any) -> str:
    return ",".join(map(str, v)) if isinstance(v, list) else str(v)


def _get(rec: Any, key: str) -> Any:
    value = getattr(rec, key) if hasattr(rec, key) else rec.get(key)
    if key == "created":
        from datetime import datetime, timezone

        ts = datetime.fromisoformat(str(value))
        return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)
    return value


def _value(rec: Any, metric: str) -> float | None:
    v = (_get(rec, "metrics") or {}).get(metric)
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return float(v) if ok else None


def per_seed(records: Iterable[Any], metric: str = "val_bpb", *, kinds: Iterable[str] | None = SEED_KINDS) -> list[Any]:
    """The runs that count: of ``kinds`` (None: any), with a finite ``metric``, one per (config hash, seed),
    the newest; runs without a seed each count."""
    allowed = None if kinds is None else set(kinds)
    best: dict[tuple[str, Any], Any] = {}
    loose: list[Any] = []
    for rec in records:
        if (allowed is not None and _get(rec, "kind") not in allowed) or _value(rec, metric) is None:
            continue
        seed = _get(rec, "seed")
        if seed is None:
            loose.append(rec)
            continue
        key = (_get(rec, "config_hash"), seed)
        if key not in best or _get(rec, "created") > _get(best[key], "created"):
            best[key] = rec
    return list(best.values()) + loose


def groups(records: Iterable[Any], metric: str = "val_bpb") -> dict[str, list[Any]]:
    """Config hash → its counted runs (:func:`per_seed`), by seed (runs without one last, by time)."""
    out: dict[str, list[Any]] = defaultdict(list)
    for rec in per_seed(records, metric):
        out[str(_get(rec, "config_hash") or _get(rec, "run_id"))].append(rec)
    for recs in out.values():
        recs.sort(key=lambda r: (_get(r, "seed") is None, _get(r, "seed") or 0, _get(r, "created")))
    return dict(out)


def leaderboard(records: Iterable[Any], metric: str = "val_bpb", *, min_seeds: int = MIN_SEEDS) -> list[dict[str, Any]]:
    """Ranked groups (module docstring). Each row: ``config_hash, preset, label, n, mean, std, seeds,
    run_ids, enough_seeds, reference, p_vs_best``; records are RunRecords or their ``model_dump()`` dicts."""
    rows = []
    for h, recs in groups(records, metric).items():
        values = [_value(r, metric) for r in recs]
        newest = max(recs, key=lambda r: _get(r, "created"))
        rows.append({"config_hash": h, "preset": _get(newest, "preset"), "label": label_of(newest),
                     **summary(values), "seeds": [_get(r, "seed") for r in recs if _get(r, "seed") is not None],
                     "run_ids": [_get(r, "run_id") for r in recs], "values": values,
                     "enough_seeds": len(values) >= min_seeds, "reference": False, "p_vs_best": None})
    rows.sort(key=lambda r: (not r["enough_seeds"], r["mean"], -r["n"], r["config_hash"]))
    ref = next((r for r in rows if r["n"] >= 2), None)
    if ref is not None:
        ref["reference"] = True
        for row in rows:
            if row is not ref:
                row["p_vs_best"] = welch_p_less(ref["values"], row["values"])
    for row in rows:
        row.pop("values")
    return rows


def notes(rows: Sequence[dict[str, Any]], min_seeds: int = MIN_SEEDS) -> list[str]:
    """The lines printed under a leaderboard: which rows have too few seeds (and which of them would lead on
    its mean alone), and what the p-values are against."""
    out = []
    few = [r for r in rows if not r.get("enough_seeds", True)]
    if few:
        lead = min(rows, key=lambda r: r["mean"])
        out.append(f"* {len(few)} of {len(rows)} configurations have fewer than {min_seeds} seeds: ranked below "
                   f"those with {min_seeds} or more" + (f"; on its mean alone {lead['label']} ({lead['n']} seed"
                                                         f"{'s' if lead['n'] != 1 else ''}) would lead — run more "
                                                         "seeds before calling it better" if lead in few else ""))
    ref = next((i for i, r in enumerate(rows, 1) if r.get("reference")), None)
    if ref is None:
        out.append("p: none (no configuration has 2 seeds for a t-test)" if rows else "no runs with the metric")
    else:
        out.append(f"p: one-sided Welch t-test, H1: the reference #{ref} ({rows[ref - 1]['config_hash'][:12]}, the "
                   "best-ranked configuration with 2+ seeds) has the lower mean; – for one seed")
    return out


def compare(groups: list[list[Any]], metric: str = "val_bpb") -> list[dict[str, Any]]:
    """Each group against the first: mean ± std, the difference of means, and the one-sided Welch p of
    H1 "this group is lower than the first" (``p_lower``) and of the reverse (``p_higher``). A group counts
    its runs as :func:`per_seed` does; one made only of ``eval`` records (named by run id) counts as given."""
    out = []
    base_vals: list[float] = []
    for i, recs in enumerate(groups):
        only_evals = bool(recs) and all(_get(r, "kind") == "eval" for r in recs)
        counted = per_seed(recs, metric, kinds=None if only_evals else SEED_KINDS)
        values = [_value(r, metric) for r in counted]
        row = {"label": label_of(counted[0]) if counted else None,
               "config_hash": _get(counted[0], "config_hash") if counted else None, **summary(values),
               "seeds": sorted(_get(r, "seed") for r in counted if _get(r, "seed") is not None),
               "run_ids": [_get(r, "run_id") for r in counted]}
        if i == 0:
            base_vals = values
        elif values and base_vals:
            row["delta"] = row["mean"] - statistics.fmean(base_vals)
            row["p_lower"] = welch_p_less(values, base_vals)
            row["p_higher"] = welch_p_less(base_vals, values)
        out.append(row)
    return out


def config_diff(configs: list[dict[str, Any]], *, all_fields: bool = False) -> dict[str, list[Any]]:
    """The flat keys whose values are not all equal across ``configs`` → their values in order; only the
    result-changing ones (:func:`pgolf.identity.result_changing`, the config hash's rule) unless ``all_fields``."""
    keys = sorted(set().union(*configs)) if configs else []
    missing = object()
    out = {}
    for k in keys:
        if not all_fields and not result_changing(k):
            continue
        vals = [c.get(k, missing) for c in configs]
        if any(v != vals[0] for v in vals[1:]):
            out[k] = [None if v is missing else v for v in vals]
    return out
