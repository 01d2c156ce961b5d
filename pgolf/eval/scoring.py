"""Per-target bookkeeping shared by every evaluation method, and the one scoring kernel they call.

Every method (plain, sliding, TTT, the mixer) produces the same thing: for the validation stream
u_0 .. u_{N−1}, a float32 array ``losses[N−1]`` whose entry p−1 is the cross-entropy in nats of
target u_p, and ``counts[N−1]``, how many times this process scored it. From these alone come

- the single-pass check: every target of the method's scored set has count 1, every other 0
  (:func:`check_single_pass`); a method that scores a token twice or forgets one is a bug;
- the sums of :mod:`pgolf.eval.bpb` (``result_from_sums``): Σ CE over the scored targets in float64,
  their number, Σ table bytes B_p and Σ sidecar bytes R_p (exact integers);
- ``--dump-losses`` (:func:`write_losses`): the scored targets in stream order with their loss and both
  byte counts, so anyone recomputes val_bpb = Σ loss / ln 2 / Σ bytes from the file alone. On one
  process the reported loss sum *is* ``np.sum(file["loss"], dtype=float64)``, bit for bit.

With W processes each fills only its own targets; the four sums go through one SUM all-reduce (then
the loss sum agrees with the one-process sum to float64 rounding, not bit for bit).

:func:`score_logits` is the kernel: per-target CE from the model's logits and, when a mixer asks for
it, log p_LM(hint) of a second token per position (:mod:`pgolf.eval.mix`), both from one fp32
log-softmax.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf import dist, fileio
from pgolf.data.bytetables import ByteTables, stream_token_bytes
from pgolf.errors import ConfigError, DataError
from pgolf.eval.result import EvalResult, result_from_sums


@dataclass
class Scored:
    """One method's outcome on this process's share of the stream."""

    losses: np.ndarray
    """float32 [N−1]: CE (nats) of target u_p at index p−1; 0 where this process scored nothing."""
    counts: np.ndarray
    """uint8 [N−1]: how many times this process scored each target (0 or 1 after the check)."""
    result: EvalResult
    """The all-reduced metrics (every process)."""
    hint_logp: np.ndarray | None = None
    """float32 [N−1]: log p_LM(hint_p) where the method was given hints (mixer input), else None; with
    :data:`PATH_HINT` hints float32 [N−1, bits], the targets' path probabilities."""
    info: dict = field(default_factory=dict)
    """What the method did: settings, seconds per phase, budget actions (JSON-able)."""


def target_bytes(tables: ByteTables, tokens: np.ndarray) -> np.ndarray:
    """int32 [N−1]: table bytes B_p of every target u_p (p = 1..N−1) given all tokens before it."""
    return stream_token_bytes(tables, tokens)[1:]


def check_tokens(tokens: np.ndarray, tables: ByteTables, raw: np.ndarray | None, min_tokens: int = 2) -> None:
    """The stream checks every method shares: 1-D, ids below the vocabulary, sidecar aligned."""
    if tokens.ndim != 1:
        raise DataError("validation tokens must be a 1-D stream")
    if tokens.shape[0] < min_tokens:
        raise DataError(f"validation split has {tokens.shape[0]} tokens, too few to score")
    top = int(tokens.max())
    if top >= tables.vocab_size:
        raise DataError(f"validation tokens contain id {top} >= vocab_size {tables.vocab_size}")
    if raw is not None and raw.shape != tokens.shape:
        raise DataError(f"byte sidecar has {raw.shape[0]} entries but the validation stream has {tokens.shape[0]} tokens")


def amp_context(device: torch.device, amp_dtype: str):
    if amp_dtype not in ("bf16", "fp32"):
        raise ConfigError(f"amp_dtype must be auto, bf16 or fp32, got {amp_dtype!r}")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp_dtype == "bf16")


PATH_HINT = -2
"""A hint id that asks for the target's path probabilities instead of log p(hint): p_LM(bit_d = 1 |
prefix_d(y)) for each of the B = ⌈log2 V⌉ bits of y, float32 [.., B] (the context mixer's LM input,
:func:`pgolf.eval.cm.mixer.lm_path_probs`)."""


