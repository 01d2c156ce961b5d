"""The run registry: every recorded run, on SQLite (default) or any SQLAlchemy URL (PostgreSQL).

    open_registry()                          PGOLF_REGISTRY, else $XDG_DATA_HOME/pgolf/registry.sqlite
    open_registry("postgresql+psycopg://user@host/db")   a team or a cluster shares one registry
    reg.add_run(record); reg.runs(preset="cpu", tag="sweep:abl")

``PGOLF_REGISTRY`` (or ``--registry``) is a SQLAlchemy URL, a file path (SQLite), or ``off``. The schema
is created and upgraded by the Alembic migrations shipped in ``pgolf/track/migrations`` when a registry is
opened, under a lock (a file lock beside a SQLite database, an advisory lock on PostgreSQL) so that
concurrent first opens do not race.

Concurrent writers: rows have content-derived unique keys and are inserted with ``ON CONFLICT DO
NOTHING``, so two processes importing the same run keep one row and none is lost. SQLite runs in WAL
mode with a busy timeout and ``BEGIN IMMEDIATE`` transactions (a writer takes the write lock up front,
so two writers never deadlock on a lock upgrade), and a write that still meets "database is locked"
is retried. Claims (:meth:`Registry.claim`) are rows with a unique (scope, key): exactly one of many
concurrent claimers wins; a claim whose owner stopped sending heartbeats (or whose process is gone on
this host) can be taken over by exactly one other claimer, by a conditional update.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field
from sqlalchemy import Engine, create_engine, event, insert, select, text, update
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.pool import NullPool

from pgolf.errors import PgolfError
from pgolf.track.schema import VERSION_TABLE, Base, Claim, FeedEntry, Run, Tag, TryResult

SCHEMA_REVISION = "0001"
"""The newest migration in ``pgolf/track/migrations/versions`` (a test checks that they agree)."""
_LOCK_ID = 0x70676F6C66  # "pgolf": the PostgreSQL advisory lock of schema migrations
T = TypeVar("T")


class RegistryError(PgolfError):
    """The registry cannot be opened or does not hold what was asked for."""


class RunRecord(BaseModel):
    """One recorded run. ``model_dump()`` gives exactly the keys other tools consume (plots, report);
    ``hardware`` and ``versions`` are kept out of it and come with :meth:`full`."""

    run_id: str
    kind: Literal["run", "train", "eval", "export", "import"]
    created: str
    """ISO-8601 with time zone: when the run (or the recorded command) started."""
    preset: str | None
    config_hash: str
    seed: int | None
    tags: list[str] = Field(default_factory=list)
    dataset: str | None
    machine: str
    """CPU model, or ``N× GPU model``."""
    git_commit: str | None
    dirty: bool | None
    config: dict[str, Any]
    """Flat ``section.key → value``."""
    metrics: dict[str, Any]
    curves: dict[str, list[list[float | int | None]]]
    """``train``: [step, train_loss, seconds]; ``val``: [step, val_bpb, seconds]."""
    run_dir: str | None
    hardware: dict[str, Any] = Field(default_factory=dict, exclude=True)
    versions: dict[str, Any] = Field(default_factory=dict, exclude=True)

    def full(self) -> dict[str, Any]:
        return {**self.model_dump(), "hardware": self.hardware, "versions": self.versions}

    @property
    def created_at(self) -> datetime:
        return _as_utc(datetime.fromisoformat(self.created))


def _as_utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)


def default_url() -> str:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return f"sqlite:///{Path(base) / 'pgolf' / 'registry.sqlite'}"


def resolve_url(url: str | None = None) -> str | None:
    """The registry URL: ``url``, else ``$PGOLF_REGISTRY``, else the user-level SQLite file; None = off.
    A value without ``://`` is a SQLite file path."""
    value = (url or os.environ.get("PGOLF_REGISTRY") or "").strip() or default_url()
    if value.lower() == "off":
        return None
    if "://" not in value:
        value = f"sqlite:///{Path(value).expanduser().resolve()}"
    return value


