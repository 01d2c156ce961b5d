"""Validation provenance: a fingerprint of every validation document, and proof of train/val overlap.

Why: a CaseOps prep script's default ``--val-docs=10000`` put 80 % of the challenge's validation
documents into the training shards of 15 of 34 CaseOps PRs (openai/parameter-golf issue #2127, PR
#2130 removed for it; CATALOGUE §6). Token ids survive into the shards, so the check works on them.

Documents are BOS-delimited (every document is ``[BOS, t_1 … t_m]``, no EOS; CATALOGUE §1.1); a
leading segment without a BOS (a stream that starts mid-document) counts as a document too. The
validation documents are numbered 0, 1, … in stream order (= the non-empty input documents of the
validation split, in order).

**Exact rule** (rule ``pgolf-prov-v1``): a train document is validation document ``v`` when its
ids after the BOS, as little-endian uint16 bytes, have the same 64-bit BLAKE2b digest
(``person=b"pgolf-val-doc"``) and the same length as ``v``'s. (Only documents whose length some
validation document has, with the same first four ids, are hashed.)

**Near-duplicate rule** (the same rule): shingles are ``NGRAM`` = 16 consecutive ids inside one
document (after its BOS), *sampled by content*: only shingles whose first id is *eligible* are kept
(``(id · ELIGIBLE_MUL) mod 65536 < 65536 / SAMPLE``: a multiplicative hash of the id, ``SAMPLE`` = 16;
BOS never), so a passage has the same sampled shingles wherever it occurs. A shingle's hash: its 16
ids as four little-endian uint64 words ``w0…w3``, ``acc = (((w0·K0 ⊕ w1)·K1 ⊕ w2)·K2 ⊕ w3)·K3``
mod 2^64, hash = the top 32 bits of ``mix(acc)``, ``mix`` the splitmix64 finalizer. The *sketch* of a validation document is the
``SKETCH`` = 8 smallest distinct hashes of its sampled shingles (bottom-k MinHash: a uniform sample
of its shingle set). A train document ``d`` is a near-duplicate of ``v`` when ``v`` has
``k`` ≥ ``MIN_ANCHORS`` = 4 sketch hashes and at least ``ceil(NEAR_FRACTION · k)`` of them
(``NEAR_FRACTION`` = 0.75, so 6 of 8) are among ``d``'s sampled shingle hashes. The fraction of
sketch hashes found estimates, without bias, the *containment* |S(v) ∩ S(d)| / |S(v)| of ``v``'s
shingle set in ``d``'s, so the rule reads "about three quarters or more of ``v``'s 16-token passages
occur in ``d``": ``v`` pasted inside a longer document, or ``v`` with a few edits. Shorter documents
(fewer than 4 sampled shingles, ≈ < 80 tokens) are checked by the exact rule only; one shared
boilerplate sentence does not reach the threshold. A train document is reported once, against the
lowest-numbered validation document it matches (exact before near).

Cost: one uint16 multiply-compare and one BOS scan over the train tokens, one gather of 16-id windows at the
sampled positions (≈ 1/16 of them), a sorted-array membership test, and BLAKE2b over the documents whose
length and first four ids a validation document has (docs/benchmarks.md has the measured overhead).

The fingerprints (:class:`ValFingerprints`) are stored in ``manifest.json`` (``validation_fingerprints``:
the rule, its parameters and base64 little-endian arrays ``lengths`` (uint32), ``exact`` (uint64),
``prefix`` (uint64: the first four ids, which pick the documents worth hashing), ``sketch`` (uint32 × SKETCH per document) and ``anchors`` (uint8: how many sketch slots are used)).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pgolf.errors import DataError

RULE = "pgolf-prov-v1"
NGRAM = 16
SAMPLE = 16
SKETCH = 8
MIN_ANCHORS = 4
NEAR_FRACTION = 0.75
BOS_ID = 1
ELIGIBLE_MUL = 0x9E37
_PERSON = b"pgolf-val-doc"

PathLike = str | os.PathLike[str]


# ---------------------------------------------------------------------------------------- hashing


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer on a uint64 array (wrapping arithmetic)."""
    x = x.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


K = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93], np.uint64)
_CHUNK = 1 << 20


