"""The switches declared beside the code (:mod:`pgolf.switch`), read from the sources with ``ast``.

- :func:`optional_modules`: every module with a module-level ``NEEDED_WHEN = "<condition>"``;
- :func:`dead_definitions`: every top-level function and method of a top-level class decorated
  ``@needs("<condition>")``, as ``"module:qualified.name"``;
- :func:`holds`: a condition evaluated on a configuration.

Nothing here imports the modules it reads (a module that needs a GPU library can declare its switch too).
The bundle's selection (:mod:`pgolf.bundler.select`) and stubbing (:mod:`pgolf.bundler.prune`) read these,
so adding a technique never edits the bundler.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgolf.config import RunConfig

SECTIONS = ("model", "train", "optim", "eval", "export", "data")
"""The configuration's sections a condition may name, besides ``scheme``."""

MODULE_NAME = "NEEDED_WHEN"
DECORATOR = "needs"


@dataclass(frozen=True)
class Switch:
    """A declared condition: ``needed(cfg)`` evaluates it; ``switch`` is its text (shown where a bundle
    leaves the code out)."""

    switch: str
    where: str = ""
    """``path:line`` of the declaration."""

    def needed(self, cfg: RunConfig) -> bool:
        return holds(self.switch, cfg, self.where)


@functools.lru_cache(maxsize=64)
def _compiled(condition: str, where: str) -> Any:
    try:
        return compile(condition, where or "<switch>", "eval")
    except SyntaxError as e:
        raise ValueError(f"{where}: switch condition {condition!r} is not an expression: {e.msg}") from None


def holds(condition: str, cfg: RunConfig, where: str = "") -> bool:
    """Whether ``condition`` (a Python expression over :data:`SECTIONS` and ``scheme``) holds for ``cfg``.
    A condition that does not evaluate is a ``ValueError`` naming its declaration (a bug, not a user error)."""
    names: dict[str, Any] = {s: getattr(cfg, s) for s in SECTIONS}
    if "scheme" in condition:
        from pgolf.errors import ConfigError
        from pgolf.export.schemes import get_export_scheme

        try:
            names["scheme"] = get_export_scheme(cfg.export.scheme)
        except ConfigError:
            return True  # a scheme pgolf does not know: keep the code (a declaration only ever prunes)
    try:
        return bool(eval(_compiled(condition, where), {"__builtins__": {"len": len, "any": any, "all": all}}, names))
    except Exception as e:  # noqa: BLE001 - any failure is a wrong declaration
        raise ValueError(f"{where}: switch condition {condition!r} does not evaluate: {type(e).__name__}: {e}") from None


def _decorator_condition(node: ast.expr) -> str | None:
    if not isinstance(node, ast.Call) or len(node.args) != 1 or node.keywords:
        return None
    f = node.func
    name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
    arg = node.args[0]
    if name == DECORATOR and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    return None


@dataclass(frozen=True)
class Declarations:
    """What one source file declares."""

    module: tuple[str, int] | None
    """``(condition, line)`` of its ``NEEDED_WHEN``, if any."""
    definitions: tuple[tuple[str, str, int], ...]
    """``(qualified name, condition, line)`` of its ``@needs`` definitions."""


def declarations_of(tree: ast.Module) -> Declarations:
    module = None
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == MODULE_NAME and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)):
            module = (node.value.value, node.lineno)
    defs: list[tuple[str, str, int]] = []

    def visit(node: ast.stmt, prefix: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for d in node.decorator_list:
                cond = _decorator_condition(d)
                if cond is not None:
                    defs.append((prefix + node.name, cond, node.lineno))

    for node in tree.body:
        visit(node, "")
        if isinstance(node, ast.ClassDef):
            for sub in node.body:
                visit(sub, node.name + ".")
    return Declarations(module, tuple(defs))


@functools.lru_cache(maxsize=1024)
def _file_declarations(path: str, mtime_ns: int, size: int) -> Declarations:
    return declarations_of(ast.parse(Path(path).read_text(encoding="utf-8"), path))


def _modules(root: Path) -> dict[str, Path]:
    out = {}
    for p in sorted(root.rglob("*.py")):
        parts = p.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(("pgolf", *parts))] = p
    return out


def _declared(root: Path) -> dict[str, tuple[Path, Declarations]]:
    out = {}
    for name, p in _modules(root).items():
        st = p.stat()
        out[name] = (p, _file_declarations(str(p), st.st_mtime_ns, st.st_size))
    return out


def optional_modules(root: Path) -> dict[str, Switch]:
    """Module name → its ``NEEDED_WHEN`` switch, over every module under ``root``."""
    return {m: Switch(d.module[0], f"{p}:{d.module[1]}") for m, (p, d) in _declared(root).items()
            if d.module is not None}


def dead_definitions(root: Path) -> dict[str, Switch]:
    """``"module:qualified.name"`` → its ``@needs`` switch, over every module under ``root``."""
    return {f"{m}:{q}": Switch(c, f"{p}:{line}") for m, (p, d) in _declared(root).items()
            for q, c, line in d.definitions}


def stubs_for(cfg: RunConfig, module: str, path: Path) -> tuple[tuple[str, str], ...]:
    """``((qualified name, condition), …)`` of the ``@needs`` definitions of ``module`` (at ``path``) that
    ``cfg`` never calls."""
    st = path.stat()
    d = _file_declarations(str(path), st.st_mtime_ns, st.st_size)
    return tuple(sorted((q, c) for q, c, line in d.definitions if not holds(c, cfg, f"{path}:{line}")))
