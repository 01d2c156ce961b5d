"""CLI command groups beyond the training path, one module per area, each with ``register(app)``.

``pgolf.cli`` stays the entry point (argument parsing, the one-line error contract); each module here
adds its commands to the Typer ``app`` and imports its heavy dependencies inside the command bodies,
so ``pgolf --help`` stays fast. Like ``cli``, nothing on the training path imports these modules.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from typing import Any

import typer

AREAS: tuple[str, ...] = ("evaluate", "bundle", "submit", "review", "track", "report")
"""The command modules ``pgolf.commands.<area>``, registered in this order."""


def register_all(app: typer.Typer) -> None:
    for area in AREAS:
        importlib.import_module(f"pgolf.commands.{area}").register(app)


def status(what: str) -> contextlib.AbstractContextManager[Any]:
    """A rich spinner on stderr naming a step that can be silent for a while, when stderr is a terminal and
    this is rank 0 (as ``pgolf run`` shows its bar only on a terminal); otherwise nothing."""
    from pgolf import dist

    if not sys.stderr.isatty() or not dist.is_main():
        return contextlib.nullcontext()
    from rich.console import Console

    return Console(stderr=True, highlight=False).status(what)
