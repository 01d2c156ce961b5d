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
schema (dtypes from :data:`pgolf.artifact.container.DTYPES` only, shapes, exact tiling of the table), payload length, payload
checksum, codec, bounded decompression (at most R bytes, R ≤ ``max_raw_bytes``), raw length, raw
checksum. Every failure is one :class:`~pgolf.errors.ArtifactError` line naming the file.
Scheme names are not interpreted here: :mod:`pgolf.export.driver` dequantizes.

Version 2 (per-group streams, each with its own codec; parts transposed or row-permuted) is
:mod:`pgolf.artifact.format_v2`: written there, read there when :func:`parse_artifact` finds version 2 in
the prefix. This module holds what both versions share (prefix, dtypes, header field checks, bounded
stream opening) and version 1.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from pgolf import fileio
from pgolf.artifact import codecs
from pgolf.artifact.container import (
    DEFAULT_MAX_RAW_BYTES,
    DIGEST_BYTES,
    FORMAT_VERSION,
    FORMAT_VERSION_V2,
    MAGIC,
    MAX_HEADER_BYTES,
    READ_VERSIONS,
    HeaderError,
    check_host,
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
from pgolf.errors import ArtifactError, ConfigError
from pgolf.quant.grid import QuantTensor

LAYOUT = "concat-v1"
_PREFIX = struct.Struct("<6sHI")  # magic, version, header length
PREFIX_BYTES = _PREFIX.size  # 12


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
    check_host()
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
    check_host()
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
        from pgolf.artifact.format_v2 import parse_v2

        return parse_v2(data, fail, max_raw_bytes)
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
    header = load_header_json(data[PREFIX_BYTES : PREFIX_BYTES + hlen], fail)
    try:
        table = validate_header(header, max_raw_bytes)
    except HeaderError as e:
        raise fail(f"malformed header: {e}") from None

    pay = header["payload"]
    found = n - body
    if found < pay["compressed_bytes"]:
        raise fail(f"truncated: expected {pay['compressed_bytes']} payload bytes, found {found}")
    if found > pay["compressed_bytes"]:
        raise fail(f"{found - pay['compressed_bytes']} unexpected bytes after the payload")
    raw = open_stream(data[body:], header["codec"], pay, "payload", fail)

    out: dict[str, QuantTensor] = {}
    view = memoryview(raw)
    for name, (scheme, dtype, shape, parts) in table.items():
        tensors: dict[str, Tensor] = {}
        for role, (pdt, pshape, off, nb) in parts.items():
            tensors[role] = decode_part(view, pdt, pshape, off, nb, f"tensor {name} part {role}", fail)
        out[name] = QuantTensor(scheme, tensors, shape, dtype)
    return out, header


def validate_header(h: Any, max_raw_bytes: int) -> dict[str, Any]:
    """Check every field the reader uses; return ``{name: (scheme, dtype, shape, {role: (dtype,
    shape, offset, nbytes)})}``. Raises HeaderError (never KeyError/TypeError)."""
    if not isinstance(h, dict):
        raise HeaderError("not a JSON object")
    if h.get("format") != "pgolf-artifact":
        raise HeaderError("format is not 'pgolf-artifact'")
    if get_field(h, "format_version", int, "header") != FORMAT_VERSION:
        raise HeaderError("format_version disagrees with the file prefix")
    get_field(h, "scheme", str, "header")
    codec = get_field(h, "codec", str, "header")
    try:
        codecs.get_codec(codec)
    except ConfigError:
        raise HeaderError(f"unknown codec {codec!r} (known: {', '.join(codecs.CODECS)})") from None
    layout = get_field(h, "layout", str, "header")
    if layout != LAYOUT:
        raise HeaderError(f"unknown payload layout {layout!r} (this pgolf reads {LAYOUT!r})")
    pay = get_field(h, "payload", dict, "header")
    for key in ("compressed_bytes", "raw_bytes"):
        if get_field(pay, key, int, "payload") < 0:
            raise HeaderError(f"payload.{key} must be >= 0")
    for key in ("sha256_compressed", "sha256_raw"):
        sha_hex(pay, key, "payload")
    raw_bytes = pay["raw_bytes"]
    if raw_bytes > max_raw_bytes:
        raise HeaderError(f"raw payload of {raw_bytes} bytes is over the {max_raw_bytes}-byte limit")
    get_field(h, "meta", dict, "header")
    table: dict[str, Any] = {}
    cursor = 0
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
            off = get_field(spec, "offset", int, pw)
            nb = get_field(spec, "nbytes", int, pw)
            numel = 1
            for d in pshape:
                numel *= d
            if nb != numel * pdt.itemsize:
                raise HeaderError(f"{pw}: nbytes {nb} != {numel} elements × {pdt.itemsize}")
            if off != cursor:
                raise HeaderError(f"{pw}: offset {off} does not follow the previous part (expected {cursor})")
            cursor += nb
            if cursor > raw_bytes:
                raise HeaderError(f"{pw}: extends to byte {cursor}, past the {raw_bytes}-byte payload")
            parts[role] = (pdt, pshape, off, nb)
        table[name] = (scheme, dtype, shape, parts)
    if cursor != raw_bytes:
        raise HeaderError(f"tensor table covers {cursor} bytes of the {raw_bytes}-byte payload")
    return table
