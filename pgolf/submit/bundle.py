"""The single-file ``train_gpt.py`` of a run or preset, for ``pgolf bundle`` and ``pgolf submit``.

    pgolf bundle runs/cpu --out train_gpt.py                   # the run's configuration, compact form
    pgolf bundle record-0427 --out train_gpt.py --readable     # a preset, every module readable

The bundle itself — which modules, the two forms, its bytes — is :mod:`pgolf.bundler` (on the
training path, standard library only, so the byte accounting can charge it); this module resolves a
run directory or preset to its configuration, builds the :class:`Bundle` and writes it atomically.
``build_bundle(cfg, compact=...)`` and ``write_bundle(cfg, path, compact=...)`` are the API the records
folder uses.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgolf import bundler, fileio
from pgolf.config import RunConfig, apply_overrides, load_config
from pgolf.errors import ConfigError, PgolfError


@dataclass(frozen=True)
class Bundle:
    """A rendered ``train_gpt.py``: its bytes (what is shipped and charged), form and contents."""

    data: bytes
    form: str
    """``compact`` or ``readable``."""
    modules: list[str]
    """The embedded pgolf modules, in dependency order."""
    left_out: dict[str, str] = field(default_factory=dict)
    """Modules a bundled function could import that this configuration never runs → why."""
    config: dict[str, Any] = field(default_factory=dict)
    """The embedded configuration (fields that differ from the defaults, data paths removed)."""
    pruned: dict[str, list[str]] = field(default_factory=dict)
    """Top-level functions/classes the compact form dropped as unreferenced, per module."""

    @property
    def text(self) -> str:
        """The file as Python reads it (the compact form is Latin-1, its coding line says so)."""
        from pgolf.submit.review_decode import python_text

        return python_text(self.data)

    @property
    def nbytes(self) -> int:
        return len(self.data)


def build_bundle(cfg: RunConfig, *, compact: bool) -> Bundle:
    """The bundle of ``cfg`` in the compact or readable form. Its ``nbytes`` is what pgolf charges as
    code bytes when ``cfg.export.code_form`` is that form."""
    r = bundler.render(cfg, compact=compact)
    return Bundle(data=r.data, form="compact" if compact else "readable", modules=list(r.selection.modules),
                  left_out=dict(r.selection.left_out), config=bundler.bundle_config(cfg), pruned=r.pruned)


def write_bundle(cfg: RunConfig, path: str | os.PathLike[str], *, compact: bool) -> Bundle:
    """Build the bundle of ``cfg`` and write it to ``path`` atomically; the directory must exist."""
    path = Path(path)
    if path.is_dir():
        raise PgolfError(f"{path}: is a directory (give the bundle's file name, e.g. {path / 'train_gpt.py'})")
    if not path.parent.is_dir():
        raise PgolfError(f"{path.parent}: output directory does not exist")
    b = build_bundle(cfg, compact=compact)
    fileio.write_bytes(path, b.data)
    return b


@dataclass(frozen=True)
class Source:
    """What a bundle is built from: a run directory's ``config.json`` or a preset (+ ``--set``)."""

    cfg: RunConfig
    run_dir: Path | None = None
    charged_code_bytes: int | None = None
    """``code_bytes`` of the run's ``metrics.json``, when there is one."""


def resolve_source(source: str, sets: list[str] | None = None) -> Source:
    """A run directory (holding ``config.json``) or a preset name; anything else is one clear error."""
    from pgolf.presets import PRESETS, get_preset

    p = Path(source)
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ConfigError(f"{p}: not a run directory (no config.json)")
        cfg = apply_overrides(load_config(str(p / "config.json")), sets or [])
        charged = None
        m = p / "metrics.json"
        if m.is_file():
            try:
                charged = json.loads(m.read_text()).get("code_bytes")
            except (OSError, json.JSONDecodeError, AttributeError):
                charged = None
        return Source(cfg, p, charged if isinstance(charged, int) else None)
    if source in PRESETS:
        return Source(apply_overrides(get_preset(source), sets or []))
    raise ConfigError(f"{source}: not a run directory and not a preset (known presets: {', '.join(sorted(PRESETS))})")
