"""Which modules a configuration's bundle holds: the import graph, read from the sources with ``ast``.

The entry is :data:`ENTRY` (:mod:`pgolf.standalone`). An import executed when a module loads (module
level, also inside a top-level ``if``/``try`` or a class body) is always followed; an import inside a
function is followed unless its target declares a switch that is off (``NEEDED_WHEN`` beside its code,
:mod:`pgolf.switch`, read by :mod:`pgolf.bundler.switches`) or is in :data:`NEVER`; imports under
``if TYPE_CHECKING:`` are never followed. Every module brings its parent packages. So a technique's module
is left out exactly when (1) every import of it sits behind its switch and (2) it declares that switch.
A module without a declaration is bundled whenever it is reached: pruning is opt-in, and a new technique
costs bytes until it is declared, never a broken bundle (the bundle's importer names the switch anyway).

**Selection follows the tree shaking.** An import inside a top-level function (or a method of a class)
that nothing in the bundle refers to is not followed: the selection and :func:`pgolf.bundler.minify.shake`
run to a fixed point, so ``runner.eval_run`` — ``pgolf eval``'s driver, which the bundle's run never
calls — brings none of the evaluation methods (TTT, sliding windows, the mixer).

**Inside a module** (``@needs``, :mod:`pgolf.bundler.prune`). A technique that is a few lines of a
shared module is a function or method of its own, called only where its switch is on; when the switch is
off its body ships as one ``raise`` naming the switch, in both forms, and what only that body used
(helpers, imports, modules) goes with it.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from pgolf.bundler import minify, prune, switches
from pgolf.bundler.loader import LOADER, MAIN
from pgolf.config import RunConfig
from pgolf.errors import ConfigError

ENTRY = "pgolf.standalone"
"""The bundle's entry module: challenge environment variables → config → :func:`pgolf.runner.run`."""

NEVER: dict[str, str] = {
    "pgolf.data.embedded": "the standalone script always has a data path (DATA_PATH or the challenge's default)",
    "pgolf.bundler": "a bundle charges its own file's size",
    "pgolf.switch": "declarations for the bundler: the bundle's sources are stubbed without them",
}
"""Modules the bundle never runs although a function of a bundled module may import them."""


def optional_modules(root: Path | None = None) -> dict[str, switches.Switch]:
    """Modules that declare when a configuration needs them (``NEEDED_WHEN``) → that switch."""
    return switches.optional_modules(root or package_root())


def dead_definitions(root: Path | None = None) -> dict[str, switches.Switch]:
    """``"module:qualified.name"`` → the ``@needs`` switch of that function or method."""
    return switches.dead_definitions(root or package_root())


def stubs_for(cfg: RunConfig, module: str, root: Path | None = None) -> tuple[tuple[str, str], ...]:
    """``((qualified name, switch), …)`` of ``module``'s ``@needs`` definitions that ``cfg`` never calls."""
    path = module_path(module, root or package_root())
    assert path is not None
    return switches.stubs_for(cfg, module, path)



def package_root() -> Path:
    import pgolf

    return Path(pgolf.__file__).resolve().parent


def module_path(name: str, root: Path) -> Path | None:
    """``pgolf.a.b`` → ``root/a/b.py`` or ``root/a/b/__init__.py`` (None if neither exists)."""
    parts = name.split(".")[1:]
    base = root.joinpath(*parts) if parts else root
    if parts and base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def bundle_path(path: Path, root: Path) -> str:
    return "pgolf/" + path.relative_to(root).as_posix()


@dataclass(frozen=True)
class _Scan:
    eager: tuple[str, ...]
    """pgolf modules imported when the module loads."""
    lazy: tuple[str, ...]
    """pgolf modules imported inside functions."""


def _resolve(name: str, root: Path) -> str:
    """``pgolf.quant.grid`` stays; ``pgolf.quant.grid.QuantSpec`` (a name, not a module) → ``pgolf.quant.grid``."""
    while name.count(".") and module_path(name, root) is None:
        name = name.rsplit(".", 1)[0]
    return name


@functools.lru_cache(maxsize=512)
def _scan_file(path: str, mtime_ns: int, size: int, module: str, is_package: bool, root: str,
               stubs: tuple[tuple[str, str], ...] = (), dead: tuple[str, ...] = ()) -> _Scan:
    tree = ast.parse(stubbed_text(path, mtime_ns, size, stubs), path)
    if dead:  # top-level definitions nothing refers to: the imports inside their functions never run
        tree.body = [_without_functions(n) if minify.is_candidate(n) and n.name in dead else n  # type: ignore[attr-defined]
                     for n in tree.body]
    rootp = Path(root)
    eager: set[str] = set()
    lazy: set[str] = set()

    def targets(node: ast.Import | ast.ImportFrom) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names if a.name == "pgolf" or a.name.startswith("pgolf.")]
        base = node.module or ""
        if node.level:
            pkg = module if is_package else module.rsplit(".", 1)[0]
            head = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
            base = ".".join(head + ([base] if base else []))
        if base != "pgolf" and not base.startswith("pgolf."):
            return []
        return [_resolve(f"{base}.{a.name}", rootp) for a in node.names]

    def walk(nodes: list[ast.AST], in_function: bool) -> None:
        for node in nodes:
            if isinstance(node, ast.stmt) and minify.is_type_checking(node):
                continue
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                (lazy if in_function else eager).update(targets(node))
                continue
            inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            walk(list(ast.iter_child_nodes(node)), inner)

    walk(tree.body, False)
    return _Scan(tuple(sorted(eager)), tuple(sorted(lazy - eager)))


