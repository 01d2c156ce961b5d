"""The non-record track (``RunConfig.track``, :mod:`pgolf.tracks`): its budgets in ``pgolf info --hardware``,
``pgolf submit`` (folder, submission.json, README) and ``pgolf review`` (which checks apply), against the record
track's on the same runs and folders."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from review_planted import make_record  # noqa: E402
from test_submit import MIRROR, SCRIPT, fake_run  # noqa: E402

from pgolf import tracks  # noqa: E402
from pgolf.cli import main  # noqa: E402
from pgolf.config import apply_overrides  # noqa: E402
from pgolf.errors import BudgetError, ConfigError, PgolfError  # noqa: E402
from pgolf.presets import get_preset  # noqa: E402
from pgolf.submit import record  # noqa: E402
from pgolf.submit.review import review  # noqa: E402
from pgolf.submit.schema import RecordSubmission, Submission  # noqa: E402

NON = tracks.NON_RECORD
LONG = ("train.max_wallclock_seconds=14400",)  # the 4-hour baseline's budget


def verdicts(rep) -> dict[str, str]:
    return {c.id: c.verdict for c in rep.checks}


def evidence(rep, check: str) -> str:
    return " | ".join(e.value for c in rep.checks if c.id == check for e in c.evidence)


def _one_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and err[0].startswith("pgolf: error: "), err
    return err[0]


# -- the rules ----------------------------------------------------------------------------------------
def test_every_real_spelling_of_the_track_is_read() -> None:
    for text in ("10min_16mb", "track_10min_16mb", "track-10min-16mb"):
        assert tracks.from_text(text) == tracks.RECORD
    for text in ("non_record_16mb", "non-record-16mb", "non-record-unlimited-compute-16mb", "track_non_record_16mb"):
        assert tracks.from_text(text) == NON
    assert tracks.from_text("16mb") is None and tracks.from_text(None) is None and tracks.from_text(3) is None
    assert tracks.from_path("/x/records/track_non_record_16mb/2026-03-18_A/") == NON
    assert tracks.from_path("records/track_10min_16mb/2026-03-17_NaiveBaseline") == tracks.RECORD
    assert tracks.from_path("/tmp/my_records/x") is None
    rec, non = tracks.get(tracks.RECORD), tracks.get(NON)
    assert (rec.train_seconds, rec.eval_seconds, rec.significance, rec.seeds) == (600.0, 600.0, True, 3)
    assert (non.train_seconds, non.eval_enforced, non.significance, non.seeds) == (None, False, False, 1)
    assert rec.artifact_bytes == non.artifact_bytes == 16_000_000 and non.folder == "records/track_non_record_16mb"
    with pytest.raises(ConfigError, match="unknown track '4h'"):
        tracks.get("4h")
    with pytest.raises(ConfigError, match="track: '4h' is not one of '10min_16mb', 'non_record_16mb'"):
        apply_overrides(get_preset("tiny"), ["track=4h"])


def test_the_training_limit_at_its_boundaries() -> None:
    rec, non = tracks.get(tracks.RECORD), tracks.get(NON)
    # a wallclock-capped run may overshoot by less than two of its average steps (baseline: 600,038 ms)
    assert tracks.train_problem(rec, 600, 600.038, 13_780) is None
    step = 600.2 / 1000
    assert tracks.train_problem(rec, 600, 600.2, 1000) is None  # 0.2 s over, two steps = 1.2 s
    assert tracks.train_problem(rec, 600, 600 + 2.01 * step, 1000).startswith("trained 601.206 s > 600 s")
    assert tracks.train_problem(rec, 0, 600.001, 10) is not None  # no wallclock stop: no overshoot allowed
    assert tracks.train_problem(rec, 600.5, 1.0, 2).startswith("train.max_wallclock_seconds = 600.5 > 600")
    assert tracks.train_problem(non, 14_400, 14_400.039, 329_430) is None
    assert tracks.eval_problem(rec, 600.0) is None and tracks.eval_problem(rec, 600.1).startswith("evaluated in 600.1 s")
    assert tracks.eval_problem(non, 1819.0) is None  # reported, not refused (MDLM's 1,819 s on 2×H100)


def test_the_schema_reads_every_real_non_record_submission_json() -> None:
    if not (MIRROR / "HEAD").exists():
        pytest.skip("no mirror of openai/parameter-golf")
    git = ["git", f"--git-dir={MIRROR}"]
    names = subprocess.run([*git, "ls-tree", "-r", "--name-only", "HEAD", "records/track_non_record_16mb/"],
                           capture_output=True, text=True, check=True).stdout.split()
    subs = [n for n in names if n.count("/") == 3 and Path(n).name.startswith("submission") and n.endswith(".json")]
    assert len(subs) >= 12
    refused = {}
    for n in subs:
        data = json.loads(subprocess.run([*git, "show", f"HEAD:{n}"], capture_output=True, check=True).stdout)
        assert tracks.from_path(n) == NON and data.get("track") is None or tracks.from_text(data["track"]) == NON, n
        try:
            RecordSubmission.model_validate(data)
        except Exception as e:  # noqa: BLE001 - recorded and compared below
            refused[n.split("/")[2]] = str(e)
    # the one refusal: MDLM's seed result is its variational bound (val_var_bpb), with no exact val_bpb
    assert list(refused) == ["2026-03-29_LLaDA_MDLM_Diffusion"] and "seed_results.42.val_bpb" in refused[
        "2026-03-29_LLaDA_MDLM_Diffusion"]
    base = json.loads(subprocess.run([*git, "show", "HEAD:records/track_non_record_16mb/2026-03-18_Quasi10Bfrom50B_"
                                      "SP1024_9x512_KV4_4h_pgut3/submission.json"], capture_output=True, check=True).stdout)
    got = RecordSubmission.model_validate(base)
    assert (got.wallclock_seconds, got.step_stop, got.val_bpb) == (14400.039, 329430, 1.20737944)


# -- preflight --------------------------------------------------------------------------------------------
def test_preflight_judges_training_time_only_on_the_record_track() -> None:
    from pgolf.preflight import preflight

    def judged(*sets: str, hardware: str = "8xH100") -> dict[str, dict[str, str]]:
        cfg = apply_overrides(get_preset("baseline"), list(sets))
        pf = preflight(cfg, hardware, artifact_bytes=15_000_000, val_tokens=1_000_000)
        return {v["budget"]: v for v in tracks.preflight_verdicts(cfg, pf)}, pf

    v, _ = judged()
    assert v["train"]["verdict"] == "ok" and v["eval"]["verdict"] == "ok" and v["artifact"]["verdict"] == "ok"
    v, _ = judged(*LONG)
    assert v["train"]["verdict"] == "over" and "train.max_wallclock_seconds = 14400 > 600 s" in v["train"]["line"]
    v, _ = judged(*LONG, f"track={NON}")
    assert v["train"]["verdict"] == "n/a" and v["train"]["line"] == f"training: no limit on the {NON} track (budget 14400 s)"
    # iterations only: the predicted time, steps × ms/step, judged against 600 s
    v, pf = judged("train.max_wallclock_seconds=0", "train.iterations=20000", hardware="1xH100")
    want = 20000 * pf.ms_per_step / 1000
    assert pf.steps == 20000 and want > 600 and v["train"]["verdict"] == "over"
    assert f"20,000 steps ≈ {want:,.1f} s (predicted on 1xH100; the rule is judged on 8×H100) > 600 s" in v["train"]["line"]
    v, _ = judged("train.max_wallclock_seconds=0", "train.iterations=20000", f"track={NON}", hardware="1xH100")
    assert v["train"]["verdict"] == "n/a" and f"≈ {want:,.0f} s" in v["train"]["line"]
    cfg = apply_overrides(get_preset("baseline"), [f"track={NON}"])
    pf = preflight(cfg, "8xH100", artifact_bytes=16_000_001, val_tokens=1_000_000)
    assert {v["budget"]: v["verdict"] for v in tracks.preflight_verdicts(cfg, pf)}["artifact"] == "over"  # both tracks


# -- submit with recorded runs ------------------------------------------------------------------------------
def _build(runs: list[Path], out: Path | None, **kw) -> Path:
    return record.build_record(runs, name="Long Run", author="A. Author", github_id="aauthor", out_root=out,
                               date="2026-12-01", script=lambda cfg: SCRIPT, **kw)


def test_submit_refuses_over_600_s_on_the_record_track_and_writes_it_as_non_record(tmp_path: Path) -> None:
    long = [fake_run(tmp_path / f"s{s}", s, loss, train_s=t) for s, loss, t in [(1337, 2.0, 14_400.0), (42, 2.01, 14_390.5)]]
    with pytest.raises(BudgetError, match=r"s1337/metrics.json: trained 14400.000 s > 600 s: the 10min_16mb track "
                       r"trains at most 600 s on 8×H100; declare it on the non-record track \(--track non_record_16mb"):
        _build(long, tmp_path / "rec")
    assert not (tmp_path / "rec").exists()
    folder = _build(long, tmp_path / "records" / "track_non_record_16mb", track=NON)
    sub = json.loads((folder / "submission.json").read_text())
    Submission.model_validate(sub)
    assert sub["track"] == NON and sub["wallclock_seconds"] == 14_400.0 and sub["seeds"] == [1337, 42]
    assert sub["non_record_reason"] == "unlimited compute: trained up to 14,400.0 s, beyond the 10-minute cutoff"
    assert sub["compliance"] == {"artifact_under_16mb": True, "train_under_600s": False, "eval_under_600s": True}
    readme = (folder / "README.md").read_text()
    assert readme.startswith("# Long Run\n\n**Non-record submission** (track `non_record_16mb`, "
                             "`records/track_non_record_16mb/`): unlimited compute: trained up to 14,400.0 s")
    assert "not intended to meet the 10-minute training cutoff" in readme and "no significance test" in readme
    # the record track's schema refuses the same content
    with pytest.raises(Exception, match="the 10min_16mb track needs compliance.train_under_600s true"):
        Submission.model_validate({**sub, "track": "10min_16mb"})
    with pytest.raises(Exception, match="says why it is not a record"):
        Submission.model_validate({k: v for k, v in sub.items() if k != "non_record_reason"})
    # evaluation over 600 s: refused on the record track, a stated reason on the non-record one
    slow = fake_run(tmp_path / "slow", 7, 2.0)
    metrics = json.loads((slow / "metrics.json").read_text())
    (slow / "metrics.json").write_text(json.dumps({**metrics, "eval_seconds": 1819.0}))
    with pytest.raises(BudgetError, match=r"evaluated in 1819.0 s > 600 s: the 10min_16mb track evaluates in at most"):
        _build([slow], tmp_path / "rec2")
    sub = json.loads((_build([slow], tmp_path / "rec3", track=NON) / "submission.json").read_text())
    assert sub["non_record_reason"] == "evaluated in up to 1,819.0 s, over the 600 s evaluation limit"
    assert sub["compliance"]["eval_under_600s"] is False and sub["compliance"]["train_under_600s"] is True
    # within the rules on 8×H100: nothing to name but the declaration; --reason replaces it
    ok = fake_run(tmp_path / "ok", 8, 2.0)
    sub = json.loads((_build([ok], tmp_path / "rec4", track=NON) / "submission.json").read_text())
    assert sub["non_record_reason"] == "declared non-record: no claim to beat the record"
    sub = json.loads((_build([ok], tmp_path / "rec5", track=NON, reason="a negative result") / "submission.json").read_text())
    assert sub["non_record_reason"] == "a negative result"


def test_submit_track_inputs_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(record, "bundle_script", lambda cfg: SCRIPT)
    a = fake_run(tmp_path / "a", 1, 2.0)
    b = fake_run(tmp_path / "b", 2, 2.0, sets=("optim.matrix_lr=0.03", f"track={NON}"))  # same experiment
    argv = ["submit", str(a), str(b), "--name", "T", "--author", "A", "--github-id", "a", "--date", "2026-12-01"]
    out = tmp_path / "records"
    assert "the runs declare different tracks" in _one_line(capsys, [*argv, "--out", str(out)])
    assert "--reason is the non-record track's non_record_reason" in _one_line(
        capsys, [*argv, "--out", str(out), "--track", "10min_16mb", "--reason", "x"])
    assert "unknown track 'record'" in _one_line(capsys, [*argv, "--out", str(out), "--track", "record"])
    assert (f"--out {out / 'track_10min_16mb'} lies in the 10min_16mb track's folder, but the submission is on the "
            f"{NON} track") in _one_line(capsys, [*argv, "--out", str(out / "track_10min_16mb"), "--track", NON])
    assert not out.exists()
    monkeypatch.chdir(tmp_path)  # the default folder follows the track
    assert main([*argv, "--track", NON]) == 0
    assert (tmp_path / "records" / "track_non_record_16mb" / "2026-12-01_T" / "submission.json").is_file()


# -- real runs: submit and review ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def long_run(tiny_data: Path, tmp_path_factory) -> Path:
    """One seed of ``tiny`` with the 4-hour baseline's budget on the non-record track (it stops at its 2 iterations)."""
    run = tmp_path_factory.mktemp("track-run") / "s1337"
    assert main(["run", "tiny", "--set", "model.vocab_size=384", "--set", "train.iterations=2", "--set",
                 f"data.path={tiny_data}", "--set", LONG[0], "--set", f"track={NON}", "--out", str(run)]) == 0
    return run


