"""Switch-dead definitions of a bundle: a function whose switch is off ships as a one-line ``raise``.

Module-level pruning (:mod:`pgolf.bundler`) leaves out a technique that lives in its own module.
Techniques that are a few lines of a shared module — XSA's projection, the attention output gates,
parallel lanes, document masks, orthogonal and overtone init in :mod:`pgolf.model.gpt` — are written as
their own functions or methods, called only where their switch is on, each decorated with its switch
(``@needs("<condition>")``, :mod:`pgolf.switch`). :func:`stub_source` replaces the body of each one the configuration does not
use by ``raise RuntimeError("<name> is not in this bundle: needs <switch>")``, keeping the ``def`` line
(signature, decorators) and a leading docstring, so

- the readable form still shows every module line for line except those bodies;
- the compact form minifies the stubbed source, and the bundle's tree shaking then also drops helpers
  only the removed bodies used;
- imports inside a removed body are not followed, so a module only it needs is left out too;
- the declarations themselves (``@needs(...)`` lines, ``from pgolf.switch import needs``, a module's
  ``NEEDED_WHEN = ...``) are the bundler's, not the program's: both forms ship without them;
- a declaration that is wrong (the code does call the function under this configuration) fails loudly
  with the switch's name instead of computing something else — and the tests trace every call of the
  model under each switch to show the declarations match the code (tests/test_bundle.py).

The edit is made on source lines located with ``ast`` (``lineno``/``end_lineno`` of the body), never by
pattern matching, and the result is checked to parse. Standard library only.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping


def definitions(tree: ast.Module) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    """Top-level functions and methods of top-level classes by qualified name (``f``, ``Class.method``)."""
    out: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out[node.name] = node
        elif isinstance(node, ast.ClassDef):
            for sub in node.body:
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    out[f"{node.name}.{sub.name}"] = sub
    return out


def _message(name: str, why: str) -> str:
    return f"{name} is not in this bundle: needs {why}; rebuild it with `pgolf bundle` for this configuration"


def _declaration_lines(tree: ast.Module) -> list[tuple[int, int]]:
    """0-based ``[start, end)`` line ranges of the switch declarations (module docstring)."""
    out = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "pgolf.switch":
            out.append((node.lineno - 1, node.end_lineno))
        elif (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
              and node.targets[0].id == "NEEDED_WHEN"):
            out.append((node.lineno - 1, node.end_lineno))
    for fn in definitions(tree).values():
        for d in fn.decorator_list:
            f = d.func if isinstance(d, ast.Call) else d
            if (f.id if isinstance(f, ast.Name) else getattr(f, "attr", None)) == "needs":
                out.append((d.lineno - 1, d.end_lineno))
    return out


def stub_source(source: str, stubs: Mapping[str, str], filename: str = "<source>") -> str:
    """``source`` without its switch declarations and with the body of every definition in ``stubs``
    (qualified name → the switch it needs) replaced by a ``raise RuntimeError`` naming the switch (module
    docstring). A name that is not a definition of ``source`` is a ``ValueError`` (a stale declaration)."""
    if not stubs and "pgolf.switch" not in source and "NEEDED_WHEN" not in source:
        return source
    tree = ast.parse(source, filename)
    defs = definitions(tree)
    missing = sorted(set(stubs) - set(defs))
    if missing:
        raise ValueError(f"{filename}: no function or method {missing[0]!r} to prune (a stale @needs declaration)")
    lines = source.splitlines(keepends=True)
    edits = [(start, end, "") for start, end in _declaration_lines(tree)]
    for name, why in stubs.items():
        node = defs[name]
        body = node.body
        keep = 1 if (isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                     and isinstance(body[0].value.value, str)) else 0
        first = body[keep] if keep < len(body) else None
        if first is None:
            continue  # a docstring only: nothing to remove
        if first.lineno == node.lineno:
            raise ValueError(f"{filename}: {name} has its body on the def line; write it on lines of its own to prune it")
        start, end = first.lineno - 1, body[-1].end_lineno  # 0-based [start, end) of the lines to replace
        indent = " " * first.col_offset
        edits.append((start, end, f"{indent}raise RuntimeError({_message(name, why)!r})\n"))
    for start, end, text in sorted(edits, reverse=True):
        lines[start:end] = [text] if text else []
    out = "".join(lines)
    ast.parse(out, filename)  # the edit must leave a valid module
    return out
