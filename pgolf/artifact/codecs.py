"""Named lossless compressors for the artifact payload (CATALOGUE §1.7, §2.5 "Compressors").

- ``zlib-9``: the baseline's ``zlib.compress(level=9)`` (root ``train_gpt.py``, record [03-17b]).
- ``zstd-22``: zstandard level 22 ([03-19b] and the 03-20–03-22 stacks; ≈1.5 MB under zlib there).
- ``lzma-9``: xz container, preset 9 ([03-25], PR #160); ``lzma-9e``: preset 9 | PRESET_EXTREME.
- ``brotli-11``: brotli quality 11 with a 16 MiB window (lgwin 24, as [04-27a]'s fallback;
  [03-31], [04-01], PR #1089 use it after a byte shuffle). The decoder reads the window from the
  stream, so streams written with the default lgwin 22 decode the same way.
- ``none``: identity (debugging, and the reference for "what does compression buy").
- ``shuffle{n}+{codec}``, n = 2…64: a byte-shuffle pre-filter, then ``codec`` ([03-31]/[04-01],
  PR #1089 use n = 2 under brotli-11). With L = len(x), m = ⌊L/n⌋, the first n·m bytes are read as
  an m×n matrix (row i = element i of an n-byte dtype) and written transposed, column by column —
  byte 0 of every element, then byte 1, … — followed by the L − n·m tail bytes unchanged::

      shuffle(x, n)[j·m + i] = x[i·n + j]   (0 ≤ i < m, 0 ≤ j < n),   tail kept in place.

  For fp16 scales that puts all low (mantissa) bytes, then all high (sign/exponent) bytes, whose
  skewed distribution an entropy coder then exploits. The inverse is the same transpose read back.

Contract: ``decompress(compress(x, c), c, len(x)) == x`` bit-exactly. Decompression is bounded:
``max_output`` (the raw size the artifact header declares) is a hard cap, so a small hostile payload
cannot expand into gigabytes; any failure (corrupt stream, bomb, trailing garbage, wrong size) is a
:class:`DecompressionError`, which :mod:`pgolf.artifact.format` turns into an ``ArtifactError`` naming
the file. The container only records the codec's name.

Codec search (:func:`search_codecs`, :func:`best_codec`): compress with every candidate, decompress
the result and compare it with the input, and keep the smallest output that round-trips (ties: the
earlier candidate); a candidate that raises or does not round-trip is skipped, never chosen.
Throughput on one CPU core (int6-like int8 data, 1 MiB): zlib-9 ≈ 30 MB/s, zstd-22 ≈ 3 MB/s,
lzma-9e ≈ 2 MB/s, brotli-11 ≈ 1.3 MB/s (``bench/codecs.py``): a search over all of them costs
seconds per megabyte, so callers bound it (fewer candidates, see :mod:`pgolf.artifact.streams`).
"""

from __future__ import annotations

import functools
import lzma
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import brotli
import numpy as np
import zstandard

from pgolf.errors import ConfigError


class DecompressionError(ValueError):
    """The compressed stream is corrupt, truncated, or expands beyond its declared size."""


@dataclass(frozen=True)
class Codec:
    name: str
    compress: Callable[[bytes], bytes]
    decompress: Callable[[bytes, int], bytes]
    """``decompress(data, max_output)``: must never produce more than ``max_output + 1`` bytes."""


def _zlib_decompress(data: bytes, max_output: int) -> bytes:
    d = zlib.decompressobj()
    out = d.decompress(data, max_output + 1)
    if len(out) > max_output or d.unconsumed_tail:
        raise DecompressionError(f"zlib stream expands beyond {max_output} bytes")
    out += d.flush()
    if len(out) > max_output:
        raise DecompressionError(f"zlib stream expands beyond {max_output} bytes")
    if not d.eof or d.unused_data:
        raise DecompressionError("zlib stream is truncated or followed by extra bytes")
    return out


def _lzma_decompress(data: bytes, max_output: int) -> bytes:
    d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    out = d.decompress(data, max_length=max_output + 1)
    if len(out) > max_output:
        raise DecompressionError(f"lzma stream expands beyond {max_output} bytes")
    if not d.eof or d.unused_data:
        raise DecompressionError("lzma stream is truncated or followed by extra bytes")
    return out


