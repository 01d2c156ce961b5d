"""Summaries of run records for the report: a standalone leaderboard, group labels, the Pareto front.

A *run record* is a plain dict (``run_id``, ``kind``, ``created``, ``preset``, ``config_hash``, ``seed``,
``tags``, ``dataset``, ``machine``, ``git_commit``, ``dirty``, ``config`` flat ``"section.key" → value``,
``metrics`` as in ``metrics.json``, ``curves`` ``{"train": [[step, loss, s]], "val": [[step, bpb, s]]}``,
``run_dir``); a *leaderboard row* is a dict ``config_hash, preset, label, n, mean, std, seeds, run_ids,
p_vs_best``. The registry produces both; this module computes them from records alone so the report
also works without one.

- Leaderboard: :func:`pgolf.track.leaderboard.leaderboard` — the one function that counts seeds and
  computes n, mean, std and the Welch p for every tool, so the report, ``pgolf leaderboard`` and
  ``pgolf stats`` agree (``eval`` records are re-scorings, never seeds) — with the report's own labels
  (:func:`group_labels`).
- Pareto front of (artifact bytes, bpb), both minimised: the points no other point dominates, where
  q dominates p when q ≤ p in both coordinates and q < p in one. Sorting by (bytes, bpb) and keeping a
  point when its bpb is below every earlier kept point's (or it repeats the last kept point exactly)
  finds it in O(n log n).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

METRIC = "val_bpb"


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def scored(records: Sequence[dict[str, Any]], metric: str = METRIC) -> list[dict[str, Any]]:
    """The records with a finite ``metrics[metric]``."""
    return [r for r in records if _finite((r.get("metrics") or {}).get(metric))]


def group_labels(groups: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
    """A short label per config hash: the preset, then the config values where the group departs from
    the most common value among the groups of the same preset (seeds excluded; a tie goes to the first
    group's value), e.g. ``tiny model.num_layers=4``; the hash's first digits when that is not unique."""
    by_preset: dict[str, list[str]] = {}
    for h, rs in groups.items():
        by_preset.setdefault(str(rs[0].get("preset") or ""), []).append(h)
    out = {}
    for preset, hashes in by_preset.items():
        configs = {h: (groups[h][0].get("config") or {}) for h in hashes}
        keys = sorted({k for c in configs.values() for k in c if k != "train.seed"})
        varying = [k for k in keys if len({repr(c.get(k)) for c in configs.values()}) > 1]
        mode = {k: Counter(repr(c.get(k)) for c in configs.values()).most_common(1)[0][0] for k in varying}
        for h, c in configs.items():
            diffs = [f"{k}={c.get(k)}" for k in varying if repr(c.get(k)) != mode[k]]
            out[h] = " ".join([preset or h[:10], *diffs[:4]]) + (" …" if len(diffs) > 4 else "")
    counts = Counter(out.values())
    return {h: f"{label} [{h[:8]}]" if counts[label] > 1 else label for h, label in out.items()}


def leaderboard(records: Sequence[dict[str, Any]], metric: str = METRIC) -> list[dict[str, Any]]:
    """:func:`pgolf.track.leaderboard.leaderboard` of the records, labelled by :func:`group_labels`."""
    from pgolf.track import leaderboard as lb

    rows = lb.leaderboard(records, metric)
    counted = {i for row in rows for i in row["run_ids"]}
    in_order: dict[str, list[dict[str, Any]]] = {}  # groups by first appearance (group_labels breaks ties so)
    for r in records:
        if r["run_id"] in counted:
            in_order.setdefault(str(r.get("config_hash") or r["run_id"]), []).append(r)
    labels = group_labels(in_order)
    return [{**row, "label": labels[row["config_hash"]]} for row in rows]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points of ``points`` (x, y both minimised), by increasing x then y."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1], i))
    front: list[int] = []
    best_y = math.inf
    for i in order:
        x, y = points[i]
        if y < best_y:
            front.append(i)
            best_y = y
        elif front and (x, y) == tuple(points[front[-1]]):
            front.append(i)
    return front
