"""CLI command groups beyond the training path, one module per area, each with ``register(app)``.

``pgolf.cli`` stays the entry point (argument parsing, the one-line error contract); each module here
adds its commands to the Typer ``app`` and imports its heavy dependencies inside the command bodies,
so ``pgolf --help`` stays fast. Like ``cli``, nothing on the training path imports these modules.
"""

from __future__ import annotations

import importlib

import typer

AREAS: tuple[str, ...] = ("evaluate", "bundle", "submit", "review", "track", "report")
"""The command modules ``pgolf.commands.<area>``, registered in this order."""


def register_all(app: typer.Typer) -> None:
    for area in AREAS:
        importlib.import_module(f"pgolf.commands.{area}").register(app)
