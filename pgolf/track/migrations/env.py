"""Alembic environment for the registry: called programmatically by ``pgolf.track.registry`` with an open
connection in ``config.attributes["connection"]`` (never from the ``alembic`` command line)."""

from alembic import context

from pgolf.track.schema import VERSION_TABLE, Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, version_table=VERSION_TABLE,
                  render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