def owner_id() -> str:
    """``host:pid:random`` — who holds a claim."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _owner_dead(owner: str) -> bool:
    """True when ``owner`` was a process on this host that no longer exists."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(int(pid))


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _clean(obj: Any) -> Any:
    """JSON-safe: non-finite floats become None (PostgreSQL's json type rejects NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _sqlite_engine(url: str) -> Engine:
    u = make_url(url)
    if u.database and u.database != ":memory:":
        Path(u.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):  # noqa: ANN001
        dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):  # noqa: ANN001
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _retry(fn: Callable[[], T], attempts: int = 30) -> T:
    """Run ``fn``; retry when SQLite says it is locked or PostgreSQL reports a serialization failure."""
    delay = 0.05
    for i in range(attempts):
        try:
            return fn()
        except OperationalError as e:
            msg = str(e.orig).lower()
            if i == attempts - 1 or not ("locked" in msg or "busy" in msg or "deadlock" in msg or "serializ" in msg):
                raise
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
    raise AssertionError("unreachable")


def _insert_ignore(conn: Connection, model: type[Base], rows: list[dict[str, Any]], keys: list[str]) -> int:
    """Insert rows, skipping those whose unique ``keys`` exist already; returns how many were inserted."""
    if not rows:
        return 0
    name = conn.dialect.name
    if name in ("sqlite", "postgresql"):
        mod = importlib.import_module(f"sqlalchemy.dialects.{name}")
        n = 0
        for row in rows:  # RETURNING tells whether the row went in (rowcount is -1 on some drivers)
            stmt = mod.insert(model).values(**row).on_conflict_do_nothing(index_elements=keys).returning(model.id)
            n += len(conn.execute(stmt).fetchall())
        return n
    n = 0
    for row in rows:  # other databases: one savepoint per row
        try:
            with conn.begin_nested():
                conn.execute(insert(model).values(**row))
            n += 1
        except IntegrityError:
            pass
    return n


class Registry:
    """A connection to one registry database (see the module docstring)."""

    def __init__(self, url: str, engine: Engine):
        self.url = url
        self.engine = engine

    @property
    def shown_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, fn: Callable[[Connection], T]) -> T:
        def once() -> T:
            with self.engine.begin() as conn:
                return fn(conn)
        return _retry(once)

    def _read(self, fn: Callable[[Connection], T]) -> T:
        def once() -> T:
            with self.engine.connect() as conn:
                return fn(conn)
        return _retry(once)

    # --- runs ------------------------------------------------------------------------------------

    def add_run(self, rec: RunRecord) -> bool:
        """Insert ``rec`` (and its tags); False when a run with its ``run_id`` exists already (its tags are
        still added)."""
        row = {
            "run_id": rec.run_id, "kind": rec.kind, "created": rec.created_at, "recorded": datetime.now(timezone.utc),
            "preset": rec.preset, "config_hash": rec.config_hash, "seed": rec.seed, "dataset": rec.dataset,
            "machine": rec.machine, "git_commit": rec.git_commit, "dirty": rec.dirty, "run_dir": rec.run_dir,
            "config": _clean(rec.config), "metrics": _clean(rec.metrics), "hardware": _clean(rec.hardware),
            "versions": _clean(rec.versions), "curves": _clean(rec.curves),
        }

        def go(conn: Connection) -> bool:
            new = _insert_ignore(conn, Run, [row], ["run_id"]) == 1
            _insert_ignore(conn, Tag, [{"run_id": rec.run_id, "tag": t} for t in rec.tags], ["run_id", "tag"])
            return new
        return self._write(go)

    def tag(self, run_id: str, tags: list[str]) -> None:
        rid = self.get_run(run_id).run_id
        self._write(lambda conn: _insert_ignore(conn, Tag, [{"run_id": rid, "tag": t} for t in tags], ["run_id", "tag"]))

    def runs(self, *, run_id: str | None = None, config_hash: str | None = None, kind: str | None = None,
             tag: str | None = None, preset: str | None = None, dataset: str | None = None,
             machine: str | None = None, seed: int | None = None, since: datetime | str | None = None,
             until: datetime | str | None = None, limit: int | None = None) -> list[RunRecord]:
        """Runs matching every given filter, newest first. ``run_id`` and ``config_hash`` match a prefix;
        ``since``/``until`` take datetimes or ISO dates (``until`` a date means through that day)."""
        q = select(Run)
        if run_id:
            q = q.where(Run.run_id.startswith(run_id))
        if config_hash:
            q = q.where(Run.config_hash.startswith(config_hash))
        for col, value in ((Run.kind, kind), (Run.preset, preset), (Run.dataset, dataset), (Run.machine, machine),
                           (Run.seed, seed)):
            if value is not None:
                q = q.where(col == value)
        if tag:
            q = q.where(Run.run_id.in_(select(Tag.run_id).where(Tag.tag == tag)))
        if since is not None:
            q = q.where(Run.created >= _when(since))
        if until is not None:
            end = _when(until)
            q = q.where(Run.created < (end + timedelta(days=1) if isinstance(until, str) and len(until) == 10 else end))
        q = q.order_by(Run.created.desc(), Run.id.desc())
        if limit:
            q = q.limit(limit)

        def go(conn: Connection) -> list[RunRecord]:
            rows = list(conn.execute(q))
            ids = [r.run_id for r in rows]
            tags: dict[str, list[str]] = {}
            for i in range(0, len(ids), 500):
                for rid, t in conn.execute(select(Tag.run_id, Tag.tag).where(Tag.run_id.in_(ids[i:i + 500]))):
                    tags.setdefault(rid, []).append(t)
            return [_record(r, sorted(tags.get(r.run_id, []))) for r in rows]
        return self._read(go)

    def get_run(self, prefix: str) -> RunRecord:
        found = self.runs(run_id=prefix, limit=2)
        if not found:
            raise RegistryError(f"no run {prefix!r} in the registry {self.shown_url}")
        if len(found) > 1:
            raise RegistryError(f"run id {prefix!r} is ambiguous in {self.shown_url}; give more characters")
        return found[0]

    # --- claims ----------------------------------------------------------------------------------

    def claim(self, scope: str, key: str, owner: str, *, stale_after: float,
              payload: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """Claim (scope, key) for ``owner``. Returns the claim (``attempt`` > 1 after a takeover) or None
        when someone else holds it — a ``running`` claim whose heartbeat is fresher than ``stale_after``
        seconds and whose owner is not a dead process of this host — or when it is final (``done`` or
        ``failed``). A stale running claim is taken over by exactly one claimer."""
        now = datetime.now(timezone.utc)

        def go(conn: Connection) -> dict[str, Any] | None:
            row = {"scope": scope, "key": key, "owner": owner, "status": "running", "created": now,
                   "heartbeat": now, "attempt": 1, "payload": _clean(payload)}
            if _insert_ignore(conn, Claim, [row], ["scope", "key"]):
                return row
            cur = conn.execute(select(Claim).where(Claim.scope == scope, Claim.key == key)).one()
            if cur.status != "running":  # done or failed: final
                return None
            if _as_utc(cur.heartbeat) >= now - timedelta(seconds=stale_after) and not _owner_dead(cur.owner):
                return None
            res = conn.execute(update(Claim).where(Claim.id == cur.id, Claim.owner == cur.owner,
                                                   Claim.attempt == cur.attempt)
                               .values(owner=owner, status="running", heartbeat=now, attempt=cur.attempt + 1,
                                       payload=_clean(payload) if payload is not None else cur.payload))
            if res.rowcount != 1:
                return None
            return {**row, "attempt": cur.attempt + 1, "created": cur.created,
                    "payload": _clean(payload) if payload is not None else cur.payload}
        return self._write(go)

    def heartbeat(self, scope: str, key: str, owner: str, payload: dict[str, Any] | None = None) -> bool:
        """Refresh a claim's heartbeat (and payload); False when ``owner`` no longer holds it."""
        values: dict[str, Any] = {"heartbeat": datetime.now(timezone.utc)}
        if payload is not None:
            values["payload"] = _clean(payload)
        return self._write(lambda conn: conn.execute(
            update(Claim).where(Claim.scope == scope, Claim.key == key, Claim.owner == owner,
                                Claim.status == "running").values(**values)).rowcount == 1)

    def finish_claim(self, scope: str, key: str, owner: str, status: Literal["done", "failed"],
                     payload: dict[str, Any] | None = None) -> bool:
        values: dict[str, Any] = {"status": status, "heartbeat": datetime.now(timezone.utc)}
        if payload is not None:
            values["payload"] = _clean(payload)
        return self._write(lambda conn: conn.execute(
            update(Claim).where(Claim.scope == scope, Claim.key == key, Claim.owner == owner).values(**values)
        ).rowcount == 1)

    def release_claim(self, scope: str, key: str, owner: str) -> bool:
        """Give a running claim up (its owner is stopping): it stays ``running`` but with a heartbeat so old
        that the next claimer takes it over at once."""
        return self._write(lambda conn: conn.execute(
            update(Claim).where(Claim.scope == scope, Claim.key == key, Claim.owner == owner,
                                Claim.status == "running")
            .values(heartbeat=datetime(1970, 1, 1, tzinfo=timezone.utc))).rowcount == 1)

    def claims(self, scope: str) -> list[dict[str, Any]]:
        return self._read(lambda conn: [_row(r) for r in conn.execute(
            select(Claim).where(Claim.scope == scope).order_by(Claim.id))])

    # --- tries and the feed ----------------------------------------------------------------------

    def add_try(self, **row: Any) -> bool:
        row = {"created": datetime.now(timezone.utc), **_clean(row)}
        return self._write(lambda conn: _insert_ignore(conn, TryResult, [row], ["scope", "candidate_hash"]) == 1)

    def tries(self, scope: str | None = None) -> list[dict[str, Any]]:
        q = select(TryResult).order_by(TryResult.created, TryResult.id)
        if scope is not None:
            q = q.where(TryResult.scope == scope)
        return self._read(lambda conn: [_row(r) for r in conn.execute(q)])

    def post(self, kind: str, message: str, *, author: str | None = None, data: dict[str, Any] | None = None) -> None:
        row = {"created": datetime.now(timezone.utc), "author": author or default_author(), "kind": kind,
               "message": message, "data": _clean(data)}
        self._write(lambda conn: conn.execute(insert(FeedEntry).values(**row)))

    def feed(self, limit: int = 20) -> list[dict[str, Any]]:
        q = select(FeedEntry).order_by(FeedEntry.created.desc(), FeedEntry.id.desc()).limit(limit)
        return self._read(lambda conn: [_row(r) for r in conn.execute(q)])


