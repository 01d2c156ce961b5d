"""SentencePiece tokenizers with the challenge's official trainer settings, and the byte vocabulary.

The byte vocabulary (:data:`BYTE260`, ``--tokenizer byte260``) is the challenge's ``PureByteTokenizer``
(``data/download_hf_docs_and_tokenize.py``; the ``fineweb10B_byte260`` export): 4 specials and the 256 byte
values, no model file, nothing trained (:class:`ByteTokenizer`).

Source: ``data/download_hf_docs_and_tokenize.py`` and ``tokenizer_specs.json`` of
openai/parameter-golf (CATALOGUE §1.1; RULES.md "Data"): BPE, ``byte_fallback``, ``split_digits``,
``nmt_nfkc`` normalization, no dummy prefix, character coverage 0.999, soft vocab limit, ids
pad 0 / bos 1 / eos 2 / unk 3.

Trap avoided here: the SentencePiece trainer silently *skips* every input sentence longer than
``max_sentence_length`` bytes (default 4192). Fed whole documents (a Wikipedia article is one
line of 20–100 kB) it would see only the short ones. :func:`train_tokenizer` therefore cuts each
document into consecutive chunks of at most ``max_sentence_chars`` characters (at whitespace when
possible; the chunks concatenate back to the document) and sets ``max_sentence_length`` to
``4 × max_sentence_chars`` bytes, which no such chunk can exceed. Its report states how much text
the trainer actually received (characters fed vs total, sentences), for the dataset manifest.

Determinism: the sentences are fed in document order (a seeded reservoir sample when there are
more than ``input_sentence_size``), the trainer does no sampling of its own, and it runs with a
fixed thread count, so the same input gives a byte-identical ``.model``.

:func:`encode_with_offsets` gives each token's span ``[begin, end)`` in the UTF-8 bytes of the
*original* text, which the byte sidecar (``pgolf.data.corpus``) is computed from. It parses the
serialized ``SentencePieceText`` protobuf itself, which every sentencepiece ≥ 0.1.9x returns
(``immutable_proto`` was removed in 0.2.1+, ``offset_mapping`` is 0.2.1+ only, and the ``proto``
return type needs the protobuf package).
"""

from __future__ import annotations

import io
import os
import random
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm

from pgolf.errors import DataError
from pgolf.fileio import write_bytes

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3

BYTE260 = "byte260"
"""The byte vocabulary's name (``pgolf data build --tokenizer byte260``, ``data.tokenizer=byte260``)."""
BYTE_OFFSET = 4
BYTE260_VOCAB = BYTE_OFFSET + 256
BYTE260_SPEC: dict[str, Any] = {
    "tokenizer_type": "pure_byte",
    "config": {"pad_id": PAD_ID, "bos_id": BOS_ID, "eos_id": EOS_ID, "unk_id": UNK_ID,
               "byte_offset": BYTE_OFFSET, "byte_count": 256},
    "vocab_size": BYTE260_VOCAB,
}
"""The challenge's pure-byte tokenizer (``PureByteTokenizer`` of ``data/download_hf_docs_and_tokenize.py``,
openai/parameter-golf; the ``fineweb10B_byte260`` export of CATALOGUE §1.1 and the non-record
``2026-03-29_HNet_ByteVsSubword_Study``): ids 0–3 are the specials pad, bos, eos, unk (only BOS ever
appears: every document is BOS + its bytes, no EOS), and byte b of the UTF-8 text is id b + 4. The
dict is what that script's ``save_json`` writes, so :func:`byte260_sha256` names the same tokenizer."""


def is_byte260(name: object) -> bool:
    """``name`` (a ``--tokenizer`` / ``data.tokenizer`` value) names the byte vocabulary, not a file."""
    return isinstance(name, (str, os.PathLike)) and os.fspath(name).strip().lower() == BYTE260


def byte260_sha256() -> str:
    """sha256 of the byte tokenizer's description as the challenge's script saves it (``json.dumps(...,
    indent=2, sort_keys=True)`` + newline): the manifest's ``tokenizer.sha256``, as a ``.model`` file's
    sha256 names a SentencePiece tokenizer."""
    import hashlib
    import json

    text = json.dumps(BYTE260_SPEC, indent=2, sort_keys=True) + "\n"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ByteTokenizer:
    """The byte260 vocabulary (:data:`BYTE260_SPEC`): no model file, nothing learned."""

    vocab_size = BYTE260_VOCAB

    @staticmethod
    def encode(text: str) -> np.ndarray:
        """uint16 ids of ``text``'s UTF-8 bytes: byte b → b + 4 (the empty text → no id)."""
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint16) + BYTE_OFFSET

    @staticmethod
    def decode(ids: Iterable[int]) -> str:
        """The text of byte ids (specials dropped); invalid UTF-8 is replaced, as any byte model's output may be."""
        data = bytes(int(i) - BYTE_OFFSET for i in ids if BYTE_OFFSET <= int(i) < BYTE260_VOCAB)
        return data.decode("utf-8", errors="replace")

