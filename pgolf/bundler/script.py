"""The single-file ``train_gpt.py`` of a configuration: its embedded configuration, its text, its bytes.

The challenge charges the bytes of the submission's code (RULES.md "Budgets", CATALOGUE §1.7): the
baseline its one script, later records a compressed self-extracting script (records 04-03 to 04-09
ship ``lzma`` + base85 ``train_gpt.py`` files of 15.5–24.6 KB). pgolf charges the bytes of the bundle
``pgolf bundle`` writes for the configuration (:func:`shipped_bytes`, via
:func:`pgolf.artifact.budget.code_bytes`), so the number ``pgolf info``, ``pgolf run``, ``pgolf export``
and the byte planner show is the number the bundle itself prints. Which modules it holds is
:mod:`pgolf.bundler.select`.

**Forms** (``export.code_form``). ``readable``: one Python file — a docstring (configuration, modules,
what was left out and why, commands), the importer, the embedded configuration, then every module's
source verbatim under a ``# ==== pgolf/model/gpt.py ====`` banner, in dependency order.
``compact``: the same program with every module minified and the top-level definitions nothing refers
to dropped (:mod:`pgolf.bundler.minify`), compressed with brotli-11, in a three-line self-extractor
(``exec`` of the decompressed program), as the records shipped theirs with LZMA. The records wrapped the
compressed bytes in base85 (+25 %); pgolf writes them as they are, in a string literal of a file declared
Latin-1 (PEP 263: every byte is one character), escaping only the five bytes a literal cannot hold
(``\\``, ``"``, newline, carriage return, NUL): about 2 % over the compressed size
(:func:`latin1_literal`). The file is then not UTF-8 text, so tools that read it must honour its coding
line (Python does; ``pgolf review`` does).

Inside a bundle the modules are loaded by the bundle's own importer from its embedded sources; it
marks the ``pgolf`` package with ``__bundle_file__``, and :func:`pgolf.artifact.budget.code_bytes` then
charges that file's size — this package (which reads pgolf's sources from disk) is never bundled.
Standard library only.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import lzma
import pprint
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgolf.bundler import minify
from pgolf.bundler.loader import LOADER, MAIN
from pgolf.bundler.select import (
    Selection,
    bundle_path,
    file_key,
    minified_text,
    module_path,
    package_root,
    select_modules,
    stubbed_text,
    stubs_for,
    third_party_imports,
)
from pgolf.config import NOT_RESULT_CHANGING, RunConfig
from pgolf.errors import ConfigError

FORMS = ("compact", "readable")

REQUIRED_PACKAGES = ("torch", "numpy", "sentencepiece", "safetensors", "zstandard", "brotli")
"""Third-party packages a bundle may import (the challenge's environment); checked by the tests."""


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


def _source_literal(src: str) -> str:
    """``src`` as a raw triple-quoted literal when that round-trips (readable), else its repr."""
    lit = "r'''" + src + "'''"
    try:
        if ast.literal_eval(lit) == src:
            return lit
    except (SyntaxError, ValueError):
        pass
    return repr(src)


def _sources(cfg: RunConfig, sel: Selection, root: Path, compact: bool) -> tuple[dict[str, str], dict[str, list[str]]]:
    """``{"pgolf/x.py": text}`` of the selected modules — verbatim but for the stubbed switch-dead bodies,
    or minified and shaken (compact: without :attr:`Selection.shaken`, the shake the selection ended
    on) — and those shaken names per module. Cached per source file."""
    paths = {}
    for m in sel.modules:
        path = module_path(m, root)
        assert path is not None
        paths[m] = path
    stubs = {m: stubs_for(cfg, m, root) for m in sel.modules}
    if not compact:
        return {bundle_path(p, root): stubbed_text(*file_key(p), stubs[m]) for m, p in paths.items()}, {}
    return ({bundle_path(p, root): minified_text(*file_key(p), stubs[m], sel.shaken.get(m, ())) for m, p in paths.items()},
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
    lit = latin1_literal(CODECS[CODEC](program.encode("utf-8")))
    data = f"{CODING_LINE}\nimport {CODEC} as Z\nexec(Z.decompress({lit}.encode('latin-1')))\n".encode("latin-1")
    return Rendered(data, sel, pruned, program)


CODING_LINE = "# coding: latin-1"
"""The compact form's first line (PEP 263): the file's bytes are its characters."""

_ESCAPES = {0: "\\x00", 10: "\\n", 13: "\\r", 34: '\\"', 92: "\\\\"}


def latin1_literal(data: bytes) -> str:
    """A one-line ``"…"`` literal whose ``.encode('latin-1')`` is ``data``, in a Latin-1 source file: every
    byte is its own character but NUL, newline, carriage return, the quote and the backslash, which are
    escaped (a raw carriage return would be read as a newline, a NUL ends nothing but is refused)."""
    return '"' + "".join(_ESCAPES.get(b) or chr(b) for b in data) + '"'


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
