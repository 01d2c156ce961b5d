"""What both versions of the artifact container share: the magic and versions, the allowed dtypes, the
checks of a header's fields, a payload stream's checksummed bounded decompression and a part's bytes.

The versions themselves: :mod:`pgolf.artifact.format` (version 1, one payload; :func:`~pgolf.artifact.format.parse_artifact`
reads both) and :mod:`pgolf.artifact.format_v2` (per-group streams). Nothing here executes or imports
what a file says: a header is JSON checked field by field, a part is bytes copied into a tensor of an
allowed dtype; every failure is a :class:`HeaderError` (a parser turns it into one
:class:`~pgolf.errors.ArtifactError` line naming the file).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from pgolf.artifact import codecs
from pgolf.errors import ArtifactError, ConfigError

MAGIC = b"PGOLF\x00"
FORMAT_VERSION = 1
"""The version :func:`pgolf.artifact.format.build_artifact` writes (one stream, ``concat-v1``)."""
FORMAT_VERSION_V2 = 2
"""The version :func:`pgolf.artifact.format_v2.build_artifact_v2` writes (per-group streams, ``streams-v2``)."""
READ_VERSIONS = (FORMAT_VERSION, FORMAT_VERSION_V2)
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


def check_host() -> None:
    if sys.byteorder != "little":  # the payload is little-endian and copied byte for byte
        raise ArtifactError("pgolf artifacts need a little-endian host")


def tensor_bytes(t: Tensor) -> bytes:
    """The tensor's elements as stored in the payload: row-major, native (little-endian) bytes."""
    t = t.detach().to("cpu").contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes()


# --------------------------------------------------------------------------- reading


def load_header_json(raw: bytes, fail: Callable[[str], ArtifactError]) -> Any:
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_no_dup_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise fail(f"malformed header ({type(e).__name__})") from None


def open_stream(comp: bytes, codec: str, spec: Mapping[str, Any], what: str, fail: Callable[[str], ArtifactError]) -> bytes:
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


def decode_part(
    buf: memoryview,
    pdt: torch.dtype,
    shape: tuple[int, ...],
    off: int,
    nb: int,
    where: str,
    fail: Callable[[str], ArtifactError],
) -> Tensor:
    """The part of ``shape`` stored row-major at ``buf[off:off+nb]`` (bool bytes must be 0 or 1)."""
    if nb == 0:
        t = torch.empty(shape, dtype=pdt)
    else:
        t = torch.frombuffer(bytearray(buf[off : off + nb]), dtype=pdt).reshape(shape)
    if pdt == torch.bool and bool((t.view(torch.uint8) > 1).any()):
        raise fail(f"{where}: bool bytes other than 0/1")
    return t


class HeaderError(Exception):
    """A header field the reader cannot use (the parsers turn it into one ArtifactError line)."""


def _no_dup_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for k, v in pairs:
        if k in d:
            raise ValueError(f"duplicate key {k!r}")
        d[k] = v
    return d


def get_field(obj: Any, key: str, typ: type, where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise HeaderError(f"{where}: missing {key!r}")
    v = obj[key]
    ok = (type(v) is int) if typ is int else isinstance(v, typ)  # bool is not an int here
    if not ok:
        raise HeaderError(f"{where}.{key} must be {typ.__name__}")
    return v


def header_dtype(name: Any, where: str) -> torch.dtype:
    if not isinstance(name, str) or name not in DTYPES:
        raise HeaderError(f"{where}: dtype {name!r} is not allowed (allowed: {', '.join(DTYPES)})")
    return DTYPES[name]


def header_shape(v: Any, where: str) -> tuple[int, ...]:
    if not isinstance(v, list) or len(v) > MAX_NDIM or any(type(d) is not int or not 0 <= d < MAX_DIM for d in v):
        raise HeaderError(f"{where}: shape must be a list of at most {MAX_NDIM} ints in [0, 2^40)")
    return tuple(v)




def sha_hex(obj: Any, key: str, where: str) -> str:
    v = get_field(obj, key, str, where)
    if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
        raise HeaderError(f"{where}.{key} is not a sha256 hex digest")
    return v


def codec_name(name: str) -> str:
    try:
        codecs.get_codec(name)
    except ConfigError:
        raise HeaderError(f"unknown codec {name!r} (known: {', '.join(codecs.CODECS)}, shuffle{{n}}+<codec>)") from None
    return name
