"""Train/validation overlap, shard by shard: the loader's check of every train shard it reads
(:class:`OverlapChecker`, also run over all shards before training: ``data.overlap_prescan``) and the
review's :func:`find_overlap`, both by the rule of :mod:`pgolf.data.provenance` (exact BLAKE2b copies and
near-duplicates by bottom-k sketches of sampled 16-token shingles; its docstring has the rule and its source,
openai/parameter-golf issue #2127). Shards are cut at a fixed token count, so the document a shard ends
inside is carried into the next shard's check and checked whole.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pgolf.data.provenance import BOS_ID, Overlap, PathLike, ValFingerprints, scan_tokens
from pgolf.errors import DataError

_Carry = tuple[int, int, np.ndarray, int]
"""An unfinished document: (shard of its start, offset there, its tokens so far, shard of its last token)."""


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
