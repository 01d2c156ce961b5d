"""``pgolf stats``: both rules against hand-computed t statistics (closed-form Student t CDF, Welch–
Satterthwaite df) and scipy, nats ↔ bpb through each run's tokens/bytes, and bad input in one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import scipy.special
import scipy.stats
from test_submit import fake_run

from pgolf.errors import PgolfError
from pgolf.submit import stats as S

LN2 = math.log(2)


def _scores(bpb: list[float], r: float = 0.4, label: str = "x") -> S.Scores:
    return S.Scores(label, [str(i) for i in range(len(bpb))], bpb, [b * LN2 / r for b in bpb], r)


def _t_cdf(t: float, df: float) -> float:
    """Student t CDF for t ≤ 0 from the regularized incomplete beta function: ½·I_{df/(df+t²)}(df/2, ½)."""
    return 0.5 * scipy.special.betainc(df / 2, 0.5, df / (df + t * t))


def test_written_rule_by_hand() -> None:
    """Nats = [1, 2, 3] against a record of 4.005 nats: threshold 4, t = (2 − 4)/(1/√3) = −2√3, df = 2,
    p = F(t) = ½ + t / (2√(2 + t²)) (the df = 2 closed form) = ½ − √3/√14."""
    r = 0.5
    new = _scores([n / LN2 * r for n in (1.0, 2.0, 3.0)], r)
    res = S.significance(new, sota_bpb=4.005 / LN2 * r)
    w = res.written
    assert math.isclose(w.reference_nats, 4.0, rel_tol=1e-12)
    assert math.isclose(w.t, -2 * math.sqrt(3), rel_tol=1e-12) and w.df == 2
    assert math.isclose(w.p, 0.5 - math.sqrt(3) / math.sqrt(14), rel_tol=1e-12)
    assert w.passed is False  # p = 0.037 is not < 0.01
    assert math.isclose(w.delta_nats, 2.0 - 4.005, rel_tol=1e-12) and math.isclose(w.delta_bpb, (2.0 - 4.005) / LN2 * r)
    assert res.applied.passed is None and "per-seed scores" in res.applied.reason


def test_applied_rule_is_welch_by_hand_and_matches_scipy() -> None:
    new_bpb, old_bpb = [1.0600, 1.0612, 1.0605, 1.0609], [1.0625, 1.0618, 1.0631]
    r = 0.3167
    res = S.significance(_scores(new_bpb, r), old=_scores(old_bpb, 0.25))
    k = LN2 / r
    x, y = [b * k for b in new_bpb], [b * k for b in old_bpb]
    mx, my = sum(x) / 4, sum(y) / 3
    vx, vy = sum((v - mx) ** 2 for v in x) / 3, sum((v - my) ** 2 for v in y) / 2
    a, b = vx / 4, vy / 3
    t = (mx - my) / math.sqrt(a + b)
    df = (a + b) ** 2 / (a * a / 3 + b * b / 2)
    ap = res.applied
    assert math.isclose(ap.t, t, rel_tol=1e-10) and math.isclose(ap.df, df, rel_tol=1e-10)
    assert math.isclose(ap.p, _t_cdf(t, df), rel_tol=1e-9)
    ref = scipy.stats.ttest_ind(x, y, equal_var=False, alternative="less")
    assert math.isclose(ap.p, ref.pvalue, rel_tol=1e-12) and ap.passed == (ref.pvalue < 0.25)
    assert math.isclose(ap.delta_bpb, sum(new_bpb) / 4 - sum(old_bpb) / 3, rel_tol=1e-9)
    # the written rule on the same data: one-sample against mean(old) − 0.005 nats
    ref1 = scipy.stats.ttest_1samp(x, my - 0.005, alternative="less")
    assert math.isclose(res.written.p, ref1.pvalue, rel_tol=1e-12) and math.isclose(res.written.t, ref1.statistic)
    assert math.isclose(res.written.reference_nats, my - 0.005, rel_tol=1e-12)


def test_nats_and_bpb_use_the_new_runs_tokens_per_byte(tmp_path: Path) -> None:
    """Runs with 1000 tokens over 2400 bytes: val_bpb = val_loss/ln2 · 1000/2400; a record given in bpb
    (or scored with another tokenizer) is compared in the new runs' nats, b · ln 2 · 2400/1000."""
    new = [fake_run(tmp_path / f"n{s}", s, loss) for s, loss in [(1, 2.30), (2, 2.31), (3, 2.29)]]
    old = [fake_run(tmp_path / f"o{s}", s, loss, tokens=1000, nbytes=3000) for s, loss in [(1, 2.9), (2, 2.91)]]
    res = S.significance(S.load_scores(new, "new"), old=S.load_scores(old, "record"))
    assert math.isclose(res.tokens_per_byte, 1000 / 2400)
    old_bpb = [2.9 / LN2 / 3, 2.91 / LN2 / 3]
    old_in_new_nats = [b * LN2 * 2.4 for b in old_bpb]  # not the old runs' own 2.9, 2.91 nats per token
    assert math.isclose(res.applied.reference_nats, sum(old_in_new_nats) / 2, rel_tol=1e-12)
    assert math.isclose(res.written.reference_nats, sum(old_in_new_nats) / 2 - 0.005, rel_tol=1e-12)
    assert math.isclose(res.written.delta_nats, 2.30 - sum(old_in_new_nats) / 2, rel_tol=1e-9)
    text = S.format_report(res)
    lines = text.splitlines()
    assert len(lines) == 4 and lines[2].startswith("rule as written") and lines[3].startswith("rule as applied")
    assert lines[2].endswith(("-> PASS", "-> FAIL")) and f"p = {res.written.p:.3g}" in lines[2]
    sota = S.significance(S.load_scores(new, "new"), sota_bpb=1.2)
    assert math.isclose(sota.written.reference_nats, 1.2 * LN2 * 2.4 - 0.005, rel_tol=1e-12)


