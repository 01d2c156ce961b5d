"""Terminal tables (rich) for the registry commands; ``--json`` prints the same data as JSON instead."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from pgolf.track.leaderboard import label_of


def console() -> Console:
    return Console(width=None if Console().is_terminal else 160)


def dump(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _f(v: Any, nd: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _ms(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "–"
    return f"{mean:.4f}" + (f" ± {std:.4f}" if std is not None else "")


def runs_table(records: list[Any], metric: str = "val_bpb") -> Table:
    t = Table(title=f"{len(records)} runs", show_lines=False)
    for col in ("run", "created", "kind", "label", "seed", metric, "artifact bytes", "steps", "machine", "dataset", "tags"):
        t.add_column(col, overflow="fold", justify="right" if col in (metric, "artifact bytes", "steps", "seed") else "left")
    for r in records:
        m = r.metrics
        t.add_row(r.run_id, r.created[:19].replace("T", " "), r.kind, label_of(r), "–" if r.seed is None else str(r.seed), _f(m.get(metric)),
                  _f(m.get("artifact_bytes")), _f(m.get("steps")), r.machine, r.dataset or "–", ",".join(r.tags))
    return t


def run_text(rec: Any) -> str:
    d = rec.full()
    lines = [f"run {rec.run_id} ({rec.kind}) {rec.created}",
             f"  label       {label_of(rec)}",
             f"  config hash {rec.config_hash}",
             f"  preset {rec.preset}  seed {rec.seed}  dataset {rec.dataset}  machine {rec.machine}",
             f"  git {rec.git_commit or '–'}{' (dirty)' if rec.dirty else ''}  tags {', '.join(rec.tags) or '–'}",
             f"  run dir {rec.run_dir}", "  metrics:"]
    lines += [f"    {k:<24} {_f(v, 6)}" for k, v in sorted(rec.metrics.items())]
    lines.append(f"  curves: {len(rec.curves.get('train', []))} train points, {len(rec.curves.get('val', []))} val points")
    lines.append("  hardware: " + json.dumps(d["hardware"]))
    lines.append("  versions: " + json.dumps(d["versions"]))
    return "\n".join(lines)


def leaderboard_table(rows: list[dict[str, Any]], metric: str) -> Table:
    """Ranked configurations; ``*`` after n: fewer seeds than a result needs; ``ref``: the row p is against
    (:func:`pgolf.track.leaderboard.notes` gives the lines to print under it)."""
    t = Table(title=f"leaderboard: {metric} (mean ± std over seeds; p = one-sided Welch vs the reference)")
    for col in ("#", "config", "label", "n", metric, "p vs ref", "seeds"):
        t.add_column(col, overflow="fold", justify="right" if col in ("#", "n", metric, "p vs ref") else "left")
    for i, r in enumerate(rows, 1):
        p = r["p_vs_best"]
        t.add_row(str(i), r["config_hash"][:12], r["label"], f"{r['n']}{'' if r.get('enough_seeds', True) else ' *'}",
                  _ms(r["mean"], r["std"]), "ref" if r.get("reference") else "–" if p is None else f"{p:.3g}",
                  ",".join(map(str, r["seeds"])))
    return t


def compare_table(rows: list[dict[str, Any]], diff: dict[str, list[Any]], metric: str,
                  other: dict[str, list[Any]] | None = None) -> list[Any]:
    """The comparison, the result-changing fields that differ, and one line naming the fields that differ
    but do not change a result (``other``: seed, paths, threads …)."""
    t = Table(title=f"{metric}: each against the first (p = one-sided Welch)")
    for col in ("", "config", "label", "n", metric, "Δ vs first", "p lower", "p higher"):
        t.add_column(col, overflow="fold")
    for i, r in enumerate(rows):
        t.add_row(chr(ord("A") + i) if i < 26 else str(i), (r["config_hash"] or "")[:12], r["label"] or "–",
                  str(r["n"]), _ms(r["mean"], r["std"]), _f(r.get("delta")), _f(r.get("p_lower"), 3),
                  _f(r.get("p_higher"), 3))
    tables: list[Any] = [t]
    if diff:
        d = Table(title="result-changing config fields that differ")
        d.add_column("field")
        for i in range(len(rows)):
            d.add_column(chr(ord("A") + i) if i < 26 else str(i), overflow="fold")
        for k, vals in diff.items():
            d.add_row(k, *["–" if v is None else ",".join(map(str, v)) if isinstance(v, list) else str(v) for v in vals])
        tables.append(d)
    elif len({r["config_hash"] for r in rows}) > 1:
        tables.append("no result-changing config field differs: the config hashes differ by dataset (or code)")
    if other:
        tables.append(f"also differ, not result-changing (not part of the config hash): {', '.join(other)}")
    return tables


def status_table(st: dict[str, Any]) -> Table:
    t = Table(title=f"sweep {st['sweep']} ({st['mode']}): {'done' if st['done'] else 'running'}"
              + (f"; selected {st['selected']}" if st.get("selected") is not None else ""))
    for col in ("unit", "round", "status", "mean", "feasible", "attempt", "owner"):
        t.add_column(col, overflow="fold")
    for u in st["units"]:
        t.add_row(u["unit"], _f(u["round"]), u["status"], _ms(u["mean"], u["std"]), _f(u["feasible"]),
                  str(u["attempt"]), u["owner"])
    for key in st["pending"]:
        t.add_row(key, "–", "pending", "–", "–", "–", "–")
    return t


def feed_table(entries: list[dict[str, Any]]) -> Table:
    t = Table(title="feed (newest first)")
    for col in ("when", "author", "kind", "message"):
        t.add_column(col, overflow="fold")
    for e in entries:
        t.add_row(e["created"][:19].replace("T", " "), e["author"], e["kind"], e["message"])
    return t
