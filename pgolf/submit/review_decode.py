"""Read a submission's code without running it: decode self-extracting scripts and list the code it ships.

Records from 04-03 on ship ``train_gpt.py`` as a wrapper, e.g.
``exec(L.decompress(B.b85decode("…"), format=L.FORMAT_RAW, filters=[{"id": L.FILTER_LZMA2}]))``
([04-05], [04-06b], [04-09a] …), or ``exec(open(__file__.replace("train_gpt.py", "train_gpt_decode.py")).read())``
([04-06a], CATALOGUE §5.11). ``decode_script`` evaluates only the decoding expression of such an
``exec``: string and bytes literals, base64/base85/ascii85/hex decoders, lzma/zlib/bz2/gzip/brotli/zstd
decompression (output capped), ``.decode``/``.encode``, and ``open(<file in the folder>).read()`` — every other
name or call makes the layer opaque. Nothing of the submission is imported or executed.

``code_files`` lists what counts as code beside the script: local modules it imports
(``from ngram_tilt import …`` in [04-09a]) and source files those modules name (``fused_expert_kernel.cpp``).
"""

from __future__ import annotations

import ast
import base64
import bz2
import gzip
import io
import lzma
import re
import tokenize
import zlib
from dataclasses import dataclass, field
from pathlib import Path

MAX_DECODED = 64 * 1024 * 1024
"""Cap on a decoded layer (a decompression bomb stops here and the layer is reported opaque)."""

_DECODERS = {"b85decode", "b64decode", "a85decode", "b32decode", "b16decode", "decodebytes", "urlsafe_b64decode",
             "standard_b64decode", "unhexlify", "a2b_base64", "fromhex"}
_DECOMPRESS = {"decompress"}
_SAFE_MODULES = {"lzma", "zlib", "bz2", "gzip", "base64", "binascii", "brotli", "zstandard", "zstd", "codecs"}
CODE_SUFFIXES = (".py", ".cpp", ".cc", ".c", ".cu", ".cuh", ".h", ".hpp", ".so", ".pyx", ".triton")


class Opaque(Exception):
    """The expression uses something this decoder will not evaluate."""


@dataclass
class Decoded:
    """The script as it runs: ``text`` of the innermost layer, the chain of ``layers`` that led to it
    (e.g. ``["train_gpt.py", "lzma+b85 (raw LZMA2)"]``), and ``note`` when a layer could not be opened."""

    text: str
    layers: list[str] = field(default_factory=list)
    note: str | None = None
    files: list[str] = field(default_factory=list)
    """Files of the folder the layers read (``train_gpt_decode.py``)."""


def _lzma(data: bytes, kwargs: dict) -> bytes:
    fmt = kwargs.get("format", lzma.FORMAT_AUTO)
    filters = kwargs.get("filters")
    d = lzma.LZMADecompressor(format=fmt, filters=filters) if fmt == lzma.FORMAT_RAW else lzma.LZMADecompressor(format=fmt)
    out = d.decompress(data, max_length=MAX_DECODED + 1)
    if len(out) > MAX_DECODED:
        raise Opaque("decoded layer larger than the cap")
    return out


def _decompress(mod: str, data: bytes, args: list, kwargs: dict) -> bytes:
    try:
        return _decompress_any(mod, data, args, kwargs)
    except Opaque:
        raise
    except Exception as e:  # a foreign payload: brotli.error, ZstdError, LZMAError… all mean "does not decode"
        raise Opaque(f"{mod} payload does not decompress ({type(e).__name__}: {e})") from None


def _decompress_any(mod: str, data: bytes, args: list, kwargs: dict) -> bytes:
    if not isinstance(data, bytes | bytearray):
        raise Opaque("decompress of a non-bytes value")
    if mod == "lzma":
        return _lzma(bytes(data), kwargs)
    if mod == "zlib":
        wbits = args[0] if args else kwargs.get("wbits", 15)
        d = zlib.decompressobj(wbits)
        out = d.decompress(bytes(data), MAX_DECODED + 1)
    elif mod == "bz2":
        out = bz2.BZ2Decompressor().decompress(bytes(data), max_length=MAX_DECODED + 1)
    elif mod == "gzip":
        out = gzip.decompress(bytes(data))
    elif mod == "brotli":
        import brotli

        out = brotli.decompress(bytes(data))
    elif mod in ("zstandard", "zstd"):
        import zstandard

        out = zstandard.ZstdDecompressor().decompress(bytes(data), max_output_size=MAX_DECODED + 1)
    else:
        raise Opaque(f"unknown decompressor {mod}")
    if len(out) > MAX_DECODED:
        raise Opaque("decoded layer larger than the cap")
    return out


