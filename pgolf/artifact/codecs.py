"""Named lossless compressors for the artifact payload (CATALOGUE §1.7, §2.5 "Compressors").

- ``zlib-9``: the baseline's ``zlib.compress(level=9)`` (root ``train_gpt.py``, record [03-17b]).
- ``zstd-22``: zstandard level 22 ([03-19b] and the 03-20–03-22 stacks; ≈1.5 MB under zlib there).
- ``lzma-9``: xz container, preset 9 ([03-25], PR #160).
- ``brotli-11``: brotli quality 11 ([03-31], [04-01], PR #1089, there after a byte shuffle).
- ``none``: identity (debugging, and the reference for "what does compression buy").

Contract: ``decompress(compress(x, c), c, len(x)) == x`` bit-exactly. Decompression is bounded:
``max_output`` (the raw size the artifact header declares) is a hard cap, so a small hostile payload
cannot expand into gigabytes; any failure (corrupt stream, bomb, trailing garbage, wrong size) is a
:class:`DecompressionError`, which :mod:`pgolf.artifact.format` turns into an ``ArtifactError`` naming
the file. New codecs (byte shuffle + brotli, per-group streams) are new :data:`CODECS` entries; the
container only records the codec's name.
"""

from __future__ import annotations

import lzma
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import brotli
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
        Codec("brotli-11", lambda b: brotli.compress(b, quality=11), _brotli_decompress),
        Codec("lzma-9", lambda b: lzma.compress(b, format=lzma.FORMAT_XZ, preset=9), _lzma_decompress),
    )
}


def get_codec(name: str) -> Codec:
    """The codec called ``name``; ``ConfigError`` listing the known ones otherwise."""
    try:
        return CODECS[name]
    except KeyError:
        raise ConfigError(f"unknown codec {name!r} (known: {', '.join(CODECS)})") from None


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
