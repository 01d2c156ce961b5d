"""Sliding-window evaluation: every target scored exactly once, with the longest context the window allows.

Source: [03-19e] SlidingWindowEval (stride 64; CATALOGUE §2.6), the off-by-boundary lesson of [04-01]
(the tail scored twice). The window grid is :func:`pgolf.eval.windows.plan` with ``first = L`` and
``step = stride``: window k of a span scores the targets r ∈ (L + (k−1)·s, L + k·s] (the first window
all of r ≤ L) from the L inputs before them, so every target after the first L of its span has
between L − s + 1 and L tokens of context. All N − 1 targets of the stream are scored, the tail
included. With ``doc_aware`` each document is its own span (context never crosses its BOS); off,
the stream is one span, as in the records.

At stride = L (and not document-aware) the windows are exactly the plain evaluation's sequences, so
on a stream with (N − 1) divisible by L both give the same per-target losses and sums
(``tests/test_eval_sliding.py``).

Cost: (N − 1)/s windows of L tokens, L/s times the plain evaluation's forward work
([03-19c]: stride 64 takes 72.6 s where stride 256 takes ≈18 s).

Ranks: the windows (in stream order) are split into contiguous runs, one per rank
(:func:`pgolf.eval.bpb.rank_sequences`); the sums go through one all-reduce. The per-target losses
equal one process's as the plain evaluation's do (:mod:`pgolf.eval.bpb`, "Exactness").
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from pgolf import dist
from pgolf.data.bytetables import ByteTables
from pgolf.errors import ConfigError
from pgolf.eval.bpb import ValTokens, rank_sequences
from pgolf.eval.scoring import Scored, TargetSink, amp_context, check_tokens, finish, score_logits
from pgolf.eval.windows import Windows, gather, plan, spans
from pgolf.precision import resolve_amp


def sliding_windows(tokens: np.ndarray, seq_len: int, stride: int, doc_aware: bool = False, bos_id: int = 1) -> Windows:
    """The windows of a sliding evaluation of ``tokens`` (see the module docstring)."""
    if not 1 <= stride <= seq_len:
        raise ConfigError(f"eval.sliding.stride must be in 1..seq_len={seq_len}, got {stride}")
    s, n = spans(tokens, bos_id, doc_aware)
    return plan(s, n, seq_len, seq_len, stride)


def score_windows(model: nn.Module, tokens_t: torch.Tensor, w: Windows, sink: TargetSink, *, rows: int,
                  width: int, device: torch.device, amp_dtype: str, pad: bool = False,
                  hints_t: torch.Tensor | None = None, adapter=None, on_batch=None) -> None:
    """Score windows ``w`` in batches of ``rows`` under no-grad into ``sink``. ``pad``: every batch has
    ``rows`` rows (one shape for a compiled model). ``on_batch(done_windows)`` after each batch."""
    with torch.no_grad(), amp_context(device, amp_dtype):
        for i in range(0, len(w), rows):
            part = w.take(slice(i, i + rows))
            x, y, scored, index, h = gather(tokens_t, part, width, device, rows=rows if pad else None, hints_t=hints_t)
            ce, hl = score_logits(model, x, y, h, adapter=adapter)
            sink.put(index, ce[scored], None if hl is None else hl[scored])
            if on_batch is not None:
                on_batch(i + len(part))


def evaluate_sliding(
    model: nn.Module,
    val: ValTokens,
    tables: ByteTables,
    *,
    seq_len: int,
    stride: int,
    batch_tokens: int,
    device: torch.device | str,
    doc_aware: bool = False,
    bos_id: int = 1,
    amp_dtype: str = "bf16",
    rank: int | None = None,
    world_size: int | None = None,
    score: str = "table",
    hints: np.ndarray | None = None,
    pad_batches: bool = False,
    on_batch=None,
) -> Scored:
    """Sliding-window evaluation of ``val`` (module docstring). ``batch_tokens`` is global, as in
    :func:`pgolf.eval.bpb.evaluate`: each rank runs ``batch_tokens // (world_size · seq_len)`` windows per
    forward. ``hints`` int64 [N−1] (−1 = none): also record log p(hint) per target (the mixer's input).
    ``rank``/``world_size`` without a process group simulate one rank's share (tests)."""
    t0 = time.perf_counter()
    rank = dist.rank() if rank is None else rank
    world_size = dist.world_size() if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} out of range for world_size {world_size}")
    device = torch.device(device)
    if amp_dtype == "auto":
        amp_dtype = resolve_amp("auto", device).dtype
    rows = batch_tokens // (world_size * seq_len)
    if rows < 1:
        raise ConfigError(f"eval batch_tokens={batch_tokens} gives no window per rank "
                          f"(needs >= world_size × seq_len = {world_size * seq_len})")
    tokens = np.asarray(val.tokens)
    raw = None if val.raw_bytes is None else np.asarray(val.raw_bytes)
    check_tokens(tokens, tables, raw)
    w = sliding_windows(tokens, seq_len, stride, doc_aware, bos_id)
    a, b = rank_sequences(len(w), rank, world_size)
    mine = w.take(slice(a, b))
    sink = TargetSink(tokens.shape[0] - 1, device, hints=hints is not None)
    tokens_t = torch.from_numpy(tokens.astype(np.int64))
    hints_t = None if hints is None else torch.from_numpy(np.asarray(hints, dtype=np.int64))
    was_training = model.training
    model.eval()
    try:
        score_windows(model, tokens_t, mine, sink, rows=rows, width=seq_len, device=device, amp_dtype=amp_dtype,
                      pad=pad_batches, hints_t=hints_t, on_batch=on_batch)
    finally:
        model.train(was_training)
    losses, counts, hl = sink.host()
    info = {"method": "sliding", "seq_len": seq_len, "stride": stride, "doc_aware": doc_aware, "windows": len(w)}
    return finish(losses, counts, tokens, raw, tables, expected=None, world_size=world_size, device=device, t0=t0,
                  score=score, what="sliding evaluation", hint_logp=hl, info=info)
