"""Shared helpers of the registry tests: a temp database URL per test on SQLite or PostgreSQL.

PostgreSQL comes from ``PGOLF_TEST_POSTGRES_URL`` (``.ci/run`` starts a server with ``.ci/postgres.sh``);
without it the PostgreSQL cases skip, unless ``PGOLF_REQUIRE_POSTGRES=1`` (set by ``.ci/run``), where they
fail. Each test gets a fresh database, dropped afterwards.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest

BACKENDS = ["sqlite", "postgresql"]


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    base = os.environ.get("PGOLF_TEST_POSTGRES_URL")
    if not base:
        if os.environ.get("PGOLF_REQUIRE_POSTGRES") == "1":
            pytest.fail("PGOLF_REQUIRE_POSTGRES=1 but PGOLF_TEST_POSTGRES_URL is not set (.ci/postgres.sh start)")
        pytest.skip("no PostgreSQL server: set PGOLF_TEST_POSTGRES_URL (.ci/run starts one with .ci/postgres.sh)")
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(base)
    name = f"pgolf_t_{uuid.uuid4().hex[:12]}"
    dsn = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def database(kind: str, tmp_path) -> Iterator[str]:  # noqa: ANN001
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.sqlite'}"
    else:
        with postgres_database() as url:
            yield url


def make_record(i: int = 0, **kw):
    """A synthetic RunRecord with every field set (unicode, nested lists, curves)."""
    from pgolf.track.registry import RunRecord

    base = dict(
        run_id=f"r{i:015d}", kind="run", created=f"2026-05-{1 + i % 28:02d}T12:00:00+00:00", preset="tiny",
        config_hash=f"{i % 3:064x}", seed=1000 + i, tags=["t-a", f"n{i % 2}"], dataset="data", machine="AMD EPYC",
        git_commit="ab" * 20, dirty=bool(i % 2),
        config={"model.attn.xsa_layers": [1, 2], "train.seed": 1000 + i, "name": "tiny", "data.path": "/x/ü"},
        metrics={"val_bpb": 2.0 + i / 100, "artifact_bytes": 123_456 + i, "stopped_by": "wallclock"},
        curves={"train": [[1, 5.5, 0.04], [2, 5.0, 0.08]], "val": [[2, 3.25, None]]}, run_dir=f"/runs/{i}",
        hardware={"cpu": "AMD EPYC", "cpu_flags": ["avx2"]}, versions={"torch": "2.13.0"},
    )
    base.update(kw)
    return RunRecord(**base)
