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

MIN_LR ([04-23] PR #1787): with ``min_lr_mult`` = m > 0 the multiplier is max(multiplier, m) — the
LR never reaches 0.

Every other schedule is a function of the *progress* p ∈ [0, 1] (:func:`progress`: the fraction of the
wallclock budget used, else of the iterations), so a preset tuned on 8×H100 runs sensibly on a CPU
and the reverse. WD taper ([04-18] PR #1729): :func:`wd_multiplier`.
"""

from __future__ import annotations

from pgolf.config import OptimConfig, TrainConfig


def progress(step: int, elapsed_s: float, cfg: TrainConfig) -> float:
    """The fraction of the run done: elapsed / budget with a wallclock budget, else step / iterations."""
    budget = cfg.max_wallclock_seconds
    p = elapsed_s / budget if budget > 0 else step / cfg.iterations
    return min(1.0, max(0.0, p))


def lr_multiplier(step: int, elapsed_s: float, cfg: TrainConfig) -> float:
    """The LR multiplier in [0, 1] before taking optimizer step ``step + 1`` (see module docstring)."""
    return max(_warmdown(step, elapsed_s, cfg), cfg.min_lr_mult)


def wd_multiplier(p: float, cfg: OptimConfig) -> float:
    """WD taper: 1 until progress ``wd_taper_start_frac``, then linear to ``wd_taper_final_mult`` at p = 1."""
    s, m = cfg.wd_taper_start_frac, cfg.wd_taper_final_mult
    if p <= s or s >= 1:
        return 1.0
    return 1.0 + (m - 1.0) * (min(p, 1.0) - s) / (1.0 - s)


def _warmdown(step: int, elapsed_s: float, cfg: TrainConfig) -> float:
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


def muon_momentum(step: int, cfg: OptimConfig, progress: float | None = None) -> float:
    """Linear warmup from ``muon_momentum_warmup_start`` to ``muon_momentum`` over
    ``muon_momentum_warmup_steps`` steps — or, with ``muon_momentum_warmup_frac`` > 0, over that
    fraction of the run (``progress``) — then constant."""
    if cfg.muon_momentum_warmup_frac > 0 and progress is not None:
        frac = min(progress / cfg.muon_momentum_warmup_frac, 1.0)
        return (1.0 - frac) * cfg.muon_momentum_warmup_start + frac * cfg.muon_momentum
    n = cfg.muon_momentum_warmup_steps
    frac = min(step / n, 1.0) if n > 0 else 1.0
    return (1.0 - frac) * cfg.muon_momentum_warmup_start + frac * cfg.muon_momentum


def seq_len_at(p: float, cfg: TrainConfig) -> int:
    """Progressive sequence length: the stage of ``seq_len_stages`` whose start fraction ≤ p is last."""
    if not cfg.seq_len_stages:
        return cfg.seq_len
    cur = cfg.seq_len_stages[0]
    for length, start in zip(cfg.seq_len_stages, cfg.seq_len_stage_fracs, strict=True):
        if p >= start:
            cur = length
    return cur
