"""``optim``: learning rates, Muon and Adam settings, weight decay (CATALOGUE §1.4)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pgolf.config.overrides import _check


@dataclass
class OptimConfig:
    """Muon on 2-D block matrices, Adam on embeddings and scalars (CATALOGUE §1.4)."""

    matrix_lr: float = 0.04
    """Muon learning rate for 2-D block matrices."""
    scalar_lr: float = 0.04
    """Adam learning rate for vectors, scalars, control tensors and skip weights."""
    tied_embed_lr: float = 0.05
    """Adam learning rate for the tied embedding."""
    embed_lr: float = 0.6
    """Adam learning rate for the input embedding when untied."""
    head_lr: float = 0.008
    """Adam learning rate for the output head when untied."""
    muon_momentum: float = 0.95
    muon_momentum_warmup_start: float = 0.85
    muon_momentum_warmup_steps: int = 500
    """Muon momentum rises linearly from ``muon_momentum_warmup_start`` over this many steps."""
    muon_momentum_warmup_frac: float = 0.0
    """If > 0: the warm-up spans this fraction of the run instead of a step count (so a record's
    1,500 of ~4,900 steps ≈ 0.3 transfers to a 600-step CPU run). 0 = ``muon_momentum_warmup_steps``."""
    muon_backend_steps: int = 5
    """Newton–Schulz iterations."""
    muon_nesterov: bool = True
    beta1: float = 0.9
    beta2: float = 0.95
    adam_eps: float = 1e-8
    embed_betas: tuple[float, ...] | None = None
    """Adam (β1, β2) of the embedding group alone (None = ``(beta1, beta2)``). The records share one pair
    across groups ([04-27a]: β2 0.99 everywhere); modded-nanogpt gives its embeddings their own."""
    head_betas: tuple[float, ...] | None = None
    """Adam (β1, β2) of the untied head alone (None = ``(beta1, beta2)``)."""
    scalar_betas: tuple[float, ...] | None = None
    """Adam (β1, β2) of the scalar/control group alone (None = ``(beta1, beta2)``)."""
    grad_clip_norm: float = 0.0
    """Clip the global gradient norm to this value (0 = off, the baseline; 0.3 from [03-19d])."""
    muon_wd: float = 0.0
    """Muon decoupled weight decay λ: p ← p·(1 − lr·λ) each step ([03-19f] 0.02, [03-20a] PR #162 0.04,
    [04-01] PR #1218 0.085, [04-03] PR #1285 0.090, [04-09b] PR #1493 0.095)."""
    adam_wd: float = 0.0
    """AdamW decoupled weight decay on the embedding and scalar groups ([03-19b], [03-20a]–[03-29]: 0.04;
    0.02 from [04-01]). The untied head keeps plain Adam, as the records."""
    embed_wd: float | None = None
    """Weight decay of the embedding group alone (None = ``adam_wd``; [04-01]+: 0.085)."""
    wd_taper_start_frac: float = 1.0
    """WD taper ([04-18] PR #1729): the weight-decay multiplier is 1 until this fraction of the budget,
    then linear to ``wd_taper_final_mult`` at the end (records: 0.70 → 0.5). 1 = no taper."""
    wd_taper_final_mult: float = 1.0
    muon_row_normalize: bool = False
    """MuonEq-R ([04-03] PR #1285): unit-ℓ2 rows of the momentum-corrected gradient before Newton–Schulz."""
    parallel_muon: bool = False
    """Parallel Muon ([03-23] PR #549): same-shape matrices form banks whose gradients are reduce-scattered
    instead of all-reduced by DDP; each rank orthogonalizes its slice (batched) and the updates are
    all-gathered (:mod:`pgolf.optim.parallel_muon`). The same update as Muon; a systems option."""
    muon_ns: Literal["quintic", "polar_express"] = "quintic"
    """Newton–Schulz coefficients: the baseline's fixed quintic, or Polar Express's per-iteration
    minimax triples ([04-23] PR #1787, from PR #1344; needs muon_backend_steps=5)."""

    def __post_init__(self) -> None:
        _check(0 <= self.muon_momentum_warmup_frac <= 1, "optim.muon_momentum_warmup_frac must be in [0, 1]")
        _check(self.muon_wd >= 0 and self.adam_wd >= 0 and (self.embed_wd is None or self.embed_wd >= 0),
               "optim weight decays must be >= 0")
        _check(0 <= self.wd_taper_start_frac <= 1 and self.wd_taper_final_mult >= 0,
               "optim.wd_taper_start_frac must be in [0, 1], optim.wd_taper_final_mult >= 0")
        _check(self.muon_ns != "polar_express" or self.muon_backend_steps == 5,
               "optim.muon_ns=polar_express has 5 iterations: set optim.muon_backend_steps=5")
        for name in ("matrix_lr", "scalar_lr", "tied_embed_lr", "embed_lr", "head_lr"):
            _check(getattr(self, name) >= 0, f"optim.{name} must be >= 0")
        _check(0 <= self.muon_momentum < 1, "optim.muon_momentum must be in [0, 1)")
        _check(self.muon_backend_steps >= 1, "optim.muon_backend_steps must be >= 1")
        _check(self.grad_clip_norm >= 0, "optim.grad_clip_norm must be >= 0")
        for name in ("embed_betas", "head_betas", "scalar_betas"):
            b = getattr(self, name)
            _check(b is None or (len(b) == 2 and all(0 <= x < 1 for x in b)),
                   f"optim.{name} must be two numbers in [0, 1) (beta1,beta2), got {b}")