class _Eval:
    """Evaluate one decoding expression over literals and whitelisted decoders."""

    def __init__(self, aliases: dict[str, str], folder: Path | None, script_name: str):
        self.aliases = aliases  # local name -> module name (import lzma as L)
        self.folder = folder
        self.script_name = script_name
        self.steps: list[str] = []
        self.files: list[str] = []

    def module_of(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):  # base64.b85decode
            return self.aliases.get(node.value.id)
        return None

    def ev(self, node: ast.AST):
        if isinstance(node, ast.Constant) and isinstance(node.value, str | bytes | int | float | type(None)):
            return node.value
        if isinstance(node, ast.JoinedStr):
            raise Opaque("f-string")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self.ev(node.left) + self.ev(node.right)
        if isinstance(node, ast.List | ast.Tuple):
            return [self.ev(e) for e in node.elts]
        if isinstance(node, ast.Dict):
            return {self.ev(k): self.ev(v) for k, v in zip(node.keys, node.values, strict=True) if k is not None}
        if isinstance(node, ast.Name) and node.id == "__file__":
            return str((self.folder or Path(".")) / self.script_name)
        if isinstance(node, ast.Attribute):
            mod = self.module_of(node.value) if isinstance(node.value, ast.Name) else None
            if mod in ("lzma",) and node.attr.isupper():
                return getattr(lzma, node.attr)
            if mod == "zlib" and node.attr.isupper():
                return getattr(zlib, node.attr)
            raise Opaque(f"attribute {ast.unparse(node)}")
        if isinstance(node, ast.Call):
            return self.call(node)
        raise Opaque(ast.unparse(node)[:60])

    def call(self, node: ast.Call):
        f = node.func
        kwargs = {k.arg: self.ev(k.value) for k in node.keywords if k.arg}
        if isinstance(f, ast.Attribute):
            attr = f.attr
            mod = self.module_of(f.value) if isinstance(f.value, ast.Name) else None
            if mod is not None and mod in _SAFE_MODULES:
                args = [self.ev(a) for a in node.args]
                if attr in _DECOMPRESS:
                    self.steps.append(mod)
                    return _decompress(mod, args[0], args[1:], kwargs)
                if attr in _DECODERS:
                    self.steps.append(attr.replace("decode", "").replace("a2b_", "") or attr)
                    fn = getattr(base64, attr, None) or getattr(__import__("binascii"), attr)
                    return fn(args[0])
                if mod == "codecs" and attr == "decode":
                    import codecs

                    return codecs.decode(*args, **kwargs)
                raise Opaque(f"{mod}.{attr}")
            if attr in ("decode", "encode") and not node.args[1:]:
                base = self.ev(f.value)
                enc = self.ev(node.args[0]) if node.args else kwargs.get("encoding", "utf-8")
                if attr == "decode" and isinstance(base, bytes | bytearray):
                    return bytes(base).decode(enc or "utf-8")
                if attr == "encode" and isinstance(base, str):
                    return base.encode(enc or "utf-8")
                raise Opaque(attr)
            if attr == "replace":
                base = self.ev(f.value)
                args = [self.ev(a) for a in node.args]
                if isinstance(base, str) and all(isinstance(a, str) for a in args):
                    return base.replace(*args)
                raise Opaque("replace")
            if attr == "read" and isinstance(f.value, ast.Call) and isinstance(f.value.func, ast.Name) \
                    and f.value.func.id == "open":
                return self.read_file(f.value)
            if attr == "fromhex" and isinstance(f.value, ast.Name) and f.value.id == "bytes":
                return bytes.fromhex(self.ev(node.args[0]))
            raise Opaque(f"call .{attr}")
        raise Opaque(f"call {ast.unparse(f)[:40]}")

    def read_file(self, open_call: ast.Call) -> str | bytes:
        if not open_call.args:
            raise Opaque("open()")
        path = self.ev(open_call.args[0])
        mode = self.ev(open_call.args[1]) if len(open_call.args) > 1 else "r"
        if self.folder is None or not isinstance(path, str):
            raise Opaque("open of an unknown file")
        target = (self.folder / Path(path).name)
        if not target.is_file():
            raise Opaque(f"open of {Path(path).name}, not in the folder")
        self.steps.append(f"open({target.name})")
        self.files.append(target.name)
        data = target.read_bytes()
        return data if "b" in str(mode) else data.decode("utf-8", errors="replace")