OFFICIAL_TRAINER_SETTINGS: dict[str, Any] = {
    "model_type": "bpe",
    "byte_fallback": True,
    "split_digits": True,
    "normalization_rule_name": "nmt_nfkc",
    "add_dummy_prefix": False,
    "character_coverage": 0.999,
    "hard_vocab_limit": False,
    "pad_id": PAD_ID,
    "bos_id": BOS_ID,
    "eos_id": EOS_ID,
    "unk_id": UNK_ID,
}


def split_for_trainer(text: str, max_chars: int) -> list[str]:
    """Cut ``text`` into consecutive pieces of ≤ ``max_chars`` characters whose concatenation is
    ``text``; cuts fall just before the last whitespace of a window, or mid-word if it has none."""
    if max_chars < 1:
        raise ValueError("max_chars must be >= 1")
    if len(text) <= max_chars:
        return [text]
    out: list[str] = []
    start = 0
    while len(text) - start > max_chars:
        end = start + max_chars
        cut = max(text.rfind(" ", start + 1, end + 1), text.rfind("\n", start + 1, end + 1),
                  text.rfind("\t", start + 1, end + 1))
        if cut <= start:
            cut = end
        out.append(text[start:cut])
        start = cut
    out.append(text[start:])
    return out


def train_tokenizer(
    documents: Iterable[str],
    vocab_size: int,
    model_path: str | os.PathLike[str],
    *,
    max_sentence_chars: int = 8192,
    input_sentence_size: int = 2_000_000,
    seed: int = 0,
    num_threads: int = 1,
    user_defined_symbols: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Train a BPE model with :data:`OFFICIAL_TRAINER_SETTINGS` on ``documents``; write it
    atomically to ``model_path``; return a JSON-able report of what the trainer saw.

    ``input_sentence_size``: at most this many chunks are fed (a seeded reservoir sample kept in
    document order); 0 = all. The trainer must produce exactly ``vocab_size`` pieces, else
    :class:`DataError` (the corpus is too small for that vocabulary).
    """
    if vocab_size < 1:
        raise ValueError("vocab_size must be >= 1")
    rng = random.Random(seed)
    kept: list[tuple[int, str]] = []
    n_docs = total_chars = n_chunks = split_docs = 0
    for doc in documents:
        n_docs += 1
        total_chars += len(doc)
        chunks = split_for_trainer(doc, max_sentence_chars)
        split_docs += len(chunks) > 1
        for chunk in chunks:
            if not chunk.strip():  # whitespace-only: normalises to nothing
                continue
            if input_sentence_size <= 0 or len(kept) < input_sentence_size:
                kept.append((n_chunks, chunk))
            else:  # reservoir sampling (Algorithm R): every chunk kept with equal probability
                j = rng.randrange(n_chunks + 1)
                if j < input_sentence_size:
                    kept[j] = (n_chunks, chunk)
            n_chunks += 1
    kept.sort(key=lambda t: t[0])
    sentences = [c for _, c in kept]
    fed_chars = sum(len(c) for c in sentences)
    if not sentences:
        raise DataError(f"{model_path}: no text to train a tokenizer on")

    if hasattr(spm, "set_random_generator_seed"):
        spm.set_random_generator_seed(seed)
    model = io.BytesIO()
    try:
        with open(os.devnull, "w") as devnull:
            # SentencePiece redirects its log through sys.stderr's file descriptor; where stderr has
            # none (a notebook, pytest's capsys) it must keep its own stream.
            quiet = {"logstream": devnull} if _has_fileno(sys.stderr) else {}
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(sentences),
                model_writer=model,
                **quiet,
                vocab_size=vocab_size,
                max_sentence_length=4 * max_sentence_chars,  # UTF-8 ≤ 4 bytes per character
                input_sentence_size=0,
                shuffle_input_sentence=False,
                num_threads=num_threads,
                minloglevel=2,
                **OFFICIAL_TRAINER_SETTINGS,
                **({"user_defined_symbols": list(user_defined_symbols)} if user_defined_symbols else {}),
            )
    except RuntimeError as e:
        raise DataError(f"{model_path}: SentencePiece could not train a {vocab_size}-piece tokenizer: {e}") from None
    data = model.getvalue()
    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(data)
    pieces = sp.get_piece_size()
    if pieces != vocab_size:
        raise DataError(
            f"{model_path}: the corpus is too small for a {vocab_size}-piece tokenizer "
            f"(SentencePiece produced {pieces} pieces); add text or lower the vocab size"
        )
    write_bytes(model_path, data)
    return {
        "vocab_size": vocab_size,
        "documents": n_docs,
        "total_chars": total_chars,
        "fed_chars": fed_chars,
        "fed_fraction": fed_chars / total_chars if total_chars else 0.0,
        "sentences_total": n_chunks,
        "sentences_fed": len(sentences),
        "documents_split": split_docs,
        "max_sentence_chars": max_sentence_chars,
        "max_sentence_length_bytes": 4 * max_sentence_chars,
        "input_sentence_size": input_sentence_size,
        "seed": seed,
        "num_threads": num_threads,
        "settings": dict(OFFICIAL_TRAINER_SETTINGS),
        "user_defined_symbols": [f"U+{ord(c):04X}" if len(c) == 1 else c for c in user_defined_symbols],
        "sentencepiece_version": getattr(spm, "__version__", "unknown"),
    }


def load_tokenizer(path: str | os.PathLike[str]) -> spm.SentencePieceProcessor:
    """Load a SentencePiece ``.model``; :class:`DataError` if it is missing or not a model."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: tokenizer not found" if not p.exists() else f"{p}: tokenizer is not a file")
    sp = spm.SentencePieceProcessor()
    try:
        ok = sp.LoadFromSerializedProto(p.read_bytes())
    except (RuntimeError, OSError, ValueError) as e:
        raise DataError(f"{p}: not a SentencePiece model ({str(e).splitlines()[0] if str(e) else e!r})") from None
    if ok is False or sp.get_piece_size() == 0:
        raise DataError(f"{p}: not a SentencePiece model")
    return sp


