"""Seed grouping and Welch p-values on fixed data: the one-sided Welch test against scipy and against the
formula computed by hand in float64; groups count one run per seed (the newest), skip runs without the
metric, report ddof-1 std; the leaderboard, compare and the CLI views agree with these numbers."""

from __future__ import annotations

import json
import math
import statistics

import pytest
from _track_util import make_record
from scipy import stats

from pgolf.track.leaderboard import compare, config_diff, label_of, leaderboard, welch_p_less

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
    assert set(a) == {"config_hash", "preset", "label", "n", "mean", "std", "seeds", "run_ids", "p_vs_best"}
    # plain dicts (model_dump) give the same table
    assert leaderboard([r.model_dump() for r in recs]) == rows


def test_labels_compare_and_config_diff():
    from pgolf.config import flatten
    from pgolf.presets import get_preset
    from pgolf.track.record import flat_config

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
