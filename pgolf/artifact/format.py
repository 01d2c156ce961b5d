"""The pgolf artifact: a self-describing, checksummed, pickle-free container of (quantized) tensors.

The baseline writes ``torch.save(quant_obj)`` through zlib (CATALOGUE §1.7, root ``train_gpt.py``),
i.e. a pickle: loading a stranger's artifact can execute code. This container replaces that. Loading
parses JSON and copies bytes into tensors of whitelisted dtypes; nothing is imported or executed.

File layout (version 1), byte by byte; integers little-endian:

===========  ==========  ==================================================================
offset       size        content
===========  ==========  ==================================================================
0            6           magic ``b"PGOLF\\x00"``
6            2           format version, u16 (= 1)
8            4           header length H, u32 (at most 64 MiB)
12           H           header: UTF-8 JSON object (below)
12 + H       32          SHA-256 of bytes [0, 12 + H) (magic, version, length and header)
44 + H       C           payload: the raw payload compressed with ``header.codec``;
                         the file ends exactly here (C = ``payload.compressed_bytes``)
===========  ==========  ==================================================================

Header JSON::

    {"format": "pgolf-artifact", "format_version": 1,
     "scheme": "int8_zlib",                # export scheme that produced it ("raw": none)
     "codec": "zlib-9",                    # a name from pgolf.artifact.codecs.CODECS
     "layout": "concat-v1",                # how the raw payload is laid out (below)
     "payload": {"compressed_bytes": C, "raw_bytes": R,
                 "sha256_compressed": hex, "sha256_raw": hex},
     "tensors": {name: {"scheme": "int8_row",          # quant scheme (pgolf.quant.grid.SCHEMES)
                        "dtype": "bfloat16", "shape": [V, d],   # what dequantization restores
                        "parts": {role: {"dtype": "int8", "shape": [V, d],
                                         "offset": o, "nbytes": n}, ...}}, ...},
     "meta": {...}}                        # free-form JSON: config, tokenizer sha256, ...

Raw payload layout ``concat-v1``: every part's bytes (row-major, little-endian), in table order
(tensors, then parts, as listed), back to back with no padding; the table's offsets must tile
[0, R) exactly. Why our own concatenation and not a safetensors blob (also pickle-free): one header
to validate instead of two nested ones, no second JSON header and alignment padding inside the
compressed stream, offsets that are exact byte extents the budget table reuses, and packed parts
(int6 bit-packing, byte shuffles) fit as plain ``uint8`` parts. ``layout`` names the choice so
another one can be added without a new container version.

Reading verifies, in order: magic, version, header length, header checksum, JSON, the header's
schema (dtypes from :data:`DTYPES` only, shapes, exact tiling of the table), payload length, payload
checksum, codec, bounded decompression (at most R bytes, R ≤ ``max_raw_bytes``), raw length, raw
checksum. Every failure is one :class:`~pgolf.errors.ArtifactError` line naming the file.
Scheme names are not interpreted here: :mod:`pgolf.export.driver` dequantizes.

Version 2: per-group streams (CATALOGUE §2.5 "Compressors", the per-group layout of [04-27a], PR #1855)
-------------------------------------------------------------------------------------------------------
The payload is a sequence of independently compressed *streams* (one per tensor group, each with its
own codec), and parts may be stored transposed and/or with their rows permuted. Written by
:func:`build_artifact_v2` (driven by :mod:`pgolf.artifact.streams`); :func:`parse_artifact` reads
both versions. Layout:

===========  ==========  ==================================================================
offset       size        content
===========  ==========  ==================================================================
0            6           magic ``b"PGOLF\x00"``
6            2           format version, u16 (= 2)
8            4           compressed header length H, u32 (at most 64 MiB)
12           4           raw header length J, u32 (at most 64 MiB)
16           H           header: UTF-8 JSON (below), ``brotli-11``-compressed (it is ~90 % names
                         and numbers, a few hundred bytes per tensor uncompressed)
16 + H       32          SHA-256 of bytes [0, 16 + H)
48 + H       ΣC_s        stream s's compressed bytes, s = 0, 1, … back to back; the file ends there
===========  ==========  ==================================================================

Header JSON (v2)::

    {"format": "pgolf-artifact", "format_version": 2, "scheme": "...", "layout": "streams-v2",
     "streams": [{"group": "mlp.fc", "codec": "brotli-11", "transform": "perm+T",
                  "raw_bytes": R_s, "compressed_bytes": C_s,
                  "sha256_raw": hex, "sha256_compressed": hex}, ...],
     "tensors": {name: {"scheme": ..., "dtype": ..., "shape": [...],
                        "parts": {role: {"dtype": "int8", "shape": [r, c],
                                         "stream": s, "offset": o, "nbytes": n,
                                         "transpose": true,
                                         "perm": {"dtype": "uint16", "offset": o2, "nbytes": 2r} | null},
                                  ...}}, ...},
     "meta": {...}}

A part's ``nbytes`` bytes at ``offset`` of stream ``s``'s raw bytes hold ``P = W[π]`` (rows permuted
by π when ``perm`` is given: stored row i is row π(i)), then ``Pᵀ`` instead of ``P`` when
``transpose`` is true (column-major); both need a 2-D part. π is ``r`` little-endian ``uint16``
(r ≤ 65,536) or ``int32`` indices at ``perm.offset`` of the *same* stream and must be a permutation
of 0…r−1; loading inverts it, ``W[π] = P``. Within each stream the extents (parts and perms) tile
[0, R_s) exactly, in any order, without overlap. ``transform`` is the writer's label for the stream
(:data:`TRANSFORMS`); the per-part fields are what the reader applies. The stream checksums are
verified before (compressed) and after (raw) bounded decompression, whose cap is R_s (ΣR_s ≤
``max_raw_bytes``); every v1 check has its v2 counterpart, and any other version is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pgolf import fileio
from pgolf.artifact import codecs
from pgolf.errors import ArtifactError, ConfigError
from pgolf.quant.grid import QuantTensor

MAGIC = b"PGOLF\x00"
FORMAT_VERSION = 1
"""The version :func:`write_artifact` / :func:`build_artifact` write (one stream, ``concat-v1``)."""
FORMAT_VERSION_V2 = 2
"""The version :func:`build_artifact_v2` writes (per-group streams, ``streams-v2``)."""
READ_VERSIONS = (FORMAT_VERSION, FORMAT_VERSION_V2)
LAYOUT = "concat-v1"
LAYOUT_V2 = "streams-v2"
_PREFIX = struct.Struct("<6sHI")  # magic, version, header length
PREFIX_BYTES = _PREFIX.size  # 12
_PREFIX_V2 = struct.Struct("<6sHII")  # magic, version, compressed header length, raw header length
PREFIX_BYTES_V2 = _PREFIX_V2.size  # 16
HEADER_CODEC_V2 = "brotli-11"
TRANSFORMS = ("none", "T", "perm", "perm+T")
"""Stream transform labels (v2): rows kept, transposed, permuted, permuted then transposed."""
PERM_DTYPES: dict[str, tuple[str, int]] = {"uint16": ("<u2", 1 << 16), "int32": ("<i4", (1 << 31) - 1)}
"""Row-permutation index dtypes (v2): numpy dtype and the most rows each can index."""
MAX_STREAMS = 1 << 16
DIGEST_BYTES = 32
MAX_HEADER_BYTES = 64 << 20
DEFAULT_MAX_RAW_BYTES = 1 << 32
"""Refuse artifacts whose payload claims to expand beyond this (4 GiB) unless the caller raises it."""
MAX_NDIM = 8
MAX_DIM = 1 << 40

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "bool": torch.bool,
}
"""The only dtypes an artifact may hold (parts) or restore (tensors)."""
_DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


def dtype_name(dt: torch.dtype, where: str = "artifact") -> str:
    try:
        return _DTYPE_NAMES[dt]
    except KeyError:
        raise ArtifactError(f"{where}: dtype {dt} is not allowed in artifacts (allowed: {', '.join(DTYPES)})") from None


def _check_host() -> None:
    if sys.byteorder != "little":  # the payload is little-endian and copied byte for byte
        raise ArtifactError("pgolf artifacts need a little-endian host")


def tensor_bytes(t: Tensor) -> bytes:
    """The tensor's elements as stored in the payload: row-major, native (little-endian) bytes."""
    t = t.detach().to("cpu").contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes()