def test_cli_verdict_lines_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pgolf.cli import main

    new = [fake_run(tmp_path / f"n{s}", s, loss) for s, loss in [(1, 2.300), (2, 2.301), (3, 2.2995)]]
    old = [fake_run(tmp_path / f"o{s}", s, loss) for s, loss in [(1, 2.320), (2, 2.322), (3, 2.319)]]
    assert main(["stats", *map(str, new), *sum((["--against", str(o)] for o in old), [])]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2].endswith("-> PASS") and out[3].endswith("-> PASS")  # 0.02 nats better, tiny spread
    assert main(["stats", *map(str, new), "--sota", "1.0", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["applied"]["passed"] is None and d["written"]["passed"] is False and d["sota_bpb"] == 1.0


def test_a_records_submission_json_as_the_record(tmp_path: Path) -> None:
    sub = {"author": "x", "seed_results": {"1": {"val_bpb": 1.06, "val_loss": 2.3}, "2": {"val_bpb": 1.062, "val_loss": 2.31}}}
    p = tmp_path / "submission.json"
    p.write_text(json.dumps(sub))
    s = S.load_scores([p], "record")
    assert s.bpb == [1.06, 1.062] and s.seeds == ["1", "2"] and s.nats == [2.3, 2.31]


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    from pgolf.cli import main

    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and err[0].startswith("pgolf: error: ") and message in err[0], err


def test_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = fake_run(tmp_path / "a", 1, 2.3), fake_run(tmp_path / "b", 2, 2.31)
    _fails(capsys, ["stats", str(a), str(b)], "give the record to beat")
    _fails(capsys, ["stats", str(a), "--sota", "1.2"], "1 seed(s); a t-test needs at least 2")
    c = fake_run(tmp_path / "c", 3, 2.3, sets=("optim.matrix_lr=0.05",))
    _fails(capsys, ["stats", str(a), str(c), "--sota", "1.2"], "optim.matrix_lr = ")  # not seeds of one experiment
    d = fake_run(tmp_path / "d", 4, 2.3, nbytes=2500)
    _fails(capsys, ["stats", str(a), str(d), "--sota", "1.2"], "the seeds were scored on different validation data")
    e = tmp_path / "e"
    e.mkdir()
    _fails(capsys, ["stats", str(a), str(e), "--sota", "1.2"], "no config.json")
    bad = tmp_path / "bad.json"
    for content, msg in [("[1, 2]", "(top level): Input should be a valid dictionary"),
                         (json.dumps({"seed_results": {"1": {"val_bpb": "1.06"}}}), "seed_results.1.val_bpb"),
                         (json.dumps({"author": "x"}), "has no seed_results"), ("{", "not readable JSON")]:
        bad.write_text(content)
        _fails(capsys, ["stats", str(a), str(b), "--against", str(bad)], msg)
    m = json.loads((a / "metrics.json").read_text())
    (a / "metrics.json").write_text(json.dumps({**m, "val_bpb": m["val_bpb"] + 0.1}))
    _fails(capsys, ["stats", str(a), str(b), "--sota", "1.2"], "is not val_loss / ln 2 × tokens / bytes")
    with pytest.raises(PgolfError, match="either its runs"):
        S.significance(_scores([1.0, 1.1]), old=_scores([1.0, 1.1]), sota_bpb=1.0)


def test_zero_variance_keeps_scipys_limits() -> None:
    res = S.significance(_scores([1.0, 1.0, 1.0]), sota_bpb=2.0)
    assert res.written.t == -math.inf and res.written.p == 0.0 and res.written.passed is True
    t, _df, p = S._limit(0.0, 2)  # a constant sample exactly at the threshold
    assert math.isnan(t) and p is None
    welch = S.significance(_scores([1.0, 1.0]), old=_scores([1.1, 1.1]))
    assert welch.applied.t == -math.inf and welch.applied.p == 0.0 and welch.applied.passed is True
    from dataclasses import replace

    at = replace(res, written=replace(res.written, p=None, passed=False))
    assert "p = undefined (zero variance at the threshold) -> FAIL" in S.format_report(at)


def _official_log(seed: int | None, loss: float, bpb: float, *, ttt: tuple[float, float] | None = None) -> str:
    """A log as the challenge's train_gpt.py writes it (header, steps, sizes, final round-trip lines)."""
    head = "Hyperparameters:\n  vocab_size: 1024\n\n" + (f"seed:{seed}\n" if seed is not None else "")
    tail = f"legal_ttt val_loss:{ttt[0]:.8f} val_bpb:{ttt[1]:.8f} eval_time:300000ms\n" if ttt else ""
    return (head + "step:1/20000 train_loss:6.9 train_time:90ms step_avg:90.00ms\n"
            "step:6500/20000 val_loss:2.05 val_bpb:1.21 train_time:599000ms step_avg:92.15ms\n"
            "stopping_early: wallclock_cap train_time:599000ms step:6500/20000\n"
            "Serialized model int8+zlib: 15800000 bytes\nTotal submission size int8+zlib: 15850000 bytes\n"
            f"final_int8_zlib_roundtrip val_loss:{loss:.4f} val_bpb:{bpb:.4f} eval_time:1500ms\n"
            f"final_int8_zlib_roundtrip_exact val_loss:{loss:.8f} val_bpb:{bpb:.8f}\n" + tail)


def test_a_record_without_seed_results_is_read_from_its_logs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Many records list only the mean in submission.json: the per-seed scores come from the folder's logs."""
    from pgolf.cli import main

    r = 0.41  # tokens per byte: bpb = loss / ln 2 · r
    rec = tmp_path / "2026-03-19_Record"
    rec.mkdir()
    losses = {1337: 2.0500, 42: 2.0520, 7: 2.0490}
    for seed, loss in losses.items():
        (rec / f"train_seed{seed}.log").write_text(_official_log(seed, loss, loss / LN2 * r))
    (rec / "README.md").write_text("val_bpb: 1.2 (not a log)\n")
    (rec / "notes.txt").write_text("final_int8_zlib_roundtrip_exact val_loss:9 val_bpb:9\n")  # a lower tier: unused
    mean_bpb = sum(loss / LN2 * r for loss in losses.values()) / 3
    (rec / "submission.json").write_text(json.dumps({"author": "x", "val_bpb": round(mean_bpb, 8)}))
    s = S.load_scores([rec / "submission.json"], "record")
    by_seed = dict(zip(s.seeds, zip(s.bpb, s.nats, strict=True), strict=True))
    assert sorted(by_seed) == ["1337", "42", "7"]
    for seed, loss in losses.items():
        assert by_seed[str(seed)] == (float(f"{loss / LN2 * r:.8f}"), loss)  # the _exact line, not the rounded one
    assert s.tokens_per_byte == pytest.approx(r, rel=1e-7)
    assert s.source.startswith("no seed_results: the final val_bpb lines of train_seed1337.log, train_seed42.log, ")
    assert "differs" not in s.source
    # the CLI says where the record's scores came from
    new = [fake_run(tmp_path / f"n{i}", i, loss) for i, loss in [(1, 2.30), (2, 2.31), (3, 2.29)]]
    assert main(["stats", *map(str, new), "--against", str(rec / "submission.json")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "[from no seed_results: the final val_bpb lines of train_seed1337.log" in out[1] and len(out) == 4
    # a score after the round trip (TTT) is the log's final score; a seed read from the file name
    ttt = tmp_path / "ttt"
    ttt.mkdir()
    (ttt / "train_seed5.log").write_text(_official_log(None, 2.1, 1.25, ttt=(2.0, 1.2)))
    (ttt / "train_seed6.log").write_text(_official_log(None, 2.1, 1.25, ttt=(2.01, 1.201)))
    (ttt / "submission.json").write_text(json.dumps({"val_bpb": 1.3}))
    s = S.load_scores([ttt / "submission.json"], "record")
    assert s.seeds == ["5", "6"] and s.bpb == [1.2, 1.201] and s.nats == [2.0, 2.01]
    assert "differs from submission.json's val_bpb 1.3" in s.source
    # plain *.log names when there is no train_seed*.log; one seed in two logs is refused
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.log").write_text(_official_log(1, 2.1, 1.25))
    (other / "b.log").write_text(_official_log(1, 2.2, 1.3))
    (other / "submission.json").write_text("{}")
    _fails(capsys, ["stats", *map(str, new), "--against", str(other / "submission.json")], "seed 1 is also the seed of a.log")
    (other / "b.log").write_text(_official_log(2, 2.2, 1.3))
    assert S.load_scores([other / "submission.json"], "record").seeds == ["1", "2"]


def test_json_summary_is_the_leaderboards(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pgolf.cli import main
    from pgolf.track.leaderboard import summary

    new = [fake_run(tmp_path / f"n{s}", s, loss) for s, loss in [(1, 2.300), (2, 2.301), (3, 2.2995)]]
    assert main(["stats", *map(str, new), "--sota", "1.0", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["summary"] == {"new": summary(d["new"]["bpb"]), "old": None}