def _zstd_decompress(data: bytes, max_output: int) -> bytes:
    # Our frames declare their content size; libzstd refuses a frame whose output differs from it,
    # so checking the declared size first bounds the output.
    size = zstandard.frame_content_size(data)
    if size < 0:
        raise DecompressionError("zstd frame does not declare its content size")
    if size > max_output:
        raise DecompressionError(f"zstd stream expands beyond {max_output} bytes")
    d = zstandard.ZstdDecompressor().decompressobj()
    out = d.decompress(data)
    if len(out) > max_output:
        raise DecompressionError(f"zstd stream expands beyond {max_output} bytes")
    if not d.eof or d.unused_data:
        raise DecompressionError("zstd stream is truncated or followed by extra bytes")
    return out


def _brotli_decompress(data: bytes, max_output: int) -> bytes:
    d = brotli.Decompressor()
    out = d.process(data, output_buffer_limit=max_output + 1)
    while len(out) <= max_output and not d.is_finished() and not d.can_accept_more_data():
        more = d.process(b"", output_buffer_limit=max_output + 1 - len(out))
        if not more:
            break
        out += more
    if len(out) > max_output:
        raise DecompressionError(f"brotli stream expands beyond {max_output} bytes")
    if not d.is_finished():
        raise DecompressionError("brotli stream is truncated")
    return out


def _none_decompress(data: bytes, max_output: int) -> bytes:
    if len(data) > max_output:
        raise DecompressionError(f"stored payload is larger than {max_output} bytes")
    return bytes(data)


CODECS: dict[str, Codec] = {
    c.name: c
    for c in (
        Codec("none", bytes, _none_decompress),
        Codec("zlib-9", lambda b: zlib.compress(b, 9), _zlib_decompress),
        Codec("zstd-22", lambda b: zstandard.ZstdCompressor(level=22).compress(b), _zstd_decompress),
        Codec("brotli-11", lambda b: brotli.compress(b, quality=11, lgwin=24), _brotli_decompress),
        Codec("lzma-9", lambda b: lzma.compress(b, format=lzma.FORMAT_XZ, preset=9), _lzma_decompress),
        Codec(
            "lzma-9e",
            lambda b: lzma.compress(b, format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME),
            _lzma_decompress,
        ),
    )
}
"""The base codecs. :func:`get_codec` also resolves the composite names ``shuffle{n}+{base}``."""

MAX_SHUFFLE_STRIDE = 64
_SHUFFLE_NAME = re.compile(r"shuffle([1-9][0-9]*)\+(.+)")


# --------------------------------------------------------------------------- byte shuffle


def _check_stride(stride: int) -> None:
    if type(stride) is not int or not 1 <= stride <= MAX_SHUFFLE_STRIDE:
        raise ValueError(f"shuffle stride must be an int in [1, {MAX_SHUFFLE_STRIDE}], got {stride!r}")


def shuffle(data: bytes, stride: int) -> bytes:
    """Byte-transpose ``data`` with ``stride`` (module docstring); stride 1 is the identity."""
    _check_stride(stride)
    a = np.frombuffer(data, dtype=np.uint8)
    m = len(a) // stride
    body = a[: m * stride].reshape(m, stride).T.tobytes()  # tobytes() of a transposed view is C order
    return body + a[m * stride :].tobytes()


def unshuffle(data: bytes, stride: int) -> bytes:
    """Inverse of :func:`shuffle`: ``unshuffle(shuffle(x, n), n) == x`` for every length."""
    _check_stride(stride)
    a = np.frombuffer(data, dtype=np.uint8)
    m = len(a) // stride
    body = a[: m * stride].reshape(stride, m).T.tobytes()
    return body + a[m * stride :].tobytes()


def shuffle_stride(name: str) -> int:
    """The byte-shuffle stride of a codec name (1 when it has no shuffle pre-filter)."""
    m = _SHUFFLE_NAME.fullmatch(name)
    return int(m.group(1)) if m else 1


@functools.lru_cache(maxsize=256)
def _shuffled(stride: int, base: str) -> Codec:
    inner = CODECS[base]

    def comp(b: bytes) -> bytes:
        return inner.compress(shuffle(b, stride))

    def decomp(b: bytes, max_output: int) -> bytes:
        return unshuffle(inner.decompress(b, max_output), stride)  # same length: the cap carries over

    return Codec(f"shuffle{stride}+{base}", comp, decomp)


