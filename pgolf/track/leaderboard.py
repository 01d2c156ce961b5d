"""Runs grouped by configuration across seeds, and the significance of their differences.

A group is every run with the same config hash (:mod:`pgolf.track.record`) that has the metric. Within a
group one run counts per seed (the newest; a re-run of a seed is not a new sample); runs without a seed
(imported logs that do not print one) each count. For each group: n, the mean and the sample standard
deviation (ddof = 1; None for n = 1).

``p_vs_best`` is the one-sided Welch t-test (unequal variances; scipy ``ttest_ind(equal_var=False,
alternative="less")``) of H1 "the best group's mean is lower than this group's" — the test the
challenge's final leaderboard applied to successive records (CATALOGUE §4: p < 0.25 against the
chronological frontier). None when either group has fewer than 2 runs or both have zero variance.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from pgolf.track.record import EXCLUDED_FROM_HASH


def welch_p_less(a: Sequence[float], b: Sequence[float]) -> float | None:
    """One-sided Welch p-value for H1: mean(a) < mean(b). None if undefined (n < 2 or no variance)."""
    if len(a) < 2 or len(b) < 2 or (statistics.variance(a) == 0 and statistics.variance(b) == 0):
        return None
    from scipy import stats

    p = float(stats.ttest_ind(list(a), list(b), equal_var=False, alternative="less").pvalue)
    return p if math.isfinite(p) else None


def summary(values: Sequence[float]) -> dict[str, Any]:
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
    from pgolf.presets import get_preset
    from pgolf.track.record import flat_config

    try:
        base = flat_config(get_preset(preset).to_dict())
    except PgolfError:
        return preset
    diff = [f"{k}={_show(v)}" for k, v in sorted(config.items())
            if k not in EXCLUDED_FROM_HASH and base.get(k, object()) != v]
    return " ".join([preset] + [f"+{d}" for d in diff])


def _show(v: Any) -> str:
    return ",".join(map(str, v)) if isinstance(v, list) else str(v)


def _get(rec: Any, key: str) -> Any:
    value = getattr(rec, key) if hasattr(rec, key) else rec[key]
    if key == "created":
        from datetime import datetime, timezone

        ts = datetime.fromisoformat(value)
        return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)
    return value


def per_seed(records: Iterable[Any], metric: str = "val_bpb") -> list[Any]:
    """The runs that count: with a finite ``metric``, one per (config hash, seed), the newest."""
    best: dict[tuple[str, Any], Any] = {}
    loose: list[Any] = []
    for rec in records:
        v = _get(rec, "metrics").get(metric)
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            continue
        seed = _get(rec, "seed")
        if seed is None:
            loose.append(rec)
            continue
        key = (_get(rec, "config_hash"), seed)
        if key not in best or _get(rec, "created") > _get(best[key], "created"):
            best[key] = rec
    return list(best.values()) + loose


def leaderboard(records: Iterable[Any], metric: str = "val_bpb") -> list[dict[str, Any]]:
    """Groups by config hash, best (lowest mean ``metric``) first. Each row: ``config_hash, preset, label,
    n, mean, std, seeds, run_ids, p_vs_best`` (see the module docstring); records are RunRecords or
    their ``model_dump()`` dicts."""
    groups: dict[str, list[Any]] = defaultdict(list)
    for rec in per_seed(records, metric):
        groups[_get(rec, "config_hash")].append(rec)
    rows = []
    for h, recs in groups.items():
        recs.sort(key=lambda r: (_get(r, "seed") is None, _get(r, "seed") or 0, _get(r, "created")))
        values = [float(_get(r, "metrics")[metric]) for r in recs]
        newest = max(recs, key=lambda r: _get(r, "created"))
        rows.append({"config_hash": h, "preset": _get(newest, "preset"), "label": label_of(newest),
                     **summary(values), "seeds": [_get(r, "seed") for r in recs if _get(r, "seed") is not None],
                     "run_ids": [_get(r, "run_id") for r in recs], "values": values, "p_vs_best": None})
    rows.sort(key=lambda r: (r["mean"], -r["n"], r["config_hash"]))
    if rows:
        best = rows[0]["values"]
        for row in rows[1:]:
            row["p_vs_best"] = welch_p_less(best, row["values"])
    for row in rows:
        row.pop("values")
    return rows


def compare(groups: list[list[Any]], metric: str = "val_bpb") -> list[dict[str, Any]]:
    """Each group against the first: mean ± std, the difference of means, and the one-sided Welch p of
    H1 "this group is lower than the first" (``p_lower``) and of the reverse (``p_higher``)."""
    out = []
    base_vals: list[float] = []
    for i, recs in enumerate(groups):
        counted = per_seed(recs, metric)
        values = [float(_get(r, "metrics")[metric]) for r in counted]
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


def config_diff(configs: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The flat keys whose values are not all equal across ``configs`` → their values in order."""
    keys = sorted(set().union(*configs)) if configs else []
    missing = object()
    out = {}
    for k in keys:
        vals = [c.get(k, missing) for c in configs]
        if any(v != vals[0] for v in vals[1:]):
            out[k] = [None if v is missing else v for v in vals]
    return out
