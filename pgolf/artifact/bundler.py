"""The single-file ``train_gpt.py`` of a configuration: which modules it holds, its text, its bytes.

The challenge charges the bytes of the submission's code (RULES.md "Budgets", CATALOGUE §1.7): the
baseline its one script, later records a compressed self-extracting script (records 04-03 to 04-09
ship ``lzma`` + base85 ``train_gpt.py`` files of 15.5–24.6 KB). pgolf charges the bytes of the bundle
``pgolf bundle`` writes for the configuration (:func:`shipped_bytes`, via
:func:`pgolf.artifact.budget.code_bytes`), so the number ``pgolf info``, ``pgolf run``, ``pgolf export``
and the byte planner show is the number the bundle itself prints.

**Selection (module level).** The entry is :data:`ENTRY` (:mod:`pgolf.standalone`). The import graph
is read from the sources with ``ast``: an import executed when a module loads (module level, also
inside a top-level ``if``/``try`` or a class body) is always followed; an import inside a function
is followed unless its target is in :data:`OPTIONAL` and the configuration's switch for it is off, or
in :data:`NEVER`; imports under ``if TYPE_CHECKING:`` are never followed. Every module brings its
parent packages. So a technique's module is left out exactly when (1) every import of it sits behind
its switch and (2) its entry in :data:`OPTIONAL` says the switch is off. A module without an entry
is bundled whenever it is reached: pruning is opt-in, and a new technique costs bytes until it is
declared, never a broken bundle (the bundle's importer names the switch if one is missing anyway).

**Selection follows the tree shaking.** An import inside a top-level function (or a method of a class)
that nothing in the bundle refers to is not followed: the selection and :func:`pgolf.artifact.minify.shake`
run to a fixed point, so ``runner.eval_run`` — ``pgolf eval``'s driver, which the bundle's run never
calls — brings none of the evaluation methods (TTT, sliding windows, the mixer).

**Inside a module** (:data:`DEAD`, :mod:`pgolf.artifact.prune`). A technique that is a few lines of a
shared module (XSA, the attention gates, parallel lanes, document masks, init variants in
:mod:`pgolf.model.gpt`) is a function or method of its own, called only where its switch is on; when the
switch is off its body ships as one ``raise`` naming the switch, in both forms, and what only that body
used (helpers, imports, modules) goes with it. Tests trace the model's calls under every switch against
these declarations (tests/test_bundle_prune.py).

**Forms** (``export.code_form``). ``readable``: one Python file — a docstring (configuration, modules,
what was left out and why, commands), the importer, the embedded configuration, then every module's
source verbatim under a ``# ==== pgolf/model/gpt.py ====`` banner, in dependency order.
``compact``: the same program with every module minified and the top-level definitions nothing refers
to dropped (:mod:`pgolf.artifact.minify`), compressed with brotli-11 and base85-encoded in a two-line
self-extractor (``exec`` of the decompressed program), as the records shipped theirs with LZMA.

Inside a bundle the modules are loaded by the bundle's own importer from its embedded sources; it
marks the ``pgolf`` package with ``__bundle_file__``, and :func:`pgolf.artifact.budget.code_bytes` then
charges that file's size — this module (which reads pgolf's sources from disk) is never bundled.
Standard library only.
"""

from __future__ import annotations

import ast
import base64
import dataclasses
import functools
import hashlib
import lzma
import pprint
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgolf.artifact import minify, prune
from pgolf.config import NOT_RESULT_CHANGING, RunConfig
from pgolf.errors import ConfigError

ENTRY = "pgolf.standalone"
"""The bundle's entry module: challenge environment variables → config → :func:`pgolf.runner.run`."""

FORMS = ("compact", "readable")

REQUIRED_PACKAGES = ("torch", "numpy", "sentencepiece", "safetensors", "zstandard", "brotli")
"""Third-party packages a bundle may import (the challenge's environment); checked by the tests."""

