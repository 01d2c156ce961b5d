"""Source minification for the compact bundle (:mod:`pgolf.bundler`): same program, fewer bytes.

What :func:`minify` removes, all through ``ast`` (never by text substitution, so strings and code
cannot be confused):

- comments and formatting (``ast.unparse`` regenerates the code; every string literal becomes a
  one-line literal, so the only leading whitespace left is indentation);
- docstrings and every other bare string statement (the field docstrings of the config dataclasses);
  a body left empty becomes ``pass``;
- ``if TYPE_CHECKING:`` blocks (never executed);
- the annotations of function parameters and return values. Class-level annotations stay: dataclass
  fields and ``typing.get_type_hints`` (config coercion) need them;
- indentation: each 4-space level becomes 1 space.

:func:`shake` (over the whole bundle at once) then drops the top-level functions and classes no code
refers to by name — conservatively: a definition stays if its name occurs anywhere else in the bundle
as a name, an attribute, an imported name or a word inside a string literal; decorated definitions
(a decorator may register them; ``@dataclass`` alone, which registers nothing, excepted), classes with
keywords (metaclasses) and ``__dunder__`` names always stay. pgolf looks up no module-level function by a computed name (no ``globals()[...]``), which is
what makes this safe; the bundle tests run the shaken program.

What it keeps: every statement that executes, names, literals, ``from __future__`` imports. The
records did the same by hand or with ``python-minifier`` before compressing ([04-27a] logs "Code size
(uncompressed): 157868 / (compressed): 31999", CATALOGUE §1.7). :func:`minify` checks its own output:
the minified text must parse to the same tree as the stripped one, or it raises ``ValueError`` (a bug).
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


def _is_bare_string(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def is_type_checking(node: ast.stmt) -> bool:
    """``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``) without an ``else``: never executed."""
    if not isinstance(node, ast.If) or node.orelse:
        return False
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING" and isinstance(t.value, ast.Name)
        and t.value.id == "typing")


class _Strip(ast.NodeTransformer):
    """Drops bare strings, ``if TYPE_CHECKING:`` blocks and function annotations (see the module doc)."""

    def generic_visit(self, node: ast.AST) -> ast.AST:
        super().generic_visit(node)
        for name in ("body", "orelse", "finalbody"):
            stmts = getattr(node, name, None)
            if not isinstance(stmts, list) or not stmts or not isinstance(stmts[0], ast.stmt):
                continue
            kept = [s for s in stmts if not (_is_bare_string(s) or is_type_checking(s))]
            if not kept and not isinstance(node, ast.Module):
                kept = [ast.Pass()]
            setattr(node, name, kept)
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        self._drop_annotations(node)
        return self.generic_visit(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AST:
        self._drop_annotations(node)
        return self.generic_visit(node)

    @staticmethod
    def _drop_annotations(node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        a = node.args
        for arg in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg):
            if arg is not None:
                arg.annotation = None
        node.returns = None


def strip(source: str, filename: str = "<source>") -> ast.Module:
    """The tree of ``source`` without docstrings, bare strings, TYPE_CHECKING blocks and function
    annotations."""
    tree = _Strip().visit(ast.parse(source, filename))
    return ast.fix_missing_locations(tree)


def _reindent(text: str) -> str:
    out = []
    for line in text.split("\n"):
        body = line.lstrip(" ")
        depth, rest = divmod(len(line) - len(body), 4)
        if rest:  # ast.unparse indents by 4; anything else would be a string we must not touch
            raise ValueError(f"unexpected indentation {len(line) - len(body)} in unparsed code: {line[:60]!r}")
        out.append(" " * depth + body)
    return "\n".join(out)


def render(tree: ast.Module, filename: str = "<source>", drop: Iterable[str] = ()) -> str:
    """``tree`` (without its top-level definitions named in ``drop``) as compact code: 1-space
    indentation. Only a triple-quoted literal could span lines (``ast.unparse`` writes every other
    string on one line); if one occurs, the result is checked to parse back to the same tree."""
    drop = set(drop)
    if drop:
        tree = ast.Module(body=[s for s in tree.body if not (is_candidate(s) and s.name in drop)],  # type: ignore[attr-defined]
                          type_ignores=[])
    plain = ast.unparse(tree)
    text = _reindent(plain)
    if ('"""' in plain or "'''" in plain) and ast.dump(ast.parse(text, filename)) != ast.dump(ast.parse(plain, filename)):
        raise ValueError(f"{filename}: minified code does not parse to the stripped program")
    return text + "\n"


def minify(source: str, filename: str = "<source>") -> str:
    """``source`` as compact, equivalent code (see the module docstring); ends with a newline."""
    return render(strip(source, filename), filename)


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def references(node: ast.AST) -> Counter[str]:
    """Every identifier ``node`` refers to: names, attributes, imported names, words in strings."""
    out: Counter[str] = Counter()
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            out[n.id] += 1
        elif isinstance(n, ast.Attribute):
            out[n.attr] += 1
        elif isinstance(n, ast.alias):
            out[n.name.rsplit(".", 1)[-1]] += 1
            if n.asname:
                out[n.asname] += 1
        elif isinstance(n, ast.Constant) and isinstance(n.value, str):
            out.update(_WORD.findall(n.value))
    return out


PURE_DECORATORS = frozenset({"dataclass", "dataclasses.dataclass"})
"""Decorators that register nothing (they only build the class): a definition decorated by these alone
may still be removed when nothing refers to it."""


def _pure(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return ast.unparse(target) in PURE_DECORATORS


def is_candidate(node: ast.stmt) -> bool:
    """A top-level definition :func:`shake` may remove."""
    if isinstance(node, ast.ClassDef) and node.keywords:
        return False
    return (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and all(_pure(d) for d in node.decorator_list)
            and not (node.name.startswith("__") and node.name.endswith("__")))


@dataclass(frozen=True)
class Stripped:
    """A module as :func:`shake` and :func:`render` use it (built once per source; never mutated)."""

    tree: ast.Module
    """:func:`strip` of the source."""
    refs: Counter[str]
    """Every reference in the module (:func:`references`)."""
    defs: tuple[tuple[str, Counter[str]], ...]
    """Its removable top-level definitions: (name, the references inside it)."""


def prepare(source: str, filename: str = "<source>") -> Stripped:
    tree = strip(source, filename)
    defs = tuple((s.name, references(s)) for s in tree.body if is_candidate(s))  # type: ignore[attr-defined]
    return Stripped(tree, references(tree), defs)


def shake(modules: Mapping[str, Stripped], roots: Iterable[Counter[str]] = ()) -> dict[str, list[str]]:
    """The top-level functions and classes of ``modules`` nothing refers to (see the module docstring), as
    ``{module: [names]}``; ``roots`` are the references of further code (the bundle's own loader).
    Repeated to a fixed point: removing a function can orphan its helpers."""
    total: Counter[str] = Counter()
    for st in modules.values():
        total.update(st.refs)
    for r in roots:
        total.update(r)
    live = {(m, i): d for m, st in modules.items() for i, d in enumerate(st.defs)}
    removed: dict[str, list[str]] = {}
    changed = True
    while changed:
        changed = False
        by_name: dict[str, list[tuple[str, int]]] = {}
        for key, (name, _) in live.items():
            by_name.setdefault(name, []).append(key)
        for name, keys in sorted(by_name.items()):
            if total[name] == sum(live[k][1][name] for k in keys):  # referred to only from inside itself
                for k in keys:
                    total.subtract(live.pop(k)[1])
                    removed.setdefault(k[0], []).append(name)
                changed = True
    return removed
