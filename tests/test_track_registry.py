"""The run registry on SQLite and PostgreSQL: the migration creates exactly the ORM's schema, records
round-trip field for field, filters select what they say, two processes writing at once neither lose nor
duplicate rows, claims have exactly one winner, and the CLI records runs without ever failing one."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _track_util import BACKENDS, database, make_record

from pgolf.track.registry import SCHEMA_REVISION, RegistryError, open_registry, resolve_url

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=BACKENDS)
def url(request, tmp_path):
    with database(request.param, tmp_path) as u:
        yield u


def test_migration_creates_exactly_the_orm_schema(url):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import inspect

    from pgolf.track import registry as regmod
    from pgolf.track.schema import VERSION_TABLE, Base

    with open_registry(url) as reg:
        with reg.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={
                "version_table": VERSION_TABLE, "compare_type": True,
                "include_name": lambda name, type_, parent: type_ != "table" or name.startswith("pgolf_")})
            assert compare_metadata(ctx, Base.metadata) == []
            assert ctx.get_current_revision() == SCHEMA_REVISION
        tables = {t for t in inspect(reg.engine).get_table_names() if t.startswith("pgolf_")}
    assert tables == set(Base.metadata.tables) | {VERSION_TABLE}
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(regmod.__file__).parent / "migrations"))
    assert ScriptDirectory.from_config(cfg).get_current_head() == SCHEMA_REVISION


def test_round_trip_and_filters(url):
    recs = [make_record(i) for i in range(6)]
    with open_registry(url) as reg:
        assert all(reg.add_run(r) for r in recs)
        assert not reg.add_run(recs[0].model_copy(update={"tags": ["extra"]}))  # same run id: kept once
        back = {r.run_id: r for r in reg.runs()}
        assert len(back) == 6
        for r in recs:
            got = back[r.run_id]
            want = r.full()
            want["tags"] = sorted(want["tags"] + (["extra"] if r.run_id == recs[0].run_id else []))
            assert got.full() == want
        assert [r.run_id for r in reg.runs()] == [r.run_id for r in sorted(recs, key=lambda r: r.created, reverse=True)]
        assert {r.run_id for r in reg.runs(tag="n1")} == {r.run_id for r in recs if r.seed % 2 == 1}
        assert {r.run_id for r in reg.runs(config_hash="0" * 63 + "1")} == {recs[1].run_id, recs[4].run_id}
        assert [r.run_id for r in reg.runs(run_id="r00000000000000")] and len(reg.runs(run_id="r0")) == 6
        assert [r.seed for r in reg.runs(seed=1003)] == [1003]
        assert {r.run_id for r in reg.runs(since="2026-05-03", until="2026-05-04")} == {recs[2].run_id, recs[3].run_id}
        assert reg.runs(preset="other") == [] and reg.runs(machine="x") == [] and len(reg.runs(dataset="data")) == 6
        assert len(reg.runs(limit=2)) == 2
        with pytest.raises(RegistryError, match="ambiguous"):
            reg.get_run("r0")
        with pytest.raises(RegistryError, match="no run"):
            reg.get_run("zzz")
        reg.tag(recs[5].run_id, ["best", "best"])
        assert "best" in reg.get_run(recs[5].run_id).tags
        # model_dump: exactly the keys other tools consume
        assert set(back[recs[0].run_id].model_dump()) == {
            "run_id", "kind", "created", "preset", "config_hash", "seed", "tags", "dataset", "machine",
            "git_commit", "dirty", "config", "metrics", "curves", "run_dir"}


def test_non_finite_metrics_are_stored_as_null(url):
    with open_registry(url) as reg:
        reg.add_run(make_record(0, metrics={"val_bpb": float("nan"), "x": float("inf"), "ok": 1.5}))
        assert reg.runs()[0].metrics == {"val_bpb": None, "x": None, "ok": 1.5}


WRITER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    sys.path.insert(0, {tests!r})
    from _track_util import make_record
    from pgolf.track.registry import open_registry
    url, who, start = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    while time.time() < start:
        time.sleep(0.005)
    reg = open_registry(url)   # both open a fresh database at once: the migration runs once
    for i in range(60):
        shared = make_record(i)                          # both processes write these 60
        own = make_record(1000 * (who + 1) + i)          # and 60 of their own
        reg.add_run(shared)
        reg.add_run(own)
        reg.post("note", f"{{who}} {{i}}")
    print("ok")
""")


