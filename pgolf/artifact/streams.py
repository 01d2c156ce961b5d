"""Per-group compressed streams: group the packed parts, transform each group, search its codec.

Source: the per-group compressor of [04-27a] (PR #1855, ``COMPRESSOR=pergroup``; CATALOGUE §2.5
"Compressors"): int8 tensors grouped by role (tok_emb, c_q, c_k, c_v, attn.proj, mlp.fc, mlp.proj —
here the roles the model declares, :mod:`pgolf.roles`, via :func:`role_grouping`),
the rows of the hot groups (tok_emb, c_q, mlp.fc: roles embed, attn_q, mlp_up) reordered greedily by L1 nearest neighbour with the
permutations stored as uint16, each group transposed and compressed on its own (there with lrzip/ZPAQ,
here with the best of zlib/zstd/brotli/lzma), and byte-shuffled brotli-11 ([03-31]/[04-01], PR #1089)
as a candidate for fp16 data. Container: version 2 of :mod:`pgolf.artifact.format` (:mod:`pgolf.artifact.format_v2`).

Algorithm of :func:`pack`, for every group g (``grouping(name, role, part) -> g``, in order of first
appearance; one stream per group):

1. *Transforms* (:data:`~pgolf.artifact.format_v2.TRANSFORMS`), each applied to every eligible part:
   ``T`` stores 2-D parts transposed (column-major, so a column's values sit together);
   ``perm`` stores ``W[π]`` for 2-D integer parts with π the greedy L1 order (:func:`greedy_row_order`)
   and appends π (uint16 when r ≤ 65,536, else int32) after the group's data; ``perm+T`` does both.
   ``perm`` is tried only in the ``reorder`` groups (default: [04-27a]'s hot groups), and transforms
   only for streams of at least :data:`TRANSFORM_MIN_BYTES`.
2. *Codecs*: :func:`pgolf.artifact.codecs.search_codecs` over ``candidates`` — compress, decompress,
   compare, keep the smallest. With ``match_strides`` a ``shuffle{n}`` candidate is tried only when
   the group holds n-byte elements (a stride-n shuffle is the byte transpose of n-byte elements).
3. The stream keeps the (transform, codec) pair with the fewest compressed bytes (ties: the earlier
   transform in ``transforms``, then the earlier codec), so a transform is kept only where it helps,
   counting its permutation bytes. With ``proxy`` set, transforms are ranked by that one codec and
   only the winner gets the full codec search (≈ |transforms|× faster, slightly less exact).

Cost: the greedy order is O(r²·c) per matrix (≈0.6 s for 2048×512 on one core, 16× that for
8192 rows); brotli-11 runs at ≈1.3 MB/s, so the full search over ~16 MB of int6 weights takes
minutes on one core. :data:`pgolf.artifact.codecs.FAST_CANDIDATES`, ``reorder=()`` or ``proxy``
bound it (``bench/codecs.py`` measures both).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pgolf import fileio
from pgolf.artifact import codecs
from pgolf.artifact.container import DEFAULT_MAX_RAW_BYTES, dtype_name, tensor_bytes
from pgolf.artifact.format import parse_artifact, read_artifact
from pgolf.artifact.format_v2 import (
    TRANSFORMS,
    EncodedStream,
    build_artifact_v2,
    encode_part,
    encode_perm,
    part_entry,
)
from pgolf.errors import ArtifactError, ConfigError
from pgolf.quant.grid import QuantTensor
from pgolf.roles import HOT_GROUPS as ROLE_HOT_GROUPS
from pgolf.roles import RoleMap, role_of

NEEDED_WHEN = "scheme.codec == 'streams'"

Grouping = Callable[[str, str, Tensor], str]
"""``(tensor name, part role, part) -> group name``: the parts of one group share a stream."""

HOT_GROUPS: tuple[str, ...] = ROLE_HOT_GROUPS
"""[04-27a]'s row-reordered groups (tok_emb, c_q, mlp.fc): the names :func:`role_grouping` gives them."""
SMALL_PART_NUMEL = 4096
"""Parts with fewer elements go to the ``small`` stream (a stream costs ~100 header bytes)."""
VALUE_ROLES = ("q", "w")
"""Part roles that hold a tensor's values (``pgolf.quant``: quantized ``q``, passthrough ``w``)."""
TRANSFORM_MIN_BYTES = 4096
"""Streams smaller than this are stored untransformed (a transform cannot win more than a few bytes)."""
PERMUTABLE_DTYPES = (torch.int8, torch.uint8, torch.int16, torch.bool)


