"""Exact validation metrics: loss in nats, and bits per byte of normalized and of raw text.

Source: the challenge's ``eval_val`` (root ``train_gpt.py`` of openai/parameter-golf, baseline
record [03-17b]; CATALOGUE §1.2). The raw-byte sidecar comes from the CaseOps records ([04-18],
PR #1729, CATALOGUE §2.7). Style follows nanochat ``loss_eval.py``.

The maths. The validation stream u_0 .. u_{N-1} is truncated to M = ⌊(N−1)/L⌋·L + 1 tokens and
cut into S = ⌊(N−1)/L⌋ non-overlapping sequences. Sequence i has inputs x = u[iL : (i+1)L] and
targets y = u[iL+1 : (i+1)L+1], so every target u_p, p = 1 .. M−1, is scored exactly once,
with context u[iL .. p−1]. Over all scored targets:

    val_loss     = Σ CE_p / T                     CE in nats, T = M − 1 = S·L targets
    val_bpb      = (Σ CE_p / ln 2) / Σ B_p        B_p = table bytes of u_p after u_{p−1}
                 = val_loss / ln 2 × T / Σ B_p    (the challenge's formula)
    val_bpb_raw  = (Σ CE_p / ln 2) / Σ R_p        R_p = u_p's share of its document's original
                                                  UTF-8 bytes (the val byte sidecar; BOS = 0)
    byte_ratio   = Σ B_p / Σ R_p

B_p comes from :mod:`pgolf.data.bytetables`. It counts bytes of the tokenizer's normalized
text, so it depends on the tokenizer: NFKC, folded whitespace, and any user-defined pieces such
as CaseOps' operator characters. R_p counts the original text, so it does not: val_bpb_raw is
the figure to compare across tokenizers. Without a sidecar the raw figures are None.

Exactness. Each CE_p is the model's fp32 (or wider) value. The sums are kept in float64 on the
device. T, Σ B_p and Σ R_p are integers, computed exactly in int64 and carried as float64
(exact below 2^53). The S sequences are split into contiguous runs, one per rank:
[⌊S·r/W⌋, ⌊S·(r+1)/W⌋). All four sums go through one SUM all-reduce. W ranks vs one: every
target's CE is the same computation on the same sequence, only in a batch of other rows (equal bit
for bit in tests/test_eval_dist.py; a BLAS that picks kernels by batch size could move float32
rounding); the sums then differ by float64 addition order only.

The per-target CE values are kept (:func:`evaluate_scored`, :mod:`pgolf.eval.scoring`): Σ CE is the
float64 sum of exactly the float32 values ``--dump-losses`` writes, and every target of the M − 1
is checked to be scored exactly once.
"""

from __future__ import annotations

import time
from typing import Protocol

import numpy as np
import torch
from torch import nn

from pgolf import dist
from pgolf.data.bytetables import ByteTables
from pgolf.errors import ConfigError, DataError
from pgolf.eval.result import (  # noqa: F401  (the metrics live there; re-exported here)
    LN2,
    EvalResult,
    bpb_from_sums,
    loss_from_sums,
    result_from_sums,
)
from pgolf.eval.scoring import TargetSink, check_tokens, finish
from pgolf.precision import resolve_amp


class ValTokens(Protocol):
    """What :func:`evaluate` reads: aligned uint16 tokens and (optionally) raw byte counts."""

    tokens: np.ndarray
    raw_bytes: np.ndarray | None


def num_eval_sequences(n_tokens: int, seq_len: int) -> int:
    """S = ⌊(N−1)/L⌋: the non-overlapping sequences of a stream of N tokens."""
    return max(n_tokens - 1, 0) // seq_len


def rank_sequences(total_seqs: int, rank: int, world_size: int) -> tuple[int, int]:
    """The contiguous run [start, end) of sequences scored by ``rank``. The runs of all ranks
    partition range(total_seqs), and their lengths differ by at most one."""
    return (total_seqs * rank) // world_size, (total_seqs * (rank + 1)) // world_size


def evaluate(
    model: nn.Module,
    val: ValTokens,
    tables: ByteTables,
    *,
    seq_len: int,
    batch_tokens: int,
    device: torch.device | str,
    amp_dtype: str = "bf16",
    rank: int | None = None,
    world_size: int | None = None,
    score: str = "table",
) -> EvalResult:
    """Score the validation stream in non-overlapping ``seq_len`` windows (the baseline's eval).
    ``score``: the bytes val_bpb divides by (``table`` or ``sidecar``; :attr:`EvalResult.score`).
    :func:`evaluate_scored` with the per-target losses; this returns only the metrics."""
    return evaluate_scored(model, val, tables, seq_len=seq_len, batch_tokens=batch_tokens, device=device,
                           amp_dtype=amp_dtype, rank=rank, world_size=world_size, score=score).result


