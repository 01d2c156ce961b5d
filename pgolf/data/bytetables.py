"""Byte look-up tables: how many bytes of normalized text each scored token stands for.

Source: the challenge's ``build_sentencepiece_luts`` and ``eval_val`` (root ``train_gpt.py`` of
openai/parameter-golf, baseline record [03-17b]; CATALOGUE §1.2). Known mistakes are listed in
RULES.md ("Known traps"), and the missing-"▁" case is openai/parameter-golf issue #897.

The maths. For a vocabulary of V ids (the model's vocab_size, which may be larger than the
tokenizer's):

    is_boundary[i]        = i is control, unknown or unused, or i ≥ the tokenizer's size
    base_bytes[i]         = 0                      if is_boundary[i]
                          = 1                      if i is a byte-fallback piece "<0xNN>"
                          = |utf8(p)|              otherwise, where p = the piece with one
                                                   leading "▁" (U+2581) removed
    has_leading_space[i]  = the piece starts with "▁" (and is neither boundary nor byte)

For a target y_t that follows x_t = y_{t-1}, the bytes it adds to the normalized text are

    bytes(y_t) = base_bytes[y_t] + [has_leading_space[y_t] ∧ ¬is_boundary[x_t]]

A space is charged to the token that starts with it. After a boundary (BOS, <unk>) no space is
charged: SentencePiece drops the leading "▁" of the first piece it decodes. A piece that is
only "▁" therefore gets base 0, and 1 byte unless it follows a boundary.

Two rules here go beyond the challenge's script. Neither changes the numbers for the official
tokenizers: their pieces have no inner "▁", and all of them have a standalone "▁" piece.

* "▁" inside a piece (past the first character) decodes to a space, so it counts 1 byte, not 3.
* If a vocabulary has no usable standalone "▁" piece, byte fallback writes a space as the three
  byte pieces <0xE2><0x96><0x81>, the UTF-8 of the escape character "▁". Together they stand
  for one space byte of the normalized text, not three. The challenge's tables count 3, which
  inflates the byte count and lowers the bpb (issue #897). The correction needs two tokens of
  left context: the <0x81> that ends such a run counts 1 − 2 = −1, so the run totals 1 byte.
  Per-token values can therefore be negative; sums over whole runs are exact.
  ``stream_token_bytes`` applies the correction, and so does ``token_bytes`` when it is given
  ``prev2_ids``.

Unknown pieces (vocabularies without byte fallback) count 0 bytes, as in the challenge, even
though SentencePiece decodes them as " ⁇ ".

The byte260 vocabulary (no SentencePiece model; :func:`byte260_tables`) has the trivial tables of the
H-Net study's ``build_byte_luts`` (``2026-03-29_HNet_ByteVsSubword_Study``, ``train_gpt_hnet_byte.py``):
base 1 for every byte id, 0 and boundary for the four specials, no leading spaces. Its bytes are raw
bytes: nothing is normalized.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch

from pgolf.errors import DataError

if TYPE_CHECKING:  # sentencepiece is only needed to build the tables, not to use them
    from sentencepiece import SentencePieceProcessor

SPACE_MARK = "\u2581"
"""SentencePiece's escape character for a space ("▁")."""
_ESCAPED_SPACE_PIECES = ("<0xE2>", "<0x96>", "<0x81>")  # UTF-8 of U+2581 as byte-fallback pieces

Ids = TypeVar("Ids", np.ndarray, torch.Tensor)


@dataclass(eq=False)
class ByteTables:
    """Per-id byte tables, all of length ``vocab_size`` (CATALOGUE §1.2)."""

    base_bytes: np.ndarray
    """int32 [V]: UTF-8 bytes of the piece without its leading "▁"; byte pieces 1; boundaries 0."""
    has_leading_space: np.ndarray
    """bool [V]: the piece starts with "▁" (one space byte, charged unless after a boundary)."""
    is_boundary: np.ndarray
    """bool [V]: control, unknown, unused, or padding ids beyond the tokenizer's vocabulary."""
    escaped_space_ids: tuple[int, int, int] | None = None
    """Ids of the byte pieces <0xE2>, <0x96>, <0x81> (a byte-fallback "▁" = one space), if any."""

    def __post_init__(self) -> None:
        self.base_bytes = np.ascontiguousarray(self.base_bytes, dtype=np.int32)
        self.has_leading_space = np.ascontiguousarray(self.has_leading_space, dtype=np.bool_)
        self.is_boundary = np.ascontiguousarray(self.is_boundary, dtype=np.bool_)
        n = self.base_bytes.shape
        if len(n) != 1 or self.has_leading_space.shape != n or self.is_boundary.shape != n:
            raise ValueError("ByteTables arrays must be 1-D and of equal length")

    @property
    def vocab_size(self) -> int:
        return int(self.base_bytes.shape[0])