def test_two_processes_writing_at_once_lose_and_duplicate_nothing(url, tmp_path):
    import time

    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(root=str(ROOT), tests=str(ROOT / "tests")))
    start = time.time() + 2.0
    procs = [subprocess.Popen([sys.executable, str(script), url, str(w), str(start)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for w in (0, 1)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    with open_registry(url) as reg:
        ids = [r.run_id for r in reg.runs()]
        feed = reg.feed(limit=1000)
    want = {make_record(i).run_id for i in range(60)} | {make_record(1000 * (w + 1) + i).run_id
                                                          for w in (0, 1) for i in range(60)}
    assert len(ids) == len(set(ids)) == 180 and set(ids) == want
    assert len(feed) == 120


CLAIMER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from pgolf.track.registry import open_registry, owner_id
    url, start = sys.argv[1], float(sys.argv[2])
    reg = open_registry(url)
    while time.time() < start:
        time.sleep(0.002)
    won = [k for k in range(20) if reg.claim("scope", f"k{{k}}", owner_id(), stale_after=600) is not None]
    print(",".join(map(str, won)), flush=True)
    sys.stdin.read()  # stay alive until every claimer is done: a dead owner's claims may be taken over
""")


def test_claims_have_exactly_one_winner_and_stale_ones_are_taken_over_once(url, tmp_path):
    import time
    from datetime import datetime, timedelta, timezone

    from sqlalchemy import update

    from pgolf.track.schema import Claim

    with open_registry(url):
        pass  # schema first, so the claimers race on claims only
    script = tmp_path / "claimer.py"
    script.write_text(CLAIMER.format(root=str(ROOT)))
    start = time.time() + 2.0
    procs = [subprocess.Popen([sys.executable, str(script), url, str(start)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    lines = [p.stdout.readline() for p in procs]  # all three have claimed (and are still alive)
    outs = [p.communicate(input="", timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    won = [int(k) for line in lines for k in line.strip().split(",") if k]
    assert sorted(won) == list(range(20))  # every key won exactly once across the processes
    with open_registry(url) as reg:
        # the claimers have exited: their claims belong to dead processes of this host and are taken over
        assert reg.claim("scope", "k0", "me:1:a", stale_after=600)["attempt"] == 2
        # an owner on another host that stopped beating: stale after stale_after seconds
        c = reg.claim("s2", "x", "elsewhere:1:a", stale_after=600)
        assert c["attempt"] == 1
        assert reg.claim("s2", "x", "me:2:b", stale_after=600) is None
        with reg.engine.begin() as conn:
            conn.execute(update(Claim).where(Claim.key == "x").values(
                heartbeat=datetime.now(timezone.utc) - timedelta(seconds=700)))
        taken = reg.claim("s2", "x", "me:2:b", stale_after=600)
        assert taken["attempt"] == 2 and taken["owner"] == "me:2:b"
        assert reg.claim("s2", "x", "me:3:c", stale_after=600) is None  # fresh again after the takeover
        assert not reg.heartbeat("s2", "x", "elsewhere:1:a") and reg.heartbeat("s2", "x", "me:2:b")
        # a dead process on this host: taken over at once
        import socket

        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        ghost = f"{socket.gethostname()}:{dead.stdout.strip()}:zz"
        assert reg.claim("s3", "y", ghost, stale_after=600)["attempt"] == 1
        assert reg.claim("s3", "y", "me:4:d", stale_after=600)["attempt"] == 2
        # finished claims are final
        assert reg.finish_claim("s3", "y", "me:4:d", "failed", {"error": "x"})
        assert reg.claim("s3", "y", "me:5:e", stale_after=0) is None


def test_resolve_url(monkeypatch, tmp_path):
    monkeypatch.setenv("PGOLF_REGISTRY", "off")
    assert resolve_url() is None
    with pytest.raises(RegistryError, match="switched off"):
        open_registry()
    monkeypatch.setenv("PGOLF_REGISTRY", str(tmp_path / "r.db"))
    assert resolve_url() == f"sqlite:///{tmp_path / 'r.db'}"
    monkeypatch.delenv("PGOLF_REGISTRY")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert resolve_url() == f"sqlite:///{tmp_path / 'xdg' / 'pgolf' / 'registry.sqlite'}"
    assert resolve_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"


def test_unreachable_registry_is_one_error_line(capsys):
    from pgolf.cli import main

    code = main(["runs", "list", "--registry", "postgresql+psycopg://nobody@127.0.0.1:1/none"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("pgolf: error: registry postgresql+psycopg://")


TINY = ["--set", "model.vocab_size=384", "--set", "train.iterations=6"]


def test_cli_records_runs_and_never_fails_one(tiny_data, tmp_path, monkeypatch, capsys):
    from pgolf.cli import main
    from pgolf.identity import dataset_fingerprint as dataset_identity
    from pgolf.identity import flat as flat_config
    from pgolf.identity import identity as config_hash

    url = f"sqlite:///{tmp_path / 'reg.sqlite'}"
    monkeypatch.setenv("PGOLF_REGISTRY", url)
    monkeypatch.setenv("PGOLF_TAGS", "exp1, cli")
    run_dir = tmp_path / "c"
    assert main(["run", "tiny", *TINY, "--set", f"data.path={tiny_data}", "--out", str(run_dir)]) == 0
    assert "registry: recorded run" in capsys.readouterr().err
    assert main(["eval", str(run_dir)]) == 0
    assert "registry: recorded eval" in capsys.readouterr().err
    monkeypatch.delenv("PGOLF_TAGS")
    # other ranks and a switched-off registry record nothing; an unreachable one fails no command
    from pgolf.track.hook import record_command

    monkeypatch.setenv("RANK", "1")
    assert record_command("run", run_dir) is None
    monkeypatch.delenv("RANK")
    monkeypatch.setenv("PGOLF_REGISTRY", "off")
    assert record_command("run", run_dir) is None
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("PGOLF_REGISTRY", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert main(["eval", str(run_dir)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("pgolf: warning: eval not recorded in the registry (RegistryError: registry ")
    with open_registry(url) as reg:
        recs = reg.runs()
        assert [r.kind for r in recs] == ["eval", "run"]
        run = recs[1]
        metrics = json.loads((run_dir / "metrics.json").read_text())
        metrics.pop("evals", None)  # `pgolf eval` merged its per-method results in after the run was recorded
        config = json.loads((run_dir / "config.json").read_text())
        assert run.metrics == metrics and run.config == flat_config(config) and run.tags == ["cli", "exp1"]
        assert run.seed == 1337 and run.preset == "tiny" and run.dataset == Path(tiny_data).name
        # the identity: result-changing fields, the dataset's fingerprint and the code's sha256 (pgolf.identity)
        assert run.config_hash == config_hash(flat_config(config), dataset_identity(tiny_data), metrics["code_sha256"])
        assert metrics["dataset"] == dataset_identity(tiny_data)
        assert recs[0].config_hash == run.config_hash and recs[0].tags == ["cli", "exp1"]
        assert [p[0] for p in run.curves["train"]] == [1, 5, 6] and run.curves["train"][-1][2] > 0
        assert run.versions["torch"] and run.full()["hardware"]["cpu"] and run.machine == run.hardware["cpu"]
        assert recs[0].metrics["val_bpb"] == pytest.approx(metrics["val_bpb"], abs=1e-12)
        # importing the directory again keeps one row: the same run id
        assert main(["runs", "import", str(run_dir), "--registry", url]) == 0
        assert "imported 0 new runs (1 already there)" in capsys.readouterr().out
        assert len(reg.runs()) == 2


def test_track_sits_below_the_cli():
    """pgolf.track is imported by the CLI and the command modules, never the other way round."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("layering", ROOT / "tests" / "test_layering.py")
    layering = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(layering)
    bad = [f"{m} imports {d}" for m, p in layering.all_modules().items() if m.startswith("pgolf.track")
           for d in layering.imports_of(p) if d.startswith(("pgolf.cli", "pgolf.commands"))]
    assert not bad, bad
