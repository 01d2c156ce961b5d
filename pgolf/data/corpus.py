"""Build a dataset (``pgolf data build``): documents → tokenizer → shards + byte sidecars + manifest.

Mirrors the challenge's exporter ``data/download_hf_docs_and_tokenize.py`` of openai/parameter-golf
(CATALOGUE §1.1): the first ``val_docs`` documents are the validation split, the rest train; every
document is written as BOS (id 1) followed by its tokens, no EOS; shards hold ``shard_tokens``
tokens each (10^8 in the challenge) except the last, so documents may straddle shards. The
tokenizer is trained on the train documents only, with the official settings (``tokenizer.py``).

Inputs (:func:`iter_documents`):
  * ``.jsonl``: one JSON object per line, the document is its ``"text"`` (other fields ignored;
    blank lines skipped; a line without a string ``"text"`` is a DataError naming ``file:line``).
  * ``.txt`` / ``.md``: the whole file is one document, unless it contains form feeds (``\\f``),
    which separate documents. (Blank lines are not separators: they are paragraph breaks.)
  * either may be gzip-compressed (``.gz``); a directory means its such files, sorted by name.
  Documents are taken verbatim; those that encode to no token (empty or whitespace-only) are
  skipped and counted in the manifest.

Byte sidecar maths (val split, ``fineweb_val_bytes_XXXXXX.bin``; CaseOps records [04-18], PR
#1729). For a document of ``n`` UTF-8 bytes with tokens ``1..m`` whose spans in the original
bytes are ``[b_i, e_i)`` (SentencePiece offsets; normalization — NFKC, whitespace folding,
removed control characters — makes spans empty, merged or leave gaps):

  1. cut points ``c_i = min(n, max_{j≤i} e_j)``, ``c_0 = 0``, ``c_m = n``; token ``i`` gets
     ``c_i − c_{i−1}`` bytes. Bytes in a gap go to the token after it, bytes after the last
     span to the last token, so ``Σ_i counts_i = n`` exactly.
  2. tokens sharing a begin offset (byte-fallback pieces of one character, the pieces of one
     NFKC expansion such as "ﬁ" → "f" "i") share their group's bytes evenly, the earlier ones
     taking the remainder; the sum is unchanged.

  BOS gets 0. The table-based BPB counts normalized piece bytes instead; the sidecar gives the
  tokenizer-agnostic figure (RULES.md "Scoring").

The byte vocabulary (``--tokenizer byte260``; the challenge's ``fineweb10B_byte260`` export and the
non-record ``2026-03-29_HNet_ByteVsSubword_Study``): a document is BOS followed by one id per UTF-8 byte of
its text (byte b → b + 4), no tokenizer is trained and no ``tokenizer.model`` is written; each token's
sidecar count is 1, so the sidecar and the byte tables (:func:`pgolf.data.bytetables.byte260_tables`)
both count the raw bytes.

Layout (``pgolf.data.shards``): ``fineweb_{train,val}_XXXXXX.bin``; the val byte sidecars are
``pgolf_val_bytes_XXXXXX.bin`` (magic 20240521; invisible to the official globs) for a plain dataset,
and for a CaseOps dataset the CaseOps records' own ``fineweb_val_bytes_XXXXXX.bin`` (magic 20240520)
plus the guard file ``shards.CASEOPS_GUARD`` that stops the root ``train_gpt.py``.

Provenance (``pgolf.data.provenance``): the manifest records a fingerprint of every validation
document (``validation_fingerprints``), and train documents that are exact copies or near-duplicates
of a validation document (the documented rules there) are left out of the train shards and counted
(``splits.train.validation_overlaps_dropped``), so a built dataset passes the check training makes.

Every file is written atomically (``pgolf.fileio``) and ``manifest.json`` last, so an interrupted
build leaves no half-written file and no manifest. Output is deterministic: building twice gives
byte-identical files, with any number of workers (batches are encoded in a process pool and
consumed in submission order).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import multiprocessing
import os
import sys
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import islice
from pathlib import Path
from typing import IO, Any

import numpy as np
import sentencepiece as spm

from pgolf import __version__
from pgolf.data import caseops as caseops_mod
from pgolf.data.provenance import ValFingerprints, overlapping_documents
from pgolf.data.shards import (
    CASEOPS_GUARD,
    SHARD_TOKENS,
    shard_name,
    sidecar_name,
    sidecar_style,
    write_byte_sidecar,
    write_caseops_guard,
    write_shard,
)
from pgolf.data.tokenizer import (
    BOS_ID,
    BYTE260,
    BYTE260_SPEC,
    BYTE260_VOCAB,
    ByteTokenizer,
    byte260_sha256,
    check_vocab,
    encode_with_offsets,
    has_user_symbols,
    is_byte260,
    load_tokenizer,
    train_tokenizer,
)
from pgolf.errors import DataError
from pgolf.fileio import write_bytes, write_json

MANIFEST_FORMAT = "pgolf-dataset-v1"
TOKENIZER_FILE = "tokenizer.model"
MAX_VAL_DOCS = 50_000
"""The challenge's validation split is its first 50,000 documents (``NUM_VAL_DOCS``)."""

