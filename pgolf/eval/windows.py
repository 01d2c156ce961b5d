"""Which tokens each scored target sees: documents, windows, and their batches.

A *span* is a run of targets scored as one unit of context: the whole stream (targets 1..N−1, inputs
from position 0), or, document-aware, one document. Documents start at each BOS (and at position 0);
document j starting at d_j owns the targets d_j+1 .. d_{j+1} — the last one is the next document's
BOS, predicted from this document — or up to N−1 for the last document. A target's inputs then never
reach back past its own document's first token.

Inside a span of n targets (relative target r = 1..n has inputs r' < r), windows follow one grid that
depends only on positions, never on token values, so a change of later tokens cannot move an earlier
window (the perturbation tests rely on it):

    window k scores r ∈ (a_k, b_k],   a_0 = 0,  b_k = first + k·step,  a_k = b_{k−1}   (k ≥ 1)
    its inputs are r' ∈ [max(0, b_k − L), b_k)   — width min(L, b_k), truncated at the span's end

so every target sees min(r, L − step + 1 … L) tokens of context: the longest the window allows.
Sliding evaluation is ``first = L, step = stride`` ([03-19e]); stride = L is exactly the plain
evaluation's cut; score-first TTT chunks are ``first = step = chunk`` ([03-17a], [04-10]).
A window truncated by the span's end is padded on the right (token 0, not scored); causal attention
makes the padding invisible to every scored position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def doc_starts(tokens: np.ndarray, bos_id: int) -> np.ndarray:
    """int64 start positions of the documents: every BOS, and 0 if the stream does not start with one."""
    t = np.asarray(tokens)
    starts = np.flatnonzero(t == bos_id).astype(np.int64)
    if starts.size == 0 or starts[0] != 0:
        starts = np.concatenate([np.zeros(1, np.int64), starts])
    return starts


def spans(tokens: np.ndarray, bos_id: int, doc_aware: bool) -> tuple[np.ndarray, np.ndarray]:
    """(start, n_targets) of every span with at least one target: the stream, or its documents."""
    n_tok = int(np.asarray(tokens).shape[0])
    if not doc_aware:
        return np.zeros(1, np.int64), np.array([max(n_tok - 1, 0)], np.int64)
    s = doc_starts(tokens, bos_id)
    ends = np.concatenate([s[1:], [n_tok - 1]])
    n = ends - s
    keep = n > 0
    return s[keep], n[keep]


@dataclass
class Windows:
    """Windows in span order, then window order. Window i reads inputs tokens[start_i + j] for
    j < valid_i (tensor width ``width_i``, the rest padding) and scores targets start_i + j + 1 for
    lo_i ≤ j < hi_i."""

    start: np.ndarray
    width: np.ndarray
    valid: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    span: np.ndarray
    """Index of the window's span."""
    k: np.ndarray
    """Index of the window inside its span (its chunk number)."""

    def __len__(self) -> int:
        return int(self.start.shape[0])

    def take(self, sel) -> Windows:
        return Windows(*(getattr(self, f)[sel] for f in ("start", "width", "valid", "lo", "hi", "span", "k")))

    def targets(self) -> int:
        return int((self.hi - self.lo).sum())

    def scored_positions(self) -> np.ndarray:
        """int64 stream positions of every scored target, window by window."""
        if len(self) == 0:
            return np.zeros(0, np.int64)
        n = self.hi - self.lo
        rep = np.repeat(np.arange(len(self)), n)
        off = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        return self.start[rep] + self.lo[rep] + off + 1


def plan(span_start: np.ndarray, span_n: np.ndarray, seq_len: int, first: int, step: int) -> Windows:
    """The window grid of the module docstring over every span."""
    if seq_len < 1 or first < 1 or step < 1 or first > seq_len or step > seq_len:
        raise ValueError(f"window grid needs 1 <= first, step <= seq_len (got {first}, {step}, {seq_len})")
    span_start = np.asarray(span_start, np.int64)
    span_n = np.asarray(span_n, np.int64)
    nwin = 1 + np.maximum(span_n - first + step - 1, 0) // step  # windows per span
    sp = np.repeat(np.arange(span_n.shape[0]), nwin)
    k = np.arange(int(nwin.sum())) - np.repeat(np.cumsum(nwin) - nwin, nwin)
    n = span_n[sp]
    end_nominal = first + k * step  # b_k before truncation
    a = np.where(k == 0, 0, end_nominal - step)
    b = np.minimum(end_nominal, n)
    ws = np.maximum(0, end_nominal - seq_len)
    return Windows(start=span_start[sp] + ws, width=np.minimum(seq_len, end_nominal), valid=b - ws,
                   lo=a - ws, hi=b - ws, span=sp, k=k)


def gather(tokens_t: torch.Tensor, w: Windows, width: int, device: torch.device, rows: int | None = None,
           hints_t: torch.Tensor | None = None):
    """Batch tensors of windows ``w`` (all of tensor width ≤ ``width``): x, y int64 [R, width] on ``device``
    (padding 0), the scored mask [R, width] and the target index (position − 1) of every scored entry,
    in row-major order. ``rows`` > len(w) pads with empty rows (one shape for a compiled model).
    ``hints_t``: per-target hint ids (index position − 1), gathered like y (−1 = none)."""
    R = len(w) if rows is None else max(rows, len(w))
    n_tok = tokens_t.shape[0]
    start = torch.zeros(R, dtype=torch.int64)
    valid = torch.zeros(R, dtype=torch.int64)
    lo = torch.zeros(R, dtype=torch.int64)
    hi = torch.zeros(R, dtype=torch.int64)
    m = len(w)
    start[:m] = torch.from_numpy(w.start)
    valid[:m] = torch.from_numpy(w.valid)
    lo[:m] = torch.from_numpy(w.lo)
    hi[:m] = torch.from_numpy(w.hi)
    col = torch.arange(width + 1, dtype=torch.int64)
    idx = (start[:, None] + col[None]).clamp_(max=n_tok - 1)  # [R, width+1]
    toks = tokens_t[idx]
    inside = col[None, :width] < valid[:, None]
    x = torch.where(inside, toks[:, :-1], 0)
    y = torch.where(inside, toks[:, 1:], 0)
    scored = (col[None, :width] >= lo[:, None]) & (col[None, :width] < hi[:, None])
    target_index = idx[:, :-1][scored]  # = position of the target − 1
    h = None
    if hints_t is not None:
        h = torch.where(scored, hints_t[idx[:, :-1].clamp(max=hints_t.shape[0] - 1)], -1)
        h = h.to(device)
    return x.to(device), y.to(device), scored.to(device), target_index.to(device), h
