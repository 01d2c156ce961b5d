"""Values into a configuration: every value (a ``--set`` string, a JSON value, a preset's Python value)
coerced to its field's type (:func:`_coerce`), dotted-path overrides (:func:`apply_overrides`,
:func:`apply_changes`, :func:`set_path`), :func:`flatten`, and :func:`_check`, the one-line
:class:`~pgolf.errors.ConfigError` every section's ``__post_init__`` raises. Knows no section: it works on
any config dataclass."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

from pgolf.errors import ConfigError

_C = TypeVar("_C")


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise ConfigError(msg)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_NONE = {"none", "null"}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls: type, d: Any, prefix: str) -> Any:
    """``cls(**d)`` for a config dataclass, recursively, every value coerced to its field's type."""
    where = prefix.rstrip(".") or "config"
    if not isinstance(d, dict):
        raise ConfigError(f"config section {where!r} must be an object" if prefix else "config must be a JSON object")
    hints = _hints(cls)
    unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        kind = "section" if not prefix else "key"
        raise ConfigError(f"unknown config {kind} {prefix}{unknown[0]}" + _close(unknown[0], list(hints)))
    kwargs = {k: _coerce(f"{prefix}{k}", v, hints[k]) for k, v in d.items()}
    return cls(**kwargs)


def type_name(typ: Any) -> str:
    """A readable name of a field type: ``int``, ``tuple of int``, ``one of a, b``, ``float or none``."""
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin is typing.Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return " or ".join(type_name(a) for a in rest) + (" or none" if len(rest) < len(args) else "")
    if origin is tuple:
        return f"tuple of {type_name(args[0])}"
    return getattr(typ, "__name__", str(typ))


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Convert ``value`` (a string from ``--set``, a JSON value, or a Python value in a preset) to the
    field type ``typ``: bool, int, float, str, ``Literal[...]``, ``tuple[X, ...]`` (from a list, a tuple
    or a comma-separated string; ``""`` is the empty tuple), ``X | None`` (``none``/``null``), or a
    nested config dataclass (from an object). Anything else is one ConfigError naming the key."""
    if dataclasses.is_dataclass(typ):
        if dataclasses.is_dataclass(value) and type(value) is typ:
            return value
        return _build(typ, value, f"{key}.")
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) < len(args) and (value is None or (isinstance(value, str) and value.strip().lower() in _NONE)):
            return None
        for a in rest:  # the first member that parses
            try:
                return _coerce(key, value, a)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: cannot parse {value!r} as {type_name(typ)}")
    if origin is typing.Literal:
        for a in args:
            if value == a or (isinstance(value, str) and not isinstance(a, str) and value.strip() == str(a)):
                return a
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(repr(a) for a in args)}")
    if origin is tuple:
        if len(args) != 2 or args[1] is not Ellipsis:
            raise ConfigError(f"{key}: unsupported field type {typ} (use tuple[X, ...])")
        if isinstance(value, str):
            items = [v.strip() for v in value.replace(";", ",").split(",")]
            items = [] if items == [""] else items
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise ConfigError(f"{key}: cannot parse {value!r} as {type_name(typ)}")
        return tuple(_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(items))
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            s = str(value).strip().lower()
            if s in _TRUE:
                return True
            if s in _FALSE:
                return False
            raise ValueError
        if typ is int:
            if isinstance(value, bool) or isinstance(value, (list, tuple, dict)) or value is None:
                raise ValueError
            if isinstance(value, int):
                return value
            f = float(str(value).strip().replace("_", ""))
            if not f.is_integer():
                raise ValueError
            return int(f)
        if typ is float:
            if isinstance(value, bool) or isinstance(value, (list, tuple, dict)) or value is None:
                raise ValueError
            return float(str(value).strip().replace("_", "")) if isinstance(value, str) else float(value)
        if typ is str:
            if isinstance(value, (list, tuple, dict)) or value is None:
                raise ValueError
            return str(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{key}: cannot parse {value!r} as {type_name(typ)}") from None
    raise ConfigError(f"{key}: unsupported field type {typ!r}")


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """``{"model.attn.xsa_layers": (7, 8), ...}``: every leaf field of a config dataclass by dotted path."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            out.update(flatten(v, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = v
    return out


def set_path(d: dict[str, Any], path: str, value: Any, *, item: str | None = None) -> None:
    """Set a dotted ``path`` in the nested dict ``d`` (from :meth:`RunConfig.to_dict`); unknown paths and
    paths that name a whole section are one ConfigError."""
    shown = item if item is not None else f"{path}={value}"
    parts = [p.strip() for p in path.strip().split(".")]
    if not all(parts):
        raise ConfigError(f"--set expects section.key=value, got {shown!r}")
    node: Any = d
    for i, p in enumerate(parts[:-1]):
        if not isinstance(node, dict) or p not in node:
            what = "section" if i == 0 else "key"
            raise ConfigError(f"unknown config {what} {'.'.join(parts[: i + 1])!r} in --set {shown}")
        node = node[p]
    leaf = parts[-1]
    if not isinstance(node, dict):
        raise ConfigError(f"{'.'.join(parts[:-1])} is not a section, in --set {shown}")
    if leaf not in node:
        if len(parts) == 1:
            raise ConfigError(f"--set expects section.key=value, got {shown!r}")
        near = _close(leaf, list(node))
        raise ConfigError(f"unknown config key {path.strip()}{near}")
    if isinstance(node[leaf], dict):
        raise ConfigError(f"{path.strip()} is a section; set one of its keys ({', '.join(node[leaf])})")
    node[leaf] = value


def _close(key: str, options: list[str]) -> str:
    """`` (did you mean X?)`` for the closest of ``options``, or ""."""
    import difflib

    near = difflib.get_close_matches(key, options, n=1)
    return f" (did you mean {near[0]}?)" if near else ""


def parse_override(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ConfigError(f"--set expects section.key=value, got {item!r}")
    path, value = item.split("=", 1)
    return path.strip(), value


def apply_overrides(cfg: _C, overrides: list[str] | tuple[str, ...]) -> _C:
    """A copy of ``cfg`` with ``section.key=value`` (or ``section.sub.key=value``) overrides applied;
    values are coerced to the field types and every check runs again."""
    return apply_changes(cfg, [parse_override(item) for item in overrides], items=list(overrides))


def apply_changes(cfg: _C, changes, *, items: list[str] | None = None) -> _C:
    """A copy of ``cfg`` (a :class:`~pgolf.config.RunConfig`) with ``(dotted path, value)`` changes applied
    (values: strings as from ``--set`` or Python values); coerced and checked by its ``from_dict``."""
    d = cfg.to_dict()
    for i, (path, value) in enumerate(changes):
        set_path(d, path, value, item=items[i] if items else None)
    return type(cfg).from_dict(d)  # type: ignore[attr-defined]