# --------------------------------------------------------------------------- grouping


def _side_group(role: str, part: Tensor) -> str | None:
    """The stream of a part that is not a large value part (``None`` for those)."""
    if part.is_floating_point() and role not in VALUE_ROLES:
        return "scales"
    if part.numel() < SMALL_PART_NUMEL:
        return "small"
    if role not in VALUE_ROLES:
        return role
    return None


def role_grouping(roles: RoleMap) -> Grouping:
    """[04-27a]'s grouping by role: floating parts that are not values (scales, LQER factor scales) →
    ``scales``; parts under :data:`SMALL_PART_NUMEL` elements → ``small``; other integer parts (LQER
    factors) → their part name (``lqer_a``), across tensors; integer value parts → the tensor's role
    (``mlp_up``); large float value parts (fp16 passthrough) → ``<role>:<dtype>``. A tensor without a
    role is a ConfigError."""

    def grouping(name: str, part_role: str, part: Tensor) -> str:
        side = _side_group(part_role, part)
        if side is not None:
            return side
        base = role_of(roles, name).value
        return f"{base}:{dtype_name(part.dtype)}" if part.is_floating_point() else base

    return grouping


def default_grouping(name: str, role: str, part: Tensor) -> str:
    """Without roles: as :func:`role_grouping`, but each tensor's large value parts get a stream of
    their own (named after the tensor); nothing is inferred from the name."""
    side = _side_group(role, part)
    if side is not None:
        return side
    return f"{name}:{dtype_name(part.dtype)}" if part.is_floating_point() else name


def single_group(name: str, role: str, part: Tensor) -> str:
    """Everything in one stream (the v1 layout, as a v2 file)."""
    return "all"


def tensor_grouping(name: str, role: str, part: Tensor) -> str:
    """One stream per tensor."""
    return name


# --------------------------------------------------------------------------- row reordering


def greedy_row_order(m: Tensor) -> Tensor:
    """The greedy L1 nearest-neighbour order of the rows of 2-D ``m`` ([04-27a]): ``π[0] = 0`` and
    ``π[k+1] = argmin_{j ∉ π[0..k]} ‖m[j] − m[π[k]]‖₁`` (ties: the lowest j). int64 [r]. Exact integer
    arithmetic; O(r²·c) time, O(r·c) memory."""
    if m.ndim != 2:
        raise ValueError(f"row order needs a 2-D tensor, got shape {list(m.shape)}")
    if m.dtype not in PERMUTABLE_DTYPES:
        raise ValueError(f"row order is defined for {PERMUTABLE_DTYPES} parts, not {m.dtype}")
    n = m.shape[0]
    if n <= 2:
        return torch.arange(n)
    a = m.detach().to("cpu")
    if a.dtype == torch.bool:
        a = a.to(torch.uint8)
    x = a.numpy().astype(np.int16 if a.element_size() == 1 else np.int32)  # |a − b| fits, no overflow
    idx = np.arange(n, dtype=np.int64)
    order = np.empty(n, dtype=np.int64)
    order[0] = 0
    cur = x[0].copy()
    live = n - 1  # the unused rows are x[:live]; the used one is swapped out to the end
    x[0], idx[0] = x[live], idx[live]
    for k in range(1, n):
        key = np.abs(x[:live] - cur).sum(axis=1, dtype=np.int64) * n + idx[:live]  # distance, then index
        j = int(key.argmin())
        order[k] = idx[j]
        cur = x[j].copy()
        live -= 1
        x[j], idx[j] = x[live], idx[live]
    return torch.from_numpy(order)


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class StreamReport:
    """One stream of a packed artifact."""

    group: str
    tensors: tuple[str, ...]
    """Its parts, as ``name[role]``, in stream order."""
    elements: int
    """Elements of its parts (bits per element = 8 · compressed_bytes / elements)."""
    raw_bytes: int
    """Packed bytes, including row permutations when ``transform`` has ``perm``."""
    compressed_bytes: int
    codec: str
    transform: str
    tried: dict[str, int | None] = field(default_factory=dict)
    """Compressed bytes of every (``"<transform> <codec>"``) pair measured; None: failed to round-trip."""
    seconds: float = 0.0


