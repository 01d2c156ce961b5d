"""The score of a masked diffusion LM (``model.objective=mdlm``): a variational upper bound, ``val_var_bpb``.

Sources: MDLM, Sahoo et al. 2024 (arXiv:2406.07524) §3.2 (the continuous-time ELBO); LLaDA, Nie et al. 2025
(its likelihood estimator: a uniform number of masked tokens, weight L/k); the non-record
``2026-03-29_LLaDA_MDLM_Diffusion`` (``val_var_bpb`` 1.1465, a 512-step discrete ELBO over 500 sequences with
an assumed 4.3 bytes per token; here the bytes are the exact scorer's).

What is scored. The validation stream is cut as the exact scorer cuts it (:mod:`pgolf.eval.bpb`): S =
⌊(N−1)/L⌋ sequences, sequence s = the targets u[sL+1 : (s+1)L+1] — the same T = S·L targets, so the same bytes
Σ B_p (byte tables) and Σ R_p (sidecar). Each sequence x is scored alone (no context before it) by the MDLM
bound on −log p(x) (:mod:`pgolf.model.mdlm`, linear schedule α_t = 1 − t):

    NELBO(x) = ∫₀¹ (1/t) E_{M ~ Bernoulli(t)^L} [ Σ_{i∈M} ℓ_i(M) ] dt,   ℓ_i(M) = −log p_θ(x_i | x with M masked)
             = Σ_{M ≠ ∅} w(|M|) Σ_{i∈M} ℓ_i(M),   w(k) = ∫₀¹ t^{k−1} (1−t)^{L−k} dt = 1 / (k·C(L, k))

The estimator (LLaDA's): draw k uniform on {1..L}, then M uniform among the C(L, k) subsets of size k, and take

    f = (L/k) · Σ_{i∈M} ℓ_i(M)           E[f] = Σ_k (1/L) Σ_{|M|=k} (1/C(L,k)) (L/k) Σ ℓ = NELBO(x)   (unbiased)

one forward pass per draw. With n = ``eval.var_samples`` draws per sequence (masks from (``eval.var_seed``, s,
j) alone, so any batching or rank count draws the same masks), the bound of the split and its estimator:

    B̂ = Σ_s f̄_s            (nats; f̄_s the mean of sequence s's n draws)
    Var(B̂) = Σ_s σ_s² / n,   estimated by Σ_s v_s / n   (v_s the unbiased sample variance of s's draws)
    val_var_loss = B̂ / T        val_var_bpb = B̂ / (ln 2 · Σ B_p)        val_var_bpb_se = √(Σ_s v_s / n) / (ln 2 · Σ B_p)

(``val_var_bpb_raw`` and its standard error divide by Σ R_p instead; for a transformed dataset such as CaseOps
``val_var_bpb`` is over the original bytes, as val_bpb is.) B̂ is unbiased for the bound of the split, and the
bound is ≥ the model's true code length −log₂ p(x) of every sequence (Jensen; enumerated exactly in
``tests/test_mdlm.py``), so val_var_bpb over-states the bits per byte in expectation — but it is an estimate:
its standard error is reported beside it and in the log line, with the number of samples. Never val_bpb,
which is exact. Cost: n plain evaluations. Ranks: the sequences are split in contiguous runs as the exact
scorer splits them, the two sums all-reduced (each sequence's draws do not depend on the rank).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from pgolf import dist
from pgolf.data.bytetables import ByteTables, stream_token_bytes
from pgolf.errors import ConfigError, DataError
from pgolf.eval.bpb import ValTokens, num_eval_sequences, rank_sequences
from pgolf.precision import resolve_amp

NEEDED_WHEN = "model.objective == 'mdlm'"

LN2 = math.log(2.0)
ESTIMATOR = "mdlm_elbo_uniform_k"
"""The estimator's name in metrics.json (module docstring: k uniform on 1..L, a uniform k-subset, weight L/k)."""


