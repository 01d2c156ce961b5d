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
[⌊S·r/W⌋, ⌊S·(r+1)/W⌋). All four sums go through one SUM all-reduce.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from pgolf import dist
from pgolf.data.bytetables import ByteTables, stream_token_bytes
from pgolf.errors import ConfigError, DataError
from pgolf.precision import resolve_amp

LN2 = math.log(2.0)


class ValTokens(Protocol):
    """What :func:`evaluate` reads: aligned uint16 tokens and (optionally) raw byte counts."""

    tokens: np.ndarray
    raw_bytes: np.ndarray | None


@dataclass
class EvalResult:
    """Metrics of one evaluation pass, with the exact sums they come from."""

    val_loss: float
    """Mean cross-entropy per scored target, nats."""
    val_bpb: float
    """Bits per byte of normalized text (the challenge's score)."""
    val_bpb_raw: float | None
    """Bits per original UTF-8 byte (tokenizer-agnostic); None without a byte sidecar."""
    tokens: int
    """Scored targets."""
    bytes: int
    """Σ table bytes of the scored targets."""
    bytes_raw: int | None
    """Σ sidecar (original-text) bytes of the scored targets; None without a sidecar."""
    byte_ratio: float | None
    """bytes / bytes_raw (normalized vs original text); None without a sidecar."""
    seconds: float
    """Wallclock of the pass."""
    loss_sum_nats: float
    """Σ cross-entropy in nats (float64), for combining passes."""
    score: str = "table"
    """The bytes ``val_bpb`` divides by: ``table`` or ``sidecar`` (a transformed dataset, e.g. CaseOps:
    then val_bpb = val_bpb_raw, the records' ``val_bpb:byte_sidecar``)."""

    def to_metrics(self) -> dict[str, Any]:
        """The ``metrics.json`` keys of this evaluation (DESIGN.md)."""
        return {
            "val_loss": self.val_loss,
            "val_bpb": self.val_bpb,
            "val_bpb_raw": self.val_bpb_raw,
            "val_tokens": self.tokens,
            "val_bytes": self.bytes,
            "val_bytes_raw": self.bytes_raw,
            "val_byte_ratio": self.byte_ratio,
            "eval_seconds": self.seconds,
            "val_bpb_bytes": self.score,
        }


def loss_from_sums(loss_sum_nats: float, tokens: int) -> float:
    """Mean loss in nats; NaN when nothing was scored."""
    return loss_sum_nats / tokens if tokens > 0 else math.nan


def bpb_from_sums(loss_sum_nats: float, tokens: int, bytes: int) -> float:
    """(Σ CE / ln 2) / bytes, i.e. val_loss / ln 2 × tokens / bytes; NaN when bytes ≤ 0."""
    if tokens <= 0 or bytes <= 0:
        return math.nan
    return loss_sum_nats / (LN2 * bytes)


def result_from_sums(
    loss_sum_nats: float, tokens: int, bytes: int, bytes_raw: int | None = None, seconds: float = 0.0,
    score: str = "table",
) -> EvalResult:
    """Build an :class:`EvalResult` from (already all-reduced) sums; shared by other evaluators.
    ``score="sidecar"``: val_bpb over the original bytes (needs ``bytes_raw``)."""
    if score not in ("table", "sidecar"):
        raise ConfigError(f"score must be table or sidecar, got {score!r}")
    if score == "sidecar" and bytes_raw is None:
        raise DataError("scoring against original bytes needs the validation byte sidecar")
    return EvalResult(
        val_loss=loss_from_sums(loss_sum_nats, tokens),
        val_bpb=bpb_from_sums(loss_sum_nats, tokens, bytes if score == "table" else bytes_raw),
        val_bpb_raw=None if bytes_raw is None else bpb_from_sums(loss_sum_nats, tokens, bytes_raw),
        tokens=int(tokens),
        bytes=int(bytes),
        bytes_raw=None if bytes_raw is None else int(bytes_raw),
        byte_ratio=None if bytes_raw is None else (bytes / bytes_raw if bytes_raw > 0 else math.nan),
        seconds=float(seconds),
        loss_sum_nats=float(loss_sum_nats),
        score=score,
    )


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

    ``model(x, y, reduction="none")`` must return the per-token cross-entropy in nats, [B, L].
    Each rank runs ``batch_tokens // (world_size · seq_len)`` sequences per forward pass. The sums
    are all-reduced when ``world_size`` > 1 and a process group is up. If ``rank`` and
    ``world_size`` are given without a process group, the result covers that rank's share only,
    which is how tests simulate ranks.
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
    if int(tokens[:n_used].max()) >= tables.vocab_size:
        raise DataError(f"validation tokens contain id {int(tokens[:n_used].max())} >= vocab_size {tables.vocab_size}")
    raw = None if val.raw_bytes is None else np.asarray(val.raw_bytes)
    if raw is not None and raw.shape != tokens.shape:
        raise DataError(f"byte sidecar has {raw.shape[0]} entries but the validation stream has {tokens.shape[0]} tokens")

    seq_start, seq_end = rank_sequences(total_seqs, rank, world_size)
    a, b = seq_start * seq_len, seq_end * seq_len  # this rank scores targets u[a+1 .. b]
    # Byte counts do not depend on the model: exact int64 sums over this rank's targets, with
    # two tokens of left context so that every target sees the same context as in the full stream.
    lo = max(a - 1, 0)
    tb = stream_token_bytes(tables, tokens[lo : b + 1])[a + 1 - lo :]
    local_bytes = int(tb.sum(dtype=np.int64))
    local_raw = 0 if raw is None else int(raw[a + 1 : b + 1].sum(dtype=np.int64))

    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
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
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp_dtype == "bf16"):
                    ce = model(x, y, reduction="none")
                if tuple(ce.shape) != tuple(y.shape):
                    raise ValueError(f"model(x, y, reduction='none') returned shape {tuple(ce.shape)}, expected {tuple(y.shape)}")
                loss_sum += ce.to(torch.float64).sum()
    finally:
        model.train(was_training)

    local_tokens = (seq_end - seq_start) * seq_len
    counts = torch.tensor([local_tokens, local_bytes, local_raw], dtype=torch.float64, device=device)
    sums = torch.cat([loss_sum.view(1), counts])
    if world_size > 1:
        dist.all_reduce_(sums, "sum")
    loss_total, n_tok, n_bytes, n_raw = sums.tolist()
    return result_from_sums(
        loss_total,
        int(n_tok),
        int(n_bytes),
        None if raw is None else int(n_raw),
        seconds=time.perf_counter() - t0,
        score=score,
    )
