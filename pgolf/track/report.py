"""The static HTML report: ``index.html`` plus its plots (PNG shown, SVG linked) in one directory.

It opens from disk (``file://``) with no server and no network: no external scripts, styles, fonts
or images, and a Content-Security-Policy (``default-src 'none'``, images from the report's own
directory, the one inline style and script allowed by their SHA-256) so that even a string that
escaped escaping could not run or fetch anything. Every string taken from the data goes through
``html.escape``. Sections: leaderboard (``pgolf.track.summary.leaderboard`` unless the registry gives
one), plots (``pgolf.track.plots``), the run table, and each run's metrics and config.

The page's own small script records what a browser saw into attributes of ``<html>``, which the
headless-Chromium test reads from ``--dump-dom``: ``data-status="rendered"`` after ``load``,
``data-images="ok/total"`` (images with ``complete && naturalWidth > 0``), ``data-rows`` (body rows
per table id) and ``data-errors`` (script errors, failed resources, CSP violations; the messages in
``data-error-list``).
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pgolf import fileio
from pgolf.track import plots, summary
from pgolf.track.leaderboard import MIN_SEEDS, SEED_KINDS, notes
from pgolf.track.rundirs import records_from_run_dirs  # noqa: F401  (the loader ``pgolf report --runs`` uses)

INDEX = "index.html"

CHECK_SCRIPT = """(function () {
  var root = document.documentElement, errors = [];
  function note(msg) {
    errors.push(String(msg));
    root.setAttribute("data-errors", String(errors.length));
    root.setAttribute("data-error-list", errors.join(" | ").slice(0, 4000));
  }
  window.addEventListener("error", function (e) {
    var t = e.target;
    if (t && t !== window && t.tagName) { note("resource " + t.tagName + " " + (t.src || t.href || "")); }
    else { note("script " + e.message + " at " + e.filename + ":" + e.lineno); }
  }, true);
  document.addEventListener("securitypolicyviolation", function (e) {
    note("csp " + e.violatedDirective + " " + e.blockedURI);
  });
  window.addEventListener("load", function () {
    var imgs = document.images, ok = 0, rows = [], tables = document.querySelectorAll("table[id]");
    for (var i = 0; i < imgs.length; i++) {
      if (imgs[i].complete && imgs[i].naturalWidth > 0) { ok++; } else { note("image " + imgs[i].src); }
    }
    for (var j = 0; j < tables.length; j++) {
      var body = tables[j].tBodies[0];
      rows.push(tables[j].id + ":" + (body ? body.rows.length : 0));
    }
    root.setAttribute("data-images", ok + "/" + imgs.length);
    root.setAttribute("data-rows", rows.join(" "));
    root.setAttribute("data-status", "rendered");
  });
})();"""

STYLE = """body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .5em 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.over td { background: #fde8e8; } tr.few td { color: #777; } .muted { color: #777; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
details { margin: .3em 0; } summary { cursor: pointer; } code { font-size: 12px; }
.kv { display: inline-block; margin-right: 2em; vertical-align: top; } .wide { overflow-x: auto; }"""

PLOT_CAPTIONS = {
    "curves": "Training loss and validation bpb against the step, one line per run.",
    "pareto": "Final val_bpb against artifact bytes; the black step line is the Pareto front, "
              "the dashed red line the 16,000,000-byte cap.",
    "time": "Validation bpb against training seconds (logged curve; diamonds: final post-export val_bpb).",
    "ablation": "Mean val_bpb per configuration; error bars are the standard deviation over seeds.",
}

RUN_COLUMNS = ("run id", "kind", "val_bpb", "val_bpb_raw", "pre-quant bpb", "artifact bytes", "seed", "preset",
               "config", "train s", "steps", "tok/s", "created", "tags", "dataset", "machine", "commit")
HASH_CHARS = 12
"""Characters of a config hash shown in the tables (the full hash is the cell's ``title``)."""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _num(v: Any, nd: int = 4) -> str:
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
        return "–" if v is None else _e(v)
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:.{nd}f}" if math.isfinite(v) else _e(v)


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


def _csp() -> str:
    return (f"default-src 'none'; img-src 'self'; style-src '{_sha256(STYLE)}'; "
            f"script-src '{_sha256(CHECK_SCRIPT)}'; base-uri 'none'; form-action 'none'")


def _anchor(run_id: str) -> str:
    return "run-" + hashlib.sha256(run_id.encode("utf-8")).hexdigest()[:12]


def _table(table_id: str, head: Sequence[str], rows: list[str], empty: str) -> str:
    if not rows:
        return f'<p class="muted">{_e(empty)}</p>\n<table id="{table_id}"><tbody></tbody></table>'
    ths = "".join(f"<th>{_e(h)}</th>" for h in head)
    return f'<table id="{table_id}">\n<thead><tr>{ths}</tr></thead>\n<tbody>\n' + "\n".join(rows) + "\n</tbody></table>"


def _hash(h: Any) -> str:
    if not h:
        return "–"
    return f'<code title="{_e(h)}">{_e(str(h)[:HASH_CHARS])}</code>'


def _when(created: Any) -> str:
    """A timestamp to the second (``2026-05-01 12:00:00``), the full one in the title."""
    if not created:
        return "–"
    return f'<span title="{_e(created)}">{_e(str(created)[:19].replace("T", " "))}</span>'


def _leaderboard_html(rows: Sequence[dict[str, Any]]) -> str:
    out = []
    for i, r in enumerate(rows, 1):
        runs = ", ".join(f'<a href="#{_anchor(str(x))}">{_e(x)}</a>' for x in r.get("run_ids") or [])
        seeds = ", ".join(_e(s) for s in r.get("seeds") or [])
        p = r.get("p_vs_best")
        p_s = "ref" if r.get("reference") else "–" if p is None else _e(f"{p:.3g}")
        few = not r.get("enough_seeds", True)
        out.append(
            f'<tr{" class=few" if few else ""}><td class="num">{i}</td><td>{_e(r.get("label"))}</td>'
            f'<td class="num">{_num(r.get("mean"), 5)}</td><td class="num">{_num(r.get("std"), 5)}</td>'
            f'<td class="num">{_num(r.get("n"))}{" *" if few else ""}</td><td class="num">{p_s}</td>'
            f'<td>{_e(r.get("preset"))}</td><td>{_hash(r.get("config_hash"))}</td><td>{seeds}</td><td>{runs}</td></tr>')
    head = ("#", "label", "mean val_bpb", "std", "n", "p vs ref", "preset", "config hash", "seeds", "runs")
    return _table("leaderboard-table", head, out, "No run has a val_bpb yet.")


def _runs_html(records: Sequence[dict[str, Any]], cap: int) -> str:
    out = []
    for r in records:
        m = r.get("metrics") or {}
        art = m.get("artifact_bytes")
        over = isinstance(art, (int, float)) and art > cap
        commit = r.get("git_commit")
        commit_s = "–" if not commit else _e(str(commit)[:10]) + (" (dirty)" if r.get("dirty") else "")
        cells = [
            ("", f'<a href="#{_anchor(str(r["run_id"]))}">{_e(r["run_id"])}</a>'), ("", _e(r.get("kind"))),
            ("num", _num(m.get("val_bpb"), 5)), ("num", _num(m.get("val_bpb_raw"), 5)),
            ("num", _num(m.get("pre_quant_val_bpb"), 5)), ("num", _num(art) + (" (over cap)" if over else "")),
            ("num", _e(r.get("seed"))), ("", _e(r.get("preset"))), ("", _hash(r.get("config_hash"))),
            ("num", _num(m.get("train_seconds"), 1)), ("num", _num(m.get("steps"))),
            ("num", _num(m.get("tokens_per_second"), 0)), ("", _when(r.get("created"))),
            ("", _e(", ".join(map(str, r.get("tags") or [])))), ("", _e(r.get("dataset"))), ("", _e(r.get("machine"))),
            ("", commit_s),
        ]
        tds = "".join(f'<td class="{c}">{v}</td>' if c else f"<td>{v}</td>" for c, v in cells)
        out.append(f'<tr{" class=over" if over else ""}>{tds}</tr>')
    return _table("runs-table", RUN_COLUMNS, out, "No runs.")


def _kv_table(pairs: dict[str, Any]) -> str:
    if not pairs:
        return '<p class="muted">none</p>'
    body = "".join(f"<tr><td><code>{_e(k)}</code></td><td>{_num(v, 6) if isinstance(v, (int, float)) else _e(v)}</td></tr>"
                   for k, v in sorted(pairs.items()))
    return f"<table><tbody>{body}</tbody></table>"


def _details_html(records: Sequence[dict[str, Any]]) -> str:
    out = []
    for r in records:
        curves = r.get("curves") or {}
        npts = f"{len(curves.get('train') or [])} train / {len(curves.get('val') or [])} val curve points"
        out.append(
            f'<details id="{_anchor(str(r["run_id"]))}"><summary><code>{_e(r["run_id"])}</code> '
            f'<span class="muted">{_e(r.get("run_dir") or "")} · {_e(npts)}</span></summary>\n'
            f'<div class="kv"><h4>metrics</h4>{_kv_table(r.get("metrics") or {})}</div>'
            f'<div class="kv"><h4>config</h4>{_kv_table(r.get("config") or {})}</div></details>')
    return "\n".join(out)


def _plots_html(written: dict[str, dict[str, Path] | None]) -> str:
    out = []
    for name, files in written.items():
        if files is None:
            out.append(f'<p class="muted">{_e(name)}: no data to plot.</p>')
            continue
        png, svg = files["png"].name, files["svg"].name
        out.append(f'<figure id="plot-{_e(name)}"><img src="{_e(png)}" alt="{_e(name)} plot">'
                   f'<figcaption>{_e(PLOT_CAPTIONS.get(name, name))} <a href="{_e(svg)}">SVG</a></figcaption></figure>')
    return "\n".join(out)


def render_html(records: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]],
                written: dict[str, dict[str, Path] | None], *, title: str, cap: int = plots.CAP_BYTES,
                min_seeds: int = MIN_SEEDS) -> str:
    """The text of ``index.html`` for these records, leaderboard rows and written plot files."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    n_scored = len(summary.scored(records))
    return f"""<!DOCTYPE html>
