"""The submission path end to end on real commands (no stubbed script): seeds of one configuration →
``pgolf submit`` → ``pgolf stats`` → ``pgolf review``; one identity of "the same experiment" in submit,
stats and the leaderboard; metrics.json true to the artifact after ``pgolf export``; a diverged run is an
error that records nothing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pgolf.cli import main

TINY = ["--set", "model.vocab_size=384", "--set", "train.iterations=6"]


def _run(out: Path, data: Path, *sets: str) -> Path:
    args = ["run", "tiny", *TINY, "--set", f"data.path={data}", *[a for s in sets for a in ("--set", s)], "--out", str(out)]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def flow(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Three seeds of one configuration, a fourth seed that only logs more often (not result-changing), and a
    run that changes a result-changing field, all recorded in one registry."""
    root = tmp_path_factory.mktemp("flow")
    url = f"sqlite:///{root / 'reg.sqlite'}"
    mp = pytest.MonkeyPatch()
    mp.setenv("PGOLF_REGISTRY", url)
    try:
        runs = {s: _run(root / f"s{s}", tiny_data, f"train.seed={s}") for s in (1337, 42, 2025)}
        runs[7] = _run(root / "s7", tiny_data, "train.seed=7", "train.log_every=2", "train.threads=1")
        other = _run(root / "mlp3", tiny_data, "train.seed=5", "model.mlp_mult=3")
    finally:
        mp.undo()
    return {"root": root, "url": url, "runs": runs, "other": other, "data": tiny_data}


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def _err_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(err) == 1 and err[0].startswith("pgolf: error: "), err
    return err[0]


def test_every_seed_charged_the_same_script_and_submit_ships_it(flow: dict, tmp_path: Path) -> None:
    runs = flow["runs"]
    shas = {_metrics(r)["code_sha256"] for r in runs.values()}
    assert len(shas) == 1  # the seed, log_every and threads are data, not code
    out = tmp_path / "rec"
    assert main(["submit", *map(str, runs.values()), "--name", "Four", "--author", "A", "--github-id", "a",
                 "--out", str(out)]) == 0
    (folder,) = out.iterdir()
    script = (folder / "train_gpt.py").read_bytes()
    assert hashlib.sha256(script).hexdigest() == shas.pop()
    assert len(script) == _metrics(runs[42])["code_bytes"]
    sub = json.loads((folder / "submission.json").read_text())
    assert sub["seeds"] == [1337, 42, 2025, 7] and sub["bytes_code"] == len(script)
    readme = (folder / "README.md").read_text()
    assert "RUN_ID=seed7 SEED=7 TRAIN_LOG_EVERY=2 " in readme and "PGOLF_SET='train.checkpoint_every_seconds=0.0 train.threads=1'" in readme