# Export schemes (pgolf.export.driver.EXPORT_SCHEMES) known NOT to reach a module. Any other scheme name
# (a new one) keeps the module: these tuples only ever prune.
_NO_GPTQ = ("int8_zlib",)
_NO_HESSIANS = ("int8_zlib", "int6_gptqlite_zstd", "record_0322")
_NO_FAMILIES = ("int8_zlib",)  # stores only the registered int8_row / int8_tensor / float schemes
_ONE_PAYLOAD = ("int8_zlib", "int6_gptqlite_zstd", "gptq6_emb7_brotli", "record_0322",  # container v1: no
                "record_0414")                                                                # search, no streams


@dataclass(frozen=True)
class Switch:
    """When an optional module is needed: ``needed(cfg)``, and the condition in words (shown when it is
    left out)."""

    needed: Callable[[RunConfig], bool]
    switch: str


def _scheme_not_in(schemes: tuple[str, ...]) -> Switch:
    return Switch(lambda c: c.export.scheme not in schemes, f"export.scheme not in {', '.join(schemes)}")


OPTIONAL: dict[str, Switch] = {
    "pgolf.model.hashed": Switch(lambda c: c.model.embed.bigram_buckets > 0, "model.embed.bigram_buckets > 0"),
    "pgolf.model.smear": Switch(lambda c: c.model.embed.smear != "off", "model.embed.smear != off"),
    "pgolf.model.value": Switch(lambda c: bool(c.model.attn.ve_layers), "model.attn.ve_layers non-empty"),
    "pgolf.model.varlen": Switch(lambda c: c.model.attn.doc_mask and c.model.attn.doc_kernel != "mask",
                                 "model.attn.doc_mask and model.attn.doc_kernel != mask"),
    "pgolf.model.fused": Switch(lambda c: c.model.fused_kernels != "off", "model.fused_kernels != off"),
    "pgolf.optim.parallel_muon": Switch(lambda c: c.optim.parallel_muon, "optim.parallel_muon"),
    "pgolf.quant.qat": Switch(lambda c: c.train.qat.kind != "off", "train.qat.kind != off"),
    "pgolf.quant.calib": Switch(
        lambda c: c.train.calib_reserve_seconds > 0 or c.export.scheme not in _NO_HESSIANS,
        f"train.calib_reserve_seconds > 0 or export.scheme not in {', '.join(_NO_HESSIANS)}"),
    "pgolf.preflight": Switch(lambda c: c.train.autosize, "train.autosize"),
    "pgolf.autosize": Switch(lambda c: c.train.autosize, "train.autosize"),
    "pgolf.export.planner": Switch(lambda c: c.train.autosize, "train.autosize"),
    "pgolf.eval.methods": Switch(lambda c: c.eval.method != "plain", "eval.method != plain"),
    "pgolf.eval.mix": Switch(lambda c: c.eval.method.endswith("mix"), "eval.method ends with mix"),
    "pgolf.eval.ttt": Switch(lambda c: c.eval.method.startswith("ttt"), "eval.method starts with ttt"),
    "pgolf.quant.gptq": _scheme_not_in(_NO_GPTQ),
    "pgolf.quant.lqer": _scheme_not_in(_ONE_PAYLOAD),
    "pgolf.export.search": _scheme_not_in(_ONE_PAYLOAD),
    "pgolf.artifact.streams": _scheme_not_in(_ONE_PAYLOAD),
}
"""Optional modules → when a configuration needs them (reached only through imports behind the switch)."""

NEVER: dict[str, str] = {
    "pgolf.data.embedded": "the standalone script always has a data path (DATA_PATH or the challenge's default)",
    "pgolf.artifact.bundler": "a bundle charges its own file's size",
    "pgolf.artifact.minify": "a bundle charges its own file's size",
}
"""Modules the bundle never runs although a function of a bundled module may import them."""

