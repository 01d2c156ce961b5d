"""Plots of run records and leaderboard rows (``pgolf.track.summary`` describes both), with matplotlib.

Each ``*_figure`` function takes plain dicts and returns a ``matplotlib.figure.Figure`` (``None`` when
there is nothing to draw); :func:`save_figure` writes it as PNG and SVG. Figures are built with the
object API on an Agg canvas, never through ``pyplot`` (no global state, no GUI backend), and
matplotlib is imported only inside these functions. Artists carry a ``gid`` (``"pareto"``, ``"cap"``,
``"runs"``, ``"final"``) so the tests and SVG readers can find them.

- curves: training loss and validation bpb against the step, one line per run; a panel without data
  says so (``gid="nodata"``), e.g. runs that never validated during training;
- Pareto: every run's final ``val_bpb`` against ``artifact_bytes``, the non-dominated front as a step
  line (``summary.pareto_front``); the x axis spans the data, and the 16,000,000-byte cap is a vertical
  line when it lies near the data (from 0.8 × the smallest to 1.25 × the largest artifact), else a note
  (``gid="cap-note"``) says how far away it is;
- time: validation bpb against training seconds (the logged curve of each run, and its final
  post-export ``val_bpb`` at ``train_seconds``);
- ablation: one horizontal bar per leaderboard row at its mean with the row's ``std`` as the error bar.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pgolf import fileio
from pgolf.track.summary import pareto_front, scored

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CAP_BYTES = 16_000_000
CAP_NEAR = (0.8, 1.25)
"""The Pareto plot draws the cap when it lies between these multiples of the smallest and largest artifact."""
PALETTE = "tab10"
NO_DATA = {"train": "no data: no training steps logged",
           "val": "no data: no run validated during training\n(train.val_every; final scores: the other plots)"}


def _figure(width: float = 8.0, height: float = 4.5) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def group_colors(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One colour per ``config_hash``, in order of first appearance (seeds of a config share it)."""
    from matplotlib import colormaps

    cmap = colormaps[PALETTE]
    out: dict[str, Any] = {}
    for r in records:
        h = str(r.get("config_hash"))
        if h not in out:
            out[h] = cmap(len(out) % cmap.N)
    return out


def _no_data(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=10, color="#777",
            gid="nodata")
    ax.set_xticks([])
    ax.set_yticks([])


def _color(colors: dict[str, Any], r: dict[str, Any]) -> Any:
    return colors[str(r.get("config_hash"))]


def curves_figure(records: Sequence[dict[str, Any]]) -> Figure | None:
    """Left: train loss vs step; right: validation bpb vs step; one line per run with points."""
    have = [r for r in records if any((r.get("curves") or {}).get(k) for k in ("train", "val"))]
    if not have:
        return None
    colors = group_colors(records)
    fig = _figure(10, 4)
    ax_loss, ax_bpb = fig.subplots(1, 2)
    for ax, key, ylabel in ((ax_loss, "train", "train loss (nats)"), (ax_bpb, "val", "val bpb")):
        for r in have:
            pts = (r.get("curves") or {}).get(key) or []
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 40 else None,
                        color=_color(colors, r), label=r["run_id"], gid=f"{key}:{r['run_id']}")
        if not any((r.get("curves") or {}).get(key) for r in have):
            _no_data(ax, NO_DATA[key])
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    ax_loss.set_title("training loss")
    ax_bpb.set_title("validation bpb during training")
    if len(have) <= 12:
        ax_loss.legend(fontsize=7)
    return fig