def _without_functions(node: ast.stmt) -> ast.stmt:
    """A dead definition as far as imports go: a function contributes nothing; a class keeps the
    statements of its body that run when the class is defined (the readable form still defines it)."""
    if isinstance(node, ast.ClassDef):
        body = [n for n in node.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        return ast.ClassDef(name=node.name, bases=node.bases, keywords=node.keywords, body=body or [ast.Pass()],
                            decorator_list=node.decorator_list, type_params=getattr(node, "type_params", []))
    return ast.Pass()


def scan(name: str, root: Path, stubs: tuple[tuple[str, str], ...] = (), dead: tuple[str, ...] = ()) -> _Scan:
    """The pgolf imports of module ``name`` (of its source with ``stubs`` applied and the top-level
    definitions ``dead`` removed)."""
    path = module_path(name, root)
    if path is None:
        raise ConfigError(f"{name}: no such pgolf module under {root}")
    st = path.stat()
    return _scan_file(str(path), st.st_mtime_ns, st.st_size, name, path.name == "__init__.py", str(root),
                      stubs, dead)


@dataclass(frozen=True)
class Selection:
    modules: tuple[str, ...]
    """Bundled modules in dependency order (a module after the modules it imports when it loads)."""
    left_out: dict[str, str]
    """Modules a bundled function could import that this configuration never reaches → why."""
    shaken: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    """Top-level definitions nothing in the bundle refers to, per module: their imports are not followed."""


def select_modules(cfg: RunConfig, root: Path | None = None) -> Selection:
    """The modules the bundle of ``cfg`` holds, and those left out (see the module docstring).

    To a fixed point with the tree shaking: an import inside a function nothing in the bundle refers to
    (``runner.eval_run``'s evaluation methods, say: the bundle's run scores with the plain evaluation) is
    not followed. Each round can only drop modules (fewer references, more dead definitions), so it ends."""
    root = root or package_root()
    dead: dict[str, tuple[str, ...]] = {}
    while True:
        sel = _select(cfg, root, dead)
        removed = minify.shake({m: _prepared_module(m, cfg, root) for m in sel.modules}, roots=[_loader_refs()])
        now = {m: tuple(sorted(v)) for m, v in removed.items()}
        if now == dead:
            return dataclasses.replace(sel, shaken=dead)
        dead = now


def _prepared_module(m: str, cfg: RunConfig, root: Path) -> minify.Stripped:
    path = module_path(m, root)
    assert path is not None
    return _prepared(*file_key(path), stubs_for(cfg, m, root))


def _select(cfg: RunConfig, root: Path, dead: dict[str, tuple[str, ...]]) -> Selection:
    order: list[str] = []
    state: dict[str, int] = {}
    left: dict[str, str] = {}
    optional = optional_modules(root)

    def deps(m: str) -> list[str]:
        s = scan(m, root, stubs_for(cfg, m, root), dead.get(m, ()))
        parents = [".".join(m.split(".")[:i]) for i in range(1, m.count(".") + 1)]
        out = parents + list(s.eager)
        for d in s.lazy:
            never = next((why for k, why in NEVER.items() if d == k or d.startswith(k + ".")), None)
            if never is not None:
                left.setdefault(d, never)
            elif d in optional and not optional[d].needed(cfg):
                left.setdefault(d, f"needs {optional[d].switch}")
            else:
                out.append(d)
        return out

    def visit(m: str) -> None:  # depth-first, dependencies first; cycles (lazy edges) are cut
        state[m] = 1
        for d in deps(m):
            if d not in state:
                visit(d)
        state[m] = 2
        order.append(m)

    visit(ENTRY)
    return Selection(tuple(order), {k: v for k, v in sorted(left.items()) if k not in state})


def third_party_imports(modules: tuple[str, ...], root: Path | None = None) -> tuple[str, ...]:
    """Top-level names of the non-stdlib, non-pgolf packages the bundled modules import when they load
    (imports inside functions, such as the optional progress bar's ``tqdm``, are not counted)."""
    root = root or package_root()
    found: set[str] = set()
    for m in modules:
        path = module_path(m, root)
        assert path is not None
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            else:
                continue
            for n in names:
                top = n.split(".")[0]
                if top not in ("pgolf", "__future__") and top not in sys.stdlib_module_names:
                    found.add(top)
    return tuple(sorted(found))


# --------------------------------------------------------------------------- sources, cached per file


def file_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path), st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=512)
def _source(path: str, mtime_ns: int, size: int) -> str:
    return Path(path).read_text(encoding="utf-8")


@functools.lru_cache(maxsize=512)
def stubbed_text(path: str, mtime_ns: int, size: int, stubs: tuple[tuple[str, str], ...] = ()) -> str:
    """The module's source with its switch-dead definitions stubbed (``@needs``) and its switch declarations removed (:func:`pgolf.bundler.prune.stub_source`)."""
    return prune.stub_source(_source(path, mtime_ns, size), dict(stubs), path)


@functools.lru_cache(maxsize=512)
def _prepared(path: str, mtime_ns: int, size: int, stubs: tuple[tuple[str, str], ...] = ()) -> minify.Stripped:
    return minify.prepare(stubbed_text(path, mtime_ns, size, stubs), path)


@functools.lru_cache(maxsize=1024)
def minified_text(path: str, mtime_ns: int, size: int, stubs: tuple[tuple[str, str], ...], drop: tuple[str, ...]) -> str:
    return minify.render(_prepared(path, mtime_ns, size, stubs).tree, path, drop)


@functools.lru_cache(maxsize=1)
def _loader_refs() -> Counter[str]:
    return minify.references(ast.parse(LOADER + MAIN))