<html lang="en" data-status="loading" data-errors="0">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_e(_csp())}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{STYLE}</style>
<script>{CHECK_SCRIPT}</script>
</head>
<body>
<h1>{_e(title)}</h1>
<p class="muted">{len(records)} runs ({n_scored} with val_bpb), {len(rows)} configurations · generated {_e(stamp)} by pgolf ·
byte cap {cap:,} · <a href="#leaderboard">leaderboard</a> · <a href="#plots">plots</a> · <a href="#runs">runs</a></p>
<h2 id="leaderboard">Leaderboard</h2>
<p class="muted">Configurations (same config hash; one run per seed, re-scorings by <code>pgolf eval</code> not
counted) by mean val_bpb, those with {min_seeds}+ seeds first; std over seeds (ddof = 1); p vs ref: one-sided
Welch t-test that the configuration is worse than the reference.</p>
{_leaderboard_html(rows)}
{"".join(f'<p class="note">{_e(line)}</p>' for line in notes(rows, min_seeds)) if rows else ""}
<h2 id="plots">Plots</h2>
{_plots_html(written)}
<h2 id="runs">Runs</h2>
<div class="wide">{_runs_html(records, cap)}</div>
<h3>Run details</h3>
{_details_html(records)}
</body>
</html>
"""


def plotted(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records the plots draw: training results and runs in progress; an ``eval`` or ``export`` record
    repeats its run's curves (and an eval's score is a re-scoring, not a seed)."""
    return [r for r in records if r.get("kind") in SEED_KINDS or r.get("kind") in ("train", None)]


def write_report(records: list[dict[str, Any]], out_dir: str | Path, *, leaderboard: list[dict[str, Any]] | None = None,
                 title: str = "pgolf report", cap: int = plots.CAP_BYTES) -> Path:
    """Write the report into ``out_dir`` (plots first, ``index.html`` last, each atomically) and return
    the path of ``index.html``. Without ``leaderboard`` one is computed from the records' config hashes
    (:func:`pgolf.track.summary.leaderboard`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = summary.leaderboard(records) if leaderboard is None else leaderboard
    ordered = sorted(records, key=lambda r: (str(r.get("created") or ""), str(r["run_id"])))
    written = plots.write_plots(plotted(ordered), rows, out, cap)
    index = out / INDEX
    fileio.write_text(index, render_html(ordered, rows, written, title=title, cap=cap))
    return index
