"""The research tools agree: on one registry ``pgolf leaderboard``, ``pgolf report --registry`` and
``pgolf stats`` give one group the same n, mean and std (an eval record of one seed is neither an extra
seed nor its score); the report's tables put val_bpb early and show hashes short with the full one in a
title; one bad run directory does not abort ``pgolf report --runs``."""

from __future__ import annotations

import json
import math
import re
import statistics
from html.parser import HTMLParser
from pathlib import Path

from pgolf.cli import main
from pgolf.presets import get_preset

LOSSES = {1337: 2.3010, 42: 2.3042, 2025: 2.2987}  # group A's three seeds (nats per token)
TOKENS, NBYTES = 1000, 2400


def _run_dir(d: Path, seed: int, loss: float, *sets: str) -> Path:
    """A finished run directory as ``pgolf run`` leaves it (config.json, metrics.json, train.log)."""
    from pgolf.config import apply_overrides

    cfg = apply_overrides(get_preset("tiny"), [f"train.seed={seed}", "data.path=/data/shared", *sets])
    d.mkdir(parents=True)
    (d / "config.json").write_text(cfg.to_json())
    bpb = loss / math.log(2) * TOKENS / NBYTES
    (d / "metrics.json").write_text(json.dumps({
        "val_loss": loss, "val_bpb": bpb, "val_tokens": TOKENS, "val_bytes": NBYTES, "artifact_bytes": 160_000 + seed,
        "model_bytes": 100_000, "code_bytes": 60_000 + seed, "steps": 20, "train_seconds": 5.0, "eval_seconds": 1.0,
        "pre_quant_val_bpb": bpb - 0.01, "tokens_per_second": 1e4}))
    (d / "train.log").write_text(f"# pgolf run 2026-12-0{1 + seed % 7}T00:00:00+0000\n"
                                 "step:1/20 train_loss:6.9000 train_time:10ms step_avg:10.00ms\n")
    return d


class _Tables(HTMLParser):
    """Every table's header cells, body rows (cell texts) and each cell's ``title`` attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, dict] = {}
        self.cur: dict | None = None
        self.cell: list[str] | None = None
        self.titles: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and a.get("id"):
            self.cur = self.tables.setdefault(a["id"], {"head": [], "rows": [], "titles": []})
        elif self.cur is not None and tag == "tr":
            self.row, self.row_titles = [], []
        elif self.cur is not None and tag in ("td", "th"):
            self.cell = []
        elif self.cell is not None and a.get("title"):
            self.row_titles.append(a["title"])

    def handle_endtag(self, tag):
        if tag == "table":
            self.cur = None
        elif self.cur is not None and tag in ("td", "th") and self.cell is not None:
            self.row.append("".join(self.cell).strip())
            self.cell = None
        elif self.cur is not None and tag == "tr":
            if self.row and not self.cur["head"]:
                self.cur["head"] = self.row
            elif self.row:
                self.cur["rows"].append(self.row)
                self.cur["titles"].append(self.row_titles)

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def _tables(html: str) -> dict[str, dict]:
    p = _Tables()
    p.feed(html)
    return p.tables


def test_leaderboard_report_and_stats_agree_on_one_registry(tmp_path, capsys) -> None:
    from pgolf.track.record import build_run_record
    from pgolf.track.registry import open_registry

    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    a = [_run_dir(tmp_path / "runs" / f"s{s}", s, loss) for s, loss in LOSSES.items()]
    b = _run_dir(tmp_path / "runs" / "m3", 1337, 2.2, "model.mlp_mult=3")  # lower, one seed
    with open_registry(url) as reg:
        for d in [*a, b]:
            reg.add_run(build_run_record(d, kind="run"))
        # `pgolf eval runs/s1337 --method sliding` records a re-scoring of seed 1337 under the same run
        m = json.loads((a[0] / "metrics.json").read_text())
        rescored = {**m, "val_bpb": m["val_bpb"] + 0.25, "val_loss": m["val_loss"] + 0.1}
        reg.add_run(build_run_record(a[0], kind="eval", metrics=rescored))
        assert len(reg.runs()) == 5
    want = [m / math.log(2) * TOKENS / NBYTES for m in LOSSES.values()]

    assert main(["leaderboard", "--registry", url, "--json"]) == 0
    board = json.loads(capsys.readouterr().out)
    row = next(r for r in board if r["n"] == 3)
    assert board[0] is not None and board[0]["config_hash"] == row["config_hash"]  # 3 seeds rank above 1
    assert sorted(row["seeds"]) == sorted(LOSSES) and row["mean"] == statistics.fmean(want)
    assert row["std"] == statistics.stdev(want)

    assert main(["report", "--registry", url, "--out", str(tmp_path / "rep")]) == 0
    capsys.readouterr()
    t = _tables((tmp_path / "rep" / "index.html").read_text())["leaderboard-table"]
    cells = dict(zip(t["head"], t["rows"][0], strict=True))
    assert t["titles"][0] == [row["config_hash"]]
    assert cells["n"] == "3" and cells["mean val_bpb"] == f"{row['mean']:.5f}" and cells["std"] == f"{row['std']:.5f}"
    assert cells["p vs ref"] == "ref" and t["rows"][1][t["head"].index("n")] == "1 *"

    assert main(["stats", *map(str, a), "--sota", "9.0", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)["summary"]["new"]
    assert s == {"n": row["n"], "mean": row["mean"], "std": row["std"]}


def test_runs_table_puts_val_bpb_early_and_shortens_hashes(tmp_path, capsys) -> None:
    a = [_run_dir(tmp_path / "runs" / f"s{s}", s, loss) for s, loss in LOSSES.items()]
    assert main(["report", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "rep")]) == 0
    capsys.readouterr()
    t = _tables((tmp_path / "rep" / "index.html").read_text())["runs-table"]
    assert t["head"].index("val_bpb") <= 2 and t["head"].index("config") < t["head"].index("created")
    col = t["head"].index("config")
    for row, titles in zip(t["rows"], t["titles"], strict=True):
        (full,) = [x for x in titles if re.fullmatch(r"[0-9a-f]{64}", x)]
        assert row[col] == full[:12]
    assert len(t["rows"]) == len(a)


def test_one_bad_config_json_skips_that_run_with_one_warning(tmp_path, capsys) -> None:
    for s, loss in LOSSES.items():
        _run_dir(tmp_path / "runs" / f"s{s}", s, loss)
    bad = _run_dir(tmp_path / "runs" / "broken", 7, 2.3)
    (bad / "config.json").write_text('{"model": {"num_layers": ')
    assert main(["report", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "rep")]) == 0
    cap = capsys.readouterr()
    err = cap.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pgolf: warning: ") and str(bad / "config.json") in err[0]
    assert "(3 runs, 3 with val_bpb; 1 run directories skipped)" in cap.out
    t = _tables((tmp_path / "rep" / "index.html").read_text())["runs-table"]
    assert sorted(r[0] for r in t["rows"]) == ["s1337", "s2025", "s42"]
