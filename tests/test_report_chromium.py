"""The report in a real browser: headless Chromium opens ``index.html`` from ``file://`` (no server, no
network), and the page's own check script reports what rendered — every table's rows, every image
decoded (``complete && naturalWidth > 0``), no script error, failed resource or CSP violation — and a
hostile run tag did not execute. A broken copy (one image deleted) must be reported as broken, so the
check can fail. A screenshot is saved and must be a non-blank PNG.

Skips when Chromium is absent, unless ``PGOLF_REQUIRE_CHROMIUM=1`` (``.ci/run`` sets it; ``.ci/chromium.sh``
installs Debian's ``chromium``), where it fails instead.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from track_records import ablation_records, record

from pgolf.config import apply_overrides
from pgolf.presets import get_preset
from pgolf.track.report import write_report
from pgolf.track.rundirs import records_from_run_dirs
from pgolf.track.summary import leaderboard

TIMEOUT = 90
PWN = '<script>document.documentElement.setAttribute("data-pwned","1")</script>'
PWN_IMG = '<img src=x onerror="document.documentElement.setAttribute(\'data-pwned\',\'2\')">'


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe:
        return exe
    if os.environ.get("PGOLF_REQUIRE_CHROMIUM") == "1":
        pytest.fail("PGOLF_REQUIRE_CHROMIUM=1 but no chromium on PATH (install it: bash .ci/chromium.sh)")
    pytest.skip("headless Chromium not installed (apt-get install chromium, or bash .ci/chromium.sh)")


def _browse(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           "--disable-extensions", "--disable-background-networking", "--hide-scrollbars",
           f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, check=False)


def _root_attrs(dom: str) -> dict[str, str]:
    m = re.search(r"<html\b[^>]*>", dom)
    assert m, dom[:500]

    class Root(HTMLParser):
        attrs: dict[str, str] = {}

        def handle_starttag(self, tag, attrs):
            if tag == "html":
                Root.attrs = {k: v or "" for k, v in attrs}

    Root().feed(m.group(0))
    return Root.attrs


def _text(dom: str) -> str:
    class Text(HTMLParser):
        parts: list[str] = []

        def handle_data(self, data):
            Text.parts.append(data)

    Text.parts = []
    Text(convert_charrefs=True).feed(dom)
    return "".join(Text.parts)


@pytest.fixture(scope="module")
def report_dir(tiny_data, tmp_path_factory):
    """A report of two real tiny runs (two seeds) plus synthetic ablation records and a hostile one."""
    import torch

    from pgolf.runner import run

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("chromium")
    try:
        for seed in (1, 2):
            cfg = apply_overrides(get_preset("tiny"), [f"data.path={tiny_data}", "model.vocab_size=384",
                                                       "train.iterations=8", "train.val_every=4", f"train.seed={seed}"])
            run(cfg, root / "runs" / f"tiny-s{seed}", progress=False)
    finally:
        torch.set_num_threads(threads)
    recs = records_from_run_dirs([root / "runs"]) + ablation_records()
    recs.append(record(f"evil{PWN_IMG}", "evil", 5, 1.3, tags=[PWN], preset=PWN))
    out = root / "report"
    write_report(recs, out, title="pgolf report (chromium test)")
    return out, recs


def test_report_renders_in_headless_chromium(report_dir, tmp_path):
    exe = _chromium()
    out, recs = report_dir
    res = _browse(exe, tmp_path / "profile", "--virtual-time-budget=10000", "--dump-dom", (out / "index.html").as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    attrs = _root_attrs(res.stdout)
    assert attrs.get("data-status") == "rendered", attrs
    assert attrs.get("data-errors") == "0", attrs.get("data-error-list")
    assert attrs.get("data-images") == "4/4", attrs  # curves, pareto, time, ablation
    n_rows = len(leaderboard(recs))
    assert attrs.get("data-rows") == f"leaderboard-table:{n_rows} runs-table:{len(recs)}", attrs
    assert "data-pwned" not in attrs  # the hostile tag and preset rendered as text, nothing ran
    text = _text(res.stdout)
    for r in recs:
        assert r["run_id"] in text  # as rendered text (the hostile id included)
    assert PWN in text

    # the screenshot: a PNG of the window size that is not blank
    from PIL import Image

    shot = tmp_path / "report.png"
    res = _browse(exe, tmp_path / "profile2", "--window-size=1280,2200", "--virtual-time-budget=10000",
                  f"--screenshot={shot}", (out / "index.html").as_uri())
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(data)).convert("RGB")
    assert img.size == (1280, 2200)
    px = np.asarray(img)
    assert len(np.unique(px.reshape(-1, 3), axis=0)) > 50  # text, tables and plots, not one colour
    assert (px.min(axis=2) < 200).mean() > 0.02  # a fair share of non-white pixels
    keep = os.environ.get("PGOLF_REPORT_SCREENSHOT")
    if keep:
        shutil.copyfile(shot, keep)


def test_the_browser_check_reports_a_broken_page(report_dir, tmp_path):
    """Delete one image from a copy: the same check must see 3/4 images and an error."""
    exe = _chromium()
    out, _recs = report_dir
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / "pareto.png").unlink()
    res = _browse(exe, tmp_path / "profile", "--virtual-time-budget=10000", "--dump-dom", (broken / "index.html").as_uri())
    attrs = _root_attrs(res.stdout)
    assert attrs.get("data-status") == "rendered"
    assert attrs.get("data-images") == "3/4"
    assert int(attrs.get("data-errors", "0")) >= 1 and "pareto.png" in attrs.get("data-error-list", "")


def test_missing_chromium_skips_locally_and_fails_in_ci(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("PGOLF_REQUIRE_CHROMIUM", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        _chromium()
    monkeypatch.setenv("PGOLF_REQUIRE_CHROMIUM", "1")
    with pytest.raises(pytest.fail.Exception, match="PGOLF_REQUIRE_CHROMIUM=1"):
        _chromium()
