"""The first registry schema: runs, tags, claims, tries, feed.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _ts(name: str, **kw) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, **kw)


def upgrade() -> None:
    op.create_table(
        "pgolf_runs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        _ts("created"),
        _ts("recorded"),
        sa.Column("preset", sa.String(128), nullable=True),
        sa.Column("config_hash", sa.String(64), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=True),
        sa.Column("dataset", sa.String(256), nullable=True),
        sa.Column("machine", sa.String(256), nullable=False),
        sa.Column("git_commit", sa.String(64), nullable=True),
        sa.Column("dirty", sa.Boolean(), nullable=True),
        sa.Column("run_dir", sa.Text(), nullable=True),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("hardware", sa.JSON(), nullable=False),
        sa.Column("versions", sa.JSON(), nullable=False),
        sa.Column("curves", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_pgolf_runs"),
        sa.UniqueConstraint("run_id", name="uq_pgolf_runs_run_id"),
    )
    for col in ("created", "preset", "config_hash", "dataset", "machine"):
        op.create_index(f"ix_pgolf_runs_{col}", "pgolf_runs", [col])

    op.create_table(
        "pgolf_tags",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("tag", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_pgolf_tags"),
        sa.ForeignKeyConstraint(["run_id"], ["pgolf_runs.run_id"], name="fk_pgolf_tags_run_id", ondelete="CASCADE"),
        sa.UniqueConstraint("run_id", "tag", name="uq_pgolf_tags_run_id"),
    )
    op.create_index("ix_pgolf_tags_run_id", "pgolf_tags", ["run_id"])
    op.create_index("ix_pgolf_tags_tag", "pgolf_tags", ["tag"])

    op.create_table(
        "pgolf_claims",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("scope", sa.String(256), nullable=False),
        sa.Column("key", sa.String(256), nullable=False),
        sa.Column("owner", sa.String(256), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _ts("created"),
        _ts("heartbeat"),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_pgolf_claims"),
        sa.UniqueConstraint("scope", "key", name="uq_pgolf_claims_scope"),
    )

    op.create_table(
        "pgolf_tries",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _ts("created"),
        sa.Column("author", sa.String(256), nullable=False),
        sa.Column("scope", sa.String(256), nullable=False),
        sa.Column("candidate_hash", sa.String(64), nullable=False),
        sa.Column("base_hash", sa.String(64), nullable=True),
        sa.Column("overrides", sa.JSON(), nullable=False),
        sa.Column("seeds", sa.JSON(), nullable=False),
        sa.Column("candidate", sa.JSON(), nullable=False),
        sa.Column("base", sa.JSON(), nullable=True),
        sa.Column("p_value", sa.Float(), nullable=True),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_pgolf_tries"),
        sa.UniqueConstraint("scope", "candidate_hash", name="uq_pgolf_tries_scope"),
    )
    op.create_index("ix_pgolf_tries_created", "pgolf_tries", ["created"])
    op.create_index("ix_pgolf_tries_scope", "pgolf_tries", ["scope"])

    op.create_table(
        "pgolf_feed",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _ts("created"),
        sa.Column("author", sa.String(256), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_pgolf_feed"),
    )
    op.create_index("ix_pgolf_feed_created", "pgolf_feed", ["created"])


def downgrade() -> None:
    for table in ("pgolf_feed", "pgolf_tries", "pgolf_claims", "pgolf_tags", "pgolf_runs"):
        op.drop_table(table)