def evaluate_scored(
    model: nn.Module,
    val: ValTokens,
    tables: ByteTables,
    *,
    seq_len: int,
    batch_tokens: int,
    device: torch.device | str,
    amp_dtype: str = "bf16",
    rank: int | None = None,
    world_size: int | None = None,
    score: str = "table",
    pad_batches: bool = False,
):
    """The plain evaluation as a :class:`pgolf.eval.scoring.Scored` (per-target losses and counts).

    ``model(x, y, reduction="none")`` must return the per-token cross-entropy in nats, [B, L].
    Each rank runs ``batch_tokens // (world_size · seq_len)`` sequences per forward pass. The sums
    are all-reduced when ``world_size`` > 1 and a process group is up. If ``rank`` and
    ``world_size`` are given without a process group, the result covers that rank's share only,
    which is how tests simulate ranks. ``pad_batches``: a short last batch is padded with zero rows
    (one input shape for a compiled model; the padding is not scored).
    """
    t0 = time.perf_counter()
    rank = dist.rank() if rank is None else rank
    world_size = dist.world_size() if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} out of range for world_size {world_size}")
    if amp_dtype == "auto":
        amp_dtype = resolve_amp("auto", device).dtype
    if amp_dtype not in ("bf16", "fp32"):
        raise ConfigError(f"amp_dtype must be auto, bf16 or fp32, got {amp_dtype!r}")
    if seq_len < 1:
        raise ConfigError(f"eval seq_len must be >= 1, got {seq_len}")
    batch_seqs = batch_tokens // (world_size * seq_len)
    if batch_seqs < 1:
        raise ConfigError(
            f"eval batch_tokens={batch_tokens} gives no sequence per rank "
            f"(needs >= world_size × seq_len = {world_size * seq_len})"
        )
    device = torch.device(device)

    tokens = np.asarray(val.tokens)
    if tokens.ndim != 1:
        raise DataError("validation tokens must be a 1-D stream")
    total_seqs = num_eval_sequences(tokens.shape[0], seq_len)
    if total_seqs == 0:
        raise DataError(f"validation split has {tokens.shape[0]} tokens, too few for seq_len={seq_len}")
    n_used = total_seqs * seq_len + 1
    raw = None if val.raw_bytes is None else np.asarray(val.raw_bytes)
    check_tokens(tokens[:n_used], tables, None)
    if raw is not None and raw.shape != tokens.shape:
        raise DataError(f"byte sidecar has {raw.shape[0]} entries but the validation stream has {tokens.shape[0]} tokens")

    seq_start, seq_end = rank_sequences(total_seqs, rank, world_size)
    sink = TargetSink(tokens.shape[0] - 1, device)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for s in range(seq_start, seq_end, batch_seqs):
                e = min(s + batch_seqs, seq_end)
                chunk = torch.from_numpy(tokens[s * seq_len : e * seq_len + 1].astype(np.int64))
                chunk = chunk.to(device, non_blocking=True)
                x = chunk[:-1].view(-1, seq_len)  # [B, L]
                y = chunk[1:].view(-1, seq_len)  # [B, L]
                rows = x.shape[0]
                if pad_batches and rows < batch_seqs:
                    x = torch.cat([x, x.new_zeros(batch_seqs - rows, seq_len)])
                    y = torch.cat([y, y.new_zeros(batch_seqs - rows, seq_len)])
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp_dtype == "bf16"):
                    ce = model(x, y, reduction="none")
                if tuple(ce.shape) != tuple(y.shape):
                    raise ValueError(f"model(x, y, reduction='none') returned shape {tuple(ce.shape)}, expected {tuple(y.shape)}")
                index = torch.arange(s * seq_len, e * seq_len, device=device)  # target position − 1
                sink.put(index, ce[:rows].reshape(-1))
    finally:
        model.train(was_training)
    losses, counts, _ = sink.host()
    return finish(losses, counts, tokens, raw, tables, expected=slice(0, total_seqs * seq_len), world_size=world_size,
                  device=device, t0=t0, score=score, what="plain evaluation",
                  info={"method": "plain", "seq_len": seq_len})
