"""Version 2 of the artifact container (:mod:`pgolf.artifact.format`): per-group streams (CATALOGUE §2.5
"Compressors", the per-group layout of [04-27a], PR #1855) — its writer and its reader;
:func:`pgolf.artifact.format.parse_artifact` hands a version-2 file to :func:`parse_v2`.

The payload is a sequence of independently compressed *streams* (one per tensor group, each with its
own codec), and parts may be stored transposed and/or with their rows permuted. Written by
:func:`build_artifact_v2` (driven by :mod:`pgolf.artifact.streams`); :func:`pgolf.artifact.format.parse_artifact`
reads both versions. Layout:

===========  ==========  ==================================================================
offset       size        content
===========  ==========  ==================================================================
0            6           magic ``b"PGOLF\\x00"``
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

Only the per-group streams (:mod:`pgolf.artifact.streams`) write this version, so a bundle whose export
scheme packs one payload leaves this module out (``NEEDED_WHEN``).
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pgolf.artifact import codecs
from pgolf.artifact.container import (
    DIGEST_BYTES,
    FORMAT_VERSION_V2,
    MAGIC,
    MAX_HEADER_BYTES,
    HeaderError,
    check_host,
    codec_name,
    decode_part,
    dtype_name,
    get_field,
    header_dtype,
    header_shape,
    load_header_json,
    open_stream,
    sha_hex,
    tensor_bytes,
)
from pgolf.errors import ArtifactError
from pgolf.quant.grid import QuantTensor

NEEDED_WHEN = "scheme.codec == 'streams'"

LAYOUT_V2 = "streams-v2"
_PREFIX_V2 = struct.Struct("<6sHII")  # magic, version, compressed header length, raw header length
PREFIX_BYTES_V2 = _PREFIX_V2.size  # 16
HEADER_CODEC_V2 = "brotli-11"
TRANSFORMS = ("none", "T", "perm", "perm+T")
"""Stream transform labels: rows kept, transposed, permuted, permuted then transposed."""
PERM_DTYPES: dict[str, tuple[str, int]] = {"uint16": ("<u2", 1 << 16), "int32": ("<i4", (1 << 31) - 1)}
"""Row-permutation index dtypes: numpy dtype and the most rows each can index."""
MAX_STREAMS = 1 << 16


# --------------------------------------------------------------------------- writing


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
    check_host()
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
        validate_header_v2(json.loads(hjson), max_raw_bytes=sum(len(st.raw) for st in streams))
    except HeaderError as e:
        raise ArtifactError(f"artifact: inconsistent stream layout: {e}") from None
    hcomp = codecs.compress(hjson, HEADER_CODEC_V2)
    prefix = _PREFIX_V2.pack(MAGIC, FORMAT_VERSION_V2, len(hcomp), len(hjson)) + hcomp
    return prefix + hashlib.sha256(prefix).digest() + b"".join(st.compressed for st in streams), header


# --------------------------------------------------------------------------- reading


def parse_v2(
    data: bytes, fail: Callable[[str], ArtifactError], max_raw_bytes: int
) -> tuple[dict[str, QuantTensor], dict[str, Any]]:
    """Verify a version-2 artifact (its magic and version already read) and return its tensors and header."""
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
    header = load_header_json(hjson, fail)
    try:
        streams, table = validate_header_v2(header, max_raw_bytes)
    except HeaderError as e:
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
        raws.append(memoryview(open_stream(comp, st["codec"], st, f"stream {i} ({st['group']})", fail)))

    out: dict[str, QuantTensor] = {}
    for name, (scheme, dtype, shape, parts) in table.items():
        tensors: dict[str, Tensor] = {}
        for role, (pdt, pshape, s, off, nb, transpose, perm) in parts.items():
            tensors[role] = _decode_part(raws[s], pdt, pshape, off, nb, transpose, perm, f"tensor {name} part {role}", fail)
        out[name] = QuantTensor(scheme, tensors, shape, dtype)
    return out, header


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
    """The part stored at ``buf[off:off+nb]``, transposed / row-permuted back as the header says."""
    t = decode_part(buf, pdt, (pshape[1], pshape[0]) if transpose else pshape, off, nb, where, fail)
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


def validate_header_v2(h: Any, max_raw_bytes: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The counterpart of :func:`pgolf.artifact.format.validate_header`: returns the stream list (as in the header) and
    ``{name: (scheme, dtype, shape, {role: (dtype, shape, stream, offset, nbytes, transpose,
    (perm dtype, perm offset, perm nbytes) | None)})}``. Raises HeaderError only."""
    if not isinstance(h, dict):
        raise HeaderError("not a JSON object")
    if h.get("format") != "pgolf-artifact":
        raise HeaderError("format is not 'pgolf-artifact'")
    if get_field(h, "format_version", int, "header") != FORMAT_VERSION_V2:
        raise HeaderError("format_version disagrees with the file prefix")
    get_field(h, "scheme", str, "header")
    layout = get_field(h, "layout", str, "header")
    if layout != LAYOUT_V2:
        raise HeaderError(f"unknown payload layout {layout!r} (version 2 reads {LAYOUT_V2!r})")
    get_field(h, "meta", dict, "header")
    streams = get_field(h, "streams", list, "header")
    if len(streams) > MAX_STREAMS:
        raise HeaderError(f"{len(streams)} streams, more than the {MAX_STREAMS} allowed")
    total_raw = 0
    for i, st in enumerate(streams):
        where = f"stream {i}"
        get_field(st, "group", str, where)
        codec_name(get_field(st, "codec", str, where))
        if get_field(st, "transform", str, where) not in TRANSFORMS:
            raise HeaderError(f"{where}: unknown transform {st['transform']!r} (known: {', '.join(TRANSFORMS)})")
        for key in ("compressed_bytes", "raw_bytes"):
            if get_field(st, key, int, where) < 0:
                raise HeaderError(f"{where}.{key} must be >= 0")
        sha_hex(st, "sha256_compressed", where)
        sha_hex(st, "sha256_raw", where)
        total_raw += st["raw_bytes"]
    if total_raw > max_raw_bytes:
        raise HeaderError(f"raw payload of {total_raw} bytes is over the {max_raw_bytes}-byte limit")

    extents: list[list[tuple[int, int, str]]] = [[] for _ in streams]
    table: dict[str, Any] = {}
    for name, entry in get_field(h, "tensors", dict, "header").items():
        where = f"tensor {name}"
        if not name:
            raise HeaderError("empty tensor name")
        scheme = get_field(entry, "scheme", str, where)
        dtype = header_dtype(get_field(entry, "dtype", str, where), where)
        shape = header_shape(get_field(entry, "shape", list, where), where)
        parts: dict[str, Any] = {}
        for role, spec in get_field(entry, "parts", dict, where).items():
            pw = f"{where} part {role}"
            pdt = header_dtype(get_field(spec, "dtype", str, pw), pw)
            pshape = header_shape(get_field(spec, "shape", list, pw), pw)
            s = get_field(spec, "stream", int, pw)
            if not 0 <= s < len(streams):
                raise HeaderError(f"{pw}: stream {s} does not exist ({len(streams)} streams)")
            off = get_field(spec, "offset", int, pw)
            nb = get_field(spec, "nbytes", int, pw)
            numel = 1
            for d in pshape:
                numel *= d
            if nb != numel * pdt.itemsize:
                raise HeaderError(f"{pw}: nbytes {nb} != {numel} elements × {pdt.itemsize}")
            transpose = get_field(spec, "transpose", bool, pw)
            if "perm" not in spec:
                raise HeaderError(f"{pw}: missing 'perm'")
            perm = None
            if (transpose or spec["perm"] is not None) and len(pshape) != 2:
                raise HeaderError(f"{pw}: transpose/perm need a 2-D part, shape is {list(pshape)}")
            extents[s].append((off, nb, pw))
            if spec["perm"] is not None:
                pp = get_field(spec, "perm", dict, pw)
                pname = get_field(pp, "dtype", str, f"{pw} perm")
                if pname not in PERM_DTYPES:
                    raise HeaderError(f"{pw}: perm dtype {pname!r} is not one of {', '.join(PERM_DTYPES)}")
                rows = pshape[0]
                if rows > PERM_DTYPES[pname][1]:
                    raise HeaderError(f"{pw}: {rows} rows cannot be indexed by {pname}")
                poff = get_field(pp, "offset", int, f"{pw} perm")
                pnb = get_field(pp, "nbytes", int, f"{pw} perm")
                isz = np.dtype(PERM_DTYPES[pname][0]).itemsize
                if pnb != rows * isz:
                    raise HeaderError(f"{pw}: perm nbytes {pnb} != {rows} rows × {isz}")
                extents[s].append((poff, pnb, f"{pw} perm"))
                perm = (pname, poff, pnb)
            parts[role] = (pdt, pshape, s, off, nb, transpose, perm)
        table[name] = (scheme, dtype, shape, parts)
    for i, (st, ext) in enumerate(zip(streams, extents, strict=True)):
        cursor = 0
        for off, nb, what in sorted(ext, key=lambda e: (e[0], e[1])):
            if off != cursor:
                gap = "overlaps the previous extent" if off < cursor else f"leaves bytes {cursor}..{off} of stream {i} unused"
                raise HeaderError(f"{what}: offset {off} {gap}")
            cursor += nb
        if cursor != st["raw_bytes"]:
            raise HeaderError(f"stream {i}: parts cover {cursor} bytes of its {st['raw_bytes']} raw bytes")
    return streams, table