DEAD: dict[str, Switch] = {
    # pgolf.model.gpt: each technique's few lines are a function or method of their own, called only where
    # the switch is on (the plan / the config); off, the body ships as one raise (pgolf.artifact.prune).
    "pgolf.model.gpt:exclusive": Switch(lambda c: bool(c.model.attn.xsa_layers), "model.attn.xsa_layers non-empty"),
    "pgolf.model.gpt:document_mask": Switch(lambda c: c.model.attn.doc_mask, "model.attn.doc_mask"),
    "pgolf.model.gpt:CausalSelfAttention.head_gate": Switch(lambda c: c.model.attn.gate != "off",
                                                             "model.attn.gate != off"),
    "pgolf.model.gpt:GPT._gated_skip": Switch(lambda c: c.model.skips == "gated", "model.skips = gated"),
    "pgolf.model.gpt:GPT._parallel": Switch(lambda c: c.model.parallel_start != 0, "model.parallel_start != 0"),
    "pgolf.model.gpt:GPT._chunked_loss": Switch(lambda c: c.model.ce_chunk_tokens > 0, "model.ce_chunk_tokens > 0"),
    "pgolf.model.gpt:GPT._chunk_ce": Switch(lambda c: c.model.ce_chunk_tokens > 0, "model.ce_chunk_tokens > 0"),
    "pgolf.model.gpt:GPT._resid_mix_schedule": Switch(lambda c: c.model.resid_mix_init == "schedule",
                                                       "model.resid_mix_init = schedule"),
    "pgolf.model.gpt:overtone_": Switch(lambda c: c.model.embed_init == "overtone", "model.embed_init = overtone"),
    "pgolf.model.gpt:orthogonal_init": Switch(lambda c: c.model.init != "default", "model.init != default"),
    # the low-bit families (int2..7, ternary, +LQER) of pgolf.quant.grid: int8_zlib stores only the registered
    # int8_row / int8_tensor / float schemes, so its bundle neither writes nor reads a family member
    "pgolf.quant.grid:family_scheme": _scheme_not_in(_NO_FAMILIES),
    "pgolf.runner:_final_method": Switch(lambda c: c.eval.method != "plain", "eval.method != plain"),
    "pgolf.train.loop:_calibrate_in_reserve": Switch(lambda c: c.train.calib_reserve_seconds > 0,
                                                     "train.calib_reserve_seconds > 0"),
}
"""Switch-dead definitions, ``"module:qualified.name"`` → when a configuration calls them: otherwise the
bundle ships the body as a ``raise`` naming the switch (:mod:`pgolf.artifact.prune`). The tests trace
the model's calls under each switch to check every entry against the code."""


def stubs_for(cfg: RunConfig, module: str) -> tuple[tuple[str, str], ...]:
    """``((qualified name, switch), …)`` of ``module``'s definitions that ``cfg`` never calls (:data:`DEAD`)."""
    out = []
    for key, sw in DEAD.items():
        mod, _, name = key.partition(":")
        if mod == module and not sw.needed(cfg):
            out.append((name, sw.switch))
    return tuple(sorted(out))


# --------------------------------------------------------------------------- the import graph


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


def _rel(path: Path, root: Path) -> str:
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
    tree = ast.parse(_text(path, mtime_ns, size, stubs), path)
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
    return _prepared(*_stat(path), stubs_for(cfg, m))


def _select(cfg: RunConfig, root: Path, dead: dict[str, tuple[str, ...]]) -> Selection:
    order: list[str] = []
    state: dict[str, int] = {}
    left: dict[str, str] = {}

    def deps(m: str) -> list[str]:
        s = scan(m, root, stubs_for(cfg, m), dead.get(m, ()))
        parents = [".".join(m.split(".")[:i]) for i in range(1, m.count(".") + 1)]
        out = parents + list(s.eager)
        for d in s.lazy:
            if d in NEVER:
                left.setdefault(d, NEVER[d])
            elif d in OPTIONAL and not OPTIONAL[d].needed(cfg):
                left.setdefault(d, f"needs {OPTIONAL[d].switch}")
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