@dataclass(frozen=True)
class PackReport:
    streams: tuple[StreamReport, ...]
    total_bytes: int
    """The artifact file's size."""

    @property
    def compressed_bytes(self) -> int:
        return sum(s.compressed_bytes for s in self.streams)

    @property
    def raw_bytes(self) -> int:
        return sum(s.raw_bytes for s in self.streams)

    @property
    def overhead_bytes(self) -> int:
        """Prefix, compressed header and its checksum."""
        return self.total_bytes - self.compressed_bytes


def format_report(report: PackReport) -> str:
    """The per-stream byte table (group, parts, raw, compressed, bits/element, codec, transform)."""
    head = ("group", "parts", "raw", "compressed", "bits/el", "codec", "transform")
    rows = [
        (
            s.group,
            str(len(s.tensors)),
            f"{s.raw_bytes:,}",
            f"{s.compressed_bytes:,}",
            f"{8 * s.compressed_bytes / s.elements:.3f}" if s.elements else "-",
            s.codec,
            s.transform,
        )
        for s in report.streams
    ]
    el = sum(s.elements for s in report.streams)
    total = (
        f"total ({len(report.streams)} streams)",
        str(sum(len(s.tensors) for s in report.streams)),
        f"{report.raw_bytes:,}",
        f"{report.compressed_bytes:,}",
        f"{8 * report.compressed_bytes / el:.3f}" if el else "-",
        "",
        "",
    )
    table = [head, *rows, total]
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]

    def line(r: tuple[str, ...]) -> str:
        cells = [r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in range(1, 5)]
        cells += [r[i].ljust(widths[i]) for i in range(5, len(r))]
        return "  ".join(cells).rstrip()

    rule = "-" * len(line(head))
    out = [line(head), rule, *map(line, rows), rule, line(total)]
    out.append(f"header + checksums {report.overhead_bytes:,}; file {report.total_bytes:,} bytes")
    return "\n".join(out)


# --------------------------------------------------------------------------- packing


@dataclass
class _Part:
    name: str
    role: str
    t: Tensor


def _as_quant(name: Any, value: Tensor | QuantTensor) -> QuantTensor:
    if not isinstance(name, str) or not name:
        raise ArtifactError(f"artifact: tensor names must be non-empty strings, got {name!r}")
    if isinstance(value, QuantTensor):
        return value
    return QuantTensor("raw", {"w": value}, tuple(value.shape), value.dtype)


def _is_2d(t: Tensor) -> bool:
    return t.ndim == 2 and min(t.shape) >= 2  # a vector's transpose is the same bytes


def _permutable(t: Tensor) -> bool:
    return t.ndim == 2 and t.shape[0] > 2 and t.shape[1] > 0 and t.dtype in PERMUTABLE_DTYPES


def _layout(parts: list[_Part], transform: str, perms: dict[int, Tensor]) -> tuple[bytes, list[tuple[int, bool, Any]]]:
    """Raw stream bytes for ``transform`` and, per part, ``(offset, transpose, (perm dtype, perm
    offset, nbytes) | None)``: data parts in order, then the permutations."""
    transpose = transform in ("T", "perm+T")
    permute = transform in ("perm", "perm+T")
    chunks: list[bytes] = []
    places: list[tuple[int, bool, Any]] = []
    off = 0
    for i, p in enumerate(parts):
        tr = transpose and _is_2d(p.t)
        pi = perms.get(i) if permute else None
        b = encode_part(p.t, transpose=tr, perm=pi)
        places.append((off, tr, None))
        chunks.append(b)
        off += len(b)
    if permute:
        for i in range(len(parts)):
            if i in perms:
                pname, pb = encode_perm(perms[i])
                places[i] = (places[i][0], places[i][1], (pname, off, len(pb)))
                chunks.append(pb)
                off += len(pb)
    return b"".join(chunks), places