def _has_fileno(stream: Any) -> bool:
    try:
        stream.fileno()
        return True
    except (AttributeError, OSError, ValueError):
        return False


def has_user_symbols(sp: spm.SentencePieceProcessor, symbols: tuple[str, ...]) -> bool:
    """Each of ``symbols`` encodes alone as exactly one piece that is the symbol itself (what a
    user-defined piece does; SentencePiece never splits or merges those)."""
    for c in symbols:
        ids = sp.encode(c)
        if len(ids) != 1 or sp.id_to_piece(ids[0]) != c:
            return False
    return True


def check_vocab(sp: spm.SentencePieceProcessor, vocab_size: int, path: str | os.PathLike[str] | None = None) -> None:
    """:class:`DataError` unless the tokenizer has exactly ``vocab_size`` pieces."""
    n = sp.get_piece_size()
    if n != vocab_size:
        name = str(path) if path is not None else "tokenizer"
        raise DataError(f"tokenizer {name} has {n} pieces but model.vocab_size is {vocab_size}")


# ------------------------------------------------------------------------ offsets (wire format)


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7


def _skip(buf: bytes, i: int, wire: int) -> int:
    if wire == 0:
        return _varint(buf, i)[1]
    if wire == 1:
        return i + 8
    if wire == 2:
        n, i = _varint(buf, i)
        return i + n
    if wire == 5:
        return i + 4
    raise ValueError(f"unsupported protobuf wire type {wire}")


def parse_sentencepiece_text(buf: bytes) -> tuple[list[int], list[int], list[int]]:
    """Decode a serialized ``SentencePieceText``: (ids, begins, ends) of its pieces.

    Schema (sentencepiece.proto): ``SentencePieceText { 1: text; 2: repeated SentencePiece
    pieces; 3: score }``, ``SentencePiece { 1: piece; 2: id; 3: surface; 4: begin; 5: end }``;
    begin/end are byte offsets into the UTF-8 input.
    """
    ids: list[int] = []
    begins: list[int] = []
    ends: list[int] = []
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        if key != 0x12:  # anything but field 2 (length-delimited)
            i = _skip(buf, i, key & 7)
            continue
        length, i = _varint(buf, i)
        j, stop = i, i + length
        pid = begin = end = 0
        while j < stop:
            k, j = _varint(buf, j)
            if k == 0x10:
                pid, j = _varint(buf, j)
            elif k == 0x20:
                begin, j = _varint(buf, j)
            elif k == 0x28:
                end, j = _varint(buf, j)
            else:
                j = _skip(buf, j, k & 7)
        ids.append(pid)
        begins.append(begin)
        ends.append(end)
        i = stop
    return ids, begins, ends


def encode_with_offsets(sp: spm.SentencePieceProcessor, text: str) -> tuple[list[int], list[int], list[int]]:
    """Token ids of ``text`` and each token's ``[begin, end)`` byte span in ``text.encode()``."""
    return parse_sentencepiece_text(sp.encode(text, out_type="serialized_proto"))
