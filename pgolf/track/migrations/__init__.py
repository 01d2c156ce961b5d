"""Alembic migrations of the registry schema (:mod:`pgolf.track.schema`), run by :func:`pgolf.track.registry.open_registry`."""