@dataclass
class BoundResult:
    """The variational bound of one evaluation (module docstring), with the sums it comes from."""

    bound_nats: float
    """B̂ = Σ_s f̄_s: the estimated bound of the split, nats."""
    var_nats2: float
    """Σ_s v_s / n: the estimated variance of B̂, nats²."""
    samples: int
    sequences: int
    seq_len: int
    tokens: int
    bytes: int
    bytes_raw: int | None
    seconds: float
    seed: int
    score: str = "table"

    def _per_byte(self, value: float, raw: bool = False) -> float | None:
        b = self.bytes_raw if (raw or self.score == "sidecar") else self.bytes
        return None if b is None or b <= 0 else value / (LN2 * b)

    @property
    def val_var_loss(self) -> float:
        return self.bound_nats / self.tokens

    @property
    def val_var_bpb(self) -> float:
        return self._per_byte(self.bound_nats)  # type: ignore[return-value]

    @property
    def val_var_bpb_se(self) -> float:
        return self._per_byte(math.sqrt(self.var_nats2))  # type: ignore[return-value]

    def to_metrics(self) -> dict[str, Any]:
        """The ``metrics.json`` keys of this bound: ``val_var_*`` (never ``val_bpb``/``val_loss``), and the
        validation set's ``val_tokens``/``val_bytes``/``val_bytes_raw`` as the exact scorer writes them."""
        raw = self._per_byte(self.bound_nats, raw=True) if self.bytes_raw is not None else None
        raw_se = self._per_byte(math.sqrt(self.var_nats2), raw=True) if self.bytes_raw is not None else None
        return {
            "val_var_loss": self.val_var_loss,
            "val_var_bpb": self.val_var_bpb,
            "val_var_bpb_se": self.val_var_bpb_se,
            "val_var_bpb_raw": raw,
            "val_var_bpb_raw_se": raw_se,
            "val_var_samples": self.samples,
            "val_var_seed": self.seed,
            "val_var_estimator": ESTIMATOR,
            "val_var_bpb_bytes": self.score,
            "val_tokens": self.tokens,
            "val_bytes": self.bytes,
            "val_bytes_raw": self.bytes_raw,
            "val_sequences": self.sequences,
            "eval_seconds": self.seconds,
        }

    def line(self, tag: str, seconds: float | None = None) -> str:
        """The log line: ``TAG val_var_loss:… val_var_bpb:… val_var_bpb_se:… samples:n …`` — a bound with its
        standard error, in names the challenge's log readers never take for val_bpb."""
        raw = self._per_byte(self.bound_nats, raw=True) if self.bytes_raw is not None else None
        s = self.seconds if seconds is None else seconds
        return (f"{tag} val_var_loss:{self.val_var_loss:.8f} val_var_bpb:{self.val_var_bpb:.8f} "
                f"val_var_bpb_se:{self.val_var_bpb_se:.8f} val_var_bpb_raw:{'n/a' if raw is None else f'{raw:.8f}'} "
                f"samples:{self.samples} seqs:{self.sequences} estimator:{ESTIMATOR} eval_time:{1000 * s:.0f}ms")