def get_codec(name: str) -> Codec:
    """The codec called ``name`` (a :data:`CODECS` key or ``shuffle{n}+{key}``, 2 ≤ n ≤ 64);
    ``ConfigError`` listing the known ones otherwise."""
    if name in CODECS:
        return CODECS[name]
    m = _SHUFFLE_NAME.fullmatch(name) if isinstance(name, str) else None
    if m and m.group(2) in CODECS and m.group(2) != "none" and 2 <= int(m.group(1)) <= MAX_SHUFFLE_STRIDE:
        return _shuffled(int(m.group(1)), m.group(2))
    raise ConfigError(
        f"unknown codec {name!r} (known: {', '.join(CODECS)}, and shuffle{{n}}+<codec> for n = 2…{MAX_SHUFFLE_STRIDE})"
    )


def compress(data: bytes, codec: str) -> bytes:
    return get_codec(codec).compress(bytes(data))


def decompress(data: bytes, codec: str, max_output: int) -> bytes:
    """Inverse of :func:`compress`, producing at most ``max_output`` bytes (else DecompressionError)."""
    c = get_codec(codec)
    try:
        return c.decompress(bytes(data), max_output)
    except DecompressionError:
        raise
    except (zlib.error, lzma.LZMAError, brotli.error, zstandard.ZstdError, EOFError, ValueError) as e:
        raise DecompressionError(f"{codec} stream is corrupt ({type(e).__name__}: {e})") from None


# --------------------------------------------------------------------------- search

BASE_CANDIDATES: tuple[str, ...] = ("zlib-9", "zstd-22", "brotli-11", "lzma-9e")
DEFAULT_CANDIDATES: tuple[str, ...] = (
    "none",
    *BASE_CANDIDATES,
    *(f"shuffle{n}+{c}" for n in (2, 4) for c in BASE_CANDIDATES),
)
"""Every base codec, alone and after a stride-2 / stride-4 byte shuffle (for fp16 / fp32 data), and
``none`` (which cannot lose: incompressible data is stored as it is)."""
FAST_CANDIDATES: tuple[str, ...] = ("none", "zlib-9", "zstd-22")
"""A quick search (≈10× faster than :data:`DEFAULT_CANDIDATES`) for iterating, e.g. in a budget loop."""


@dataclass(frozen=True)
class CodecSearch:
    name: str
    """The winning codec."""
    compressed: bytes
    """``data`` compressed with it (verified to round-trip)."""
    sizes: dict[str, int | None]
    """Compressed size per candidate, in candidate order; ``None`` when it raised or did not round-trip."""


def search_codecs(data: bytes, candidates: Sequence[str] = DEFAULT_CANDIDATES) -> CodecSearch:
    """Compress ``data`` with every candidate, keep the smallest output that decompresses back to
    ``data`` bit-exactly (ties: the earlier candidate). Unknown names → ConfigError; no candidate
    round-tripping → :class:`DecompressionError`."""
    data = bytes(data)
    if not candidates:
        raise ConfigError("codec search needs at least one candidate")
    codecs = [get_codec(c) for c in candidates]  # unknown names fail before any work
    best: tuple[str, bytes] | None = None
    sizes: dict[str, int | None] = {}
    for c in codecs:
        try:
            comp = bytes(c.compress(data))
            ok = c.decompress(comp, len(data)) == data
        except Exception:  # a broken codec must lose the search, not abort the export
            ok = False
        sizes[c.name] = len(comp) if ok else None
        if ok and (best is None or len(comp) < len(best[1])):
            best = (c.name, comp)
    if best is None:
        raise DecompressionError(f"no candidate codec round-trips these {len(data)} bytes ({', '.join(candidates)})")
    return CodecSearch(best[0], best[1], sizes)


def best_codec(data: bytes, candidates: Sequence[str] = DEFAULT_CANDIDATES) -> tuple[str, bytes]:
    """``(name, compressed)`` of the smallest round-tripping candidate (see :func:`search_codecs`)."""
    r = search_codecs(data, candidates)
    return r.name, r.compressed
