"""Seed grouping and Welch p-values on fixed data: the one-sided Welch test against scipy and against the
formula computed by hand in float64; groups count one run per seed (the newest), skip runs without the
metric and eval records, report ddof-1 std; configurations with too few seeds rank below the others and
p is against the best with 2+; the leaderboard, compare and the CLI views agree with these numbers;
compare names only result-changing fields as differences; `runs show` takes a run directory."""

from __future__ import annotations

import json
import math
import statistics

import pytest
from _track_util import make_record
from scipy import stats

from pgolf.track.leaderboard import compare, config_diff, label_of, leaderboard, notes, welch_p_less

A = [1.20576485, 1.2061746, 1.20715923]  # [03-18] LongContextSeq2048, seeds 1337, 1338, 1339 (its logs)
B = [1.2243657, 1.2251234, 1.2236011]  # made up around the baseline's 1.2243657


def _welch_by_hand(a, b):
    ma, mb = math.fsum(a) / len(a), math.fsum(b) / len(b)
    va = math.fsum((x - ma) ** 2 for x in a) / (len(a) - 1)
    vb = math.fsum((x - mb) ** 2 for x in b) / (len(b) - 1)
    se2 = va / len(a) + vb / len(b)
    t = (ma - mb) / math.sqrt(se2)
    df = se2 ** 2 / ((va / len(a)) ** 2 / (len(a) - 1) + (vb / len(b)) ** 2 / (len(b) - 1))
    return float(stats.t.cdf(t, df))  # P(T <= t): H1 mean(a) < mean(b)


def test_welch_one_sided_against_scipy_and_the_formula():
    p = welch_p_less(A, B)
    assert p == stats.ttest_ind(A, B, equal_var=False, alternative="less").pvalue
    assert p == pytest.approx(_welch_by_hand(A, B), rel=1e-10) and p < 1e-4
    assert welch_p_less(B, A) == pytest.approx(1 - p, rel=1e-9)
    near = [2.01, 2.03, 1.99]
    far = [2.02, 2.00, 2.05, 2.04]
    assert welch_p_less(near, far) == pytest.approx(_welch_by_hand(near, far), rel=1e-10)
    assert welch_p_less([1.0], B) is None and welch_p_less([1.0, 1.0], [2.0, 2.0]) is None


def _rec(i, chash, seed, value, created="2026-05-01T00:00:00+00:00", **kw):
    return make_record(i, config_hash=chash, seed=seed, metrics={"val_bpb": value}, created=created, **kw)


def test_leaderboard_groups_by_config_hash_across_seeds():
    recs = [_rec(0, "a" * 64, 1, A[0]), _rec(1, "a" * 64, 2, A[1]), _rec(2, "a" * 64, 3, 9.0),
            _rec(3, "a" * 64, 3, A[2], created="2026-05-02T00:00:00+00:00"),  # newer re-run of seed 3 counts
            _rec(4, "b" * 64, 1, B[0]), _rec(5, "b" * 64, 2, B[1]), _rec(6, "b" * 64, 3, B[2]),
            _rec(7, "c" * 64, 1, 1.5), _rec(8, "c" * 64, 2, float("nan")),
            make_record(9, config_hash="d" * 64, metrics={"artifact_bytes": 1})]  # no val_bpb: not ranked
    rows = leaderboard(recs)
    assert [r["config_hash"][0] for r in rows] == ["a", "b", "c"]
    a, b, c = rows
    assert a["n"] == 3 and a["seeds"] == [1, 2, 3] and a["mean"] == pytest.approx(statistics.fmean(A), abs=1e-15)
    assert a["std"] == pytest.approx(statistics.stdev(A), abs=1e-15)
    assert a["run_ids"] == [recs[0].run_id, recs[1].run_id, recs[3].run_id]
    assert a["p_vs_best"] is None and b["p_vs_best"] == welch_p_less(A, B)
    assert c["n"] == 1 and c["std"] is None and c["p_vs_best"] is None
    assert set(a) == {"config_hash", "preset", "label", "n", "mean", "std", "seeds", "run_ids", "p_vs_best",
                      "enough_seeds", "reference"}
    assert a["reference"] and a["enough_seeds"] and b["enough_seeds"] and not c["enough_seeds"]
    # plain dicts (model_dump) give the same table
    assert leaderboard([r.model_dump() for r in recs]) == rows