def test_a_result_changing_field_is_refused_and_forms_its_own_group(flow: dict, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    runs, other = flow["runs"], flow["other"]
    capsys.readouterr()
    out = tmp_path / "rec"
    assert main(["submit", str(runs[1337]), str(other), "--name", "Mixed", "--author", "A", "--github-id", "a",
                 "--out", str(out)]) != 0
    line = _err_line(capsys)
    assert "not a seed of the same experiment" in line and "model.mlp_mult = 2 vs 3" in line
    assert not out.exists() or not list(out.iterdir())
    assert main(["stats", str(runs[1337]), str(other), "--sota", "9"]) != 0
    assert "model.mlp_mult = 2 vs 3" in _err_line(capsys)
    monkeypatch.setenv("PGOLF_REGISTRY", flow["url"])
    assert main(["eval", str(runs[42]), "--method", "sliding", "--metrics", str(tmp_path / "m.json")]) == 0
    capsys.readouterr()
    assert main(["runs", "list", "--kind", "eval", "--json"]) == 0
    (ev,) = json.loads(capsys.readouterr().out)
    assert ev["config"]["eval.method"] == "sliding"  # another result of the run, never an extra seed
    assert main(["leaderboard", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_n = sorted((r["n"], sorted(r["seeds"])) for r in rows)
    assert by_n == [(1, [5]), (4, [7, 42, 1337, 2025])]  # log_every/threads joined the group; mlp_mult did not


def test_export_keeps_metrics_true_to_the_artifact(flow: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from pgolf.config import load_config
    from pgolf.runner import eval_run

    run = tmp_path / "run"
    shutil.copytree(flow["runs"][1337], run)
    before = _metrics(run)
    assert main(["export", str(run), "--scheme", "int6_gptqlite_zstd"]) == 0
    after = _metrics(run)
    artifact = (run / "model.pgolf").stat().st_size
    assert after["model_bytes"] == artifact and after["artifact_bytes"] == artifact + after["code_bytes"]
    assert after["model_bytes"] != before["model_bytes"] and after["export_scheme"] == "int6_gptqlite_zstd"
    assert load_config(str(run / "config.json")).export.scheme == "int6_gptqlite_zstd"  # what the bundle will be
    assert after["val_bpb"] != before["val_bpb"]  # re-scored: the new artifact's score, logged as the run's was
    log = (run / "train.log").read_text().splitlines()
    last = [x for x in log if x.startswith("final_int6_gptqlite_zstd_roundtrip_exact ")][-1]
    assert f"val_bpb:{after['val_bpb']:.8f}" in last
    # eval charges the same code bytes for the same artifact and config as export did
    res = eval_run(run)
    assert res["code_bytes"] == after["code_bytes"] and res["artifact_bytes"] == after["artifact_bytes"]
    assert res["val_bpb"] == pytest.approx(after["val_bpb"], abs=1e-12)
    # runs list and submit read the new numbers
    monkeypatch.setenv("PGOLF_REGISTRY", f"sqlite:///{tmp_path / 'reg.sqlite'}")
    assert main(["runs", "import", str(run)]) == 0
    capsys.readouterr()
    assert main(["runs", "list", "--json"]) == 0
    (rec,) = json.loads(capsys.readouterr().out)
    assert rec["metrics"]["artifact_bytes"] == after["artifact_bytes"] and rec["metrics"]["val_bpb"] == after["val_bpb"]
    out = tmp_path / "rec"
    assert main(["submit", str(run), "--name", "Re", "--author", "A", "--github-id", "a", "--out", str(out)]) == 0
    (folder,) = out.iterdir()
    sub = json.loads((folder / "submission.json").read_text())
    assert sub["bytes_total"] == after["artifact_bytes"] and sub["val_bpb"] == after["val_bpb"]
    assert len((folder / "train_gpt.py").read_bytes()) == after["code_bytes"]
    # without re-scoring, the old score is marked stale: nothing reports it as this artifact's
    assert main(["export", str(run), "--scheme", "int8_zlib", "--no-rescore"]) == 0
    stale = _metrics(run)
    assert "val_bpb" not in stale and stale["stale"]["values"]["val_bpb"] == after["val_bpb"]
    capsys.readouterr()
    assert main(["submit", str(run), "--name", "Stale", "--author", "A", "--github-id", "a", "--out", str(out)]) != 0
    assert "no score for the current artifact" in _err_line(capsys)
    assert main(["eval", str(run)]) == 0  # the run's own method on its own data scores it again
    again = _metrics(run)
    assert "stale" not in again and again["val_bpb"] == pytest.approx(before["val_bpb"], abs=1e-12)  # int8 again


def test_a_diverged_run_is_an_error_and_records_nothing(tiny_data: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'reg.sqlite'}"
    monkeypatch.setenv("PGOLF_REGISTRY", url)
    out = tmp_path / "nan"
    capsys.readouterr()
    rc = main(["run", "tiny", *TINY, "--set", f"data.path={tiny_data}", "--set", "optim.matrix_lr=1e9",
               "--set", "train.iterations=3", "--out", str(out)])
    assert rc != 0
    line = _err_line(capsys)
    assert " is nan" in line or " is inf" in line or "non-finite training loss" in line, line
    assert not (out / "metrics.json").exists()
    from pgolf.track.registry import open_registry

    with open_registry(url) as reg:
        assert reg.runs() == []


def test_three_seeds_submit_stats_and_review_pass_every_check(flow: dict, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's path on real commands: three seeds → submit → stats → review, every check PASS, exit 0;
    the same with one seed exits 0 (it needs more seeds for a record, which is not a failure)."""
    runs = [flow["runs"][s] for s in (1337, 42, 2025)]
    out = tmp_path / "rec"
    assert main(["submit", *map(str, runs), "--name", "Three", "--author", "A", "--github-id", "a", "--out", str(out)]) == 0
    (folder,) = out.iterdir()
    capsys.readouterr()
    assert main(["stats", *map(str, runs), "--sota", "9", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    sub = json.loads((folder / "submission.json").read_text())
    assert stats["summary"]["new"]["n"] == 3 and stats["summary"]["new"]["mean"] == pytest.approx(sub["val_bpb"], abs=1e-12)
    assert stats["summary"]["new"]["std"] == pytest.approx(sub["val_bpb_std"], abs=1e-12)
    rc = main(["review", str(folder), "--data", str(flow["data"]), "--sota", "9", "--json"])
    rep = json.loads(capsys.readouterr().out)
    assert rc == 0, [c for c in rep["checks"] if c["verdict"] != "pass"]
    assert {c["verdict"] for c in rep["checks"]} == {"pass"}, [(c["id"], c["verdict"]) for c in rep["checks"]]

    one = tmp_path / "one"
    assert main(["submit", str(runs[0]), "--name", "One", "--author", "A", "--github-id", "a", "--out", str(one)]) == 0
    (folder1,) = one.iterdir()
    capsys.readouterr()
    assert main(["review", str(folder1), "--data", str(flow["data"]), "--sota", "9", "--json"]) == 0
    rep1 = {c["id"]: c["verdict"] for c in json.loads(capsys.readouterr().out)["checks"]}
    assert "fail" not in rep1.values() and rep1["claims"] == "pass"