def _candidates_for(parts: list[_Part], candidates: Sequence[str], match_strides: bool) -> list[str]:
    sizes = {p.t.element_size() for p in parts}
    out = [c for c in candidates if not match_strides or codecs.shuffle_stride(c) in sizes | {1}]
    return out or list(candidates)


def _pack_group(
    group: str,
    parts: list[_Part],
    *,
    candidates: Sequence[str],
    transforms: Sequence[str],
    reorder: Collection[str],
    proxy: str | None,
    match_strides: bool,
    transform_min_bytes: int,
) -> tuple[EncodedStream, list[tuple[int, bool, Any]], StreamReport]:
    t0 = time.perf_counter()
    nbytes = sum(p.t.numel() * p.t.element_size() for p in parts)
    variants = ["none"]
    if nbytes >= transform_min_bytes:
        can_t = any(_is_2d(p.t) for p in parts)
        can_p = group in reorder and any(_permutable(p.t) for p in parts)
        ok = {"none": True, "T": can_t, "perm": can_p, "perm+T": can_p and can_t}
        variants = [v for v in transforms if ok[v]] or ["none"]
    perms = (
        {i: greedy_row_order(p.t) for i, p in enumerate(parts) if _permutable(p.t)}
        if any(v.startswith("perm") for v in variants)
        else {}
    )
    cands = _candidates_for(parts, candidates, match_strides)
    tried: dict[str, int | None] = {}
    best: tuple[int, str, codecs.CodecSearch, bytes, list[Any]] | None = None
    if proxy is not None and len(variants) > 1:
        scored = []
        for v in variants:
            raw, places = _layout(parts, v, perms)
            size = len(codecs.compress(raw, proxy))
            tried[f"{v} {proxy} (proxy)"] = size
            scored.append((size, v, raw, places))
        _, v, raw, places = min(scored, key=lambda s: s[0])  # min keeps the first of equals
        variants_raw = [(v, raw, places)]
    else:
        variants_raw = [(v, *_layout(parts, v, perms)) for v in variants]
    for v, raw, places in variants_raw:
        r = codecs.search_codecs(raw, cands)
        tried.update({f"{v} {c}": s for c, s in r.sizes.items()})
        if best is None or len(r.compressed) < best[0]:
            best = (len(r.compressed), v, r, raw, places)
    assert best is not None
    _, v, r, raw, places = best
    stream = EncodedStream(group, r.name, v, raw, r.compressed)
    report = StreamReport(
        group=group,
        tensors=tuple(f"{p.name}[{p.role}]" for p in parts),
        elements=sum(p.t.numel() for p in parts),
        raw_bytes=len(raw),
        compressed_bytes=len(r.compressed),
        codec=r.name,
        transform=v,
        tried=tried,
        seconds=time.perf_counter() - t0,
    )
    return stream, places, report