# --------------------------------------------------------------------------- writing


def build_artifact(
    tensors: Mapping[str, Tensor | QuantTensor],
    *,
    codec: str = "zlib-9",
    meta: Mapping[str, Any] | None = None,
    scheme: str = "raw",
) -> bytes:
    """The complete artifact file as bytes. A plain ``Tensor`` is stored as scheme ``raw``, part ``w``.
    Unknown codec → ConfigError; a disallowed dtype or non-JSON ``meta`` → ArtifactError."""
    return pack_artifact(tensors, codec=codec, meta=meta, scheme=scheme)[0]


def pack_artifact(
    tensors: Mapping[str, Tensor | QuantTensor],
    *,
    codec: str = "zlib-9",
    meta: Mapping[str, Any] | None = None,
    scheme: str = "raw",
) -> tuple[bytes, dict[str, Any]]:
    """:func:`build_artifact`, also returning the header it wrote (as a dict)."""
    _check_host()
    codecs.get_codec(codec)
    table: dict[str, Any] = {}
    chunks: list[bytes] = []
    offset = 0
    for name, value in tensors.items():
        if not isinstance(name, str) or not name:
            raise ArtifactError(f"artifact: tensor names must be non-empty strings, got {name!r}")
        qt = value if isinstance(value, QuantTensor) else QuantTensor("raw", {"w": value}, tuple(value.shape), value.dtype)
        parts: dict[str, Any] = {}
        for role, p in qt.parts.items():
            b = tensor_bytes(p)
            parts[role] = {
                "dtype": dtype_name(p.dtype, f"artifact: tensor {name} part {role}"),
                "shape": list(p.shape),
                "offset": offset,
                "nbytes": len(b),
            }
            chunks.append(b)
            offset += len(b)
        table[name] = {
            "scheme": qt.scheme,
            "dtype": dtype_name(qt.dtype, f"artifact: tensor {name}"),
            "shape": list(qt.shape),
            "parts": parts,
        }
    raw = b"".join(chunks)
    comp = codecs.compress(raw, codec)
    header = {
        "format": "pgolf-artifact",
        "format_version": FORMAT_VERSION,
        "scheme": scheme,
        "codec": codec,
        "layout": LAYOUT,
        "payload": {
            "compressed_bytes": len(comp),
            "raw_bytes": len(raw),
            "sha256_compressed": hashlib.sha256(comp).hexdigest(),
            "sha256_raw": hashlib.sha256(raw).hexdigest(),
        },
        "tensors": table,
        "meta": dict(meta or {}),
    }
    try:
        hjson = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise ArtifactError(f"artifact: meta is not plain JSON ({e})") from None
    if len(hjson) > MAX_HEADER_BYTES:
        raise ArtifactError(f"artifact: header of {len(hjson)} bytes exceeds the {MAX_HEADER_BYTES}-byte limit")
    prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(hjson)) + hjson
    return prefix + hashlib.sha256(prefix).digest() + comp, header