_JSONL = (".jsonl",)
_TEXT = (".txt", ".md", ".text")
_BATCH_DOCS = 256

PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------------------- reading


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith(_JSONL):
        return "jsonl"
    if name.endswith(_TEXT):
        return "text"
    return None


def input_files(inputs: Iterable[PathLike]) -> list[Path]:
    """Expand ``inputs`` (files, or directories of ``.jsonl``/``.txt``/``.md`` files) in order."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            inner = sorted(q for q in p.iterdir() if q.is_file() and _kind(q))
            if not inner:
                raise DataError(f"{p}: directory has no .jsonl, .txt or .md files")
            files.extend(inner)
        elif p.is_file():
            if _kind(p) is None:
                raise DataError(f"{p}: unknown input type (expected .jsonl, .txt or .md, optionally .gz)")
            files.append(p)
        else:
            raise DataError(f"{p}: no such input file or directory")
    if not files:
        raise DataError("no input files given")
    return files


def _open(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _iter_jsonl(path: Path) -> Iterator[str]:
    with _open(path) as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except UnicodeDecodeError:
                raise DataError(f"{path}:{lineno}: not valid UTF-8") from None
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
            text = obj.get("text") if isinstance(obj, dict) else None
            if text is None:
                raise DataError(f"{path}:{lineno}: no \"text\" field")
            if not isinstance(text, str):
                raise DataError(f"{path}:{lineno}: \"text\" is not a string")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise DataError(f"{path}:{lineno}: \"text\" is not valid Unicode (lone surrogate)") from None
            yield text


def _iter_text(path: Path) -> Iterator[str]:
    with _open(path) as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 (byte {e.start})") from None
    yield from text.split("\f")


def iter_documents(paths: Iterable[PathLike]) -> Iterator[str]:
    """Documents of the input files, in order (see the module docstring for the formats)."""
    for path in input_files(paths):
        if _kind(path) == "jsonl":
            yield from _iter_jsonl(path)
        else:
            yield from _iter_text(path)


def default_val_docs(n_docs: int) -> int:
    """The challenge's 50,000, but at most a tenth of the corpus (and at least 1 document)."""
    return max(1, min(MAX_VAL_DOCS, n_docs // 10))


# -------------------------------------------------------------------------------------- encoding


def token_byte_counts(n_bytes: int, begins: Iterable[int], ends: Iterable[int],
                      weights: np.ndarray | None = None) -> np.ndarray:
    """Bytes of the original text charged to each token (int64; sums to ``n_bytes`` — or to
    ``weights.sum()``; module docstring). ``weights`` [n_bytes]: original bytes each byte of the encoded
    text stands for (a text transform such as CaseOps, :func:`pgolf.data.caseops.encode_with_weights`)."""
    b = np.asarray(list(begins) if not isinstance(begins, np.ndarray) else begins, dtype=np.int64)
    e = np.asarray(list(ends) if not isinstance(ends, np.ndarray) else ends, dtype=np.int64)
    m = e.size
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    cuts = np.minimum(np.maximum.accumulate(np.maximum(e, 0)), n_bytes)
    cuts[-1] = n_bytes
    if weights is not None:
        cum = np.concatenate(([0], np.cumsum(weights, dtype=np.int64)))
        counts = np.diff(cum[cuts], prepend=0)
    else:
        counts = np.diff(cuts, prepend=0)
    # Groups of consecutive tokens with the same begin share their bytes evenly.
    starts = np.flatnonzero(np.r_[True, b[1:] != b[:-1]])
    if starts.size < m:
        gid = np.cumsum(np.r_[True, b[1:] != b[:-1]]) - 1
        totals = np.add.reduceat(counts, starts)
        sizes = np.diff(np.r_[starts, m])
        rank = np.arange(m) - starts[gid]
        counts = totals[gid] // sizes[gid] + (rank < totals[gid] % sizes[gid])
    return counts


def encode_document(
    sp: spm.SentencePieceProcessor | ByteTokenizer, text: str, with_bytes: bool, transform: str = "identity"
) -> tuple[np.ndarray, np.ndarray | None] | None:
    """``(ids, counts)`` for one document: ids = [BOS] + tokens as uint16, counts = [0] + the
    token byte counts as uint16 (``with_bytes``; else None), always in bytes of the *original* text.
    ``transform``: ``identity`` or ``caseops_v1`` (:mod:`pgolf.data.caseops`). None if no token.
    ``sp`` may be the byte260 vocabulary (:class:`~pgolf.data.tokenizer.ByteTokenizer`): one token per byte,
    each counting 1 byte."""
    if isinstance(sp, ByteTokenizer):
        if transform != "identity":
            raise ValueError("the byte260 vocabulary takes the text as it is (no text transform)")
        byte_ids = sp.encode(text)
        if not byte_ids.size:
            return None
        ids = np.concatenate(([BOS_ID], byte_ids)).astype(np.uint16)
        return ids, (np.r_[0, np.ones(byte_ids.size)].astype(np.uint16) if with_bytes else None)
    weights = None
    if transform == caseops_mod.NAME:
        text, weights = caseops_mod.encode_with_weights(text)
    elif transform != "identity":
        raise ValueError(f"unknown text transform {transform!r}")
    if not with_bytes:
        ids = sp.encode(text)
        if not ids:
            return None
        return np.array([BOS_ID, *ids], dtype=np.uint16), None
    ids, begins, ends = encode_with_offsets(sp, text)
    if not ids:
        return None
    counts = token_byte_counts(len(text.encode("utf-8")), begins, ends, weights)
    if counts.max() > 0xFFFF:
        raise DataError(f"a document gives {int(counts.max())} bytes to one token, more than a uint16 sidecar holds")
    return np.array([BOS_ID, *ids], dtype=np.uint16), np.r_[0, counts].astype(np.uint16)


_WORKER_SP: spm.SentencePieceProcessor | ByteTokenizer | None = None
_WORKER_TRANSFORM = "identity"


def _encoder(model_path: PathLike) -> spm.SentencePieceProcessor | ByteTokenizer:
    """The SentencePiece model at ``model_path``, or the byte vocabulary when it is ``byte260``."""
    return ByteTokenizer() if is_byte260(model_path) else load_tokenizer(model_path)


def _init_worker(model_path: str, transform: str = "identity") -> None:
    global _WORKER_SP, _WORKER_TRANSFORM
    _WORKER_SP = _encoder(model_path)
    _WORKER_TRANSFORM = transform


def _encode_batch(
    batch: tuple[bool, list[str]], sp: spm.SentencePieceProcessor | ByteTokenizer | None = None,
    transform: str | None = None,
) -> tuple[bool, list[Any]]:
    is_val, texts = batch
    sp = sp or _WORKER_SP
    tf = transform or _WORKER_TRANSFORM
    assert sp is not None
    return is_val, [(encode_document(sp, t, with_bytes=is_val, transform=tf), len(t.encode("utf-8"))) for t in texts]


def _batches(docs: Iterator[str], val_docs: int) -> Iterator[tuple[bool, list[str]]]:
    """Batches of documents that never mix the val and train splits."""
    index = 0
    while True:
        limit = _BATCH_DOCS if index >= val_docs else min(_BATCH_DOCS, val_docs - index)
        texts = list(islice(docs, limit))
        if not texts:
            return
        yield index < val_docs, texts
        index += len(texts)


def _pool_context() -> multiprocessing.context.BaseContext | None:
    """How to start encoding workers, or None to encode in this process.

    fork when this process has no other Python thread (nothing can hold a lock across the
    fork); else spawn, which re-imports ``__main__`` and so needs it to be a real file (not
    ``python - <<EOF``) guarded by ``if __name__ == "__main__":``.
    """
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file is not None and not os.path.exists(main_file):
        return None
    return multiprocessing.get_context("spawn")


def _encoded(
    batches: Iterator[tuple[bool, list[str]]], model_path: PathLike, pool: ProcessPoolExecutor | None, workers: int,
    transform: str = "identity",
) -> Iterator[tuple[bool, list[Any]]]:
    """Encoded batches in input order; with a pool, at most ``2 × workers`` batches in flight."""
    if pool is None:
        sp = _encoder(model_path)
        for batch in batches:
            yield _encode_batch(batch, sp, transform)
        return
    pending: deque[Future[tuple[bool, list[Any]]]] = deque()
    try:
        for batch in batches:
            pending.append(pool.submit(_encode_batch, batch))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BrokenProcessPool:
        raise RuntimeError(
            "an encoding worker process died; if the calling script has no "
            "`if __name__ == \"__main__\":` guard add one, or pass workers=1"
        ) from None


class _ShardWriter:
    """Cuts one split's token stream into shards of exactly ``shard_tokens`` (last one shorter)."""

    def __init__(self, out_dir: Path, split: str, shard_tokens: int, sidecar: bool, style: str = "pgolf") -> None:
        self.out_dir, self.split, self.shard_tokens, self.sidecar = out_dir, split, shard_tokens, sidecar
        self.style = style
        self.ids: list[np.ndarray] = []
        self.counts: list[np.ndarray] = []
        self.buffered = 0
        self.files: list[str] = []
        self.sidecars: list[str] = []
        self.tokens = self.documents = self.bytes = self.empty = 0

    def add(self, encoded: tuple[np.ndarray, np.ndarray | None] | None, n_bytes: int) -> None:
        if encoded is None:
            self.empty += 1
            return
        ids, counts = encoded
        self.documents += 1
        self.bytes += n_bytes
        self.tokens += ids.size
        self.ids.append(ids)
        if self.sidecar:
            assert counts is not None
            self.counts.append(counts)
        self.buffered += ids.size
        while self.buffered >= self.shard_tokens:
            self._flush(self.shard_tokens)

    def _flush(self, n: int) -> None:
        ids = np.concatenate(self.ids)
        self.ids = [ids[n:]] if ids.size > n else []
        index = len(self.files)
        name = shard_name(self.split, index)
        write_shard(self.out_dir / name, ids[:n])
        self.files.append(name)
        if self.sidecar:
            counts = np.concatenate(self.counts)
            self.counts = [counts[n:]] if counts.size > n else []
            name = sidecar_name(index, self.style)
            write_byte_sidecar(self.out_dir / name, counts[:n])
            self.sidecars.append(name)
        self.buffered -= n

    def close(self) -> dict[str, Any]:
        if self.buffered:
            self._flush(self.buffered)
        info: dict[str, Any] = {
            "documents": self.documents,
            "empty_documents_skipped": self.empty,
            "tokens": self.tokens,
            "bytes": self.bytes,
            "shards": self.files,
        }
        if self.sidecar:
            info["byte_sidecars"] = self.sidecars
        return info


# ----------------------------------------------------------------------------------------- build


def sha256_file(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _existing_outputs(out_dir: Path) -> list[Path]:
    if not out_dir.is_dir():
        return []
    return sorted(p for p in out_dir.iterdir() if p.name == "manifest.json" or sidecar_style(p.name) or
                  (p.name.startswith("fineweb_") and p.name.endswith(".bin")))


def _progress(total: int | None, enabled: bool, desc: str) -> Any:
    if enabled and sys.stderr.isatty():
        try:
            from tqdm import tqdm  # optional: only the CLI's build shows a bar
        except ImportError:
            return None
        return tqdm(total=total, desc=desc, unit="doc", file=sys.stderr, dynamic_ncols=True)
    return None


def build_dataset(
    inputs: Iterable[PathLike],
    out_dir: PathLike,
    *,
    tokenizer: PathLike | None = None,
    vocab_size: int | None = None,
    val_docs: int | None = None,
    shard_tokens: int = SHARD_TOKENS,
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
    tokenizer_options: dict[str, Any] | None = None,
    caseops: bool = False,
) -> dict[str, Any]:
    """Tokenize ``inputs`` into ``out_dir`` (shards, val byte sidecars, ``tokenizer.model``,
    ``manifest.json``); return the manifest.

    ``tokenizer``: an existing SentencePiece model (copied into ``out_dir``; must have
    ``vocab_size`` pieces); None trains one on the train documents (``tokenizer_options`` go to
    :func:`~pgolf.data.tokenizer.train_tokenizer`); ``"byte260"`` is the challenge's byte vocabulary
    (:data:`~pgolf.data.tokenizer.BYTE260_SPEC`: BOS + one id per UTF-8 byte, b → b + 4; no model file is
    written, the manifest's ``tokenizer`` says ``kind: byte260``). ``vocab_size``: None = 1024 (260 for
    byte260). ``val_docs``: None = :func:`default_val_docs`
    (one extra reading pass to count documents). ``workers``: encoding processes (None = CPU
    count; ≤ 1 encodes in this process). ``overwrite``: replace an existing dataset in ``out_dir``.
    ``caseops``: apply the CaseOps transform ([04-18] PR #1729, :mod:`pgolf.data.caseops`) before the
    tokenizer; a trained tokenizer reserves its operators as user-defined pieces, a given one must have
    them; the byte sidecar still counts original bytes, and the manifest records ``text_transform``.
    """
    transform = caseops_mod.NAME if caseops else "identity"
    byte_vocab = is_byte260(tokenizer)
    if byte_vocab:
        if vocab_size not in (None, BYTE260_VOCAB):
            raise DataError(f"--tokenizer byte260 has {BYTE260_VOCAB} ids: leave out --vocab-size or give {BYTE260_VOCAB}, "
                            f"not {vocab_size}")
        if caseops:
            raise DataError("--caseops needs a SentencePiece tokenizer (its operators are pieces); byte260 takes the "
                            "text as it is")
        vocab_size = BYTE260_VOCAB
    elif vocab_size is None:
        vocab_size = 1024
    files = input_files(inputs)
    out = Path(out_dir)
    if shard_tokens < 1:
        raise ValueError("shard_tokens must be >= 1")
    existing = _existing_outputs(out)
    if existing and not overwrite:
        raise DataError(f"{out}: already holds a dataset ({existing[0].name}); choose another directory or overwrite")
    out.mkdir(parents=True, exist_ok=True)
    for p in existing:
        p.unlink()

    n_docs: int | None = None
    if val_docs is None:
        n_docs = sum(1 for _ in iter_documents(files))
        if n_docs < 2:
            raise DataError(f"{files[0]}: {n_docs} document(s); need at least 2 (validation + train)")
        val_docs = default_val_docs(n_docs)
    if val_docs < 1:
        raise ValueError("val_docs must be >= 1")

    model_path: PathLike = out / TOKENIZER_FILE
    report: dict[str, Any] | None = None
    if byte_vocab:  # nothing to train or copy: the workers encode bytes
        model_path, source = BYTE260, BYTE260
    elif tokenizer is not None:
        src = Path(tokenizer)
        sp_given = load_tokenizer(src)
        check_vocab(sp_given, vocab_size, src)
        if caseops and not has_user_symbols(sp_given, caseops_mod.OPERATORS):
            raise DataError(f"{src}: --caseops needs a tokenizer with the CaseOps operators U+E001–U+E004 as "
                            "user-defined pieces (train one with --caseops and no --tokenizer)")
        if src.resolve() != model_path.resolve():
            write_bytes(model_path, src.read_bytes())
        source = str(src)
    else:
        seen = [0]

        def train_docs() -> Iterator[str]:
            for doc in islice(iter_documents(files), val_docs, None):
                seen[0] += 1
                yield caseops_mod.encode(doc) if caseops else doc

        opts = dict(tokenizer_options or {})
        if caseops:
            opts["user_defined_symbols"] = caseops_mod.OPERATORS
        try:
            report = train_tokenizer(train_docs(), vocab_size, model_path, **opts)
        except DataError:
            if seen[0] == 0:
                raise DataError(f"{files[0]}: no train documents after the first {val_docs} (validation)") from None
            raise
        source = "trained"

    workers = (os.cpu_count() or 1) if workers is None else workers
    writers = {
        "val": _ShardWriter(out, "val", shard_tokens, sidecar=True, style="caseops" if caseops else "pgolf"),
        "train": _ShardWriter(out, "train", shard_tokens, sidecar=False),
    }
    val_ids: list[np.ndarray] = []
    fingerprints: ValFingerprints | None = None
    dropped = {"exact": 0, "near": 0}
    ctx = _pool_context() if workers > 1 else None
    # The pool starts before the progress bar, whose monitor thread would rule out fork.
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                               initargs=(str(model_path), transform)) if ctx is not None else None
    bar = _progress(n_docs, progress, "encode")
    try:
        if pool is not None:  # start the workers now (they are created lazily otherwise)
            pool.submit(int).result()
        batches = _batches(iter_documents(files), val_docs)
        for is_val, results in _encoded(batches, model_path, pool, workers, transform):
            writer = writers["val" if is_val else "train"]
            if is_val:
                val_ids += [enc[0] for enc, _ in results if enc is not None]
            else:
                if fingerprints is None:
                    fingerprints = ValFingerprints.from_documents(val_ids, BOS_ID)
                results = _drop_validation_copies(results, fingerprints, dropped)
            for encoded, n_bytes in results:
                writer.add(encoded, n_bytes)
            if bar is not None:
                bar.update(len(results))
        splits = {name: w.close() for name, w in writers.items()}
    finally:
        if bar is not None:
            bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if splits["val"]["documents"] == 0:
        raise DataError(f"{files[0]}: the first {val_docs} documents (validation) have no text")
    if splits["train"]["documents"] == 0:
        raise DataError(f"{files[0]}: no train documents with text after the first {val_docs} (validation)")

    splits["train"]["validation_overlaps_dropped"] = dropped
    if fingerprints is None:
        fingerprints = ValFingerprints.from_documents(val_ids, BOS_ID)
    outputs = ([] if byte_vocab else [TOKENIZER_FILE]) + splits["val"]["shards"] + splits["val"]["byte_sidecars"] + \
        splits["train"]["shards"]
    if caseops:
        write_caseops_guard(out)
        outputs.append(CASEOPS_GUARD)
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "pgolf_version": __version__,
        "vocab_size": vocab_size,
        "bos_id": BOS_ID,
        "append_eos": False,
        "text_transform": transform,
        "byte_sidecar_style": "caseops" if caseops else "pgolf",
        "val_docs": val_docs,
        "shard_tokens": shard_tokens,
        "tokenizer": {"kind": BYTE260, "file": None, "sha256": byte260_sha256(), "source": source,
                      "spec": BYTE260_SPEC} if byte_vocab else {
            "file": TOKENIZER_FILE,
            "sha256": sha256_file(model_path),
            "source": source,
        },
        "tokenizer_report": report,
        "splits": splits,
        "inputs": [_input_entry(f, out) for f in files],
        "files": {name: {"bytes": (out / name).stat().st_size, "sha256": sha256_file(out / name)} for name in outputs},
        "validation_fingerprints": fingerprints.to_manifest(),
    }
    write_json(out / "manifest.json", manifest)
    return manifest


def _drop_validation_copies(results: list[Any], fp: ValFingerprints, dropped: dict[str, int]) -> list[Any]:
    """``results`` without the train documents that copy (or nearly copy) a validation document."""
    bad = overlapping_documents([enc[0] for enc, _ in results if enc is not None], fp)
    for kind in bad.values():
        dropped[kind] += 1
    kept, j = [], 0
    for enc, n_bytes in results:
        if enc is not None:
            j += 1
            if j - 1 in bad:
                continue
        kept.append((enc, n_bytes))
    return kept


def _input_entry(path: Path, out: Path) -> dict[str, Any]:
    """Inputs inside ``out`` are named relative to it, so the manifest does not depend on where ``out`` is."""
    try:
        shown = path.resolve().relative_to(out.resolve()).as_posix()
    except ValueError:
        shown = str(path)
    return {"path": shown, "bytes": path.stat().st_size, "sha256": sha256_file(path)}