def test_a_real_non_record_run_submits_and_passes_review(long_run: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "records" / "track_non_record_16mb"
    argv = ["submit", str(long_run), "--name", "tiny long", "--author", "A", "--github-id", "a", "--date", "2026-12-01"]
    assert main([*argv, "--out", str(root)]) == 0
    folder = root / "2026-12-01_tiny_long"
    sub = json.loads((folder / "submission.json").read_text())
    m = json.loads((long_run / "metrics.json").read_text())
    assert sub["track"] == NON and sub["wallclock_seconds"] == m["train_seconds"] and sub["val_bpb"] == m["val_bpb"]
    assert sub["non_record_reason"].startswith("unlimited compute: a training budget of 14400 s")
    readme = (folder / "README.md").read_text()
    assert "PGOLF_SET='track=non_record_16mb " in readme  # the bundle's run restores the declaration
    rep = review(folder)
    v = verdicts(rep)
    assert rep.track == NON and rep.track_from == "folder path" and rep.exit_code == 0, v
    assert v["train_time"] == v["seeds"] == v["significance"] == v["outside_timers"] == v["artifact_size"] == "pass"
    assert "the non-record track has no training limit" in evidence(rep, "train_time")
    assert "1 seed(s); non-record track" in evidence(rep, "seeds") and "no record claim" in evidence(rep, "significance")
    assert not [c for c, x in v.items() if x == "fail"]
    # the same runs declared on the record track: the time check fails, in one line
    line = _one_line(capsys, [*argv, "--track", "10min_16mb", "--out", str(tmp_path / "rec")])
    assert line == (f"pgolf: error: {long_run / 'metrics.json'}: train.max_wallclock_seconds = 14400 > 600: the "
                    "10min_16mb track trains at most 600 s on 8×H100; declare it on the non-record track (--track "
                    "non_record_16mb, or --set track=non_record_16mb)")
    assert not (tmp_path / "rec").exists()
    # and the folder moved into the record track's directory fails review's training check on its 14400 s budget
    moved = shutil.copytree(folder, tmp_path / "records" / "track_10min_16mb" / folder.name)
    rep = review(moved)
    assert rep.track == tracks.RECORD and rep.exit_code == 1 and verdicts(rep)["train_time"] == "fail"
    assert "max_wallclock_seconds = 14400 > 600 on the record track" in evidence(rep, "train_time")
    assert "track 'non_record_16mb' is not the track of the folder it lies in" in evidence(rep, "claims")


# -- review of a folder over 600 s --------------------------------------------------------------------
def test_review_judges_time_by_the_track(tmp_path: Path) -> None:
    """The planted records folder with a 4-hour training (the 4-hour baseline's 14,400,039 ms), one seed: on the
    non-record track every check keeps the clean folder's verdict, on the record track training fails."""
    note = "# Long\n\nThis run is not intended to meet the 10-minute cutoff (non-record, unlimited compute).\n\n" \
           "| Seed | val_bpb |\n|---|---|\n| 1337 | 1.1100 |\n"
    kw = dict(seeds=(1337,), readme=note, submission={"track": "non-record-unlimited-compute-16mb", "val_bpb": 1.11,
                                                       "val_loss": round(1.11 / 0.5922, 5)})
    short = review(make_record(tmp_path / "records" / "track_non_record_16mb", "short", **kw))
    long_ = review(make_record(tmp_path / "records" / "track_non_record_16mb", "long", log_kw={"train_ms": 14_400_039},
                               **kw))
    assert long_.track == NON and long_.exit_code == 0
    assert verdicts(long_) == verdicts(short), (verdicts(long_), verdicts(short))
    assert "train_time 14,400.039 s > 600 s: no training limit on the non-record track (unlimited compute), and the " \
        "README notes it" in evidence(long_, "train_time")
    quiet = review(make_record(tmp_path / "records" / "track_non_record_16mb", "quiet", log_kw={"train_ms": 14_400_039},
                               **{**kw, "readme": "# Quiet\n\n| Seed | val_bpb |\n|---|---|\n| 1337 | 1.1100 |\n"}))
    assert verdicts(quiet)["train_time"] == "needs-proof" and "Just note as such" in evidence(quiet, "train_time")
    # the same folder judged by submission.json alone (no track_* directory), then on the record track
    alone = review(make_record(tmp_path / "elsewhere", "long", log_kw={"train_ms": 14_400_039}, **kw))
    assert alone.track == NON and alone.track_from == "submission.json" and alone.exit_code == 0
    rec = review(make_record(tmp_path / "records" / "track_10min_16mb", "long", log_kw={"train_ms": 14_400_039}, **kw))
    assert rec.track == tracks.RECORD and rec.exit_code == 1
    assert verdicts(rec)["train_time"] == "fail" and verdicts(rec)["seeds"] == "needs-proof"
    assert verdicts(rec)["claims"] == "needs-proof"  # submission.json names the other track
    # evaluation over 600 s: reported on the non-record track, a failure on the record track
    slow = review(make_record(tmp_path / "records" / "track_non_record_16mb", "slow", log_kw={"eval_ms": 1_819_000}, **kw))
    assert verdicts(slow)["eval_time"] == "needs-proof" and slow.exit_code == 0
    slow_rec = review(make_record(tmp_path / "slow_rec", "slow", log_kw={"eval_ms": 1_819_000}))
    assert verdicts(slow_rec)["eval_time"] == "fail"


def test_review_reads_the_real_non_record_folders(tmp_path: Path) -> None:
    """The 4-hour baseline as merged: trained 14,400,039 ms; the review judges it on the non-record track and
    fails nothing for its time."""
    if not (MIRROR / "HEAD").exists():
        pytest.skip("no mirror of openai/parameter-golf")
    name = "records/track_non_record_16mb/2026-03-18_Quasi10Bfrom50B_SP1024_9x512_KV4_4h_pgut3"
    archive = subprocess.run(["git", f"--git-dir={MIRROR}", "archive", "HEAD", name], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tmp_path)], input=archive.stdout, check=True)
    rep = review(tmp_path / name)
    v = verdicts(rep)
    assert rep.track == NON and v["train_time"] == "pass" and "14,400.039 s > 600 s" in evidence(rep, "train_time")
    assert v["seeds"] == v["significance"] == "pass" and v["eval_time"] == "pass"
    with pytest.raises(PgolfError):  # only the folder itself can be missing
        review(tmp_path / "nothing")
