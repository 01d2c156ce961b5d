"""Sliding-window evaluation (pgolf.eval.sliding, pgolf.eval.windows).

At stride = context it is exactly the plain evaluation (same per-target losses, same sums); at every
stride each target is scored exactly once with the longest context its window allows (never past its
document's BOS when document-aware), each loss equals a float64 brute force on exactly that context,
and simulated ranks partition the work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pgolf.config import apply_overrides
from pgolf.data.bytetables import ByteTables
from pgolf.eval.bpb import evaluate_scored
from pgolf.eval.sliding import evaluate_sliding, sliding_windows
from pgolf.eval.windows import plan, spans
from pgolf.model.gpt import GPT
from pgolf.presets import get_preset

pytestmark = pytest.mark.usefixtures("one_thread")
BOS = 1


@dataclass
class Val:
    tokens: np.ndarray
    raw_bytes: np.ndarray | None


class MeanLM(nn.Module):
    """Embedding → causal running mean → linear (float64): the prediction at t depends on every input
    of its window, so a wrong context changes the loss."""

    def __init__(self, vocab: int, dim: int = 6, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = nn.Embedding(vocab, dim, dtype=torch.float64)
        self.head = nn.Linear(dim, vocab, dtype=torch.float64)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))

    def forward(self, idx, targets=None, reduction="mean"):
        h = self.emb(idx).cumsum(1) / torch.arange(1, idx.shape[1] + 1, dtype=torch.float64)[:, None]
        logits = self.head(h)
        if targets is None:
            return logits
        ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(idx.shape)
        return ce if reduction == "none" else ce.mean()


def _stream(n: int, V: int = 40, seed: int = 0, bos_rate: float = 0.04) -> tuple[Val, ByteTables]:
    rng = np.random.default_rng(seed)
    tok = rng.integers(3, V, n).astype(np.uint16)
    tok[rng.random(n) < bos_rate] = BOS
    tok[0] = BOS
    base = rng.integers(1, 4, V).astype(np.int32)
    space = rng.random(V) < 0.5
    boundary = np.zeros(V, bool)
    boundary[[0, 1, 2]] = True
    base[boundary] = 0
    space[boundary] = False
    raw = rng.integers(0, 5, n).astype(np.uint16)
    raw[tok == BOS] = 0
    return Val(tok, raw), ByteTables(base, space, boundary, None)


def _gpt(vocab: int = 40, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    cfg = apply_overrides(get_preset("tiny"), [f"model.vocab_size={vocab}"])
    m = GPT(cfg.model)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))  # zero-init projections would hide the attention
    return m.eval()


@pytest.mark.parametrize("model_kind", ["mean", "gpt"])
def test_stride_equal_to_context_is_the_plain_evaluation(model_kind: str) -> None:
    L = 16
    val, tables = _stream(L * 23 + 1)  # (N − 1) divisible by L: plain scores every target too
    model = MeanLM(tables.vocab_size) if model_kind == "mean" else _gpt(tables.vocab_size)
    kw = dict(batch_tokens=5 * L, device="cpu", amp_dtype="fp32")
    plain = evaluate_scored(model, val, tables, seq_len=L, **kw)
    slide = evaluate_sliding(model, val, tables, seq_len=L, stride=L, **kw)
    np.testing.assert_array_equal(plain.counts, slide.counts)
    np.testing.assert_array_equal(plain.losses, slide.losses)  # bit for bit
    for f in ("loss_sum_nats", "tokens", "bytes", "bytes_raw", "val_bpb", "val_bpb_raw"):
        assert getattr(plain.result, f) == getattr(slide.result, f), f


def _context_of(w, n_tokens: int) -> np.ndarray:
    """Input start of the window that scored each target (index p − 1); −1 if none."""
    out = np.full(n_tokens - 1, -1, np.int64)
    pos = w.scored_positions()
    starts = np.repeat(w.start, w.hi - w.lo)
    assert np.all(out[pos - 1] == -1), "a target in two windows"
    out[pos - 1] = starts
    return out


@pytest.mark.parametrize("stride", [1, 3, 5, 16])
@pytest.mark.parametrize("doc_aware", [False, True])
def test_every_target_once_with_the_longest_context(stride: int, doc_aware: bool) -> None:
    L = 16
    val, _ = _stream(301, seed=stride)
    tok = val.tokens
    w = sliding_windows(tok, L, stride, doc_aware, BOS)
    ctx_start = _context_of(w, len(tok))
    assert np.all(ctx_start >= 0)  # every target scored
    assert w.targets() == len(tok) - 1  # and only once
    p = np.arange(1, len(tok))
    doc0 = np.maximum.accumulate(np.where(tok[:-1] == BOS, np.arange(len(tok) - 1), 0))  # BOS at or before p − 1
    span0 = doc0 if doc_aware else np.zeros_like(p)
    assert np.all(ctx_start >= span0)  # never reads before its span (its document's BOS)
    ctx = p - ctx_start
    assert np.all(ctx <= L)
    # the longest the window allows: all of the span's prefix, or at least L − stride + 1 tokens
    assert np.all(ctx >= np.minimum(p - span0, L - stride + 1))
    assert np.all(ctx[p - span0 <= L] == (p - span0)[p - span0 <= L])  # the first window scores from the span start


def test_losses_equal_a_float64_brute_force_on_that_context() -> None:
    L, stride = 12, 4
    val, tables = _stream(200, seed=3)
    model = MeanLM(tables.vocab_size)
    for doc_aware in (False, True):
        s = evaluate_sliding(model, val, tables, seq_len=L, stride=stride, doc_aware=doc_aware, batch_tokens=3 * L,
                             device="cpu", amp_dtype="fp32")
        ctx_start = _context_of(sliding_windows(val.tokens, L, stride, doc_aware, BOS), len(val.tokens))
        E, W, b = (t.detach().numpy() for t in (model.emb.weight, model.head.weight, model.head.bias))
        for p in range(1, len(val.tokens)):
            h = E[val.tokens[ctx_start[p - 1] : p]].mean(0)
            z = W @ h + b
            ref = z.max() + math.log(np.exp(z - z.max()).sum()) - z[val.tokens[p]]
            assert abs(float(s.losses[p - 1]) - ref) <= 1e-6 * max(1.0, ref)  # stored as float32
        tb = tables.base_bytes[val.tokens[1:]] + (tables.has_leading_space[val.tokens[1:]]
                                                    & ~tables.is_boundary[val.tokens[:-1]])
        assert s.result.bytes == int(tb.sum()) and s.result.bytes_raw == int(val.raw_bytes[1:].sum())
        assert s.result.tokens == len(val.tokens) - 1


@pytest.mark.parametrize("world", [2, 3, 7])
def test_simulated_ranks_partition_the_windows(world: int) -> None:
    L = 8
    val, tables = _stream(157, seed=world)
    model = MeanLM(tables.vocab_size)
    one = evaluate_sliding(model, val, tables, seq_len=L, stride=3, batch_tokens=4 * L, device="cpu", amp_dtype="fp32")
    parts = [evaluate_sliding(model, val, tables, seq_len=L, stride=3, batch_tokens=world * 2 * L, device="cpu",
                              amp_dtype="fp32", rank=r, world_size=world) for r in range(world)]
    counts = sum(p.counts.astype(np.int64) for p in parts)
    assert np.all(counts == 1)
    np.testing.assert_array_equal(sum(p.losses for p in parts), one.losses)  # each value from exactly one rank
    assert sum(p.result.tokens for p in parts) == one.result.tokens
    assert sum(p.result.bytes for p in parts) == one.result.bytes
    assert math.isclose(math.fsum(p.result.loss_sum_nats for p in parts), one.result.loss_sum_nats, rel_tol=1e-12)


def test_hint_log_probabilities_and_padding() -> None:
    L = 8
    val, tables = _stream(90, seed=5)
    model = MeanLM(tables.vocab_size)
    rng = np.random.default_rng(0)
    hints = rng.integers(-1, tables.vocab_size, len(val.tokens) - 1)
    a = evaluate_sliding(model, val, tables, seq_len=L, stride=2, batch_tokens=3 * L, device="cpu", amp_dtype="fp32",
                         hints=hints)
    b = evaluate_sliding(model, val, tables, seq_len=L, stride=2, batch_tokens=3 * L, device="cpu", amp_dtype="fp32",
                         pad_batches=True)
    np.testing.assert_array_equal(a.losses, b.losses)  # padded rows change nothing; the logits path neither
    ctx_start = _context_of(sliding_windows(val.tokens, L, 2), len(val.tokens))
    for p in range(1, len(val.tokens), 7):
        x = torch.from_numpy(val.tokens[ctx_start[p - 1] : p].astype(np.int64))[None]
        with torch.no_grad():
            lp = torch.log_softmax(model(x)[0, -1], -1)
        if hints[p - 1] >= 0:
            assert abs(float(a.hint_logp[p - 1]) - float(lp[hints[p - 1]])) < 1e-6


def test_plan_grid_is_positional() -> None:
    """The windows depend on span starts and lengths only, and a longer span only adds windows."""
    short = plan(np.array([0]), np.array([50]), 16, 16, 5)
    long = plan(np.array([0]), np.array([90]), 16, 16, 5)
    n = len(short)
    for f in ("start", "width", "lo"):
        np.testing.assert_array_equal(getattr(short, f)[:-1], getattr(long, f)[: n - 1])
    s, n_t = spans(np.array([1, 5, 5, 1, 1, 7, 1], np.uint16), BOS, True)
    assert s.tolist() == [0, 3, 4] and n_t.tolist() == [3, 1, 2]  # the last BOS is the last target of its document
