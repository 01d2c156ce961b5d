"""Report summaries and plots against references: the Pareto front against brute force, the leaderboard
against float64 means / ddof=1 stds / a hand-written Welch test, and every figure's artists against the
data they were given (points, series counts, error bars = the seeds' std); PNG and SVG files decode."""

from __future__ import annotations

import io
import math
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from track_records import ablation_records, record

from pgolf.track import plots
from pgolf.track.summary import leaderboard, pareto_front


def _dominated(p, q) -> bool:
    return q[0] <= p[0] and q[1] <= p[1] and (q[0] < p[0] or q[1] < p[1])


def brute_front(points):
    return {i for i, p in enumerate(points) if not any(_dominated(p, q) for q in points)}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), max_size=25))
def test_pareto_front_equals_brute_force_with_ties(points):
    front = pareto_front(points)
    assert set(front) == brute_front(points)
    assert len(front) == len(set(front))
    xs = [points[i][0] for i in front]
    ys = [points[i][1] for i in front]
    assert xs == sorted(xs) and ys == sorted(ys, reverse=True)  # a front falls as bytes grow


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(1e5, 2e7), st.floats(0.8, 3.0)), max_size=40))
def test_pareto_front_equals_brute_force_floats(points):
    assert set(pareto_front(points)) == brute_front(points)


def test_leaderboard_means_stds_and_welch_p():
    recs = ablation_records()
    rows = leaderboard(recs)
    assert [r["config_hash"] for r in rows] == ["deep", "base", "wide"]  # by mean bpb
    by_hash = {}
    for r in recs:
        if "val_bpb" in r["metrics"]:
            by_hash.setdefault(r["config_hash"], []).append(r)
    for row in rows:
        group = sorted(by_hash[row["config_hash"]], key=lambda r: r["seed"])
        vals = np.array([r["metrics"]["val_bpb"] for r in group], dtype=np.float64)
        assert row["n"] == len(vals)
        assert row["mean"] == pytest.approx(vals.mean(), abs=1e-15)
        assert row["std"] == (pytest.approx(vals.std(ddof=1), abs=1e-15) if len(vals) > 1 else None)
        assert row["run_ids"] == [r["run_id"] for r in group]
        assert row["seeds"] == [r["seed"] for r in group]
        assert "running" not in row["run_ids"]  # no val_bpb: not on the leaderboard
    # Welch by hand: t = Δ / sqrt(va/na + vb/nb), Welch–Satterthwaite df, one-sided upper tail
    from scipy.stats import t as student_t

    a = np.array([1.2210, 1.2230, 1.2200])
    b = np.array([1.2105, 1.2150, 1.2121])
    va, vb = a.var(ddof=1) / 3, b.var(ddof=1) / 3
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)
    assert rows[0]["p_vs_best"] is None
    assert rows[1]["p_vs_best"] == pytest.approx(student_t.sf(t, df), rel=1e-9)
    assert rows[2]["p_vs_best"] is None  # one run: no test
    # labels: those of `pgolf leaderboard` (the preset and the result-changing fields that depart from it)
    assert {r["config_hash"]: r["label"] for r in rows} == {
        "base": "tiny +model.num_layers=9", "deep": "tiny +model.num_layers=11", "wide": "tiny +model.num_layers=10"}


def test_the_report_leaderboard_is_the_registry_leaderboard_relabelled():
    from pgolf.track import leaderboard as lb

    recs = ablation_records()
    mine, theirs = leaderboard(recs), lb.leaderboard(recs)
    assert [{k: v for k, v in r.items() if k != "label"} for r in mine] == \
        [{k: v for k, v in r.items() if k != "label"} for r in theirs]


def test_leaderboard_skips_nan_and_missing():
    recs = [record("a", "x", 1, 1.0), record("b", "x", 2, float("nan")), record("c", "y", 1, None)]
    rows = leaderboard(recs)
    assert len(rows) == 1 and rows[0]["run_ids"] == ["a"] and rows[0]["n"] == 1


def _by_gid(ax, gid):
    found = [a for a in [*ax.lines, *ax.collections] if a.get_gid() == gid]
    assert len(found) == 1, (gid, [a.get_gid() for a in [*ax.lines, *ax.collections]])
    return found[0]