def write_artifact(
    path: str | os.PathLike[str],
    tensors: Mapping[str, Tensor | QuantTensor],
    *,
    codec: str = "zlib-9",
    meta: Mapping[str, Any] | None = None,
    scheme: str = "raw",
) -> int:
    """Write :func:`build_artifact` atomically to ``path``; return the file's size in bytes."""
    blob = build_artifact(tensors, codec=codec, meta=meta, scheme=scheme)
    fileio.write_bytes(path, blob)
    return len(blob)


# --------------------------------------------------------------------------- writing, version 2


def perm_dtype(rows: int) -> str:
    """The index dtype a row permutation of ``rows`` rows is stored in (uint16 when it fits)."""
    for name, (_, most) in PERM_DTYPES.items():
        if rows <= most:
            return name
    raise ArtifactError(f"artifact: {rows} rows are too many to permute")


def encode_part(t: Tensor, *, transpose: bool = False, perm: Tensor | None = None) -> bytes:
    """The bytes a v2 part is stored as: ``t[perm]`` (if given), transposed (if asked), row-major."""
    t = t.detach().to("cpu")
    if (transpose or perm is not None) and t.ndim != 2:
        raise ArtifactError(f"artifact: transpose/perm need a 2-D part, got shape {list(t.shape)}")
    if perm is not None:
        t = t[perm.to("cpu", torch.int64)]
    return tensor_bytes(t.T if transpose else t)


def encode_perm(perm: Tensor) -> tuple[str, bytes]:
    """``(dtype name, little-endian bytes)`` of a row permutation (see :func:`perm_dtype`)."""
    name = perm_dtype(perm.numel())
    return name, perm.to("cpu", torch.int64).numpy().astype(PERM_DTYPES[name][0]).tobytes()