_FSTR = re.compile(r"(?<![\w'\"])[fF][rR]?(['\"])")


def parse_lenient(text: str, max_fixes: int = 400) -> tuple[ast.Module, int]:
    """``ast.parse`` that also reads Python ≥ 3.12 f-strings (PEP 701: the same quote nested inside an
    f-string, used by the 04-03…04-09 records) on an older parser: a line the parser rejects has its
    f-string replaced by an empty string (lines keep their numbers), up to ``max_fixes`` lines.
    Returns (tree, lines patched); raises SyntaxError when that does not help."""
    lines = text.split("\n")
    fixes = 0
    while True:
        try:
            return ast.parse("\n".join(lines)), fixes
        except SyntaxError as e:
            no = (e.lineno or 0) - 1
            if fixes >= max_fixes or not 0 <= no < len(lines) or "f-string" not in (e.msg or ""):
                raise
            line = lines[no]
            m = _FSTR.search(line)
            end = line.rfind(m.group(1)) if m else -1
            if not m or end <= m.end():
                raise
            lines[no] = line[: m.start()] + '""' + line[end + 1:]
            fixes += 1


def _aliases(tree: ast.Module) -> dict[str, str]:
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                out[a.asname or a.name.split(".")[0]] = a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module in _SAFE_MODULES:
            for a in node.names:
                out[a.asname or a.name] = node.module  # from lzma import decompress → decompress is lzma's
    return out


def _exec_payload(tree: ast.Module) -> ast.expr | None:
    """The argument of a top-level ``exec(...)``/``eval(...)`` (possibly wrapped in ``compile``)."""
    for stmt in tree.body:
        call = stmt.value if isinstance(stmt, ast.Expr) else None
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id in ("exec", "eval") \
                and call.args:
            arg = call.args[0]
            if isinstance(arg, ast.Call) and isinstance(arg.func, ast.Name) and arg.func.id == "compile" and arg.args:
                arg = arg.args[0]
            return arg
    return None


def python_text(data: bytes) -> str:
    """A Python file's text in its declared encoding (PEP 263: a ``coding`` line among its first two; else
    UTF-8), as Python reads it — pgolf's compact bundles are Latin-1 (:func:`pgolf.bundler.script.latin1_literal`)."""
    try:
        enc, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except (SyntaxError, LookupError):
        enc = "utf-8"
    return data.decode(enc, errors="replace")


def decode_script(text: str, folder: Path | None = None, name: str = "train_gpt.py", depth: int = 4) -> Decoded:
    """Peel self-extracting layers off ``text`` (see the module docstring). Never executes anything."""
    out = Decoded(text=text, layers=[name])
    for _ in range(depth):
        try:
            tree, _fixed = parse_lenient(out.text)
        except SyntaxError as e:
            out.note = f"{out.layers[-1]}: not Python ({e.msg}, line {e.lineno})"
            return out
        except (ValueError, RecursionError, MemoryError) as e:
            out.note = f"{out.layers[-1]}: not Python ({type(e).__name__}: {e})"
            return out
        payload = _exec_payload(tree)
        if payload is None:
            return out
        ev = _Eval(_aliases(tree), folder, name)
        try:
            value = ev.ev(payload)
        except Opaque as e:
            out.note = f"{out.layers[-1]}: exec of an expression this review does not evaluate ({e})"
            return out
        except (ValueError, lzma.LZMAError, zlib.error, OSError, EOFError, TypeError, UnicodeDecodeError) as e:
            out.note = f"{out.layers[-1]}: the embedded payload does not decode ({type(e).__name__}: {e})"
            return out
        if isinstance(value, bytes | bytearray):
            value = bytes(value).decode("utf-8", errors="replace")
        if not isinstance(value, str):
            out.note = f"{out.layers[-1]}: exec of a non-text value"
            return out
        out.layers.append("+".join(reversed(ev.steps)) or "exec")
        out.files += ev.files
        out.text = value
    return out


