"""The metrics of one evaluation, from exact sums (the maths: :mod:`pgolf.eval.bpb`).

val_loss = Σ CE / T, val_bpb = Σ CE / (ln 2 · Σ B), val_bpb_raw = Σ CE / (ln 2 · Σ R); every method
builds its :class:`EvalResult` through :func:`result_from_sums`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pgolf.errors import ConfigError, DataError

LN2 = math.log(2.0)


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