# --------------------------------------------------------------------------- the embedded configuration


def bundle_config(cfg: RunConfig) -> dict[str, Any]:
    """What the bundle embeds: the result-changing fields of ``cfg`` (:mod:`pgolf.identity`) and its name
    (the configuration's label, in the docstring and the artifact's header) where they differ from
    :class:`RunConfig`'s defaults (the bundled ``pgolf.config`` holds the defaults). Left out: the seed,
    the data and tokenizer paths, logging, threads and device (:data:`~pgolf.config.NOT_RESULT_CHANGING`)
    — a run passes them as SEED, DATA_PATH, TOKENIZER_PATH, TRAIN_LOG_EVERY, … (:func:`pgolf.standalone.run_env`)
    — so every seed of one configuration ships the same bytes.
    ``RunConfig.from_dict`` of it, with those fields set, is ``cfg``. Values are first coerced to their
    field types (a preset's ``600`` for a float field is ``600.0``), so equal configurations embed equal
    text."""
    d = RunConfig.from_dict(cfg.to_dict()).to_dict()
    base = RunConfig().to_dict()
    for key in NOT_RESULT_CHANGING - {"name"}:  # seeds, paths, logging: data, not code (the identity's rule)
        *parents, leaf = key.split(".")
        node, ref = d, base
        for p in parents:
            node, ref = node[p], ref[p]
        node[leaf] = ref[leaf]
    return _diff(d, base)


def _diff(d: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            sub = _diff(v, base[k])
            if sub:
                out[k] = sub
        elif v != base[k]:
            out[k] = v
    return out


# --------------------------------------------------------------------------- rendering

LOADER = '''
import importlib.abc
import importlib.util
import linecache
import os
import sys


class BundleImporter(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports pgolf.* from FILES (the sources embedded below), never from the file system."""

    def find_spec(self, name, path=None, target=None):
        if name != "pgolf" and not name.startswith("pgolf."):
            return None
        key = name.replace(".", "/")
        for f in (key + ".py", key + "/__init__.py"):
            if f in FILES:
                return importlib.util.spec_from_loader(name, self, origin=f, is_package=f.endswith("__init__.py"))
        why = LEFT_OUT.get(name, "not on the training path")
        raise ModuleNotFoundError(f"{name} is not in this bundle: {why}", name=name)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        f = module.__spec__.origin
        src = FILES[f]
        linecache.cache[f] = (len(src), None, src.splitlines(True), f)
        if module.__name__ == "pgolf":
            module.__bundle_file__ = os.path.abspath(__file__)
        exec(compile(src, f, "exec"), module.__dict__)


def main():
    sys.meta_path.insert(0, BundleImporter())
    from pgolf.standalone import main as run

    return run(CONFIG)
'''
"""The bundle's importer (embedded in both forms; the compact form minifies it)."""

MAIN = '''
if __name__ == "__main__":
    sys.exit(main())
'''


def _source_literal(src: str) -> str:
    """``src`` as a raw triple-quoted literal when that round-trips (readable), else its repr."""
    lit = "r'''" + src + "'''"
    try:
        if ast.literal_eval(lit) == src:
            return lit
    except (SyntaxError, ValueError):
        pass
    return repr(src)


def _stat(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path), st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=512)
def _source(path: str, mtime_ns: int, size: int) -> str:
    return Path(path).read_text(encoding="utf-8")


@functools.lru_cache(maxsize=512)
def _text(path: str, mtime_ns: int, size: int, stubs: tuple[tuple[str, str], ...] = ()) -> str:
    """The module's source with its switch-dead definitions stubbed (:data:`DEAD`)."""
    return prune.stub_source(_source(path, mtime_ns, size), dict(stubs), path)


@functools.lru_cache(maxsize=512)
def _prepared(path: str, mtime_ns: int, size: int, stubs: tuple[tuple[str, str], ...] = ()) -> minify.Stripped:
    return minify.prepare(_text(path, mtime_ns, size, stubs), path)