def score_logits(model: nn.Module, x: Tensor, y: Tensor, hint: Tensor | None = None,
                 adapter=None) -> tuple[Tensor, Tensor | None]:
    """CE [B,T] (fp32 nats) of targets ``y`` for inputs ``x`` [B,T], and log p(hint) [B,T] if ``hint``
    (or, where a hint is :data:`PATH_HINT`, the targets' path probabilities [B,T,bits]).

    Without hint and adapter this is ``model(x, y, reduction="none")`` (any model with that call).
    Otherwise the logits ``model(x[, adapter=...])`` [B,T,V] go through one fp32 log-softmax."""
    if hint is None and adapter is None:
        ce = model(x, y, reduction="none")
        if tuple(ce.shape) != tuple(y.shape):
            raise ValueError(f"model(x, y, reduction='none') returned shape {tuple(ce.shape)}, expected {tuple(y.shape)}")
        return ce, None
    logits = model(x) if adapter is None else model(x, adapter=adapter)
    logp = F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)  # [B,T,V]
    ce = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)  # = cross_entropy(logits, y), the same ops
    if hint is not None and bool((hint == PATH_HINT).any()):
        from pgolf.eval.cm.mixer import lm_path_probs  # behind eval.mix.mode=cm

        return ce, lm_path_probs(logp, y, logp.shape[-1])
    hl = None if hint is None else logp.gather(-1, hint.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return ce, hl


class TargetSink:
    """Collects per-target values on the device; ``put`` never overwrites silently (counts say)."""

    def __init__(self, n_targets: int, device: torch.device, hints: bool = False) -> None:
        self.losses = torch.zeros(n_targets, dtype=torch.float32, device=device)
        self.counts = torch.zeros(n_targets, dtype=torch.int32, device=device)
        self.hint_logp = torch.zeros(n_targets, dtype=torch.float32, device=device) if hints else None

    def put(self, index: Tensor, ce: Tensor, hint_logp: Tensor | None = None) -> None:
        """``index`` int64 [K] = target position − 1; ``ce`` [K]."""
        self.losses.index_put_((index,), ce.detach().float())
        self.counts.index_add_(0, index, torch.ones_like(index, dtype=torch.int32))
        if self.hint_logp is not None and hint_logp is not None:
            if hint_logp.dim() > 1 and self.hint_logp.dim() == 1:  # path probabilities: [targets, bits]
                self.hint_logp = torch.zeros((self.losses.shape[0], hint_logp.shape[1]), dtype=torch.float32,
                                             device=self.losses.device)
            self.hint_logp.index_put_((index,), hint_logp.detach().float())

    def host(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        c = self.counts.cpu().numpy()
        if c.size and int(c.max()) > 255:
            raise RuntimeError("a target was scored more than 255 times")
        hl = None if self.hint_logp is None else self.hint_logp.cpu().numpy()
        return self.losses.cpu().numpy(), c.astype(np.uint8), hl


def check_single_pass(counts: np.ndarray, expected: np.ndarray | slice | None = None, what: str = "method") -> None:
    """Every expected target scored exactly once and nothing else (a bug otherwise, not a user error).
    ``expected``: a bool mask or slice of targets (index p−1); None = all of them."""
    want = np.zeros(counts.shape[0], dtype=bool)
    want[slice(None) if expected is None else expected] = True
    twice = np.flatnonzero(counts > 1)
    if twice.size:
        raise RuntimeError(f"{what}: target at stream position {int(twice[0]) + 1} was scored {int(counts[twice[0]])} times")
    missed = np.flatnonzero(want & (counts == 0))
    if missed.size:
        raise RuntimeError(f"{what}: {missed.size} targets were never scored (first at stream position {int(missed[0]) + 1})")
    extra = np.flatnonzero(~want & (counts > 0))
    if extra.size:
        raise RuntimeError(f"{what}: target at stream position {int(extra[0]) + 1} was scored outside the method's set")


def finish(losses: np.ndarray, counts: np.ndarray, tokens: np.ndarray, raw: np.ndarray | None,
           tables: ByteTables, *, expected: np.ndarray | slice | None, world_size: int, device: torch.device,
           t0: float, score: str, what: str, hint_logp: np.ndarray | None = None,
           info: dict | None = None) -> Scored:
    """Check this process's counts, sum its scored targets, all-reduce the sums (W > 1 with a process
    group up) and build the :class:`Scored`. One process: the whole single-pass check."""
    if world_size == 1:
        check_single_pass(counts, expected, what)
    elif int(counts.max(initial=0)) > 1:
        p = int(np.flatnonzero(counts > 1)[0]) + 1
        raise RuntimeError(f"{what}: target at stream position {p} was scored twice on one rank")
    mask = counts > 0
    loss_sum = float(np.sum(losses[mask], dtype=np.float64))
    n_bytes = int(target_bytes(tables, tokens)[mask].sum(dtype=np.int64))
    n_raw = 0 if raw is None else int(np.asarray(raw)[1:][mask].sum(dtype=np.int64))
    sums = torch.tensor([loss_sum, float(mask.sum()), float(n_bytes), float(n_raw)], dtype=torch.float64, device=device)
    if world_size > 1 and dist.is_initialized():
        dist.all_reduce_(sums, "sum")
        want = np.zeros(counts.shape[0], dtype=bool)
        want[slice(None) if expected is None else expected] = True
        if int(sums[1].item()) != int(want.sum()):
            raise RuntimeError(f"{what}: the ranks scored {int(sums[1].item())} targets, expected {int(want.sum())}")
    total, n_tok, nb, nr = sums.tolist()
    result = result_from_sums(total, int(n_tok), int(nb), None if raw is None else int(nr),
                              seconds=time.perf_counter() - t0, score=score)
    return Scored(losses=losses, counts=counts, result=result, hint_logp=hint_logp, info=dict(info or {}))


def gathered(scored: Scored, device: torch.device) -> Scored:
    """The whole stream's per-target arrays (losses, counts and, when recorded, log p(hint)) on every rank:
    each target was scored by exactly one rank, so the SUM all-reduce is exact. The metrics stay the
    all-reduced ones. A collective under torchrun; the input itself on one process."""
    if not dist.is_initialized() or dist.world_size() == 1:
        return scored
    losses = torch.from_numpy(scored.losses).to(device)
    counts = torch.from_numpy(scored.counts.astype(np.int32)).to(device)
    dist.all_reduce_(losses, "sum")
    dist.all_reduce_(counts, "sum")
    hl = None
    if scored.hint_logp is not None:
        h = torch.from_numpy(scored.hint_logp).to(device)
        dist.all_reduce_(h, "sum")
        hl = h.cpu().numpy()
    c = counts.cpu().numpy()
    check_single_pass(c, c > 0, "gathered evaluation")
    return Scored(losses=losses.cpu().numpy(), counts=c.astype(np.uint8), result=scored.result,
                  hint_logp=hl, info=scored.info)


def loss_table(scored: Scored, tokens: np.ndarray, tables: ByteTables, raw: np.ndarray | None) -> np.ndarray:
    """The scored targets in stream order as a structured array: ``pos`` (stream position p), ``token``
    (u_p), ``loss`` (float32 nats), ``bytes`` (table bytes B_p) and, with a sidecar, ``raw_bytes`` (R_p)."""
    idx = np.flatnonzero(scored.counts > 0)
    fields = [("pos", np.int64), ("token", np.int32), ("loss", np.float32), ("bytes", np.int32)]
    if raw is not None:
        fields.append(("raw_bytes", np.int32))
    out = np.zeros(idx.size, dtype=fields)
    out["pos"] = idx + 1
    out["token"] = np.asarray(tokens)[idx + 1]
    out["loss"] = scored.losses[idx]
    out["bytes"] = target_bytes(tables, tokens)[idx]
    if raw is not None:
        out["raw_bytes"] = np.asarray(raw)[idx + 1]
    return out


def write_losses(path: str | Path, table: np.ndarray) -> None:
    """Write :func:`loss_table` as ``.npy`` (temp file + rename). Load with ``np.load(path)``."""
    import io

    buf = io.BytesIO()
    np.save(buf, table, allow_pickle=False)
    fileio.write_bytes(Path(path), buf.getvalue())