def pack(
    tensors: Mapping[str, Tensor | QuantTensor],
    *,
    grouping: Grouping = default_grouping,
    candidates: Sequence[str] = codecs.DEFAULT_CANDIDATES,
    transforms: Sequence[str] = TRANSFORMS,
    reorder: Collection[str] = HOT_GROUPS,
    proxy: str | None = None,
    match_strides: bool = True,
    transform_min_bytes: int = TRANSFORM_MIN_BYTES,
    meta: Mapping[str, Any] | None = None,
    scheme: str = "raw",
    verify: bool = True,
) -> tuple[bytes, PackReport]:
    """Pack ``tensors`` into a version-2 artifact (module docstring): ``(file bytes, report)``.
    A plain ``Tensor`` is stored as scheme ``raw``, part ``w``. ``verify`` re-reads the finished file
    and compares every part bit-exactly (cheap next to compression). Unknown codec, transform or
    group name → ConfigError; disallowed dtype or non-JSON ``meta`` → ArtifactError."""
    for c in (*candidates, *([proxy] if proxy else [])):
        codecs.get_codec(c)
    bad = [t for t in transforms if t not in TRANSFORMS]
    if bad or not transforms:
        raise ConfigError(f"unknown stream transforms {bad or '(none given)'} (known: {', '.join(TRANSFORMS)})")
    quant = {name: _as_quant(name, v) for name, v in tensors.items()}
    groups: dict[str, list[_Part]] = {}
    where: dict[tuple[str, str], tuple[str, int]] = {}
    for name, qt in quant.items():
        dtype_name(qt.dtype, f"artifact: tensor {name}")
        for role, p in qt.parts.items():
            dtype_name(p.dtype, f"artifact: tensor {name} part {role}")
            p = p.detach().to("cpu").contiguous()
            g = grouping(name, role, p)
            if not isinstance(g, str) or not g:
                raise ConfigError(f"grouping returned {g!r} for {name}[{role}]: group names are non-empty strings")
            where[(name, role)] = (g, len(groups.setdefault(g, [])))
            groups[g].append(_Part(name, role, p))

    streams: list[EncodedStream] = []
    reports: list[StreamReport] = []
    places: dict[str, list[Any]] = {}
    for g, parts in groups.items():
        st, pl, rep = _pack_group(
            g,
            parts,
            candidates=candidates,
            transforms=transforms,
            reorder=reorder,
            proxy=proxy,
            match_strides=match_strides,
            transform_min_bytes=transform_min_bytes,
        )
        streams.append(st)
        reports.append(rep)
        places[g] = pl

    index = {g: i for i, g in enumerate(groups)}
    table: dict[str, Any] = {}
    for name, qt in quant.items():
        entries = {}
        for role, p in qt.parts.items():
            g, k = where[(name, role)]
            off, tr, perm = places[g][k]
            entries[role] = part_entry(
                p, where=f"artifact: tensor {name} part {role}", stream=index[g], offset=off, transpose=tr, perm=perm
            )
        table[name] = {"scheme": qt.scheme, "dtype": dtype_name(qt.dtype), "shape": list(qt.shape), "parts": entries}
    blob, _ = build_artifact_v2(table, streams, meta=meta, scheme=scheme)
    if verify:
        _verify(blob, quant)
    return blob, PackReport(tuple(reports), len(blob))


def _verify(blob: bytes, quant: Mapping[str, QuantTensor]) -> None:
    out, _ = parse_artifact(blob, source="packed artifact")
    for name, qt in quant.items():
        got = out[name]
        same = got.scheme == qt.scheme and got.shape == tuple(qt.shape) and got.dtype == qt.dtype
        same = same and list(got.parts) == list(qt.parts)
        for role, p in qt.parts.items():
            q = got.parts.get(role)
            same = same and q is not None and q.dtype == p.dtype and q.shape == p.shape
            same = same and tensor_bytes(q) == tensor_bytes(p)
        if not same:  # a bug in a codec or in this module, never the user's data
            raise ArtifactError(f"packed artifact: tensor {name} does not read back bit-exactly")


def unpack(
    blob: bytes, *, source: str = "artifact", max_raw_bytes: int = DEFAULT_MAX_RAW_BYTES
) -> dict[str, QuantTensor]:
    """Verify and read an artifact (v1 or v2) from bytes: ``{name: QuantTensor}`` as packed."""
    return parse_artifact(blob, source=source, max_raw_bytes=max_raw_bytes)[0]


def write_packed(
    path: str | os.PathLike[str], tensors: Mapping[str, Tensor | QuantTensor], **kwargs: Any
) -> PackReport:
    """:func:`pack` (same keyword arguments) and write the file atomically; the report's
    ``total_bytes`` is the file's size."""
    blob, report = pack(tensors, **kwargs)
    fileio.write_bytes(path, blob)
    return report


def read_packed(
    path: str | os.PathLike[str], *, max_raw_bytes: int = DEFAULT_MAX_RAW_BYTES
) -> tuple[dict[str, QuantTensor], dict[str, Any]]:
    """Read and verify an artifact file of either version: ``({name: QuantTensor}, header)``."""
    return read_artifact(path, max_raw_bytes=max_raw_bytes)


__all__ = [
    "HOT_GROUPS",
    "Grouping",
    "PackReport",
    "StreamReport",
    "default_grouping",
    "format_report",
    "greedy_row_order",
    "pack",
    "read_packed",
    "single_group",
    "role_grouping",
    "tensor_grouping",
    "unpack",
    "write_packed",
]
