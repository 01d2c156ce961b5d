"""The challenge's token shard format, byte for byte, and the validation byte sidecars.

Source: ``data/download_hf_docs_and_tokenize.py`` (writer) and ``load_data_shard`` in the root
``train_gpt.py`` (reader) of openai/parameter-golf (CATALOGUE §1.1); the byte sidecar follows the
CaseOps records [04-18]/[04-19] (PR #1729, CATALOGUE §2.7).

Layout of a shard ``fineweb_{train,val}_XXXXXX.bin``::

    header  256 × little-endian int32   [SHARD_MAGIC=20240520, version=1, N, 0, 0, …]
    body      N × little-endian uint16  token ids

so its size is exactly ``1024 + 2·N`` bytes, and every id is < 65,536 (the vocabulary bound).

A byte sidecar has the same layout; entry ``t`` is the number of bytes of the *original* UTF-8
text that token ``t`` of the matching val shard accounts for (0 for BOS), so that summing it over
a document gives ``len(doc.encode("utf-8"))`` exactly. BPB against it is tokenizer-agnostic. It
comes in two styles, chosen so that every official loader reads correct data or refuses
(docs/internals.md "Data layout" has the loader-by-loader table):

* ``pgolf`` — ``pgolf_val_bytes_XXXXXX.bin``, magic ``BYTES_MAGIC=20240521``: the sidecar of a
  plain (identity) dataset. No official glob matches the name: the root ``train_gpt.py`` globs
  ``fineweb_val_*.bin`` for validation and would read a ``fineweb_val_bytes_*`` file as
  validation tokens (or stop at its magic).
* ``caseops`` — ``fineweb_val_bytes_XXXXXX.bin``, magic ``SHARD_MAGIC``: the CaseOps records'
  own format (``prepare_caseops_data.py`` writes it, their ``train_gpt.py`` reads it with
  ``load_data_shard``), for a CaseOps dataset, which must be scored over original bytes. Beside
  it :data:`CASEOPS_GUARD`, a short text file whose name matches the root script's
  ``fineweb_val_*.bin`` but none of the CaseOps loaders' patterns, makes the root script (and every
  loader that globs like it, scoring with the byte tables) stop with "Unexpected shard header"
  instead of silently reading the sidecar as validation tokens.

Datasets written before this layout (pgolf ≤ 0.1: ``fineweb_val_bytes_XXXXXX.bin`` with magic
20240521) are still read: at the ``caseops`` name both magics are accepted.

Readers reject anything that is not exactly this (magic, version, size; ids < vocab size if
given) with a :class:`~pgolf.errors.DataError` that names the file and the problem.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from pgolf.errors import DataError
from pgolf.fileio import atomic_path, write_text

SHARD_MAGIC = 20240520
BYTES_MAGIC = 20240521
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4  # 1024
SHARD_TOKENS = 10**8
"""Tokens per shard (``SHARD_SIZE`` of the challenge's exporter); the last shard holds the rest."""
SPLITS = ("train", "val")

SIDECAR_STYLES = ("pgolf", "caseops")
CASEOPS_GUARD = "fineweb_val_caseops_needs_bytes_sidecar.bin"
"""Stops the root ``train_gpt.py`` on a CaseOps dataset (module docstring): its name contains
``_bytes_`` (the [04-19]+ loaders skip such names for validation) but does not start with
``fineweb_val_bytes_`` (their sidecar glob) nor match ``fineweb_val_[0-9]{6}.bin`` ([04-18])."""
CASEOPS_GUARD_TEXT = (
    "pgolf: this directory holds a CaseOps (caseops_v1) dataset. Its val_bpb must be computed over the\n"
    "original bytes in fineweb_val_bytes_*.bin (CASEOPS_ENABLED=1 in the CaseOps records' train_gpt.py,\n"
    "or pgolf). A script that scores with the tokenizer's byte tables would report a wrong number, and\n"
    "one that globs fineweb_val_*.bin would read the sidecar as tokens: this file stops them.\n"
)

_KIND = {SHARD_MAGIC: "token shard", BYTES_MAGIC: "byte sidecar"}
_SHARD_RE = re.compile(r"^fineweb_(train|val)_(\d+)\.bin$")
_SIDECAR_RE = {"pgolf": re.compile(r"^pgolf_val_bytes_(\d+)\.bin$"),
               "caseops": re.compile(r"^fineweb_val_bytes_(\d+)\.bin$")}
_SIDECAR_NAME = {"pgolf": "pgolf_val_bytes_{:06d}.bin", "caseops": "fineweb_val_bytes_{:06d}.bin"}
_SIDECAR_MAGIC = {"pgolf": BYTES_MAGIC, "caseops": SHARD_MAGIC}
_SIDECAR_ACCEPTS = {"pgolf": (BYTES_MAGIC,), "caseops": (SHARD_MAGIC, BYTES_MAGIC), None: (BYTES_MAGIC,)}

PathLike = str | os.PathLike[str]


def shard_name(split: str, index: int) -> str:
    """``fineweb_{split}_{index:06d}.bin``."""
    _check_split(split)
    return f"fineweb_{split}_{index:06d}.bin"


def sidecar_name(index: int, style: str = "pgolf") -> str:
    """The byte sidecar name of ``fineweb_val_{index:06d}.bin`` in ``style`` (module docstring)."""
    _check_style(style)
    return _SIDECAR_NAME[style].format(index)


def sidecar_style(name: str) -> str | None:
    """``pgolf`` or ``caseops`` for a sidecar file name, None for any other name."""
    for style, rx in _SIDECAR_RE.items():
        if rx.match(name):
            return style
    return None


def sidecar_path(val_shard: PathLike, style: str = "pgolf") -> Path:
    """The sidecar path (in ``style``) that belongs to a val shard path."""
    p = Path(val_shard)
    m = _SHARD_RE.match(p.name)
    if not m or m.group(1) != "val":
        raise ValueError(f"{p}: not a val shard name")
    return p.with_name(sidecar_name(int(m.group(2)), style))


def _check_style(style: str) -> None:
    if style not in SIDECAR_STYLES:
        raise ValueError(f"sidecar style must be one of {SIDECAR_STYLES}, got {style!r}")


# ----------------------------------------------------------------------------------------- write


def _write(path: PathLike, values: object, magic: int, what: str) -> None:
    arr = np.asarray(values)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    if arr.size and arr.dtype.kind not in "iu":
        raise TypeError(f"{path}: {what} must be integers, got dtype {arr.dtype}")
    if arr.size:
        bad = (arr < 0) | (arr > 0xFFFF)
        if bad.any():
            pos = int(np.argmax(bad))
            raise DataError(f"{path}: {what} {int(arr[pos])} at position {pos} does not fit uint16 (0..65535)")
    n = int(arr.size)
    if n > np.iinfo(np.int32).max:
        raise DataError(f"{path}: {n} entries do not fit the int32 header count")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = magic, SHARD_VERSION, n
    body = arr.astype("<u2", copy=False)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(header.tobytes())
        f.write(np.ascontiguousarray(body).data)
        f.flush()
        os.fsync(f.fileno())


def write_shard(path: PathLike, tokens: object) -> None:
    """Write ``tokens`` (1-D integers in 0..65535) as a shard, atomically."""
    _write(path, tokens, SHARD_MAGIC, "token id")


def write_byte_sidecar(path: PathLike, counts: object, magic: int | None = None) -> None:
    """Write per-token original-byte counts (1-D integers in 0..65535) as a sidecar, atomically, with
    the magic of its name's style (``caseops``: SHARD_MAGIC; otherwise BYTES_MAGIC) unless given."""
    if magic is None:
        magic = _SIDECAR_MAGIC.get(sidecar_style(Path(path).name) or "pgolf", BYTES_MAGIC)
    _write(path, counts, magic, "byte count")


def write_caseops_guard(data_dir: PathLike) -> Path:
    """Write :data:`CASEOPS_GUARD` into ``data_dir`` (atomically) and return its path."""
    p = Path(data_dir) / CASEOPS_GUARD
    write_text(p, CASEOPS_GUARD_TEXT)
    assert p.stat().st_size < HEADER_BYTES  # shorter than a header: no shard reader can accept it
    return p


# ------------------------------------------------------------------------------------------ read


def _read_header(path: PathLike, magic: int, accept: tuple[int, ...] = ()) -> int:
    """Validate the header (magic ``magic``, or one of ``accept``) and the exact file size; return N."""
    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            raw = f.read(HEADER_BYTES)
    except FileNotFoundError:
        raise DataError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{p}: is a directory, not a {_KIND[magic]}") from None
    except OSError as e:
        raise DataError(f"{p}: cannot read ({e.strerror or e})") from None
    if size == 0:
        raise DataError(f"{p}: empty file (0 bytes), not a {_KIND[magic]}")
    if len(raw) < HEADER_BYTES:
        raise DataError(f"{p}: truncated: {size} bytes is shorter than the {HEADER_BYTES}-byte header")
    header = np.frombuffer(raw, dtype="<i4")
    got = int(header[0])
    if got != magic and got not in accept:
        if len(accept) > 1:
            raise DataError(f"{p}: bad magic {got} (expected {' or '.join(map(str, accept))}): not a {_KIND[magic]}")
        if got in _KIND:
            raise DataError(f"{p}: is a {_KIND[got]} (magic {got}), expected a {_KIND[magic]} (magic {magic})")
        raise DataError(f"{p}: bad magic {got} (expected {magic}): not a {_KIND[magic]}")
    version = int(header[1])
    if version != SHARD_VERSION:
        raise DataError(f"{p}: unsupported version {version} (expected {SHARD_VERSION})")
    n = int(header[2])
    if n < 0:
        raise DataError(f"{p}: bad header: negative token count {n}")
    expected = HEADER_BYTES + 2 * n
    if size < expected:
        raise DataError(f"{p}: truncated: header says {n} tokens ({expected} bytes) but file has {size} bytes")
    if size > expected:
        raise DataError(
            f"{p}: {size - expected} extra bytes: header says {n} tokens ({expected} bytes) but file has {size} bytes"
        )
    return n


def _read_body(path: PathLike, n: int) -> np.ndarray:
    arr = np.fromfile(path, dtype="<u2", count=n, offset=HEADER_BYTES)
    if arr.size != n:  # the file changed under us
        raise DataError(f"{path}: truncated while reading: expected {n} entries, got {arr.size}")
    return arr.astype(np.uint16, copy=False)


def read_shard_header(path: PathLike) -> int:
    """Number of tokens in a shard, after checking magic, version and exact size (body not read)."""
    return _read_header(path, SHARD_MAGIC)


def read_shard(path: PathLike, vocab_size: int | None = None) -> np.ndarray:
    """Token ids of a shard as ``np.uint16[N]``; with ``vocab_size`` every id must be below it."""
    n = _read_header(path, SHARD_MAGIC)
    tokens = _read_body(path, n)
    if vocab_size is not None and n and int(tokens.max()) >= vocab_size:
        pos = int(np.argmax(tokens >= vocab_size))
        raise DataError(f"{path}: token id {int(tokens[pos])} at position {pos} >= vocab size {vocab_size}")
    return tokens


def _sidecar_magics(path: PathLike) -> tuple[int, ...]:
    return _SIDECAR_ACCEPTS[sidecar_style(Path(path).name)]


def read_byte_sidecar_header(path: PathLike) -> int:
    """Number of entries in a byte sidecar, after checking magic (the ones its name's style accepts),
    version and exact size."""
    return _read_header(path, BYTES_MAGIC, _sidecar_magics(path))


def read_byte_sidecar(path: PathLike, expected_tokens: int | None = None) -> np.ndarray:
    """Byte counts of a sidecar as ``np.uint16[N]``; with ``expected_tokens`` N must equal it."""
    n = _read_header(path, BYTES_MAGIC, _sidecar_magics(path))
    if expected_tokens is not None and n != expected_tokens:
        raise DataError(f"{path}: byte sidecar has {n} entries but its val shard has {expected_tokens} tokens")
    return _read_body(path, n)


# ------------------------------------------------------------------------------------------ list


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def _listdir(data_dir: PathLike) -> list[str]:
    d = Path(data_dir)
    if not d.is_dir():
        raise DataError(f"{d}: no such data directory")
    return os.listdir(d)


def list_shards(data_dir: PathLike, split: str) -> list[Path]:
    """``fineweb_{split}_N.bin`` files in ``data_dir`` sorted by N (val byte sidecars excluded)."""
    _check_split(split)
    found = []
    for name in _listdir(data_dir):
        m = _SHARD_RE.match(name)
        if m and m.group(1) == split:
            found.append((int(m.group(2)), name))
    return [Path(data_dir) / name for _, name in sorted(found)]


def list_byte_sidecars(data_dir: PathLike) -> list[Path]:
    """The byte sidecars in ``data_dir`` (one style: ``pgolf_val_bytes_N.bin`` or
    ``fineweb_val_bytes_N.bin``) sorted by N; DataError if both styles are present."""
    found: dict[str, list[tuple[int, str]]] = {style: [] for style in SIDECAR_STYLES}
    for name in _listdir(data_dir):
        for style, rx in _SIDECAR_RE.items():
            if m := rx.match(name):
                found[style].append((int(m.group(1)), name))
    if found["pgolf"] and found["caseops"]:
        raise DataError(f"{Path(data_dir)}: holds both pgolf_val_bytes_* and fineweb_val_bytes_* byte sidecars; "
                        "keep one set")
    return [Path(data_dir) / name for _, name in sorted(found["pgolf"] or found["caseops"])]