def _eligible_positions(tokens: np.ndarray, bos_id: int) -> np.ndarray:
    """Positions whose id is eligible to start a sampled shingle (module docstring)."""
    x = np.asarray(tokens, dtype=np.uint16) * np.uint16(ELIGIBLE_MUL)  # wraps mod 2^16
    pos = np.flatnonzero(x < np.uint16(65536 // SAMPLE))
    if (bos_id * ELIGIBLE_MUL) % 65536 < 65536 // SAMPLE:
        pos = pos[tokens[pos] != bos_id]
    return pos


def doc_hash(ids: np.ndarray) -> int:
    """The exact fingerprint of one document's ids (BOS excluded): 64-bit BLAKE2b of their uint16 bytes."""
    data = np.ascontiguousarray(ids, dtype="<u2").tobytes()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8, person=_PERSON).digest(), "little")


@dataclass
class _Docs:
    """Documents of a token array: ``starts[i]`` = index of doc i's first id after its BOS (or 0 for
    a leading segment without BOS), ``ends[i]`` its end, ``heads[i]`` the index of its BOS (-1 if none)."""

    starts: np.ndarray
    ends: np.ndarray
    heads: np.ndarray


def _documents(tokens: np.ndarray, bos_id: int) -> _Docs:
    bos = np.flatnonzero(tokens == bos_id)
    n = tokens.size
    if bos.size == 0 or bos[0] != 0:
        heads = np.r_[-1, bos] if n else bos
    else:
        heads = bos
    starts = np.where(heads < 0, 0, heads + 1)
    ends = np.r_[heads[1:], n].astype(np.int64) if heads.size else heads
    return _Docs(starts.astype(np.int64), ends, heads.astype(np.int64))