_IMPORT_RE = re.compile(r"[\w./-]+\.(?:py|cpp|cc|c|cu|cuh|h|hpp|so)\b")


def code_files(folder: Path, sources: dict[str, str]) -> dict[str, int]:
    """Files of ``folder`` (beside the script) that are code the script needs: local modules it imports
    (transitively) and source/binary files named in those sources. ``sources`` maps a name to its decoded
    text. Returns {relative path: bytes}."""
    found: dict[str, int] = {}
    todo = list(sources.items())
    seen = set(sources)
    while todo:
        _name, text = todo.pop()
        try:
            tree, _fixed = parse_lenient(text)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            tree = None
        mods: set[str] = set()
        if tree is None:
            mods = set(re.findall(r"^\s*(?:from|import)\s+([A-Za-z_]\w*)", text, re.M))
        else:
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    mods |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    mods.add(node.module.split(".")[0])
        for m in sorted(mods):
            cand = folder / f"{m}.py"
            if cand.is_file() and cand.name not in seen:
                seen.add(cand.name)
                found[cand.name] = cand.stat().st_size
                todo.append((cand.name, python_text(cand.read_bytes())))
        for ref in set(_IMPORT_RE.findall(text)):
            base = Path(ref).name
            for cand in [folder / ref, *folder.rglob(base)] if base else []:
                try:
                    rel = str(cand.relative_to(folder))
                except ValueError:
                    continue
                if cand.is_file() and rel not in seen and cand.suffix in CODE_SUFFIXES:
                    seen.add(rel)
                    found[rel] = cand.stat().st_size
                    if cand.suffix == ".py":
                        todo.append((rel, python_text(cand.read_bytes())))
                    break
    return found


@dataclass
class Embedded:
    """The modules a pgolf bundle carries (``pgolf.bundler.script``): ``FILES`` (path → source, in the
    compact form one dict literal, in the readable form one ``FILES['pgolf/x.py'] = r'''…'''`` per module),
    ``CONFIG`` (the settings that differ from pgolf's defaults) and ``LEFT_OUT``. ``skipped`` names entries that
    are not literals (not analysed)."""

    files: dict[str, str]
    config: dict | None = None
    left_out: dict | None = None
    skipped: list[str] = field(default_factory=list)


def _literal(node: ast.AST):
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def embedded_modules(text: str) -> Embedded | None:
    """The ``FILES`` of a program that embeds module sources, read with ``ast.literal_eval`` (never executed);
    None when the program has no top-level ``FILES`` of strings."""
    try:
        tree, _fixed = parse_lenient(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    files: dict[str, str] = {}
    out = Embedded(files)
    found = False
    for stmt in tree.body:
        if not isinstance(stmt, ast.Assign) or len(stmt.targets) != 1:
            continue
        t = stmt.targets[0]
        if isinstance(t, ast.Name) and t.id == "FILES" and isinstance(stmt.value, ast.Dict):
            found = True
            for k, v in zip(stmt.value.keys, stmt.value.values, strict=True):
                key, val = _literal(k) if k is not None else None, _literal(v)
                if isinstance(key, str) and isinstance(val, str):
                    files[key] = val
                else:
                    out.skipped.append(ast.unparse(k)[:60] if k is not None else "**")
        elif isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name) and t.value.id == "FILES":
            found = True
            key, val = _literal(t.slice), _literal(stmt.value)
            if isinstance(key, str) and isinstance(val, str):
                files[key] = val
            else:
                out.skipped.append(ast.unparse(t.slice)[:60])
        elif isinstance(t, ast.Name) and t.id in ("CONFIG", "LEFT_OUT") and isinstance(stmt.value, ast.Dict):
            val = _literal(stmt.value)
            if isinstance(val, dict):
                setattr(out, t.id.lower(), val)
    return out if found and (files or out.skipped) else None