def part_entry(
    p: Tensor,
    *,
    where: str,
    stream: int,
    offset: int,
    transpose: bool = False,
    perm: tuple[str, int, int] | None = None,
) -> dict[str, Any]:
    """The v2 header entry of part ``p`` stored at ``offset`` of ``stream``; ``perm`` is
    ``(dtype name, offset, nbytes)`` of its row permutation in the same stream."""
    return {
        "dtype": dtype_name(p.dtype, where),
        "shape": list(p.shape),
        "stream": stream,
        "offset": offset,
        "nbytes": p.numel() * p.element_size(),
        "transpose": transpose,
        "perm": None if perm is None else {"dtype": perm[0], "offset": perm[1], "nbytes": perm[2]},
    }


@dataclass(frozen=True)
class EncodedStream:
    """One v2 stream: its raw bytes and their compression with ``codec`` (already verified)."""

    group: str
    codec: str
    transform: str
    raw: bytes
    compressed: bytes


def build_artifact_v2(
    table: Mapping[str, Any],
    streams: Sequence[EncodedStream],
    *,
    meta: Mapping[str, Any] | None = None,
    scheme: str = "raw",
) -> tuple[bytes, dict[str, Any]]:
    """The complete v2 artifact file and its header. ``table`` is the header's ``tensors`` object
    (``{name: {"scheme", "dtype", "shape", "parts": {role: part_entry(...)}}}``). The header is
    checked with the reader's own validation before anything is returned, so an inconsistent
    layout (gaps, overlaps, bad sizes) is an ArtifactError here, never an unreadable file."""
    _check_host()
    header = {
        "format": "pgolf-artifact",
        "format_version": FORMAT_VERSION_V2,
        "scheme": scheme,
        "layout": LAYOUT_V2,
        "streams": [
            {
                "group": st.group,
                "codec": st.codec,
                "transform": st.transform,
                "raw_bytes": len(st.raw),
                "compressed_bytes": len(st.compressed),
                "sha256_raw": hashlib.sha256(st.raw).hexdigest(),
                "sha256_compressed": hashlib.sha256(st.compressed).hexdigest(),
            }
            for st in streams
        ],
        "tensors": dict(table),
        "meta": dict(meta or {}),
    }
    try:
        hjson = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise ArtifactError(f"artifact: meta is not plain JSON ({e})") from None
    if len(hjson) > MAX_HEADER_BYTES:
        raise ArtifactError(f"artifact: header of {len(hjson)} bytes exceeds the {MAX_HEADER_BYTES}-byte limit")
    try:
        _validate_header_v2(json.loads(hjson), max_raw_bytes=sum(len(st.raw) for st in streams))
    except _HeaderError as e:
        raise ArtifactError(f"artifact: inconsistent stream layout: {e}") from None
    hcomp = codecs.compress(hjson, HEADER_CODEC_V2)
    prefix = _PREFIX_V2.pack(MAGIC, FORMAT_VERSION_V2, len(hcomp), len(hjson)) + hcomp
    return prefix + hashlib.sha256(prefix).digest() + b"".join(st.compressed for st in streams), header


# --------------------------------------------------------------------------- reading