@functools.lru_cache(maxsize=1024)
def _minified(path: str, mtime_ns: int, size: int, stubs: tuple[tuple[str, str], ...], drop: tuple[str, ...]) -> str:
    return minify.render(_prepared(path, mtime_ns, size, stubs).tree, path, drop)


@functools.lru_cache(maxsize=1)
def _loader_refs() -> Counter[str]:
    return minify.references(ast.parse(LOADER + MAIN))


def _sources(cfg: RunConfig, sel: Selection, root: Path, compact: bool) -> tuple[dict[str, str], dict[str, list[str]]]:
    """``{"pgolf/x.py": text}`` of the selected modules — verbatim but for the stubbed switch-dead bodies,
    or minified and shaken (compact: without :attr:`Selection.shaken`, the shake the selection ended
    on) — and those shaken names per module. Cached per source file."""
    paths = {}
    for m in sel.modules:
        path = module_path(m, root)
        assert path is not None
        paths[m] = path
    stubs = {m: stubs_for(cfg, m) for m in sel.modules}
    if not compact:
        return {_rel(p, root): _text(*_stat(p), stubs[m]) for m, p in paths.items()}, {}
    return ({_rel(p, root): _minified(*_stat(p), stubs[m], sel.shaken.get(m, ())) for m, p in paths.items()},
            {m: list(names) for m, names in sel.shaken.items()})


def _docstring(cfg: RunConfig, sel: Selection, packages: tuple[str, ...]) -> str:
    import pgolf

    v = cfg.model.vocab_size
    lines = [
        f"train_gpt.py of the pgolf configuration {cfg.name!r}: a standalone bundle (pgolf {pgolf.__version__}).",
        "",
        f"Written by `pgolf bundle`. Needs Python >= 3.10 and {', '.join(packages)}; not pgolf.",
        "",
        f"    DATA_PATH=./data/datasets/fineweb10B_sp{v} TOKENIZER_PATH=./data/tokenizers/fineweb_{v}_bpe.model \\",
        "        RUN_ID=seed1337 SEED=1337 torchrun --standalone --nproc_per_node=8 train_gpt.py",
        "    DATA_PATH=... python train_gpt.py         # one process: CPU or one GPU",
        "",
        "The challenge's environment variables (DATA_PATH, TOKENIZER_PATH, RUN_ID, SEED, ITERATIONS,",
        "MAX_WALLCLOCK_SECONDS, VAL_LOSS_EVERY, TRAIN_LOG_EVERY, TRAIN_BATCH_TOKENS, TRAIN_SEQ_LEN, VOCAB_SIZE, ...;",
        "pgolf/standalone.py lists them) override CONFIG, the fields of the configuration that differ from",
        "pgolf's defaults. The run writes runs/RUN_ID/ (train.log, metrics.json, the artifact model.pgolf)",
        "and charges this file's size as the code bytes.",
        "",
        "Modules, in dependency order:",
        *(f"    {m}" for m in sel.modules),
        "Left out (this configuration never runs them):",
        *([f"    {m}: {why}" for m, why in sel.left_out.items()] or ["    (nothing)"]),
    ]
    return 'r"""' + "\n".join(lines) + '\n"""'


@dataclass(frozen=True)
class Rendered:
    data: bytes
    """The shipped file."""
    selection: Selection
    pruned: dict[str, list[str]]
    """Top-level functions/classes the compact form dropped as unreferenced, per module (readable: none)."""
    program: str
    """The program: the readable file itself, or what the compact file decompresses to."""