def pareto_figure(records: Sequence[dict[str, Any]], cap: int = CAP_BYTES) -> Figure | None:
    """Final val_bpb vs artifact bytes of every run, the Pareto front and the byte cap."""
    runs = [r for r in scored(records) if isinstance(r["metrics"].get("artifact_bytes"), (int, float))]
    if not runs:
        return None
    colors = group_colors(records)
    pts = [(float(r["metrics"]["artifact_bytes"]), float(r["metrics"]["val_bpb"])) for r in runs]
    front = pareto_front(pts)
    fig = _figure()
    ax = fig.subplots()
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], c=[_color(colors, r) for r in runs], s=30, zorder=3,
               gid="runs", label="runs")
    ax.step([pts[i][0] for i in front], [pts[i][1] for i in front], where="post", color="black", lw=1.2,
            gid="pareto", label="Pareto front")
    lo, hi = min(p[0] for p in pts), max(p[0] for p in pts)
    near = CAP_NEAR[0] * lo <= cap <= CAP_NEAR[1] * hi
    if near:
        ax.axvline(cap, color="tab:red", ls="--", lw=1, gid="cap", label=f"cap {cap:,} bytes")
        lo, hi = min(lo, cap), max(hi, cap)
    else:
        where = f"largest artifact {hi:,.0f} bytes = {hi / cap:.1%} of it" if hi < cap else \
            f"smallest artifact {lo:,.0f} bytes = {lo / cap:.0%} of it: every run is over the cap"
        ax.text(1.0, 1.01, f"the {cap:,}-byte cap is off this axis\n({where})", transform=ax.transAxes,
                ha="right", va="bottom", fontsize=8, color="tab:red", gid="cap-note")
    span = (hi - lo) or max(hi * 0.05, 1.0)
    ax.set_xlim(lo - 0.06 * span, hi + 0.06 * span)
    from matplotlib.ticker import FuncFormatter

    unit, name = (1e6, "M") if hi >= 1e6 else (1e3, "k")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x / unit:g}{name}"))
    ax.set_xlabel(f"artifact bytes (code + compressed model; {name} = 10^{6 if name == 'M' else 3})")
    ax.set_ylabel("val bpb (post-export)")
    ax.set_title("bpb vs artifact bytes", loc="left" if not near else "center")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def time_figure(records: Sequence[dict[str, Any]]) -> Figure | None:
    """Validation bpb vs training seconds: each run's logged curve, and its final val_bpb at train_seconds."""
    curves = [r for r in records if (r.get("curves") or {}).get("val")]
    final = [r for r in scored(records) if isinstance(r["metrics"].get("train_seconds"), (int, float))]
    if not curves and not final:
        return None
    colors = group_colors(records)
    fig = _figure()
    ax = fig.subplots()
    for r in curves:
        pts = r["curves"]["val"]
        ax.plot([p[2] for p in pts], [p[1] for p in pts], color=_color(colors, r), alpha=0.7,
                marker="." if len(pts) < 40 else None, gid=f"val:{r['run_id']}")
    if final:
        ax.scatter([r["metrics"]["train_seconds"] for r in final], [r["metrics"]["val_bpb"] for r in final],
                   c=[_color(colors, r) for r in final], marker="D", s=30, zorder=3, gid="final",
                   label="final val_bpb (post-export)")
        ax.legend(fontsize=8)
    ax.set_xlabel("training seconds")
    ax.set_ylabel("val bpb")
    ax.set_title("bpb vs training time")
    ax.grid(alpha=0.3)
    return fig


def _short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def ablation_figure(rows: Sequence[dict[str, Any]]) -> Figure | None:
    """One bar per leaderboard row (best at the top) at its mean, the row's std as error bar (0 if None)."""
    if not rows:
        return None
    means = [float(r["mean"]) for r in rows]
    errs = [float(r["std"]) if r.get("std") is not None else 0.0 for r in rows]
    labels = [_short(f"{i}. {r.get('label') or r['config_hash']}") for i, r in enumerate(rows, 1)]
    fig = _figure(8, max(2.0, 0.45 * len(rows) + 1.2))
    ax = fig.subplots()
    ys = list(range(len(rows)))
    ax.barh(ys, means, xerr=errs, color="tab:blue", alpha=0.8, capsize=4, error_kw={"ecolor": "black"})
    ax.set_yticks(ys, labels, fontsize=8)
    ax.invert_yaxis()
    lo = min(m - e for m, e in zip(means, errs, strict=True))
    hi = max(m + e for m, e in zip(means, errs, strict=True))
    pad = max((hi - lo) * 0.25, 1e-3 * max(abs(hi), 1.0))
    ax.set_xlim(lo - pad, hi + 2 * pad)
    for y, m, e, r in zip(ys, means, errs, rows, strict=True):
        ax.annotate(f"{m:.4f} ± {e:.4f} (n={r['n']})", (m + e, y), xytext=(4, 0), textcoords="offset points",
                    va="center", fontsize=7)
    ax.set_xlabel("val bpb, mean ± std over seeds (axis does not start at 0)")
    ax.set_title("ablation: mean bpb per configuration")
    ax.grid(axis="x", alpha=0.3)
    return fig


def save_figure(fig: Figure, stem: str | Path) -> dict[str, Path]:
    """Write ``stem.png`` and ``stem.svg`` atomically (no timestamps or version strings inside)."""
    import matplotlib

    stem = Path(stem)
    out = {}
    for fmt, meta in (("png", {"Software": None}), ("svg", {"Date": None, "Creator": None})):
        buf = io.BytesIO()
        with matplotlib.rc_context({"svg.hashsalt": "pgolf"}):  # SVG element ids from a fixed salt
            fig.savefig(buf, format=fmt, metadata=meta)
        path = stem.with_suffix(f".{fmt}")
        fileio.write_bytes(path, buf.getvalue())
        out[fmt] = path
    return out


def write_plots(records: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]], out_dir: str | Path,
                cap: int = CAP_BYTES) -> dict[str, dict[str, Path] | None]:
    """Every plot into ``out_dir`` as ``<name>.png``/``.svg``; ``None`` for a plot without data."""
    figures = {
        "curves": curves_figure(records),
        "pareto": pareto_figure(records, cap),
        "time": time_figure(records),
        "ablation": ablation_figure(rows),
    }
    return {name: None if fig is None else save_figure(fig, Path(out_dir) / name) for name, fig in figures.items()}