def test_curves_figure_has_one_line_per_run_and_series():
    recs = ablation_records()
    fig = plots.curves_figure(recs)
    ax_loss, ax_bpb = fig.axes
    with_train = [r for r in recs if r["curves"]["train"]]
    with_val = [r for r in recs if r["curves"]["val"]]
    assert len(ax_loss.get_lines()) == len(with_train) == 8
    assert len(ax_bpb.get_lines()) == len(with_val) == 7
    for r in with_train:
        line = _by_gid(ax_loss, f"train:{r['run_id']}")
        assert list(line.get_xdata()) == [p[0] for p in r["curves"]["train"]]
        assert list(line.get_ydata()) == [p[1] for p in r["curves"]["train"]]
    for r in with_val:
        line = _by_gid(ax_bpb, f"val:{r['run_id']}")
        assert list(line.get_ydata()) == [p[1] for p in r["curves"]["val"]]
    # seeds of one configuration share a colour, configurations differ
    col = {r["run_id"]: _by_gid(ax_loss, f"train:{r['run_id']}").get_color() for r in with_train}
    assert col["base-s1337"] == col["base-s42"] == col["running"] != col["deep-s42"] != col["wide-s1337"]
    assert plots.curves_figure([record("x")]) is None  # no curves, no figure


def test_pareto_figure_points_front_and_cap():
    recs = ablation_records()
    fig = plots.pareto_figure(recs, cap=16_000_000)
    (ax,) = fig.axes
    runs = [r for r in recs if "val_bpb" in r["metrics"]]
    pts = [(r["metrics"]["artifact_bytes"], r["metrics"]["val_bpb"]) for r in runs]
    offsets = _by_gid(ax, "runs").get_offsets()
    assert [tuple(map(float, o)) for o in offsets] == [(float(x), y) for x, y in pts]
    front = _by_gid(ax, "pareto")
    ref = sorted(brute_front(pts), key=lambda i: pts[i])
    assert list(front.get_xdata()) == [pts[i][0] for i in ref]
    assert list(front.get_ydata()) == [pts[i][1] for i in ref]
    assert front.get_drawstyle() == "steps-post"
    assert list(_by_gid(ax, "cap").get_xdata()) == [16_000_000, 16_000_000]


def test_time_figure_curves_and_final_points():
    recs = ablation_records()
    fig = plots.time_figure(recs)
    (ax,) = fig.axes
    with_val = [r for r in recs if r["curves"]["val"]]
    for r in with_val:
        assert list(_by_gid(ax, f"val:{r['run_id']}").get_xdata()) == [p[2] for p in r["curves"]["val"]]
    final = [r for r in recs if "val_bpb" in r["metrics"]]
    got = [tuple(map(float, o)) for o in _by_gid(ax, "final").get_offsets()]
    assert got == [(r["metrics"]["train_seconds"], r["metrics"]["val_bpb"]) for r in final]


def test_ablation_bars_are_means_and_error_bars_are_the_seed_std():
    from matplotlib.container import BarContainer, ErrorbarContainer

    recs = ablation_records()
    rows = leaderboard(recs)
    fig = plots.ablation_figure(rows)
    (ax,) = fig.axes
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    errs = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 1 and len(errs) == 1
    assert [p.get_width() for p in bars[0].patches] == pytest.approx([r["mean"] for r in rows], abs=1e-12)
    segments = errs[0].lines[2][0].get_segments()
    assert len(segments) == len(rows)
    for seg, row in zip(segments, rows, strict=True):
        seeds = np.array([r["metrics"]["val_bpb"] for r in recs if r["run_id"] in row["run_ids"]])
        want = seeds.std(ddof=1) if len(seeds) > 1 else 0.0
        (x0, y0), (x1, y1) = seg
        assert y0 == y1
        assert (x1 - x0) / 2 == pytest.approx(want, abs=1e-12)
        assert (x1 + x0) / 2 == pytest.approx(row["mean"], abs=1e-12)
    assert [t.get_text()[:2] for t in ax.get_yticklabels()] == ["1.", "2.", "3."]
    assert plots.ablation_figure([]) is None