def _shingles(tokens: np.ndarray, bos_id: int) -> tuple[np.ndarray, np.ndarray]:
    """``(hash32, position)`` of every sampled shingle: ``NGRAM`` ids from an eligible position, no
    BOS among them (so inside one document)."""
    n = tokens.size - NGRAM + 1
    if n <= 0:
        return np.zeros(0, np.uint32), np.zeros(0, np.int64)
    pos = _eligible_positions(tokens[:n], bos_id)
    windows = np.lib.stride_tricks.sliding_window_view(np.asarray(tokens, dtype="<u2"), NGRAM)
    hs, ps = [], []
    for lo in range(0, pos.size, _CHUNK):  # 16 ids = 32 bytes = four uint64 words per shingle
        p = pos[lo:lo + _CHUNK]
        rows = windows[p]
        inside = ~(rows == bos_id).any(axis=1)
        w = rows[inside].view("<u8")
        acc = w[:, 0] * K[0]
        for j in range(1, NGRAM // 4):
            acc ^= w[:, j]
            acc *= K[j]
        hs.append((_mix64(acc) >> np.uint64(32)).astype(np.uint32))
        ps.append(p[inside])
    if not hs:
        return np.zeros(0, np.uint32), np.zeros(0, np.int64)
    return np.concatenate(hs), np.concatenate(ps)


def _prefixes(tokens: np.ndarray, docs: _Docs) -> np.ndarray:
    """Each document's first four ids (BOS excluded; 0 past its end) as one little-endian uint64."""
    n = tokens.size
    word = np.zeros(docs.starts.size, np.uint64)
    for j in range(4):
        idx = docs.starts + j
        ids = tokens[np.minimum(idx, max(n - 1, 0))].astype(np.uint64) if n else np.zeros(idx.size, np.uint64)
        word |= np.where(idx < docs.ends, ids, np.uint64(0)) << np.uint64(16 * j)
    return word


def _prefix_keys(prefix: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """A 64-bit key of (length, first four ids): the cheap prefilter of the exact rule."""
    return _mix64(prefix ^ (lengths.astype(np.uint64) * K[0]))


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    a = np.sort(a)
    return a[np.r_[True, a[1:] != a[:-1]]] if a.size else a


# ----------------------------------------------------------------------------------- fingerprints


@dataclass
class ValFingerprints:
    """Fingerprints of the validation documents (module docstring): per document its length in
    ids (BOS excluded), exact 64-bit hash, first four ids (the exact rule's cheap prefilter), and
    bottom-``SKETCH`` shingle hashes (``anchors[i]`` of them used)."""

    lengths: np.ndarray  # uint32 [N]
    exact: np.ndarray  # uint64 [N]
    prefix: np.ndarray  # uint64 [N]: first four ids
    sketch: np.ndarray  # uint32 [N, SKETCH]
    anchors: np.ndarray  # uint8 [N]
    bos_id: int = BOS_ID

    def __post_init__(self) -> None:
        self._exact_index: dict[tuple[int, int], int] | None = None
        self._anchor_table: tuple[np.ndarray, np.ndarray] | None = None
        self._keys: np.ndarray | None = None
        self._filter: tuple[np.ndarray, int] | None = None

    @property
    def documents(self) -> int:
        return int(self.lengths.size)

    @classmethod
    def from_tokens(cls, tokens: np.ndarray, bos_id: int = BOS_ID) -> ValFingerprints:
        """Fingerprint every BOS-delimited document of a validation token stream."""
        tokens = np.asarray(tokens)
        docs = _documents(tokens, bos_id)
        n = docs.starts.size
        lengths = (docs.ends - docs.starts).astype(np.uint32)
        exact = np.fromiter((doc_hash(tokens[s:e]) for s, e in zip(docs.starts.tolist(), docs.ends.tolist(),
                                                                     strict=True)), dtype=np.uint64, count=n)
        h, pos = _shingles(tokens, bos_id)
        doc = np.searchsorted(docs.starts, pos, side="right") - 1
        sketch = np.zeros((n, SKETCH), np.uint32)
        anchors = np.zeros(n, np.uint8)
        if h.size:
            key = _sorted_unique((doc.astype(np.uint64) << np.uint64(32)) | h.astype(np.uint64))  # distinct per doc
            kdoc = (key >> np.uint64(32)).astype(np.int64)
            first = np.searchsorted(kdoc, kdoc, side="left")
            rank = np.arange(key.size) - first
            keep = rank < SKETCH
            sketch[kdoc[keep], rank[keep]] = (key[keep] & np.uint64(0xFFFFFFFF)).astype(np.uint32)
            np.add.at(anchors, kdoc[keep], 1)
        return cls(lengths, exact, _prefixes(tokens, docs), sketch, anchors, bos_id)

    @classmethod
    def from_documents(cls, docs: Sequence[np.ndarray], bos_id: int = BOS_ID) -> ValFingerprints:
        """Fingerprints of documents given one array each (each ``[BOS, ids…]``)."""
        return cls.from_tokens(np.concatenate(docs) if len(docs) else np.zeros(0, np.uint16), bos_id)

    # --- manifest form
    def to_manifest(self) -> dict[str, Any]:
        def b64(a: np.ndarray, dt: str) -> str:
            return base64.b64encode(np.ascontiguousarray(a, dtype=dt).tobytes()).decode("ascii")

        return {
            "rule": RULE, "ngram": NGRAM, "sample": SAMPLE, "sketch_size": SKETCH, "min_anchors": MIN_ANCHORS,
            "near_fraction": NEAR_FRACTION, "bos_id": self.bos_id, "documents": self.documents,
            "lengths": b64(self.lengths, "<u4"), "exact": b64(self.exact, "<u8"), "prefix": b64(self.prefix, "<u8"),
            "sketch": b64(self.sketch, "<u4"), "anchors": b64(self.anchors, "u1"),
        }

    @classmethod
    def from_manifest(cls, entry: Any, where: str) -> ValFingerprints:
        """Parse ``manifest["validation_fingerprints"]``; DataError naming ``where`` if malformed."""
        if not isinstance(entry, dict):
            raise DataError(f"{where}: validation_fingerprints is not an object")
        if entry.get("rule") != RULE:
            raise DataError(f"{where}: validation fingerprints of rule {entry.get('rule')!r}, this pgolf reads {RULE!r}")
        n = entry.get("documents")
        if not isinstance(n, int) or n < 0:
            raise DataError(f"{where}: validation_fingerprints.documents is not a count")

        def arr(key: str, dt: str, count: int) -> np.ndarray:
            raw = entry.get(key)
            try:
                data = base64.b64decode(raw, validate=True) if isinstance(raw, str) else None
            except ValueError:
                data = None
            a = np.frombuffer(data, dtype=dt) if data is not None and len(data) % np.dtype(dt).itemsize == 0 else None
            if a is None or a.size != count:
                raise DataError(f"{where}: validation_fingerprints.{key} is not {count} base64 {dt} values")
            return a.astype(np.dtype(dt).newbyteorder("="))

        fp = cls(arr("lengths", "<u4", n), arr("exact", "<u8", n), arr("prefix", "<u8", n), arr("sketch", "<u4", n * SKETCH).reshape(n, SKETCH),
                 arr("anchors", "u1", n), int(entry.get("bos_id", BOS_ID)))
        if fp.anchors.size and int(fp.anchors.max()) > SKETCH:
            raise DataError(f"{where}: validation_fingerprints.anchors exceed the sketch size {SKETCH}")
        return fp

    def mismatch(self, other: ValFingerprints) -> int | None:
        """Index of the first document whose fingerprint differs from ``other``'s (or the shorter count); None if equal."""
        n = min(self.documents, other.documents)
        diff = np.flatnonzero((self.exact[:n] != other.exact[:n]) | (self.lengths[:n] != other.lengths[:n]))
        if diff.size:
            return int(diff[0])
        return None if self.documents == other.documents else n

    # --- lookup tables
    def exact_index(self) -> dict[tuple[int, int], int]:
        if self._exact_index is None:
            idx: dict[tuple[int, int], int] = {}
            for i, (n, h) in enumerate(zip(self.lengths.tolist(), self.exact.tolist(), strict=True)):
                idx.setdefault((n, h), i)
            self._exact_index = idx
        return self._exact_index

    def prefix_keys(self) -> np.ndarray:
        """Sorted distinct :func:`_prefix_keys` of the validation documents."""
        if self._keys is None:
            self._keys = _sorted_unique(_prefix_keys(self.prefix, self.lengths))
        return self._keys

    def anchor_filter(self) -> tuple[np.ndarray, int]:
        """A boolean table over the top bits of the sketch hashes (≈ 1/16 false positives): ``(table, shift)``."""
        if self._filter is None:
            h = self.anchor_table()[0]
            bits = min(28, max(16, int(h.size).bit_length() + 4))
            table = np.zeros(1 << bits, bool)
            table[h >> np.uint32(32 - bits)] = True
            self._filter = (table, 32 - bits)
        return self._filter

    def anchor_table(self) -> tuple[np.ndarray, np.ndarray]:
        """``(hash, val doc)`` of every sketch slot of documents with ≥ MIN_ANCHORS anchors, sorted by hash."""
        if self._anchor_table is None:
            used = np.arange(SKETCH)[None, :] < self.anchors[:, None]
            used &= (self.anchors >= MIN_ANCHORS)[:, None]
            docs = np.broadcast_to(np.arange(self.documents)[:, None], used.shape)[used]
            hashes = self.sketch[used]
            order = np.argsort(hashes, kind="stable")
            self._anchor_table = (hashes[order], docs[order].astype(np.int64))
        return self._anchor_table


# ------------------------------------------------------------------------------------------ overlap


@dataclass(frozen=True)
class Overlap:
    """Evidence that a train document is (a near-duplicate of) a validation document."""

    shard: str
    """The train shard holding the document's start (its BOS, or first id of a leading segment)."""
    offset: int
    """Token offset of that start in ``shard``."""
    length: int
    """Tokens of the train document, BOS included (it may continue into the next shard)."""
    val_doc: int
    """Index of the validation document (0-based, stream order)."""
    kind: Literal["exact", "near"]
    anchors_hit: int
    """Near rule: how many of the validation document's sketch hashes the train document holds."""
    anchors: int
    """The validation document's sketch size (0 when it has too few shingles for the near rule)."""

    def describe(self) -> str:
        what = ("an exact copy of" if self.kind == "exact" else
                f"a near-duplicate ({self.anchors_hit}/{self.anchors} sketch shingles) of")
        return f"{self.shard}: the train document at token {self.offset} ({self.length} tokens) is {what} validation document {self.val_doc}"

    def to_dict(self) -> dict[str, Any]:
        return {"shard": self.shard, "offset": self.offset, "length": self.length, "val_doc": self.val_doc,
                "kind": self.kind, "anchors_hit": self.anchors_hit, "anchors": self.anchors}


def _member(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``x[i] in table`` for a sorted ``table`` (no re-sorting per call, unlike ``np.isin``)."""
    if table.size == 0:
        return np.zeros(x.shape, bool)
    i = np.minimum(np.searchsorted(table, x), table.size - 1)
    return table[i] == x


def scan_tokens(tokens: np.ndarray, fp: ValFingerprints) -> list[tuple[int, int, int, str, int, int]]:
    """Overlaps in one token array: ``(doc start index, doc length incl. BOS, val doc, kind, hit, k)``
    per overlapping train document (exact wins over near; one val document per train document, the
    lowest index). Positions refer to ``tokens``."""
    tokens = np.asarray(tokens)
    docs = _documents(tokens, fp.bos_id)
    if docs.starts.size == 0 or fp.documents == 0:
        return []
    found: dict[int, tuple[int, str, int, int]] = {}
    # exact: hash only documents whose length and first four ids a validation document has
    index = fp.exact_index()
    keys = _prefix_keys(_prefixes(tokens, docs), docs.ends - docs.starts)
    cand = np.flatnonzero(_member(keys, fp.prefix_keys()))
    for i in cand.tolist():
        s, e = int(docs.starts[i]), int(docs.ends[i])
        v = index.get((e - s, doc_hash(tokens[s:e])))
        if v is not None:
            found[i] = (v, "exact", 0, 0)
    # near: sampled shingles against the sketch table
    table_h, table_doc = fp.anchor_table()
    if table_h.size:
        h, pos = _shingles(tokens, fp.bos_id)
        filt, shift = fp.anchor_filter()
        maybe = np.flatnonzero(filt[h >> np.uint32(shift)])
        h, pos = h[maybe], pos[maybe]
        hit = _member(h, table_h)
        if hit.any():
            doc = np.searchsorted(docs.starts, pos[hit], side="right") - 1
            pairs = _sorted_unique((doc.astype(np.uint64) << np.uint64(32)) | h[hit].astype(np.uint64))
            pdoc = (pairs >> np.uint64(32)).astype(np.int64)
            ph = (pairs & np.uint64(0xFFFFFFFF)).astype(np.uint32)
            lo = np.searchsorted(table_h, ph, side="left")
            hi = np.searchsorted(table_h, ph, side="right")
            reps = hi - lo
            tdoc = np.repeat(pdoc, reps)
            idx = np.repeat(lo - np.cumsum(np.r_[0, reps[:-1]]), reps) + np.arange(int(reps.sum()))
            vdoc = table_doc[idx]
            key = np.sort((tdoc.astype(np.uint64) << np.uint64(32)) | vdoc.astype(np.uint64))
            first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
            counts = np.diff(np.r_[first, key.size])
            key = key[first]
            kt = (key >> np.uint64(32)).astype(np.int64)
            kv = (key & np.uint64(0xFFFFFFFF)).astype(np.int64)
            k = fp.anchors[kv].astype(np.int64)
            need = np.ceil(NEAR_FRACTION * k - 1e-9).astype(np.int64)
            ok = counts >= need
            for t, v, c, kk in zip(kt[ok].tolist(), kv[ok].tolist(), counts[ok].tolist(), k[ok].tolist(), strict=True):
                if t not in found:
                    found[t] = (v, "near", c, kk)
    out = []
    for i in sorted(found):
        v, kind, c, kk = found[i]
        head = int(docs.heads[i])
        start = head if head >= 0 else 0
        out.append((start, int(docs.ends[i]) - start, v, kind, c, kk))
    return out


_Carry = tuple[int, int, np.ndarray, int]
"""An unfinished document: (shard of its start, offset there, its tokens so far, shard of its last token)."""


def overlapping_documents(docs: Sequence[np.ndarray], fp: ValFingerprints) -> dict[int, str]:
    """``{i: "exact" | "near"}`` for the documents ``docs[i]`` (each ``[BOS, ids…]``) that overlap validation."""
    if not len(docs):
        return {}
    starts = np.cumsum([0] + [d.size for d in docs[:-1]])
    out: dict[int, str] = {}
    for start, _length, _v, kind, _hit, _k in scan_tokens(np.concatenate(docs), fp):
        out[int(np.searchsorted(starts, start, side="right")) - 1] = kind
    return out


FOREIGN_TOLERANCE = 0.01
"""Share of the validation documents a dataset *without* pgolf fingerprints may have in its train
shards before training refuses it. A web crawl's own near-duplicates stay far below (the official
export's split is fixed by the challenge); a split mistake does not: the CaseOps ``--val-docs=10000``
default put 80 % of the validation documents there (issue #2127)."""


class OverlapChecker:
    """Checks train shards as the loader reads them and refuses overlap with validation.

    ``tolerance`` = 0 (a dataset whose manifest holds pgolf fingerprints: its build left every copy
    out, so any overlap means foreign train shards): the first overlapping document stops training.
    ``tolerance`` > 0 (no fingerprints recorded, e.g. another tool's directory): training stops once
    more than that share of the validation documents has been found; the overlaps found so far are in
    :attr:`found` (``pgolf review`` reports all of them with :func:`find_overlap`).

    Shards are cut at a fixed token count, so a document can straddle shards: the unfinished last
    document of shard ``i`` is carried into the check of shard ``i + 1`` (when that is the next one
    checked; otherwise it is checked as it is) and checked whole there; the last shard's last
    document is checked with it. A shard is checked once (the loader wraps around without checking again)."""

    def __init__(self, fp: ValFingerprints, files: Sequence[PathLike], tolerance: float = 0.0) -> None:
        self.fp = fp
        self.files = [Path(f) for f in files]
        self.tolerance = tolerance
        self.checked: set[int] = set()
        self.found: list[Overlap] = []
        self._carry: _Carry | None = None

    def check(self, index: int, tokens: np.ndarray) -> None:
        """Check shard ``index`` (once); DataError when the overlap found so far is more than allowed."""
        if index in self.checked:
            return
        self._scan(index, tokens)
        self._verdict({o.val_doc for o in self.found})

    def _scan(self, index: int, tokens: np.ndarray) -> None:
        overlaps, self._carry = _scan_shard(self.fp, self.files, index, tokens, self._carry,
                                            last=index == len(self.files) - 1)
        self.checked.add(index)
        self.found += overlaps

    def _verdict(self, val_docs: set[int], first: Overlap | None = None, total: int | None = None) -> None:
        docs = len(val_docs)
        first = first or (self.found[0] if self.found else None)
        total = len(self.found) if total is None else total
        if docs and docs > self.tolerance * self.fp.documents:
            more = f" (and {total - 1} more)" if total > 1 else ""
            share = "" if not self.tolerance else (
                f"; {docs} of the {self.fp.documents} validation documents ({docs / self.fp.documents:.1%}) are in "
                f"the train shards, more than the {self.tolerance:.0%} allowed without pgolf fingerprints")
            assert first is not None
            raise DataError(f"{first.describe()}{more}{share}: training refuses validation data in the train shards "
                            "(rebuild the dataset with `pgolf data build`, which keeps them apart)")

    def prescan(self, rank: int = 0, world_size: int = 1,
                reduce: Callable[[np.ndarray, str], np.ndarray] | None = None) -> tuple[int, int]:
        """Check every train shard now, before training (``data.overlap_prescan``): rank ``r`` of ``W``
        checks the contiguous block ``[n·r/W, n·(r+1)/W)`` of the ``n`` shards (and the heads of the next
        ones, up to the first BOS, to finish the document straddling the block's end); then ``reduce``
        (an all-reduce over the ranks: ``reduce(array, "max" | "min" | "sum")``; None in one process)
        combines which validation documents were found, how many overlaps and the first one in stream
        order, so every rank reaches the same verdict with the same evidence — DataError on all of them,
        never one rank raising while the others wait. Afterwards the loader checks nothing (:attr:`checked`
        holds every shard). Returns (shards, tokens) this rank checked."""
        n = len(self.files)
        a, b = n * rank // world_size, n * (rank + 1) // world_size
        tokens = 0
        self._carry = None
        for i in range(a, b):
            t = _read(self.files[i])
            tokens += t.size
            self._scan(i, t)
        j = b
        while self._carry is not None and j < n:  # the block's last document continues into shard j (, j+1 …)
            nxt = _read(self.files[j])
            bos = np.flatnonzero(nxt == self.fp.bos_id)
            head = nxt[: int(bos[0])] if bos.size else nxt
            overlaps, self._carry = _scan_shard(self.fp, self.files, j, head, self._carry,
                                                last=bool(bos.size) or j == n - 1)
            self.found += overlaps
            j += 1
        self._carry = None
        self.checked = set(range(n))
        hit = np.zeros(self.fp.documents, dtype=np.float64)
        for o in self.found:
            hit[o.val_doc] = 1
        if reduce is None:
            self._verdict({int(i) for i in np.flatnonzero(hit)})
            return b - a, tokens
        index = {str(f): k for k, f in enumerate(self.files)}
        hit = reduce(hit, "max")
        total = int(reduce(np.array([float(len(self.found))]), "sum")[0])
        mine = min(self.found, key=lambda o: (index[o.shard], o.offset)) if self.found else None
        key = float(index[mine.shard] * 2**40 + mine.offset) if mine else math.inf
        first_key = float(reduce(np.array([key]), "min")[0])
        vec = np.zeros(7)
        if mine is not None and key == first_key:  # the rank holding the first overlap shares its evidence
            vec[:] = [index[mine.shard], mine.offset, mine.length, mine.val_doc, mine.kind == "near",
                      mine.anchors_hit, mine.anchors]
        vec = reduce(vec, "sum")
        first = None
        if math.isfinite(first_key):
            first = Overlap(str(self.files[int(vec[0])]), int(vec[1]), int(vec[2]), int(vec[3]),
                            "near" if vec[4] else "exact", int(vec[5]), int(vec[6]))
        self._verdict({int(i) for i in np.flatnonzero(hit)}, first, total)
        return b - a, tokens


def _scan_shard(fp: ValFingerprints, files: Sequence[Path], index: int, tokens: np.ndarray,
                carry: _Carry | None, last: bool) -> tuple[list[Overlap], _Carry | None]:
    """Overlaps found with shard ``index`` (and the document carried from shard ``index - 1``), and the new carry."""
    tokens = np.asarray(tokens)
    found: list[Overlap] = []
    prefix, origin = tokens[:0], (index, 0)
    if carry is not None:
        o_idx, o_off, c_tok, tail = carry
        if tail == index - 1:
            prefix, origin = c_tok, (o_idx, o_off)
        else:  # not continued by this shard: check the carried document as it is
            found += _overlaps(fp, files, c_tok, c_tok.size, (o_idx, o_off), index)
    bos = np.flatnonzero(tokens == fp.bos_id)
    if not last and bos.size == 0:  # the whole shard continues one document
        return found, (origin[0], origin[1], np.concatenate([prefix, tokens]), index)
    cut = tokens.size if last else int(bos[-1])
    body = np.concatenate([prefix, tokens[:cut]]) if prefix.size else tokens[:cut]
    found += _overlaps(fp, files, body, prefix.size, origin, index)
    return found, ((index, cut, tokens[cut:].copy(), index) if cut < tokens.size else None)


def _overlaps(fp: ValFingerprints, files: Sequence[Path], tokens: np.ndarray, n_prefix: int,
              origin: tuple[int, int], index: int) -> list[Overlap]:
    """Overlaps in ``tokens``, whose first ``n_prefix`` tokens are a document that started in shard
    ``origin = (shard, offset)`` and the rest shard ``index`` from its offset 0."""
    out = []
    for start, length, v, kind, hit, k in scan_tokens(tokens, fp):
        shard, off = (origin[0], origin[1] + start) if start < n_prefix else (index, start - n_prefix)
        out.append(Overlap(str(files[shard]), off, length, v, kind, hit, k))  # type: ignore[arg-type]
    return out


# ------------------------------------------------------------------------------------- find_overlap


def _read(path: Path) -> np.ndarray:
    from pgolf.data.shards import read_shard

    return read_shard(path)


def _train_files(data: PathLike | Iterable[PathLike]) -> list[Path]:
    from pgolf.data.shards import list_shards

    if isinstance(data, (str, os.PathLike)):
        p = Path(data)
        if p.is_dir():
            files = list_shards(p, "train")
            if not files:
                raise DataError(f"{p}: no train shards (fineweb_train_*.bin)")
            return files
        if not p.exists():
            raise DataError(f"{p}: no such train shard or data directory")
        return [p]
    files = [Path(f) for f in data]
    if not files:
        raise DataError("no train shards given")
    return files


def load_fingerprints(source: Any) -> ValFingerprints:
    """Validation fingerprints from ``source``: a :class:`ValFingerprints`; a manifest dict, or the path
    of a ``manifest.json``; a data directory (fingerprints computed from its val shards, the data that is
    actually scored; its manifest's only if it has no val shards); a list of val shard paths; or a
    token array."""
    from pgolf.data.shards import list_shards, read_shard

    if isinstance(source, ValFingerprints):
        return source
    if isinstance(source, np.ndarray):
        return ValFingerprints.from_tokens(source)
    if isinstance(source, dict):
        return _from_manifest_dict(source, "manifest")
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if p.is_dir():
            val = list_shards(p, "val")
            if val:
                return ValFingerprints.from_tokens(np.concatenate([read_shard(f) for f in val]), _bos_of(p))
            if (p / "manifest.json").exists():
                return load_fingerprints(p / "manifest.json")
            raise DataError(f"{p}: no validation shards (fineweb_val_*.bin) and no manifest.json")
        if p.name.endswith(".json"):
            try:
                m = json.loads(p.read_text())
            except FileNotFoundError:
                raise DataError(f"{p}: no such manifest") from None
            except (OSError, ValueError) as e:
                raise DataError(f"{p}: unreadable manifest ({e})") from None
            if not isinstance(m, dict):
                raise DataError(f"{p}: manifest is not a JSON object")
            return _from_manifest_dict(m, str(p))
        return ValFingerprints.from_tokens(read_shard(p))
    files = [Path(f) for f in source]
    if not files:
        raise DataError("no validation shards given")
    return ValFingerprints.from_tokens(np.concatenate([read_shard(f) for f in files]), _bos_of(files[0].parent))


def _bos_of(data_dir: Path) -> int:
    try:
        m = json.loads((data_dir / "manifest.json").read_text())
        return int(m.get("bos_id", BOS_ID)) if isinstance(m, dict) else BOS_ID
    except (OSError, ValueError, TypeError):
        return BOS_ID


def _from_manifest_dict(m: dict[str, Any], where: str) -> ValFingerprints:
    entry = m.get("validation_fingerprints") if "validation_fingerprints" in m or "format" in m else m
    if entry is None:
        raise DataError(f"{where}: has no validation_fingerprints (built before pgolf recorded them; "
                        "pass the data directory to fingerprint its val shards)")
    return ValFingerprints.from_manifest(entry, where)


def find_overlap(data_dir_or_shards: PathLike | Iterable[PathLike], manifest_or_val: Any) -> list[Overlap]:
    """Every train document that is an exact copy or a near-duplicate of a validation document.

    ``data_dir_or_shards``: a data directory (its ``fineweb_train_*.bin``), one train shard, or shard
    paths in stream order. ``manifest_or_val``: anything :func:`load_fingerprints` takes. Shards are
    read one at a time; a document straddling two shards is checked whole. Returns the overlaps in
    stream order (empty when none is found; the rules are in the module docstring)."""
    fp = load_fingerprints(manifest_or_val)
    files = _train_files(data_dir_or_shards)
    found: list[Overlap] = []
    carry = None
    for i, f in enumerate(files):
        overlaps, carry = _scan_shard(fp, files, i, _read(f), carry, last=i == len(files) - 1)
        found += overlaps
    return found


def near_threshold(k: int) -> int:
    """Sketch hashes a train document must hold to be a near-duplicate of a document with ``k`` of them."""
    return math.ceil(NEAR_FRACTION * k - 1e-9) if k >= MIN_ANCHORS else 0