def test_labels_compare_and_config_diff():
    from pgolf.config import flatten
    from pgolf.identity import flat as flat_config
    from pgolf.presets import get_preset

    cfg = flat_config(get_preset("tiny").to_dict())
    assert label_of(make_record(0, preset="tiny", config=dict(cfg))) == "tiny"
    changed = dict(cfg, **{"model.mlp_act": "leaky_relu2", "train.seed": 7, "data.path": "/d"})
    assert label_of(make_record(0, preset="tiny", config=changed)) == "tiny +model.mlp_act=leaky_relu2"
    assert label_of(make_record(0, preset=None, config={"official.source": "2026-03-18_X"})) == "2026-03-18_X"
    assert set(cfg) == set(flatten(get_preset("tiny")))
    ga = [_rec(i, "a" * 64, i, v) for i, v in enumerate(A)]
    gb = [_rec(10 + i, "b" * 64, i, v) for i, v in enumerate(B)]
    rows = compare([ga, gb])
    assert rows[1]["delta"] == pytest.approx(statistics.fmean(B) - statistics.fmean(A), abs=1e-15)
    assert rows[1]["p_higher"] == welch_p_less(A, B) and rows[1]["p_lower"] == welch_p_less(B, A)
    assert config_diff([{"x": 1, "y": 2}, {"x": 1, "y": 3, "z": 0}]) == {"y": [2, 3], "z": [None, 0]}


