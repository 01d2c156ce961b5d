"""The configuration described from its source, for ``pgolf info`` and ``pgolf track sweep``: each leaf
field's docstring (the string literal under it, read with ``ast``) and type, by dotted path. Never
imported on the training path, so a bundle does not carry it (:func:`pgolf.config.field_docs`
imports it on use)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
from typing import Any

from pgolf.config.overrides import _hints
from pgolf.config.run import RunConfig


def field_docs(cls: type = None, prefix: str = "") -> dict[str, str]:  # type: ignore[assignment]
    """Dotted path → the field's docstring (the string literal under it in the source), for ``pgolf info``."""
    cls = cls or RunConfig
    out: dict[str, str] = {}
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        tree = None
    docs: dict[str, str] = {}
    if tree is not None:
        body = tree.body[0].body  # type: ignore[attr-defined]
        for a, b in zip(body, body[1:], strict=False):
            if isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name) and isinstance(b, ast.Expr) \
                    and isinstance(b.value, ast.Constant) and isinstance(b.value.value, str):
                docs[a.target.id] = " ".join(b.value.value.split())
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(field_docs(hints[f.name], f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = docs.get(f.name, "")
    return out


def field_types(cls: type = None, prefix: str = "") -> dict[str, Any]:  # type: ignore[assignment]
    """Dotted path → field type, for every leaf field."""
    cls = cls or RunConfig
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        t = _hints(cls)[f.name]
        if dataclasses.is_dataclass(t):
            out.update(field_types(t, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = t
    return out