def render(cfg: RunConfig, *, compact: bool, root: Path | None = None) -> Rendered:
    """The bundle of ``cfg`` in the compact or readable form (module docstring)."""
    root = root or package_root()
    config = bundle_config(cfg)
    cfg = RunConfig.from_dict(config)  # what the bundle holds decides it: every seed renders the same bytes
    sel = select_modules(cfg, root)
    files, pruned = _sources(cfg, sel, root, compact)
    if not compact:
        packages = third_party_imports(sel.modules, root)
        out = ["#!/usr/bin/env python3", _docstring(cfg, sel, packages), LOADER.rstrip("\n"), "",
               "CONFIG = " + pprint.pformat(config, width=100, sort_dicts=False),
               "LEFT_OUT = " + pprint.pformat(sel.left_out, width=100, sort_dicts=False),
               "FILES = {}", ""]
        for rel, src in files.items():
            out += ["", f"# ==== {rel} ====", f"FILES[{rel!r}] = " + _source_literal(src)]
        program = "\n".join([*out, "", MAIN.strip("\n"), ""])
        return Rendered(program.encode("utf-8"), sel, pruned, program)
    body = ",".join(f"{k!r}:{v!r}" for k, v in files.items())
    program = (minify.minify(LOADER) + f"CONFIG={config!r}\nLEFT_OUT={sel.left_out!r}\nFILES={{{body}}}\n"
               + minify.minify(MAIN))
    b85 = base64.b85encode(CODECS[CODEC](program.encode("utf-8"))).decode("ascii")
    data = f'import {CODEC} as Z,base64 as B\nexec(Z.decompress(B.b85decode("{b85}")))\n'.encode("ascii")
    return Rendered(data, sel, pruned, program)


def _brotli(data: bytes) -> bytes:
    import brotli

    return brotli.compress(data, quality=11, lgwin=24, mode=brotli.MODE_TEXT)


CODECS: dict[str, Callable[[bytes], bytes]] = {
    "brotli": _brotli,
    "lzma": lambda data: lzma.compress(data, format=lzma.FORMAT_ALONE, preset=9 | lzma.PRESET_EXTREME),
}
"""Compressors a self-extractor undoes with ``Z.decompress`` (``import brotli as Z`` / ``import lzma as Z``)."""
CODEC = "brotli"
"""The compact form's compressor: on every preset's program 2–3 % smaller than LZMA preset 9e ("alone"
format), see docs/benchmarks.md ("Code bytes")."""


def check_form(form: str) -> bool:
    """``compact`` → True, ``readable`` → False; anything else is a ConfigError."""
    if form not in FORMS:
        raise ConfigError(f"code form must be one of {', '.join(FORMS)}, got {form!r}")
    return form == "compact"


@functools.lru_cache(maxsize=64)
def _shipped(embedded: str, compact: bool, root: str, stamp: tuple[tuple[str, int, int], ...]) -> tuple[int, str]:
    cfg = RunConfig.from_dict(ast.literal_eval(embedded))  # the bundle depends on nothing else of cfg
    data = render(cfg, compact=compact, root=Path(root)).data
    return len(data), hashlib.sha256(data).hexdigest()


def _stamp(root: Path) -> tuple[tuple[str, int, int], ...]:
    """(file, mtime, size) of every source under ``root``: the cache key's guard against edited sources."""
    out = []
    for p in sorted(root.rglob("*.py")):
        if "__pycache__" not in p.parts:
            st = p.stat()
            out.append((p.relative_to(root).as_posix(), st.st_mtime_ns, st.st_size))
    return tuple(out)


def shipped(cfg: RunConfig, form: str | None = None, root: Path | None = None) -> tuple[int, str]:
    """(bytes, sha256 hex) of the bundle of ``cfg`` in ``form`` (default ``cfg.export.code_form``); cached
    per (embedded config, form, sources), so a run builds it once."""
    compact = check_form(form or cfg.export.code_form)
    root = root or package_root()
    return _shipped(repr(bundle_config(cfg)), compact, str(root), _stamp(root))


def shipped_bytes(cfg: RunConfig, form: str | None = None, root: Path | None = None) -> int:
    """Bytes of the bundle of ``cfg`` in ``form`` (:func:`shipped`)."""
    return shipped(cfg, form, root)[0]
