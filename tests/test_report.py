"""Run records from real run directories (curves parsed from the trainer's own log, across a kill and a
resume) and the static report: every run id present, every hostile string escaped, no network reference
(every src/href points inside the report), the standalone leaderboard, and `pgolf report` on the CLI."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from track_records import ablation_records, record

from pgolf.cli import main
from pgolf.config import RunConfig, apply_overrides, flatten
from pgolf.data.prepare import prepare_data
from pgolf.errors import DataError
from pgolf.presets import get_preset
from pgolf.track.report import write_report
from pgolf.track.rundirs import config_hash, parse_log, records_from_run_dirs
from pgolf.track.summary import leaderboard
from pgolf.train.log import RunLog, hardware
from pgolf.train.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(data_dir, *extra):
    return apply_overrides(get_preset("tiny"), [f"data.path={data_dir}", "model.vocab_size=384", "train.iterations=8",
                                                "train.log_every=1", "train.val_every=4", *extra])


@pytest.fixture(scope="module")
def real_runs(tiny_data, tmp_path_factory):
    """Four real tiny runs (two configurations × two seeds) under one directory."""
    from pgolf.runner import run

    root = tmp_path_factory.mktemp("runs")
    for name, extra in (("a-s1", ["train.seed=1"]), ("a-s2", ["train.seed=2"]),
                        ("b-s1", ["train.seed=1", "train.iterations=6"]), ("b-s2", ["train.seed=2", "train.iterations=6"])):
        run(_cfg(tiny_data, *extra), root / name, progress=False)
    return root


def _train_logged(cfg, run_dir, data, **kw):
    log = RunLog(Path(run_dir) / "train.log", echo=False)
    log.header(cfg.to_json())
    try:
        return train(cfg, run_dir, data=data, log=log, progress=False, **kw)
    finally:
        log.close()


def _f4(x: float) -> float:
    return float(f"{x:.4f}")  # what the log line prints


def test_log_curves_match_the_trainer_across_kill_resume_and_restart(tiny_data, tmp_path):
    cfg = _cfg(tiny_data, "train.checkpoint_every_seconds=1e-9")
    data = prepare_data(cfg)
    d = tmp_path / "run"
    full = _train_logged(cfg, d, data)
    c = parse_log((d / "train.log").read_text())["curves"]
    assert [p[0] for p in c["train"]] == list(range(1, 9))
    assert [p[1] for p in c["train"]] == [_f4(x) for x in full.losses]
    assert [p[0] for p in c["val"]] == [4, 8]
    assert c["val"][-1][1] == _f4(full.last_val.val_bpb)
    secs = [p[2] for p in c["train"]]
    assert secs == sorted(secs) and abs(secs[-1] - full.train_seconds) <= 5e-4 + 1e-9

    class Kill(Exception):
        pass

    def kill_at_5(step, loss):
        if step == 5:
            raise Kill

    k = tmp_path / "killed"
    with pytest.raises(Kill):
        _train_logged(cfg, k, data, on_step=kill_at_5)
    first = parse_log((k / "train.log").read_text())["curves"]["train"]
    resumed = _train_logged(cfg, k, data, resume=True)
    text = (k / "train.log").read_text()
    assert text.count("# pgolf run ") == 2 and "resume: step:5" in text
    c = parse_log(text)["curves"]
    assert [p[0] for p in c["train"]] == list(range(1, 9))
    assert [p[1] for p in c["train"]] == [p[1] for p in first[:5]] + [_f4(x) for x in resumed.losses]
    assert [p[1] for p in c["train"]] == [_f4(x) for x in full.losses]  # resume is exact, so is its curve

    # a fresh run into the same directory (no resume) replaces the earlier curve
    _train_logged(apply_overrides(cfg, ["train.iterations=3", "train.val_every=0"]), k, data)
    c = parse_log((k / "train.log").read_text())["curves"]
    assert [p[0] for p in c["train"]] == [1, 2, 3] and c["val"] == []


def test_records_from_real_run_dirs(real_runs):
    recs = records_from_run_dirs([real_runs])
    assert [r["run_id"] for r in recs] == ["a-s1", "a-s2", "b-s1", "b-s2"]
    hw = hardware()
    machine = f"{len(hw['gpus'])}x{hw['gpus'][0]}" if hw.get("gpus") else f"{hw['cpu']} ({hw['cpu_count']} cpus)"
    for r in recs:
        d = real_runs / r["run_id"]
        cfg = RunConfig.from_dict(json.loads((d / "config.json").read_text()))
        ref = {k: list(v) if isinstance(v, tuple) else v for k, v in flatten(cfg).items()}
        assert r["config"] == ref | {"name": cfg.name}
        assert r["metrics"] == json.loads((d / "metrics.json").read_text())
        assert r["seed"] == cfg.train.seed and r["preset"] == "tiny" and r["kind"] == "run"
        assert r["dataset"] == cfg.data.path and r["run_dir"] == str(d.resolve())
        assert datetime.fromisoformat(r["created"]).tzinfo is not None
        assert [p[0] for p in r["curves"]["train"]] == list(range(1, cfg.train.iterations + 1))
        assert r["machine"] == machine  # from the log's "# hardware:" line
    h = {r["run_id"]: r["config_hash"] for r in recs}
    assert h["a-s1"] == h["a-s2"] != h["b-s1"] == h["b-s2"]  # seeds share a hash, configs do not
    flat = recs[0]["config"]
    assert config_hash(flat | {"train.seed": 99}) == config_hash(flat) != config_hash(flat | {"train.iterations": 9})
    rows = leaderboard(recs)
    assert sorted(r["n"] for r in rows) == [2, 2]


def test_run_dir_errors_and_ids(real_runs, tmp_path):
    with pytest.raises(DataError, match="no such directory"):
        records_from_run_dirs([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: not a pgolf run directory"):
        records_from_run_dirs([tmp_path / "empty"])
    bad = tmp_path / "bad" / "x"
    shutil.copytree(real_runs / "a-s1", bad)
    (bad / "metrics.json").write_text("{not json")
    warned: list[str] = []
    assert records_from_run_dirs([bad, real_runs / "a-s1"], warn=warned.append)[0]["run_id"] == "a-s1"  # the rest stays
    assert len(warned) == 1 and "x/metrics.json: not valid JSON" in warned[0]
    # two directories with one name get distinct ids; a directory given twice is read once
    twin = tmp_path / "other" / "a-s1"
    shutil.copytree(real_runs / "a-s1", twin)
    recs = records_from_run_dirs([real_runs / "a-s1", twin, real_runs / "a-s1"])
    assert [r["run_id"] for r in recs] == ["a-s1", "a-s1-2"]
    # a failed or unfinished run (no metrics.json) is not a result: skipped with one line naming it
    (twin / "metrics.json").unlink()
    warned.clear()
    assert records_from_run_dirs([twin], warn=warned.append) == []
    assert warned == [f"{twin}: skipped, no metrics.json (a failed or unfinished run)"]


HOSTILE = '<script>document.documentElement.setAttribute("data-pwned","1")</script>'


def hostile_records():
    recs = ablation_records()
    recs.append(record('"><img src=x onerror=alert(1)>', "evil<b>", 3, 1.25, preset="</table><script>alert(2)</script>",
                       tags=[HOSTILE, "ok"], machine="<iframe src=x>", dataset="' onmouseover='alert(3)",
                       config={"model.num_layers": '<svg onload="alert(4)">'}, git_commit="<style>*{}</style>"))
    return recs


class Page(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str | None]] = []
        self.ids: set[str] = set()
        self.text: list[str] = []
        self.rows: dict[str, int] = {}
        self._table: list[str | None] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        d = dict(attrs)
        self.attrs += [(tag, k, v) for k, v in attrs]
        if "id" in d:
            self.ids.add(d["id"])
        if tag == "table":
            self._table.append(d.get("id"))
        if tag == "tr" and self._table and self._table[-1] and self.tags[-2:-1] != ["thead"]:
            self.rows[self._table[-1]] = self.rows.get(self._table[-1], 0) + 1

    def handle_endtag(self, tag):
        if tag == "table" and self._table:
            self._table.pop()

    def handle_data(self, data):
        self.text.append(data)


def _parse(path: Path) -> Page:
    p = Page()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def test_report_has_every_run_and_escapes_hostile_strings(tmp_path):
    recs = hostile_records()
    index = write_report(recs, tmp_path / "rep", title="<title>pwn</title> report")
    src = index.read_text(encoding="utf-8")
    page = _parse(index)
    text = "".join(page.text)
    for r in recs:
        assert r["run_id"] in text  # every run id, as text
    for s in (HOSTILE, "</table><script>alert(2)</script>", "<iframe src=x>", '<svg onload="alert(4)">'):
        assert s not in src and s in text  # shown, never markup
    assert page.tags.count("script") == 1 and "iframe" not in page.tags and "svg" not in page.tags
    assert page.tags.count("style") == 1 and page.tags.count("title") == 1
    assert not [a for a in page.attrs if a[1].startswith("on")]  # no event-handler attribute anywhere
    assert "<title>&lt;title&gt;pwn&lt;/title&gt; report</title>" in src


def test_report_references_only_its_own_files(tmp_path):
    out = tmp_path / "rep"
    index = write_report(hostile_records(), out)
    src = index.read_text(encoding="utf-8")
    assert "http://" not in src and "https://" not in src and "//" not in src.replace("</", "")
    page = _parse(index)
    refs = [(t, k, v) for t, k, v in page.attrs if k in ("src", "href")]
    assert refs
    for _tag, _k, v in refs:
        if v.startswith("#"):
            assert v[1:] in page.ids, v  # in-page anchors land somewhere
        else:
            assert "/" not in v and ":" not in v and (out / v).is_file(), v  # a file beside index.html
    imgs = [v for t, k, v in page.attrs if t == "img" and k == "src"]
    assert sorted(imgs) == ["ablation.png", "curves.png", "pareto.png", "time.png"]
    assert not [t for t in page.tags if t in ("link", "iframe", "object", "embed", "base", "form")]
    csp = [v for t, k, v in page.attrs if t == "meta" and k == "content" and v and "default-src" in v]
    assert csp and csp[0].startswith("default-src 'none'")
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []


def test_report_tables_standalone_and_given_leaderboard(tmp_path):
    recs = ablation_records()
    page = _parse(write_report(recs, tmp_path / "a"))
    rows = leaderboard(recs)
    assert page.rows == {"leaderboard-table": len(rows), "runs-table": len(recs)}
    text = "".join(page.text)
    for row in rows:
        assert f"{row['mean']:.5f}" in text and (row["std"] is None or f"{row['std']:.5f}" in text)
    given = [dict(rows[0], label="from the registry", p_vs_best=None)]
    page = _parse(write_report(recs, tmp_path / "b", leaderboard=given))
    assert page.rows["leaderboard-table"] == 1 and "from the registry" in "".join(page.text)
    # nothing scored: empty leaderboard, no Pareto/ablation images, still a page
    page = _parse(write_report([record("only", val_bpb=None, artifact_bytes=None, train_seconds=None,
                                       train=[[1, 5.0, 0.1], [2, 4.0, 0.2]])], tmp_path / "c"))
    assert page.rows.get("leaderboard-table", 0) == 0 and page.rows["runs-table"] == 1
    assert [v for t, k, v in page.attrs if t == "img"] == ["curves.png", "curves plot"]


def test_cli_report(real_runs, tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["report", "--runs", str(real_runs), "--out", str(out), "--title", "tiny runs"]) == 0
    assert f"report {out / 'index.html'} (4 runs, 4 with val_bpb)" in capsys.readouterr().out
    page = _parse(out / "index.html")
    assert page.rows == {"leaderboard-table": 2, "runs-table": 4}
    for args, msg in ((["--out", str(out)], "give --runs DIR"),
                      (["--runs", str(tmp_path / "nope"), "--out", str(out)], "nope: no such directory")):
        assert main(["report", *args]) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("pgolf: error: ") and msg in err[-1] and "Traceback" not in "\n".join(err)


def test_cli_report_from_the_registry_groups_like_the_run_dirs(real_runs, tmp_path, capsys):
    """The same four runs imported into a registry give the same leaderboard as read from their directories."""
    url = f"sqlite:///{tmp_path / 'reg.sqlite'}"
    assert main(["runs", "import", str(real_runs), "--registry", url]) == 0
    capsys.readouterr()
    out = tmp_path / "rep"
    assert main(["report", "--registry", url, "--out", str(out)]) == 0
    assert "(4 runs, 4 with val_bpb)" in capsys.readouterr().out
    page = _parse(out / "index.html")
    assert page.rows == {"leaderboard-table": 2, "runs-table": 4}
    from pgolf.track.registry import open_registry
    from pgolf.track.rundirs import records_from_run_dirs

    reg_hashes = sorted(r.config_hash for r in open_registry(url).runs())
    dir_hashes = sorted(r["config_hash"] for r in records_from_run_dirs([real_runs]))
    assert reg_hashes == dir_hashes and len(set(dir_hashes)) == 2
