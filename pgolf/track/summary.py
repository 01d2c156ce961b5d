"""Summaries of run records for the report: a standalone leaderboard, group labels, the Pareto front.

A *run record* is a plain dict (``run_id``, ``kind``, ``created``, ``preset``, ``config_hash``, ``seed``,
``tags``, ``dataset``, ``machine``, ``git_commit``, ``dirty``, ``config`` flat ``"section.key" → value``,
``metrics`` as in ``metrics.json``, ``curves`` ``{"train": [[step, loss, s]], "val": [[step, bpb, s]]}``,
``run_dir``); a *leaderboard row* is a dict ``config_hash, preset, label, n, mean, std, seeds, run_ids,
enough_seeds, reference, p_vs_best``. The registry produces both; this module computes them from records alone so the report
also works without one.

- Leaderboard: :func:`pgolf.track.leaderboard.leaderboard` — the one function that counts seeds and
  computes n, mean, std and the Welch p for every tool, so the report, ``pgolf leaderboard`` and
  ``pgolf stats`` agree (``eval`` records are re-scorings, never seeds), with the same labels.
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


def leaderboard(records: Sequence[dict[str, Any]], metric: str = METRIC) -> list[dict[str, Any]]:
    """:func:`pgolf.track.leaderboard.leaderboard` of the records, its labels (those of ``pgolf leaderboard``)
    followed by the hash's first digits where two configurations would share one."""
    from pgolf.track import leaderboard as lb

    rows = lb.leaderboard(records, metric)
    counts = Counter(row["label"] for row in rows)
    return [{**row, "label": f"{row['label']} [{row['config_hash'][:8]}]" if counts[row["label"]] > 1 else row["label"]}
            for row in rows]


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