def build_byte_tables(sp: SentencePieceProcessor, vocab_size: int) -> ByteTables:
    """The challenge's byte tables for ``sp``, padded with boundary ids up to ``vocab_size``."""
    n_sp = int(sp.vocab_size())
    if n_sp > vocab_size:
        raise DataError(f"tokenizer has {n_sp} pieces, more than the model's vocab_size {vocab_size}")
    base = np.zeros(vocab_size, dtype=np.int32)
    space = np.zeros(vocab_size, dtype=np.bool_)
    boundary = np.ones(vocab_size, dtype=np.bool_)  # ids ≥ n_sp stay boundaries
    for i in range(n_sp):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue
        boundary[i] = False
        if sp.is_byte(i):  # "<0x41>" prints as 6 characters but is one byte of text
            base[i] = 1
            continue
        piece = sp.id_to_piece(i)
        if piece.startswith(SPACE_MARK):
            space[i] = True
            piece = piece[1:]
        base[i] = len(piece.replace(SPACE_MARK, " ").encode("utf-8"))
    esc = tuple(int(sp.piece_to_id(p)) for p in _ESCAPED_SPACE_PIECES)
    # piece_to_id returns the <unk> id for a missing piece, so check each id really is that byte
    ok = all(sp.is_byte(i) and sp.id_to_piece(i) == p for i, p in zip(esc, _ESCAPED_SPACE_PIECES, strict=True))
    return ByteTables(base, space, boundary, esc if ok else None)  # type: ignore[arg-type]


def byte260_tables(vocab_size: int = 260) -> ByteTables:
    """The byte tables of the byte260 vocabulary (:data:`pgolf.data.tokenizer.BYTE260_SPEC`): every byte id
    (4..259) stands for exactly its one raw byte, the specials 0..3 (and padding ids ≥ 260) for none, and
    nothing carries a leading space. So Σ bytes over a stream = its raw UTF-8 byte count, val_bpb = the
    tokenizer-agnostic figure (``tests/test_byte260.py`` checks it against the text)."""
    from pgolf.data.tokenizer import BYTE260_VOCAB, BYTE_OFFSET

    if vocab_size < BYTE260_VOCAB:
        raise DataError(f"the byte260 vocabulary has {BYTE260_VOCAB} ids, more than the model's vocab_size {vocab_size}")
    base = np.zeros(vocab_size, dtype=np.int32)
    base[BYTE_OFFSET:BYTE260_VOCAB] = 1
    boundary = np.ones(vocab_size, dtype=np.bool_)
    boundary[BYTE_OFFSET:BYTE260_VOCAB] = False
    return ByteTables(base, np.zeros(vocab_size, dtype=np.bool_), boundary, None)


def token_bytes(tables: ByteTables, prev_ids: Ids, target_ids: Ids, prev2_ids: Ids | None = None) -> Ids:
    """Bytes added by each target: base[y] + [space[y] ∧ ¬boundary[prev]] (int32, same shape).

    Works on numpy arrays (returns numpy) and torch tensors (returns a tensor on their device).
    With ``prev2_ids`` (the token before ``prev``), a byte-fallback "▁" run counts 1 byte (see
    the module docstring). Without it, the result is exactly the challenge's formula.
    """
    if isinstance(target_ids, torch.Tensor):
        dev = target_ids.device
        base = torch.as_tensor(tables.base_bytes, device=dev)
        space = torch.as_tensor(tables.has_leading_space, device=dev)
        boundary = torch.as_tensor(tables.is_boundary, device=dev)
        y, x = target_ids.long(), prev_ids.long()
        out = base[y] + (space[y] & ~boundary[x]).to(torch.int32)
        if prev2_ids is not None and tables.escaped_space_ids is not None:
            e2, x96, x81 = tables.escaped_space_ids
            run_end = (y == x81) & (x == x96) & (prev2_ids.long() == e2)
            out = out - 2 * run_end.to(torch.int32)
        return out
    y = np.asarray(target_ids, dtype=np.int64)
    x = np.asarray(prev_ids, dtype=np.int64)
    out = tables.base_bytes[y] + (tables.has_leading_space[y] & ~tables.is_boundary[x]).astype(np.int32)
    if prev2_ids is not None and tables.escaped_space_ids is not None:
        e2, x96, x81 = tables.escaped_space_ids
        run_end = (y == x81) & (x == x96) & (np.asarray(prev2_ids) == e2)
        out = out - 2 * run_end.astype(np.int32)
    return out


def stream_token_bytes(tables: ByteTables, tokens: np.ndarray) -> np.ndarray:
    """Bytes added by every token of a stream, given all tokens before it (int32 [N]).

    ``out[p]`` = bytes of ``tokens[p]`` after ``tokens[p-1]`` (and ``tokens[p-2]``). The stream
    start counts as a boundary, so ``out[0]`` = base_bytes[tokens[0]]. The sum of ``out[a+1:b+1]``
    is the byte count of the targets ``tokens[a+1..b]``, whichever way they are cut into sequences.
    """
    t = np.asarray(tokens, dtype=np.int64)
    if t.ndim != 1:
        raise ValueError("stream_token_bytes expects a 1-D token stream")
    out = np.zeros(t.shape[0], dtype=np.int32)
    if t.shape[0] == 0:
        return out
    out[0] = tables.base_bytes[t[0]]
    if t.shape[0] > 1:
        out[1:] = token_bytes(tables, t[:-1], t[1:])
    if t.shape[0] > 2 and tables.escaped_space_ids is not None:
        e2, x96, x81 = tables.escaped_space_ids
        out[2:] -= 2 * ((t[2:] == x81) & (t[1:-1] == x96) & (t[:-2] == e2)).astype(np.int32)
    return out
