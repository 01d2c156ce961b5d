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

This module is the rule (fingerprints, and the scan of one token stream: :func:`scan_tokens`); reading train
shards with it — the loader's per-shard check and the review's :func:`~pgolf.data.overlap.find_overlap` — is
:mod:`pgolf.data.overlap`.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
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


def overlapping_documents(docs: Sequence[np.ndarray], fp: ValFingerprints) -> dict[int, str]:
    """``{i: "exact" | "near"}`` for the documents ``docs[i]`` (each ``[BOS, ids…]``) that overlap validation."""
    if not len(docs):
        return {}
    starts = np.cumsum([0] + [d.size for d in docs[:-1]])
    out: dict[int, str] = {}
    for start, _length, _v, kind, _hit, _k in scan_tokens(np.concatenate(docs), fp):
        out[int(np.searchsorted(starts, start, side="right")) - 1] = kind
    return out


def near_threshold(k: int) -> int:
    """Sketch hashes a train document must hold to be a near-duplicate of a document with ``k`` of them."""
    return math.ceil(NEAR_FRACTION * k - 1e-9) if k >= MIN_ANCHORS else 0
