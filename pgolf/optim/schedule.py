"""Learning-rate multiplier (warmdown) and Muon momentum warmup.

Sources (CATALOGUE §1.4, §1.5): the naive baseline [03-17b] (root ``train_gpt.py``, no PR) for
the wallclock-aware warmdown and the momentum warmup; the time-fraction fix from
``track_non_record_16mb/2026-03-19_SwiGLU_WarmdownFix_QuarterBatch_1x5090`` (−0.006 BPB reported)
for ``warmdown_frac``. The trainer sets every group's lr = base_lr × :func:`lr_multiplier`.

``step`` is the number of optimizer steps already taken and ``elapsed_s`` the training time so far
(both before the step about to be taken).

Rule (a), ``warmdown_frac`` = f > 0 — linear decay over the last fraction f of the budget:

    p = elapsed_s / max_wallclock_seconds   (wallclock budget set)   else   step / iterations
    multiplier = clamp((1 − p) / f, 0, 1)

Rule (b), ``warmdown_frac`` = 0 — the baseline's rule, W = warmdown_iters:

    budget set:  window = W · elapsed_s / step  (mean step time so far), remaining = budget − elapsed_s
                 multiplier = remaining / window if remaining < window else 1
    no budget:   multiplier = (iterations − step) / W  within the last W steps, else 1

Rule (b) sizes its window in *steps*: when fewer than W steps fit in the budget (slow hardware),
remaining < window from step 1 and the LR decays for the whole run. Rule (a) is right anywhere.
"""

from __future__ import annotations

from pgolf.config import OptimConfig, TrainConfig


def lr_multiplier(step: int, elapsed_s: float, cfg: TrainConfig) -> float:
    """The LR multiplier in [0, 1] before taking optimizer step ``step + 1`` (see module docstring)."""
    budget = cfg.max_wallclock_seconds
    if cfg.warmdown_frac > 0:
        p = elapsed_s / budget if budget > 0 else step / cfg.iterations
        return min(1.0, max(0.0, (1.0 - p) / cfg.warmdown_frac))
    W = cfg.warmdown_iters
    if W <= 0:
        return 1.0
    if budget <= 0:
        if step < cfg.iterations - W:
            return 1.0
        return max(0.0, (cfg.iterations - step) / W)
    window = W * (elapsed_s / max(step, 1))
    remaining = max(budget - elapsed_s, 0.0)
    return remaining / window if remaining < window else 1.0


def muon_momentum(step: int, cfg: OptimConfig) -> float:
    """Linear warmup from ``muon_momentum_warmup_start`` to ``muon_momentum`` over
    ``muon_momentum_warmup_steps`` steps, then constant."""
    n = cfg.muon_momentum_warmup_steps
    frac = min(step / n, 1.0) if n > 0 else 1.0
    return (1.0 - frac) * cfg.muon_momentum_warmup_start + frac * cfg.muon_momentum