def read_artifact(
    path: str | os.PathLike[str], *, max_raw_bytes: int = DEFAULT_MAX_RAW_BYTES
) -> tuple[dict[str, QuantTensor], dict[str, Any]]:
    """Read and fully verify an artifact: ``({name: QuantTensor}, header)``. See :func:`parse_artifact`."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no such artifact file") from None
    except IsADirectoryError:
        raise ArtifactError(f"{path}: is a directory, not an artifact file") from None
    except OSError as e:
        raise ArtifactError(f"{path}: cannot read ({e.strerror or e})") from None
    return parse_artifact(data, source=str(path), max_raw_bytes=max_raw_bytes)


def parse_artifact(
    data: bytes, *, source: str = "artifact", max_raw_bytes: int = DEFAULT_MAX_RAW_BYTES
) -> tuple[dict[str, QuantTensor], dict[str, Any]]:
    """Verify the bytes of an artifact (version 1 or 2) and return its tensors (parts as they were
    packed: v2 transposes and row permutations undone) and header.
    Any problem raises ``ArtifactError("<source>: <problem>")``."""
    _check_host()
    data = bytes(data)

    def fail(msg: str) -> ArtifactError:
        return ArtifactError(f"{source}: {msg}")

    n = len(data)
    if n == 0:
        raise fail("empty file, not a pgolf artifact")
    if data[: len(MAGIC)] != MAGIC[: min(n, len(MAGIC))]:
        raise fail("not a pgolf artifact (bad magic)")
    if n < PREFIX_BYTES:
        raise fail(f"truncated: {n} bytes, shorter than the {PREFIX_BYTES}-byte prefix")
    _, version, hlen = _PREFIX.unpack_from(data, 0)
    if version == FORMAT_VERSION_V2:
        return _parse_v2(data, fail, max_raw_bytes)
    if version != FORMAT_VERSION:
        raise fail(
            f"unsupported artifact format version {version} (this pgolf reads {', '.join(map(str, READ_VERSIONS))})"
        )
    if hlen > MAX_HEADER_BYTES:
        raise fail(f"header length {hlen} exceeds the {MAX_HEADER_BYTES}-byte limit (corrupt?)")
    body = PREFIX_BYTES + hlen + DIGEST_BYTES
    if n < body:
        raise fail(f"truncated: expected at least {body} bytes of header, found {n}")
    if hashlib.sha256(data[: PREFIX_BYTES + hlen]).digest() != data[PREFIX_BYTES + hlen : body]:
        raise fail("checksum mismatch: header altered or corrupt")
    header = _load_json(data[PREFIX_BYTES : PREFIX_BYTES + hlen], fail)
    try:
        table = _validate_header(header, max_raw_bytes)
    except _HeaderError as e:
        raise fail(f"malformed header: {e}") from None

    pay = header["payload"]
    found = n - body
    if found < pay["compressed_bytes"]:
        raise fail(f"truncated: expected {pay['compressed_bytes']} payload bytes, found {found}")
    if found > pay["compressed_bytes"]:
        raise fail(f"{found - pay['compressed_bytes']} unexpected bytes after the payload")
    raw = _open_stream(data[body:], header["codec"], pay, "payload", fail)

    out: dict[str, QuantTensor] = {}
    view = memoryview(raw)
    for name, (scheme, dtype, shape, parts) in table.items():
        tensors: dict[str, Tensor] = {}
        for role, (pdt, pshape, off, nb) in parts.items():
            tensors[role] = _decode_part(view, pdt, pshape, off, nb, False, None, f"tensor {name} part {role}", fail)
        out[name] = QuantTensor(scheme, tensors, shape, dtype)
    return out, header


def _load_json(raw: bytes, fail: Callable[[str], ArtifactError]) -> Any:
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_no_dup_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise fail(f"malformed header ({type(e).__name__})") from None


def _open_stream(comp: bytes, codec: str, spec: Mapping[str, Any], what: str, fail: Callable[[str], ArtifactError]) -> bytes:
    """Checksum, bounded decompression, length and checksum of one compressed stream."""
    if hashlib.sha256(comp).hexdigest() != spec["sha256_compressed"]:
        raise fail(f"checksum mismatch: {what} altered or corrupt")
    try:
        raw = codecs.decompress(comp, codec, spec["raw_bytes"])
    except codecs.DecompressionError as e:
        raise fail(f"{what} does not decompress: {e}") from None
    if len(raw) != spec["raw_bytes"]:
        raise fail(f"{what} decompresses to {len(raw)} bytes, header says {spec['raw_bytes']}")
    if hashlib.sha256(raw).hexdigest() != spec["sha256_raw"]:
        raise fail(f"checksum mismatch: decompressed {what} differs from the header's")
    return raw


def _decode_part(
    buf: memoryview,
    pdt: torch.dtype,
    pshape: tuple[int, ...],
    off: int,
    nb: int,
    transpose: bool,
    perm: tuple[str, int, int] | None,
    where: str,
    fail: Callable[[str], ArtifactError],
) -> Tensor:
    """The part stored at ``buf[off:off+nb]`` (transposed / row-permuted as the header says)."""
    stored = (pshape[1], pshape[0]) if transpose else pshape
    if nb == 0:
        t = torch.empty(stored, dtype=pdt)
    else:
        t = torch.frombuffer(bytearray(buf[off : off + nb]), dtype=pdt).reshape(stored)
    if pdt == torch.bool and bool((t.view(torch.uint8) > 1).any()):
        raise fail(f"{where}: bool bytes other than 0/1")
    if transpose:
        t = t.T.contiguous()
    if perm is not None:
        pname, poff, pnb = perm
        idx = np.frombuffer(buf[poff : poff + pnb], dtype=PERM_DTYPES[pname][0]).astype(np.int64)
        if not np.array_equal(np.sort(idx), np.arange(pshape[0])):
            raise fail(f"{where}: row permutation is not a permutation of 0..{pshape[0] - 1}")
        out = torch.empty_like(t)
        out[torch.from_numpy(idx)] = t  # stored row i is row perm[i]
        t = out
    return t


def _parse_v2(
    data: bytes, fail: Callable[[str], ArtifactError], max_raw_bytes: int
) -> tuple[dict[str, QuantTensor], dict[str, Any]]:
    n = len(data)
    if n < PREFIX_BYTES_V2:
        raise fail(f"truncated: {n} bytes, shorter than the {PREFIX_BYTES_V2}-byte prefix")
    _, _, hlen, hraw = _PREFIX_V2.unpack_from(data, 0)
    for what, v in (("header length", hlen), ("raw header length", hraw)):
        if v > MAX_HEADER_BYTES:
            raise fail(f"{what} {v} exceeds the {MAX_HEADER_BYTES}-byte limit (corrupt?)")
    body = PREFIX_BYTES_V2 + hlen + DIGEST_BYTES
    if n < body:
        raise fail(f"truncated: expected at least {body} bytes of header, found {n}")
    if hashlib.sha256(data[: PREFIX_BYTES_V2 + hlen]).digest() != data[PREFIX_BYTES_V2 + hlen : body]:
        raise fail("checksum mismatch: header altered or corrupt")
    try:
        hjson = codecs.decompress(data[PREFIX_BYTES_V2 : PREFIX_BYTES_V2 + hlen], HEADER_CODEC_V2, hraw)
    except codecs.DecompressionError as e:
        raise fail(f"header does not decompress: {e}") from None
    if len(hjson) != hraw:
        raise fail(f"header decompresses to {len(hjson)} bytes, prefix says {hraw}")
    header = _load_json(hjson, fail)
    try:
        streams, table = _validate_header_v2(header, max_raw_bytes)
    except _HeaderError as e:
        raise fail(f"malformed header: {e}") from None

    total = sum(st["compressed_bytes"] for st in streams)
    found = n - body
    if found < total:
        raise fail(f"truncated: expected {total} payload bytes, found {found}")
    if found > total:
        raise fail(f"{found - total} unexpected bytes after the payload")
    raws: list[memoryview] = []
    pos = body
    for i, st in enumerate(streams):
        comp = data[pos : pos + st["compressed_bytes"]]
        pos += st["compressed_bytes"]
        raws.append(memoryview(_open_stream(comp, st["codec"], st, f"stream {i} ({st['group']})", fail)))

    out: dict[str, QuantTensor] = {}
    for name, (scheme, dtype, shape, parts) in table.items():
        tensors: dict[str, Tensor] = {}
        for role, (pdt, pshape, s, off, nb, transpose, perm) in parts.items():
            tensors[role] = _decode_part(raws[s], pdt, pshape, off, nb, transpose, perm, f"tensor {name} part {role}", fail)
        out[name] = QuantTensor(scheme, tensors, shape, dtype)
    return out, header


class _HeaderError(Exception):
    pass


def _no_dup_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for k, v in pairs:
        if k in d:
            raise ValueError(f"duplicate key {k!r}")
        d[k] = v
    return d


def _get(obj: Any, key: str, typ: type, where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise _HeaderError(f"{where}: missing {key!r}")
    v = obj[key]
    ok = (type(v) is int) if typ is int else isinstance(v, typ)  # bool is not an int here
    if not ok:
        raise _HeaderError(f"{where}.{key} must be {typ.__name__}")
    return v


def _dtype(name: Any, where: str) -> torch.dtype:
    if not isinstance(name, str) or name not in DTYPES:
        raise _HeaderError(f"{where}: dtype {name!r} is not allowed (allowed: {', '.join(DTYPES)})")
    return DTYPES[name]


def _shape(v: Any, where: str) -> tuple[int, ...]:
    if not isinstance(v, list) or len(v) > MAX_NDIM or any(type(d) is not int or not 0 <= d < MAX_DIM for d in v):
        raise _HeaderError(f"{where}: shape must be a list of at most {MAX_NDIM} ints in [0, 2^40)")
    return tuple(v)


def _validate_header(h: Any, max_raw_bytes: int) -> dict[str, Any]:
    """Check every field the reader uses; return ``{name: (scheme, dtype, shape, {role: (dtype,
    shape, offset, nbytes)})}``. Raises _HeaderError (never KeyError/TypeError)."""
    if not isinstance(h, dict):
        raise _HeaderError("not a JSON object")
    if h.get("format") != "pgolf-artifact":
        raise _HeaderError("format is not 'pgolf-artifact'")
    if _get(h, "format_version", int, "header") != FORMAT_VERSION:
        raise _HeaderError("format_version disagrees with the file prefix")
    _get(h, "scheme", str, "header")
    codec = _get(h, "codec", str, "header")
    try:
        codecs.get_codec(codec)
    except ConfigError:
        raise _HeaderError(f"unknown codec {codec!r} (known: {', '.join(codecs.CODECS)})") from None
    layout = _get(h, "layout", str, "header")
    if layout != LAYOUT:
        raise _HeaderError(f"unknown payload layout {layout!r} (this pgolf reads {LAYOUT!r})")
    pay = _get(h, "payload", dict, "header")
    for key in ("compressed_bytes", "raw_bytes"):
        if _get(pay, key, int, "payload") < 0:
            raise _HeaderError(f"payload.{key} must be >= 0")
    for key in ("sha256_compressed", "sha256_raw"):
        v = _get(pay, key, str, "payload")
        if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
            raise _HeaderError(f"payload.{key} is not a sha256 hex digest")
    raw_bytes = pay["raw_bytes"]
    if raw_bytes > max_raw_bytes:
        raise _HeaderError(f"raw payload of {raw_bytes} bytes is over the {max_raw_bytes}-byte limit")
    _get(h, "meta", dict, "header")
    table: dict[str, Any] = {}
    cursor = 0
    for name, entry in _get(h, "tensors", dict, "header").items():
        where = f"tensor {name}"
        if not name:
            raise _HeaderError("empty tensor name")
        scheme = _get(entry, "scheme", str, where)
        dtype = _dtype(_get(entry, "dtype", str, where), where)
        shape = _shape(_get(entry, "shape", list, where), where)
        parts: dict[str, Any] = {}
        for role, spec in _get(entry, "parts", dict, where).items():
            pw = f"{where} part {role}"
            pdt = _dtype(_get(spec, "dtype", str, pw), pw)
            pshape = _shape(_get(spec, "shape", list, pw), pw)
            off = _get(spec, "offset", int, pw)
            nb = _get(spec, "nbytes", int, pw)
            numel = 1
            for d in pshape:
                numel *= d
            if nb != numel * pdt.itemsize:
                raise _HeaderError(f"{pw}: nbytes {nb} != {numel} elements × {pdt.itemsize}")
            if off != cursor:
                raise _HeaderError(f"{pw}: offset {off} does not follow the previous part (expected {cursor})")
            cursor += nb
            if cursor > raw_bytes:
                raise _HeaderError(f"{pw}: extends to byte {cursor}, past the {raw_bytes}-byte payload")
            parts[role] = (pdt, pshape, off, nb)
        table[name] = (scheme, dtype, shape, parts)
    if cursor != raw_bytes:
        raise _HeaderError(f"tensor table covers {cursor} bytes of the {raw_bytes}-byte payload")
    return table


def _sha_hex(obj: Any, key: str, where: str) -> str:
    v = _get(obj, key, str, where)
    if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
        raise _HeaderError(f"{where}.{key} is not a sha256 hex digest")
    return v


def _codec_name(name: str) -> str:
    try:
        codecs.get_codec(name)
    except ConfigError:
        raise _HeaderError(f"unknown codec {name!r} (known: {', '.join(codecs.CODECS)}, shuffle{{n}}+<codec>)") from None
    return name


def _validate_header_v2(h: Any, max_raw_bytes: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The v2 counterpart of :func:`_validate_header`: returns the stream list (as in the header) and
    ``{name: (scheme, dtype, shape, {role: (dtype, shape, stream, offset, nbytes, transpose,
    (perm dtype, perm offset, perm nbytes) | None)})}``. Raises _HeaderError only."""
    if not isinstance(h, dict):
        raise _HeaderError("not a JSON object")
    if h.get("format") != "pgolf-artifact":
        raise _HeaderError("format is not 'pgolf-artifact'")
    if _get(h, "format_version", int, "header") != FORMAT_VERSION_V2:
        raise _HeaderError("format_version disagrees with the file prefix")
    _get(h, "scheme", str, "header")
    layout = _get(h, "layout", str, "header")
    if layout != LAYOUT_V2:
        raise _HeaderError(f"unknown payload layout {layout!r} (version 2 reads {LAYOUT_V2!r})")
    _get(h, "meta", dict, "header")
    streams = _get(h, "streams", list, "header")
    if len(streams) > MAX_STREAMS:
        raise _HeaderError(f"{len(streams)} streams, more than the {MAX_STREAMS} allowed")
    total_raw = 0
    for i, st in enumerate(streams):
        where = f"stream {i}"
        _get(st, "group", str, where)
        _codec_name(_get(st, "codec", str, where))
        if _get(st, "transform", str, where) not in TRANSFORMS:
            raise _HeaderError(f"{where}: unknown transform {st['transform']!r} (known: {', '.join(TRANSFORMS)})")
        for key in ("compressed_bytes", "raw_bytes"):
            if _get(st, key, int, where) < 0:
                raise _HeaderError(f"{where}.{key} must be >= 0")
        _sha_hex(st, "sha256_compressed", where)
        _sha_hex(st, "sha256_raw", where)
        total_raw += st["raw_bytes"]
    if total_raw > max_raw_bytes:
        raise _HeaderError(f"raw payload of {total_raw} bytes is over the {max_raw_bytes}-byte limit")

    extents: list[list[tuple[int, int, str]]] = [[] for _ in streams]
    table: dict[str, Any] = {}
    for name, entry in _get(h, "tensors", dict, "header").items():
        where = f"tensor {name}"
        if not name:
            raise _HeaderError("empty tensor name")
        scheme = _get(entry, "scheme", str, where)
        dtype = _dtype(_get(entry, "dtype", str, where), where)
        shape = _shape(_get(entry, "shape", list, where), where)
        parts: dict[str, Any] = {}
        for role, spec in _get(entry, "parts", dict, where).items():
            pw = f"{where} part {role}"
            pdt = _dtype(_get(spec, "dtype", str, pw), pw)
            pshape = _shape(_get(spec, "shape", list, pw), pw)
            s = _get(spec, "stream", int, pw)
            if not 0 <= s < len(streams):
                raise _HeaderError(f"{pw}: stream {s} does not exist ({len(streams)} streams)")
            off = _get(spec, "offset", int, pw)
            nb = _get(spec, "nbytes", int, pw)
            numel = 1
            for d in pshape:
                numel *= d
            if nb != numel * pdt.itemsize:
                raise _HeaderError(f"{pw}: nbytes {nb} != {numel} elements × {pdt.itemsize}")
            transpose = _get(spec, "transpose", bool, pw)
            if "perm" not in spec:
                raise _HeaderError(f"{pw}: missing 'perm'")
            perm = None
            if (transpose or spec["perm"] is not None) and len(pshape) != 2:
                raise _HeaderError(f"{pw}: transpose/perm need a 2-D part, shape is {list(pshape)}")
            extents[s].append((off, nb, pw))
            if spec["perm"] is not None:
                pp = _get(spec, "perm", dict, pw)
                pname = _get(pp, "dtype", str, f"{pw} perm")
                if pname not in PERM_DTYPES:
                    raise _HeaderError(f"{pw}: perm dtype {pname!r} is not one of {', '.join(PERM_DTYPES)}")
                rows = pshape[0]
                if rows > PERM_DTYPES[pname][1]:
                    raise _HeaderError(f"{pw}: {rows} rows cannot be indexed by {pname}")
                poff = _get(pp, "offset", int, f"{pw} perm")
                pnb = _get(pp, "nbytes", int, f"{pw} perm")
                isz = np.dtype(PERM_DTYPES[pname][0]).itemsize
                if pnb != rows * isz:
                    raise _HeaderError(f"{pw}: perm nbytes {pnb} != {rows} rows × {isz}")
                extents[s].append((poff, pnb, f"{pw} perm"))
                perm = (pname, poff, pnb)
            parts[role] = (pdt, pshape, s, off, nb, transpose, perm)
        table[name] = (scheme, dtype, shape, parts)
    for i, (st, ext) in enumerate(zip(streams, extents, strict=True)):
        cursor = 0
        for off, nb, what in sorted(ext, key=lambda e: (e[0], e[1])):
            if off != cursor:
                gap = "overlaps the previous extent" if off < cursor else f"leaves bytes {cursor}..{off} of stream {i} unused"
                raise _HeaderError(f"{what}: offset {off} {gap}")
            cursor += nb
        if cursor != st["raw_bytes"]:
            raise _HeaderError(f"stream {i}: parts cover {cursor} bytes of its {st['raw_bytes']} raw bytes")
    return streams, table