def test_saved_png_and_svg_are_valid(tmp_path):
    from PIL import Image

    recs = ablation_records()
    written = plots.write_plots(recs, leaderboard(recs), tmp_path)
    assert set(written) == {"curves", "pareto", "time", "ablation"}
    for name, files in written.items():
        png = files["png"].read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        img = Image.open(io.BytesIO(png))
        img.load()
        assert img.size[0] >= 400 and img.size[1] >= 150
        assert len(np.unique(np.asarray(img.convert("L")))) > 10  # drawn, not blank
        root = ET.fromstring(files["svg"].read_bytes())
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        assert root.findall(".//{http://www.w3.org/2000/svg}path"), name
    svg = ET.fromstring(written["pareto"]["svg"].read_bytes())
    ids = {el.get("id") for el in svg.iter()}
    assert {"pareto", "cap", "runs"} <= ids
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    # no timestamps or version strings: the same figure saves to the same bytes
    again = plots.save_figure(plots.pareto_figure(recs), tmp_path / "again")
    assert again["png"].read_bytes() == written["pareto"]["png"].read_bytes()
    assert again["svg"].read_bytes() == written["pareto"]["svg"].read_bytes()


def test_no_pyplot_and_no_matplotlib_at_import():
    code = ("import sys, tempfile\n"
            "import pgolf.track.report, pgolf.track.plots, pgolf.commands.report, pgolf.cli\n"
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported at package import time'\n"
            "sys.path.insert(0, 'tests')\n"
            "from track_records import ablation_records\n"
            "pgolf.track.report.write_report(ablation_records(), tempfile.mkdtemp())\n"
            "assert 'matplotlib' in sys.modules and 'matplotlib.pyplot' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_labels_are_the_leaderboards_and_stay_unique():
    from pgolf.track.leaderboard import label_of

    recs = [record("a", "t1", config={"model.num_layers": 4, "data.path": "/x"}),
            record("b", "t2", config={"model.num_layers": 4, "data.path": "/y"}),  # another dataset: another hash
            record("c", "t3", preset="cpu", config={"model.num_layers": 2, "train.seed": 5})]
    rows = {r["config_hash"]: r["label"] for r in leaderboard(recs)}
    assert rows == {"t1": "tiny +model.num_layers=4 [t1]", "t2": "tiny +model.num_layers=4 [t2]",
                    "t3": label_of(recs[2])}
    assert "train.seed" not in rows["t3"]


def test_an_empty_curve_panel_says_no_data():
    recs = [record("a", train=[[1, 6.0, 0.1], [5, 5.0, 0.5]]), record("b", train=[[1, 6.1, 0.1]])]  # no val curve
    ax_loss, ax_bpb = plots.curves_figure(recs).axes
    notes = [t for t in ax_bpb.texts if t.get_gid() == "nodata"]
    assert len(notes) == 1 and notes[0].get_text().startswith("no data") and not ax_bpb.get_lines()
    assert not [t for t in ax_loss.texts if t.get_gid() == "nodata"] and len(ax_loss.get_lines()) == 2


def test_pareto_axis_spans_the_data_and_marks_the_cap_only_near_it():
    small = [record(f"s{i}", f"h{i}", i, 3.0 + i / 100, artifact_bytes=160_000 + 4_000 * i) for i in range(3)]
    (ax,) = plots.pareto_figure(small, cap=16_000_000).axes
    lo, hi = ax.get_xlim()
    assert lo < 160_000 and 168_000 < hi < 200_000  # the points spread over the axis, not squeezed at 0
    assert not [a for a in ax.lines if a.get_gid() == "cap"]
    (note,) = [t for t in ax.texts if t.get_gid() == "cap-note"]
    assert "16,000,000-byte cap is off this axis" in note.get_text() and "168,000 bytes = 1.1% of it" in note.get_text()
    # near the cap (ablation records: 14.9M–16.4M) the cap is drawn inside the axis
    (ax,) = plots.pareto_figure(ablation_records(), cap=16_000_000).axes
    lo, hi = ax.get_xlim()
    assert lo < 16_000_000 < hi and not [t for t in ax.texts if t.get_gid() == "cap-note"]
    # every run far over the cap: said so
    (ax,) = plots.pareto_figure([record("x", artifact_bytes=40_000_000)], cap=16_000_000).axes
    (note,) = [t for t in ax.texts if t.get_gid() == "cap-note"]
    assert "every run is over the cap" in note.get_text()