def test_cli_views_print_the_same_numbers(tmp_path, capsys):
    from pgolf.cli import main
    from pgolf.track.registry import open_registry

    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    recs = [_rec(i, "a" * 64, i, v) for i, v in enumerate(A)] + [_rec(10 + i, "b" * 64, i, v, tags=["x"])
                                                               for i, v in enumerate(B)]
    with open_registry(url) as reg:
        for r in recs:
            reg.add_run(r)
    assert main(["leaderboard", "--registry", url, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == json.loads(json.dumps(leaderboard(recs)))
    assert main(["leaderboard", "--registry", url, "--tag", "x", "--json"]) == 0
    assert [r["config_hash"][0] for r in json.loads(capsys.readouterr().out)] == ["b"]
    assert main(["runs", "list", "--registry", url, "--json", "--limit", "2"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    assert main(["runs", "compare", "a" * 12, "b" * 12, "--registry", url, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows"][1]["p_higher"] == pytest.approx(welch_p_less(A, B), rel=1e-12)
    assert main(["runs", "show", recs[0].run_id, "--registry", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hardware"] == recs[0].hardware
    assert main(["leaderboard", "--registry", url]) == 0
    text = capsys.readouterr().out
    assert f"{statistics.fmean(A):.4f} ± {statistics.stdev(A):.4f}" in text and f"{welch_p_less(A, B):.3g}" in text


def test_eval_records_are_never_seeds():
    """An eval record (a re-scoring of run seed 1's artifact) neither adds a seed nor replaces the run's score."""
    recs = [_rec(i, "a" * 64, i, v) for i, v in enumerate(A)]
    rescored = _rec(9, "a" * 64, 0, 1.0, kind="eval", created="2026-06-01T00:00:00+00:00")
    for with_eval in (recs + [rescored], [rescored] + recs):
        (row,) = leaderboard(with_eval)
        assert row["n"] == 3 and row["mean"] == pytest.approx(statistics.fmean(A), abs=1e-15)
        assert rescored.run_id not in row["run_ids"]
    (c,) = compare([recs + [rescored]])
    assert c["n"] == 3 and c["mean"] == pytest.approx(statistics.fmean(A), abs=1e-15)
    assert compare([[rescored]])[0]["mean"] == 1.0  # named on its own, an eval record is compared as given


def test_too_few_seeds_rank_below_and_p_is_against_the_best_with_two():
    one = _rec(20, "o" * 64, 1, 1.0)  # the lowest mean, one seed
    two = [_rec(21, "t" * 64, 1, 1.1), _rec(22, "t" * 64, 2, 1.12)]
    ga = [_rec(i, "a" * 64, i, v) for i, v in enumerate(A)]
    gb = [_rec(10 + i, "b" * 64, i, v) for i, v in enumerate(B)]
    rows = leaderboard([one, *two, *ga, *gb])
    assert [r["config_hash"][0] for r in rows] == ["a", "b", "o", "t"]  # 3 seeds first, then by mean
    assert [r["enough_seeds"] for r in rows] == [True, True, False, False]
    assert [r["reference"] for r in rows] == [True, False, False, False]
    assert rows[1]["p_vs_best"] == welch_p_less(A, B)
    assert rows[2]["p_vs_best"] is None  # one seed: no test
    assert rows[3]["p_vs_best"] == welch_p_less(A, [1.1, 1.12])
    text = "\n".join(notes(rows))
    assert "2 of 4 configurations have fewer than 3 seeds" in text and "would lead" in text
    # --min-seeds 1: by mean; the reference is the first with two seeds, p of the others against it
    rows = leaderboard([one, *two, *ga, *gb], min_seeds=1)
    assert [r["config_hash"][0] for r in rows] == ["o", "t", "a", "b"]
    assert [r["reference"] for r in rows] == [False, True, False, False]
    assert rows[0]["p_vs_best"] is None and rows[2]["p_vs_best"] == welch_p_less([1.1, 1.12], A)
    assert not any("fewer than" in line for line in notes(rows, 1))
    # nobody with two seeds: no reference, no p
    rows = leaderboard([one, _rec(30, "z" * 64, 1, 2.0)])
    assert not any(r["reference"] for r in rows) and all(r["p_vs_best"] is None for r in rows)


def test_compare_lists_only_result_changing_fields(tmp_path, capsys):
    from pgolf.cli import main
    from pgolf.identity import flat as flat_config
    from pgolf.presets import get_preset
    from pgolf.track.registry import open_registry

    cfg = flat_config(get_preset("tiny").to_dict())
    a = dict(cfg, **{"train.seed": 42, "train.threads": 2, "data.path": "/a"})
    b = dict(cfg, **{"train.seed": 1337, "model.mlp_mult": 3, "train.log_every": 7, "data.path": "/b"})
    assert config_diff([a, b]) == {"model.mlp_mult": [cfg["model.mlp_mult"], 3]}
    assert set(config_diff([a, b], all_fields=True)) == {"model.mlp_mult", "train.seed", "train.threads",
                                                         "train.log_every", "data.path"}
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    ra, rb = _rec(0, "a" * 64, 42, 1.0, config=a), _rec(1, "b" * 64, 1337, 1.1, config=b)
    with open_registry(url) as reg:
        reg.add_run(ra)
        reg.add_run(rb)
    assert main(["runs", "compare", ra.run_id, rb.run_id, "--registry", url, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config_diff"] == {"model.mlp_mult": [cfg["model.mlp_mult"], 3]}
    assert set(out["other_diff"]) == {"train.seed", "train.threads", "train.log_every", "data.path"}
    assert main(["runs", "compare", ra.run_id, rb.run_id, "--registry", url]) == 0
    text = capsys.readouterr().out
    assert "│ model.mlp_mult" in text and "│ train.seed" not in text  # rows of the table of differences
    (apart,) = [ln for ln in text.splitlines() if ln.startswith("also differ, not result-changing")]
    assert apart.endswith("data.path, train.log_every, train.seed, train.threads")


def test_runs_show_takes_a_run_directory(tmp_path, capsys):
    from pgolf.cli import main
    from pgolf.track.registry import open_registry

    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    d = tmp_path / "runs" / "s1"
    d.mkdir(parents=True)
    run = _rec(0, "a" * 64, 1, 1.0, run_dir=str(d.resolve()), created="2026-05-01T00:00:00+00:00")
    ev = _rec(1, "a" * 64, 1, 0.9, kind="eval", run_dir=str(d.resolve()), created="2026-05-02T00:00:00+00:00")
    with open_registry(url) as reg:
        reg.add_run(run)
        reg.add_run(ev)
        reg.add_run(_rec(2, "a" * 64, 2, 1.0, run_dir=str(tmp_path / "elsewhere")))
    assert main(["runs", "show", str(d), "--registry", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run_id"] == run.run_id  # the run, not the newer eval
    assert main(["runs", "show", str(tmp_path / "runs" / "s1" / "."), "--registry", url]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"run {run.run_id} (run)") and f"{ev.run_id} (eval)" in text
    assert main(["runs", "show", run.run_id, "--registry", url, "--json"]) == 0  # ids still work
    assert json.loads(capsys.readouterr().out)["run_id"] == run.run_id
    (tmp_path / "other").mkdir()
    assert main(["runs", "show", str(tmp_path / "other"), "--registry", url]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pgolf: error: ") and "nothing recorded from this path" in err[0]
    assert main(["runs", "show", str(tmp_path / "missing"), "--registry", url]) != 0
    assert capsys.readouterr().err.strip() == f"pgolf: error: {tmp_path / 'missing'}: no such run directory"


def test_leaderboard_cli_marks_and_explains_too_few_seeds(tmp_path, capsys):
    from pgolf.cli import main
    from pgolf.track.registry import open_registry

    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    recs = [_rec(i, "a" * 64, i, v) for i, v in enumerate(A)] + [_rec(20, "o" * 64, 1, 1.0)]
    with open_registry(url) as reg:
        for r in recs:
            reg.add_run(r)
    assert main(["leaderboard", "--registry", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    ranked = [ln for ln in lines if ln.startswith("│")]
    assert "aaaaaaaaaaaa" in ranked[0] and "ref" in ranked[0] and "1 *" in ranked[1]
    assert any("fewer than 3 seeds" in ln and "would lead" in ln for ln in lines)
    assert main(["leaderboard", "--registry", url, "--min-seeds", "1", "--json"]) == 0
    assert [r["config_hash"][0] for r in json.loads(capsys.readouterr().out)] == ["o", "a"]
