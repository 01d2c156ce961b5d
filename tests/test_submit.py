"""The records folder (``pgolf submit``) and the submission.json schema: exact contents against the
runs, the real records' files accepted, and every bad input refused in one line with nothing written."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import statistics
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pgolf.config import apply_overrides
from pgolf.errors import BudgetError, PgolfError
from pgolf.presets import get_preset
from pgolf.submit import record
from pgolf.submit.runs import load_run, run_identity
from pgolf.submit.schema import RecordSubmission, Submission

MIRROR = Path("/work/.mirror/openai+parameter-golf/repo")
SCRIPT = b"# train_gpt.py stand-in for the tests\nprint('hello')\n"
VERSIONS = {"pgolf": "0.1.0", "python": "3.11.7", "torch": "2.13.0", "numpy": "2.3.0", "sentencepiece": "0.2.0",
            "safetensors": "0.6.2", "zstandard": "0.24.0", "brotli": "1.1.0"}


def fake_run(d: Path, seed: int, val_loss: float, *, sets: tuple[str, ...] = ("optim.matrix_lr=0.03",),
             artifact: int = 15_000_000, code: int = len(SCRIPT), tokens: int = 1000, nbytes: int = 2400,
             train_s: float = 590.0) -> Path:
    """A finished run directory as ``pgolf run`` leaves it (config.json, metrics.json, train.log)."""
    cfg = apply_overrides(get_preset("tiny"), [f"train.seed={seed}", f"data.path=/data/{seed}", *sets])
    d.mkdir(parents=True)
    (d / "config.json").write_text(cfg.to_json())
    bpb = val_loss / math.log(2) * tokens / nbytes
    (d / "metrics.json").write_text(json.dumps({
        "val_loss": val_loss, "val_bpb": bpb, "val_bpb_raw": None, "val_tokens": tokens, "val_bytes": nbytes,
        "val_bytes_raw": None, "pre_quant_val_bpb": bpb - 0.01, "artifact_bytes": artifact, "model_bytes": artifact - code,
        "code_bytes": code, "params": 12345, "steps": 4900 + seed % 7, "train_seconds": train_s, "eval_seconds": 400.5,
        "tokens_per_second": 1e6, "code_sha256": hashlib.sha256(SCRIPT).hexdigest() if code == len(SCRIPT) else None}))
    (d / "train.log").write_text(
        f"# pgolf run 2026-12-01T00:00:00+0000\n# command: pgolf run tiny --set train.seed={seed} --set "
        f"optim.matrix_lr=0.03\n# versions: {json.dumps(VERSIONS)}\n# hardware: "
        + json.dumps({"cpu": "AMD EPYC", "cpu_count": 2, "gpus": ["NVIDIA H100 80GB HBM3"] * 8}) + f"\nseed {seed} log\n")
    return d


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    return [fake_run(tmp_path / f"s{s}", s, loss) for s, loss in [(1337, 2.001), (42, 2.004), (2025, 1.999)]]


def _build(runs: list[Path], out: Path, **kw) -> Path:
    return record.build_record(runs, name="Tiny Test Record", author="A. Author", github_id="aauthor", out_root=out,
                               date="2026-12-01", script=lambda cfg: SCRIPT, **kw)


def test_records_folder_contents_match_the_runs(runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "records"
    folder = _build(runs, out, blurb="A tiny test.")
    assert folder == out / "2026-12-01_Tiny_Test_Record"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["README.md", "submission.json", "train_gpt.py", "requirements.txt",
         "train_seed1337.log", "train_seed42.log", "train_seed2025.log"])
    assert [p.name for p in out.iterdir()] == [folder.name]  # no temporary directory left
    sub = json.loads((folder / "submission.json").read_text())
    Submission.model_validate(sub)
    RecordSubmission.model_validate(sub)
    ms = [json.loads((r / "metrics.json").read_text()) for r in runs]
    bpb = np.array([m["val_bpb"] for m in ms], np.float64)
    loss = np.array([m["val_loss"] for m in ms], np.float64)
    assert sub["seeds"] == [1337, 42, 2025]
    assert math.isclose(sub["val_bpb"], bpb.mean(), rel_tol=1e-15) and math.isclose(sub["val_loss"], loss.mean(), rel_tol=1e-15)
    assert math.isclose(sub["val_bpb_std"], bpb.std(ddof=1), rel_tol=1e-12)
    assert math.isclose(sub["val_loss_std"], loss.std(ddof=1), rel_tol=1e-12)
    assert sub["bytes_total"] == sub["artifact_bytes_max"] == 15_000_000 and sub["bytes_code"] == len(SCRIPT)
    assert sub["seed_results"]["42"]["val_loss"] == 2.004 and sub["seed_results"]["42"]["step_avg_ms"] == 590.0 * 1000 / ms[1]["steps"]
    assert sub["hardware"] == "8xNVIDIA H100 80GB HBM3" and sub["pytorch_version"] == "2.13.0"
    assert sub["compliance"] == {"artifact_under_16mb": True, "train_under_600s": True, "eval_under_600s": True}
    assert sub["pgolf"]["config_sha256"] == run_identity(load_run(runs[0])) and sub["pgolf"]["preset"] == "tiny"
    assert sub["date"] == "2026-12-01" and sub["track"] == "10min_16mb" and sub["blurb"] == "A tiny test."
    assert (folder / "train_gpt.py").read_bytes() == SCRIPT
    for r in runs:
        seed = json.loads((r / "config.json").read_text())["train"]["seed"]
        assert (folder / f"train_seed{seed}.log").read_bytes() == (r / "train.log").read_bytes()
    reqs = (folder / "requirements.txt").read_text().splitlines()
    assert reqs == [f"{k}=={VERSIONS[k]}" for k in record.REQUIREMENTS]
    readme = (folder / "README.md").read_text()
    assert readme.startswith("# Tiny Test Record\n")
    assert f"| 42 | {ms[1]['val_bpb']:.8f} | 2.00400000 |" in readme
    assert "| `optim.matrix_lr` | `0.03` | run (--set) |" in readme  # changed by the run
    assert "| `model.num_layers` | `2` | tiny |" in readme  # set by the preset
    assert "train.seed" not in readme.split("## Settings")[1].split("## Hardware")[0].split("|---|")[1]
    assert "pgolf run tiny --set train.seed=2025 --set optim.matrix_lr=0.03" in readme
    assert "RUN_ID=seed42 SEED=42 TRAIN_LOG_EVERY=5 VAL_LOSS_EVERY=0 " in readme and "8xNVIDIA H100 80GB HBM3" in readme


def test_the_schema_accepts_every_real_submission_json() -> None:
    if not (MIRROR / "HEAD").exists():
        pytest.skip("no mirror of openai/parameter-golf")
    git = ["git", f"--git-dir={MIRROR}"]
    names = subprocess.run([*git, "ls-tree", "-r", "--name-only", "HEAD", "records/track_10min_16mb/"],
                           capture_output=True, text=True, check=True).stdout.split()
    subs = [n for n in names if n.endswith("/submission.json")]
    assert len(subs) >= 40
    for n in subs:
        data = json.loads(subprocess.run([*git, "show", f"HEAD:{n}"], capture_output=True, check=True).stdout)
        RecordSubmission.model_validate(data)
    base = json.loads(subprocess.run([*git, "show", "HEAD:records/track_10min_16mb/2026-03-17_NaiveBaseline/submission.json"],
                                     capture_output=True, check=True).stdout)
    assert RecordSubmission.model_validate(base).bytes_total == 15863489


@pytest.mark.parametrize("change, message", [
    ({"bytes_total": "15863489"}, "bytes_total"),  # a string is not a byte count
    ({"val_bpb": True}, "val_bpb"),
    ({"date": "18 March"}, "not an ISO-8601 date"),
    ({"seed_results": {"1": {"val_loss": 2.0}}}, "seed_results.1.val_bpb"),
])
def test_record_schema_types(change: dict, message: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        RecordSubmission.model_validate({"author": "x", "val_bpb": 1.2, **change})


def test_submission_must_be_consistent(runs: list[Path], tmp_path: Path) -> None:
    from pydantic import ValidationError

    sub = json.loads((_build(runs, tmp_path / "r") / "submission.json").read_text())
    for change, message in [({"val_bpb": sub["val_bpb"] + 1e-6}, "is not the seeds' mean"),
                            ({"val_loss_std": 0.0}, "val_loss_std .* standard deviation"),
                            ({"seeds": [1337, 42]}, "are not the distinct keys"),
                            ({"bytes_total": 14_000_000}, "is not the largest artifact"),
                            ({"bytes_total": 16_000_001}, "less than or equal to 16000000"),
                            ({"author": ""}, "at least 1 character"),
                            ({"unknown_key": 1}, "Extra inputs are not permitted")]:
        with pytest.raises(ValidationError, match=message):
            Submission.model_validate({**sub, **change})


def _refuses(capsys: pytest.CaptureFixture[str], argv: list[str], out: Path, message: str) -> None:
    from pgolf.cli import main

    before = sorted(p.name for p in out.iterdir()) if out.exists() else []
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and err[0].startswith("pgolf: error: "), err
    assert message in err[0], err[0]
    assert (sorted(p.name for p in out.iterdir()) if out.exists() else []) == before  # nothing (half-)written


def _argv(runs: list[Path], out: Path, *extra: str) -> list[str]:
    return ["submit", *map(str, runs), "--name", "T", "--author", "A", "--github-id", "a", "--out", str(out),
            "--date", "2026-12-01", *extra]


def test_bad_inputs_are_one_line_errors_and_write_nothing(runs: list[Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(record, "bundle_script", lambda cfg: SCRIPT)
    out = tmp_path / "records"
    no_metrics = tmp_path / "nometrics"
    fake_run(no_metrics, 7, 2.0)
    (no_metrics / "metrics.json").unlink()
    _refuses(capsys, _argv([runs[0], no_metrics], out), out, f"{no_metrics / 'metrics.json'}: no metrics.json")
    other = fake_run(tmp_path / "other", 8, 2.0, sets=("optim.matrix_lr=0.05",))
    _refuses(capsys, _argv([runs[0], other], out), out,
             f"not a seed of the same experiment as {runs[0]}: optim.matrix_lr = 0.03 vs 0.05")
    _refuses(capsys, _argv([runs[0], runs[0]], out), out, "seed 1337 is also the seed of")
    wrong = fake_run(tmp_path / "wrong", 9, 2.0)
    (wrong / "metrics.json").write_text(json.dumps([1, 2, 3]))
    _refuses(capsys, _argv([wrong], out), out, "metrics must be a JSON object, got list")
    (wrong / "metrics.json").write_text(json.dumps({**json.loads((runs[0] / "metrics.json").read_text()), "steps": "4900"}))
    _refuses(capsys, _argv([wrong], out), out, "steps must be an integer, got '4900' (str)")
    (wrong / "metrics.json").write_text("{not json")
    _refuses(capsys, _argv([wrong], out), out, "not readable JSON")
    big = fake_run(tmp_path / "big", 10, 2.0, artifact=16_000_001)
    _refuses(capsys, _argv([big], out), out, "artifact 16,000,001 bytes is over the 16,000,000-byte cap")
    with pytest.raises(BudgetError):  # exit code 3, as every over-budget error
        _build([big], out)
    charged = fake_run(tmp_path / "charged", 11, 2.0, code=999)
    _refuses(capsys, _argv([charged], out), out, "the run charged a train_gpt.py of 999 bytes, but this pgolf")
    _refuses(capsys, _argv(runs, out, "--name", "???"), out, "has no letters or digits")
    assert main_ok(_argv(runs, out))
    _refuses(capsys, _argv(runs, out), out, "already exists")


def main_ok(argv: list[str]) -> bool:
    from pgolf.cli import main

    return main(argv) == 0


def test_overwrite_and_a_failure_midway_leave_a_whole_folder(runs: list[Path], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "records"
    folder = _build(runs, out)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    real = record.fileio.write_bytes

    def boom(path, data):
        if Path(path).name == "train_gpt.py":
            raise OSError("disk full")
        real(path, data)

    monkeypatch.setattr(record.fileio, "write_bytes", boom)
    with pytest.raises(OSError, match="disk full"):
        _build(runs[:2], out, overwrite=True)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before and [p.name for p in out.iterdir()] == [folder.name]
    monkeypatch.setattr(record.fileio, "write_bytes", real)
    _build(runs[:2], out, overwrite=True)
    assert json.loads((folder / "submission.json").read_text())["seeds"] == [1337, 42]
    assert [p.name for p in out.iterdir()] == [folder.name] and not (folder / "train_seed2025.log").exists()


def test_train_gpt_comes_from_the_bundle(runs: list[Path], tmp_path: Path) -> None:
    if importlib.util.find_spec("pgolf.submit.bundle") is None:  # until the bundle branch is merged
        with pytest.raises(PgolfError, match="no pgolf.submit.bundle"):
            record.build_record(runs, name="x", author="a", github_id="a", out_root=tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["s1337", "s2025", "s42"]  # nothing written
    else:  # the real bundle: Python source that compiles
        data = record.bundle_script(load_run(runs[0]).cfg)
        compile(data, "train_gpt.py", "exec")


def test_a_real_run_submits(tiny_data: Path, tmp_path: Path) -> None:
    """The output of an actual ``pgolf run`` (one seed) goes through: its metrics and log are read as written."""
    from pgolf.cli import main

    run = tmp_path / "run"
    assert main(["run", "tiny", "--set", "model.vocab_size=384", "--set", "train.iterations=2", "--set",
                 f"data.path={tiny_data}", "--out", str(run)]) == 0
    m = json.loads((run / "metrics.json").read_text())
    folder = record.build_record([run], name="real", author="a", github_id="a", out_root=tmp_path / "rec")
    shipped = (folder / "train_gpt.py").read_bytes()  # the real bundle, the very bytes the run charged
    assert len(shipped) == m["code_bytes"] and hashlib.sha256(shipped).hexdigest() == m["code_sha256"]
    sub = json.loads((folder / "submission.json").read_text())
    assert sub["val_bpb"] == m["val_bpb"] and sub["val_bpb_std"] == 0.0 and sub["seeds"] == [1337]
    assert sub["pgolf"]["tokens_per_byte"] == m["val_tokens"] / m["val_bytes"]
    readme = (folder / "README.md").read_text()
    assert sub["hardware"].startswith("CPU: ") and "| `model.vocab_size` | `384` | run (--set) |" in readme
    assert "| `train.iterations` | `2` | run (--set) |" in readme and "| `model.num_layers` | `2` | tiny |" in readme
    assert statistics.fmean([sub["seed_results"]["1337"]["val_bpb"]]) == sub["val_bpb"]