def default_author() -> str:
    import getpass

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "user"
    return os.environ.get("PGOLF_AUTHOR") or f"{user}@{socket.gethostname()}"


def _when(value: datetime | str) -> datetime:
    if isinstance(value, datetime):
        return _as_utc(value)
    try:
        return _as_utc(datetime.fromisoformat(value))
    except ValueError:
        raise RegistryError(f"not an ISO date or time: {value!r} (e.g. 2026-05-01 or 2026-05-01T12:00)") from None


def _row(r: Any) -> dict[str, Any]:
    d = dict(r._mapping)
    d.pop("id", None)
    for k, v in d.items():
        if isinstance(v, datetime):
            d[k] = _as_utc(v).isoformat()
    return d


def _record(r: Any, tags: list[str]) -> RunRecord:
    return RunRecord(
        run_id=r.run_id, kind=r.kind, created=_as_utc(r.created).isoformat(), preset=r.preset,
        config_hash=r.config_hash, seed=r.seed, tags=tags, dataset=r.dataset, machine=r.machine,
        git_commit=r.git_commit, dirty=r.dirty, config=r.config or {}, metrics=r.metrics or {},
        curves=r.curves or {"train": [], "val": []}, run_dir=r.run_dir, hardware=r.hardware or {},
        versions=r.versions or {},
    )