def sample_masks(seqs: np.ndarray, sample: int, seq_len: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The masks of draw ``sample`` for the sequences ``seqs`` (global indices): (masked bool [n, L], k int
    [n]), k uniform on 1..L and the masked set a uniform k-subset; each row depends only on (seed, s, sample)."""
    masked = np.zeros((len(seqs), seq_len), dtype=bool)
    ks = np.zeros(len(seqs), dtype=np.int64)
    for r, s in enumerate(seqs):
        rng = np.random.default_rng([seed, int(s), sample])
        k = int(rng.integers(1, seq_len + 1))
        masked[r, np.argsort(rng.random(seq_len), kind="stable")[:k]] = True
        ks[r] = k
    return masked, ks


def estimates(model: nn.Module, clean: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """f = (L/k)·Σ_{i∈M} −log p_θ(x_i | x with M masked) per row (float64 [n]; module docstring) of the clean
    sequences [n, L] under the masks [n, L] (every row with k ≥ 1 masked)."""
    from pgolf.model.mdlm import masked_nll

    nll = masked_nll(model, clean, masked).double()  # [n, L]
    k = masked.sum(dim=1).double()
    if bool((k == 0).any()):
        raise ValueError("every row needs at least one masked position")
    return nll.sum(dim=1) * (clean.size(1) / k)


def variational_bound(
    model: nn.Module,
    val: ValTokens,
    tables: ByteTables,
    *,
    seq_len: int,
    batch_tokens: int,
    samples: int,
    seed: int,
    mask_id: int,
    device: torch.device | str,
    amp_dtype: str = "bf16",
    rank: int | None = None,
    world_size: int | None = None,
    score: str = "table",
) -> BoundResult:
    """The bound of the validation stream (module docstring). ``model`` is an MDLM GPT; ``mask_id`` its [MASK]
    id, which no scored token may be (DataError). Ranks as :func:`pgolf.eval.bpb.evaluate_scored`: with
    ``rank``/``world_size`` but no process group, the result covers that rank's share of the sequences."""
    t0 = time.perf_counter()
    rank = dist.rank() if rank is None else rank
    world_size = dist.world_size() if world_size is None else world_size
    if samples < 2:
        raise ConfigError("eval.var_samples must be >= 2 (the bound's standard error needs two samples)")
    if amp_dtype == "auto":
        amp_dtype = resolve_amp("auto", device).dtype
    batch_seqs = batch_tokens // (world_size * seq_len)
    if batch_seqs < 1:
        raise ConfigError(f"eval batch_tokens={batch_tokens} gives no sequence per rank (needs >= {world_size * seq_len})")
    if score not in ("table", "sidecar"):
        raise ConfigError(f"score must be table or sidecar, got {score!r}")
    device = torch.device(device)
    tokens = np.asarray(val.tokens)
    total = num_eval_sequences(tokens.shape[0], seq_len)
    if total == 0:
        raise DataError(f"validation split has {tokens.shape[0]} tokens, too few for seq_len={seq_len}")
    targets = tokens[1 : total * seq_len + 1]
    if (hit := np.flatnonzero(targets == mask_id)).size:
        raise DataError(f"validation token {int(hit[0]) + 1} is id {mask_id}, the [MASK] id of this MDLM "
                        "(model.mdlm_mask_id): choose an id the data never holds")
    if int(targets.max()) >= tables.vocab_size:
        raise DataError(f"validation token id {int(targets.max())} is outside the vocabulary of {tables.vocab_size}")
    n_bytes = int(stream_token_bytes(tables, tokens[: total * seq_len + 1])[1:].sum())
    raw = None if val.raw_bytes is None else int(np.asarray(val.raw_bytes)[1 : total * seq_len + 1].astype(np.int64).sum())
    if score == "sidecar" and raw is None:
        raise DataError("scoring against original bytes needs the validation byte sidecar")

    start, end = rank_sequences(total, rank, world_size)
    draws = np.zeros((end - start, samples), dtype=np.float64)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for s in range(start, end, batch_seqs):
                e = min(s + batch_seqs, end)
                clean = torch.from_numpy(targets[s * seq_len : e * seq_len].astype(np.int64)).view(-1, seq_len).to(device)
                for j in range(samples):
                    masked, _ = sample_masks(np.arange(s, e), j, seq_len, seed)
                    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp_dtype == "bf16"):
                        f = estimates(model, clean, torch.from_numpy(masked).to(device))
                    draws[s - start : e - start, j] = f.cpu().numpy()
    finally:
        model.train(was_training)
    sums = torch.tensor([draws.mean(axis=1).sum(), (draws.var(axis=1, ddof=1) / samples).sum()],
                        dtype=torch.float64, device=device)
    if world_size > 1 and dist.world_size() > 1:
        dist.all_reduce_(sums)
    bound, var = (float(v) for v in sums.tolist())
    return BoundResult(bound_nats=bound, var_nats2=var, samples=samples, sequences=total, seq_len=seq_len,
                       tokens=total * seq_len, bytes=n_bytes, bytes_raw=raw, seconds=time.perf_counter() - t0,
                       seed=seed, score=score)


def score_bound(model: nn.Module, cfg: Any, data: Any, device: torch.device, amp_dtype: str) -> BoundResult:
    """:func:`variational_bound` of ``model`` on ``data.val`` with the run's settings (``eval.seq_len`` or
    ``train.seq_len``, ``eval.batch_tokens``, ``eval.var_samples``/``var_seed``, ``model.mdlm_mask_id``), the
    model compiled where ``eval.compile`` says so (as the exact scorer's)."""
    from pgolf.compile import compile_model
    from pgolf.compile import resolve as resolve_compile

    model.eval()
    if resolve_compile(cfg.eval.compile, device)[0]:
        model = compile_model(model)
    return variational_bound(model, data.val, data.tables, seq_len=cfg.eval_seq_len,
                             batch_tokens=cfg.eval.batch_tokens, samples=cfg.eval.var_samples, seed=cfg.eval.var_seed,
                             mask_id=cfg.model.mdlm_mask_id, device=device, amp_dtype=amp_dtype, score=data.score)
