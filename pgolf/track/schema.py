"""The registry's tables (SQLAlchemy 2 ORM). Alembic migrations in ``pgolf/track/migrations`` create
exactly this schema (``tests/test_track_registry.py`` compares them).

Every table is prefixed ``pgolf_`` because Optuna keeps its studies in the same database (``studies``,
``trials``, … and its own ``alembic_version``); ours is ``pgolf_alembic_version``.

- ``pgolf_runs``: one row per recorded command or imported run. ``run_id`` is derived from the run's
  content (see :mod:`pgolf.track.record`), and unique, so importing the same run twice keeps one row.
- ``pgolf_tags``: (run_id, tag), unique.
- ``pgolf_claims``: (scope, key) unique — who runs a sweep unit or a ``pgolf try`` candidate; a
  heartbeat lets another worker take over a claim whose owner died.
- ``pgolf_tries``: ``pgolf try`` results (keep/discard with the Welch p-value), unique per (scope, candidate).
- ``pgolf_feed``: findings, one line each, for ``pgolf feed``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, MetaData, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
}
VERSION_TABLE = "pgolf_alembic_version"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Run(Base):
    __tablename__ = "pgolf_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(32), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    recorded: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    preset: Mapped[str | None] = mapped_column(String(128), index=True)
    config_hash: Mapped[str] = mapped_column(String(64), index=True)
    seed: Mapped[int | None] = mapped_column(Integer)
    dataset: Mapped[str | None] = mapped_column(String(256), index=True)
    machine: Mapped[str] = mapped_column(String(256), index=True)
    git_commit: Mapped[str | None] = mapped_column(String(64))
    dirty: Mapped[bool | None]
    run_dir: Mapped[str | None] = mapped_column(Text)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    hardware: Mapped[dict[str, Any]] = mapped_column(JSON)
    versions: Mapped[dict[str, Any]] = mapped_column(JSON)
    curves: Mapped[dict[str, Any]] = mapped_column(JSON)


class Tag(Base):
    __tablename__ = "pgolf_tags"
    __table_args__ = (UniqueConstraint("run_id", "tag"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(32), ForeignKey("pgolf_runs.run_id", ondelete="CASCADE"), index=True)
    tag: Mapped[str] = mapped_column(String(128), index=True)


class Claim(Base):
    __tablename__ = "pgolf_claims"
    __table_args__ = (UniqueConstraint("scope", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(256))
    key: Mapped[str] = mapped_column(String(256))
    owner: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16))
    """``running``, ``done`` or ``failed``."""
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    heartbeat: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    attempt: Mapped[int] = mapped_column(Integer)
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class TryResult(Base):
    __tablename__ = "pgolf_tries"
    __table_args__ = (UniqueConstraint("scope", "candidate_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    author: Mapped[str] = mapped_column(String(256))
    scope: Mapped[str] = mapped_column(String(256), index=True)
    candidate_hash: Mapped[str] = mapped_column(String(64))
    base_hash: Mapped[str | None] = mapped_column(String(64))
    overrides: Mapped[list[str]] = mapped_column(JSON)
    seeds: Mapped[list[int]] = mapped_column(JSON)
    candidate: Mapped[dict[str, Any]] = mapped_column(JSON)
    base: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    p_value: Mapped[float | None] = mapped_column(Float)
    decision: Mapped[str] = mapped_column(String(16))
    """``keep``, ``discard``, ``infeasible`` or ``baseline`` (the first kept config of a scope)."""


class FeedEntry(Base):
    __tablename__ = "pgolf_feed"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    author: Mapped[str] = mapped_column(String(256))
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