@contextlib.contextmanager
def init_lock(engine: Engine) -> Iterator[None]:
    """Serialise schema set-up across processes: a file lock beside a SQLite file, a PostgreSQL advisory
    lock, nothing for other databases (their DDL is assumed to be set up once by an administrator)."""
    name = engine.dialect.name
    if name == "sqlite":
        db = make_url(str(engine.url)).database
        if not db or db == ":memory:":
            yield
            return
        import fcntl

        with open(f"{db}.lock", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
    elif name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_ID})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_ID})
                conn.commit()
    else:
        yield


def _current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not engine.dialect.has_table(conn, VERSION_TABLE):
            return None
        return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def upgrade(engine: Engine) -> None:
    """Run the shipped Alembic migrations up to head (programmatically, on one connection)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        conn.commit()


def open_registry(url: str | None = None) -> Registry:
    """Open (creating or upgrading the schema when needed) the registry at ``url`` (see :func:`resolve_url`)."""
    resolved = resolve_url(url)
    if resolved is None:
        raise RegistryError("the registry is switched off (PGOLF_REGISTRY=off)")
    try:
        engine = _sqlite_engine(resolved) if resolved.startswith("sqlite") else create_engine(resolved, pool_pre_ping=True)
    except (ArgumentError, ImportError, ValueError) as e:
        raise RegistryError(f"registry URL {resolved!r}: {str(e).splitlines()[0]}") from None
    try:
        if _retry(lambda: _current_revision(engine)) != SCHEMA_REVISION:
            with init_lock(engine):
                if _current_revision(engine) != SCHEMA_REVISION:
                    _retry(lambda: upgrade(engine))
    except (OperationalError, DBAPIError) as e:
        engine.dispose()
        shown = make_url(resolved).render_as_string(hide_password=True)
        raise RegistryError(f"registry {shown}: cannot open ({str(e.orig).strip().splitlines()[0]})") from None
    except OSError as e:
        engine.dispose()
        raise RegistryError(f"registry {resolved}: {e}") from None
    return Registry(resolved, engine)
