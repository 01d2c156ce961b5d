"""CaseOps: a lossless capitalization transform applied to the text before SentencePiece.

Source: [04-18] (PR #1729, ``lossless_caps_caseops_v1``; CATALOGUE §2.7 "CaseOps"), used by every record
from [04-18] to [04-27a]; implemented here from that description. Case is moved out of the words into
four operator characters from Unicode's Private Use Area, reserved as user-defined pieces of the
tokenizer, so ``The``, ``THE`` and ``the`` share the subword ``the``:

    TITLE U+E001, ALLCAPS U+E002, CAPNEXT U+E003, ESC U+E004

Encoding, over each maximal run w of ASCII letters (everything else passes unchanged):

- w all lowercase: ``w``;
- |w| ≥ 2 and all uppercase: ``ALLCAPS lower(w)``;
- otherwise an optional ``TITLE`` if w[0] is uppercase, then ``lower(w[0])``, then for each later letter
  ``CAPNEXT lower(c)`` if c is uppercase, else ``c`` (so ``Title`` → ``TITLE title``, ``iPhone`` →
  ``i CAPNEXT phone``, ``A`` → ``TITLE a``);
- a literal operator character in the input becomes ``ESC`` + that character.

Decoding reverses it: TITLE uppercases the next letter, CAPNEXT the next letter, ALLCAPS the whole next
ASCII-letter run, ESC makes the next character literal. ``decode(encode(x)) == x`` for every string
(tested on every document of every corpus available, and by property tests).

Bits per byte are always counted over the *original* text: :func:`encode_with_weights` gives, for every
UTF-8 byte of the transformed text, how many bytes of the original it stands for (operators 0, a letter 1,
other characters their own length on their first byte), which the dataset builder turns into the per-token
byte sidecar; evaluation of a CaseOps dataset scores against it (``val_bpb:byte_sidecar``).
"""

from __future__ import annotations

import re

import numpy as np

NAME = "caseops_v1"
TITLE, ALLCAPS, CAPNEXT, ESC = "\ue001", "\ue002", "\ue003", "\ue004"
OPERATORS: tuple[str, ...] = (TITLE, ALLCAPS, CAPNEXT, ESC)
"""Reserved as user-defined pieces of a CaseOps tokenizer."""
_OPS = frozenset(OPERATORS)


class CaseOpsError(ValueError):
    """A string that no encoding produces (an operator with nothing to act on)."""


_RUN = re.compile("[A-Za-z]+|[\ue001-\ue004]")
_OP_BYTES = re.compile(b"\xee\x80[\x81-\x84]")  # UTF-8 of U+E001..U+E004
_ESC_BYTES = ESC.encode("utf-8")
_DEC = re.compile("\ue004(.)|\ue002([A-Za-z]+)|([\ue001\ue003])([A-Za-z])|([\ue001-\ue004])", re.DOTALL)


def _word(m: re.Match[str]) -> str:
    w = m.group()
    if w in _OPS:
        return ESC + w
    low = w.lower()
    if w == low:
        return w
    if len(w) >= 2 and w == w.upper():
        return ALLCAPS + low
    out = [TITLE, low[0]] if "A" <= w[0] <= "Z" else [low[0]]
    for c, lc in zip(w[1:], low[1:], strict=True):
        out.append(CAPNEXT + lc if "A" <= c <= "Z" else lc)
    return "".join(out)


def encode(text: str) -> str:
    """The CaseOps form of ``text`` (module docstring)."""
    return _RUN.sub(_word, text)


def encode_with_weights(text: str) -> tuple[str, np.ndarray]:
    """``(encoded, weights)``: ``weights`` [len(encoded.encode())] int64 — 1 for every byte that comes from
    the original text, 0 for the bytes of an operator the encoding inserted — so ``weights.sum()`` is
    ``len(text.encode())`` and any span of the encoded text sums to the original bytes it stands for."""
    enc = encode(text)
    b = enc.encode("utf-8")
    w = np.ones(len(b), dtype=np.int64)
    literal = False  # the operator after an inserted ESC is the original character
    for m in _OP_BYTES.finditer(b):
        if literal:
            literal = False
            continue
        w[m.start() : m.end()] = 0
        literal = m.group() == _ESC_BYTES
    return enc, w


def _dec(m: re.Match[str]) -> str:
    if m.group(1) is not None:
        return m.group(1)
    if m.group(2) is not None:
        return m.group(2).upper()
    if m.group(4) is not None:
        return m.group(4).upper()
    raise CaseOpsError(f"operator U+{ord(m.group(5)):04X} at {m.start()} has nothing to act on")


def decode(text: str) -> str:
    """Inverse of :func:`encode`; CaseOpsError for an operator with nothing to act on."""
    return _DEC.sub(_dec, text)
