"""The training schedule: what every knob is before each optimizer step, as a function of the run's progress.

:class:`Schedule` is the one object the trainer reads: ``Schedule(cfg).at(step, elapsed_s)`` is the
:class:`StepSettings` of the step about to be taken — LR, weight-decay and momentum multipliers, sequence
length, recurrence on, QAT window open, the EMA decay and the SWA snapshot after it. The rules it
composes are the functions below (each unit-tested against hand-computed values, ``tests/test_schedule.py``).

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
and the reverse. WD taper ([04-18] PR #1729): :func:`wd_multiplier`. Progressive sequence length
(PR #2014): :func:`seq_len_at`. Late recurrence ([04-05] PR #1394, [04-09b] PR #1493): the looped per-layer
plan from ``model.recur.start_frac``; progressive recurrence ([04-06a] PR #1412): one extra pass until
``model.recur.progressive_frac``, then all of them (:func:`loop_passes`). Late QAT / SWA windows ([03-21] PR #315, [03-20a] PR #162):
``QatConfig.started`` / ``SwaConfig.started`` (:func:`pgolf.config.window_open`). EMA by horizon fraction:
:func:`ema_decay`; SWA snapshots: :func:`swa_snapshot`.

With ``train.calib_reserve_seconds`` = r > 0 and a wallclock budget B, every rule sees the budget B − r
(the trainer stops there and calibrates in the reserve), so p = elapsed / (B − r).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pgolf.config import OptimConfig, RecurConfig, RunConfig, TrainConfig


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


def loop_passes(p: float, recur: RecurConfig) -> int:
    """Extra passes of the looped segment at progress p: 0 before ``start_frac`` (the plain stack) or without
    recurrence; ``loops`` from it — or, with progressive recurrence (``progressive_frac`` = f > 0; [04-06a]
    PR #1412: loop on at 0.5, ``LOOP_PHASE2_AT`` 0.65), 1 until f and ``loops`` from f."""
    if recur.loops == 0 or p < recur.start_frac:
        return 0
    return 1 if p < recur.progressive_frac else recur.loops


def ema_decay(step: int, progress: float, cfg: TrainConfig) -> float:
    """The EMA decay d of the update after optimizer step ``step`` (1-based) at run ``progress``: the fixed
    ``train.ema.decay``, or with ``horizon_frac`` = f: d = 1 − 1/max(1, f·N̂), N̂ = step / p the projected
    steps of the whole run (the iteration budget without a wallclock one). 0 when EMA is off."""
    e = cfg.ema
    if e.decay or not e.horizon_frac:
        return e.decay
    n_hat = step / max(progress, 1e-9) if cfg.max_wallclock_seconds > 0 else float(cfg.iterations)
    return 1.0 - 1.0 / max(1.0, e.horizon_frac * n_hat)


def swa_snapshot(step: int, progress: float, lr_mult: float, cfg: TrainConfig) -> bool:
    """SWA adds a snapshot after optimizer step ``step`` (1-based) when its window is open at ``progress`` /
    ``lr_mult`` (``SwaConfig.started``) and ``step`` is a multiple of ``train.swa.every``."""
    s = cfg.swa
    return s.enabled and s.started(progress, lr_mult) and step % s.every == 0


@dataclass(frozen=True)
class StepSettings:
    """What the schedule sets before optimizer step ``step + 1`` (``step`` steps taken, ``elapsed_s`` seconds
    of the training clock spent)."""

    step: int
    progress: float
    """p ∈ [0, 1]: elapsed / budget with a wallclock budget, else step / iterations."""
    lr_mult: float
    """Every group's lr = base_lr × this (:func:`lr_multiplier`)."""
    wd_mult: float
    """Every decayed group's weight_decay = base_wd × this (:func:`wd_multiplier`)."""
    momentum: float
    """Muon's momentum (:func:`muon_momentum`)."""
    seq_len: int
    """Training sequence length of this step (:func:`seq_len_at`)."""
    looping: bool
    """The model runs its looped per-layer plan (depth recurrence on)."""
    qat: bool
    """The QAT window is open (fake quantization on; once on, the trainer keeps it on)."""
    ema_decay: float
    """Decay of the EMA update after this step (0 = no EMA)."""
    swa_snapshot: bool
    """SWA adds a snapshot after this step."""
    loop_passes: int = 0
    """Extra passes of the looped segment while ``looping`` (:func:`loop_passes`; 0 when not looping)."""


class Schedule:
    """The whole run's schedule for ``cfg``; :meth:`at` gives one step's :class:`StepSettings`."""

    def __init__(self, cfg: RunConfig):
        t = cfg.train
        if t.calib_reserve_seconds > 0 and t.max_wallclock_seconds > 0:  # the rules see the budget minus the reserve
            t = dataclasses.replace(t, max_wallclock_seconds=t.max_wallclock_seconds - t.calib_reserve_seconds,
                                    calib_reserve_seconds=0.0)
        self.train, self.optim, self.recur = t, cfg.optim, cfg.model.recur

    @property
    def budget_seconds(self) -> float:
        """The training clock's stop: the wallclock budget minus the calibration reserve (0 = iterations only)."""
        return self.train.max_wallclock_seconds

    @property
    def late_loop(self) -> bool:
        """The run starts on the plain stack and switches to the looped plan at ``model.recur.start_frac`` (or
        to the one-pass plan first, ``model.recur.progressive_frac``)."""
        return self.recur.loops > 0 and (self.recur.start_frac > 0 or self.recur.progressive_frac > 0)

    def loop_plans(self) -> tuple[tuple[bool, int], ...]:
        """(looping, extra passes) of every per-layer plan the run trains with, in order (the trainer primes
        each before the clock): the model's own plan, or the plain stack, then each looped phase."""
        r = self.recur
        if not self.late_loop:
            return ((r.loops > 0, r.loops),)
        return ((False, r.loops),) * (r.start_frac > 0) + ((True, 1),) * (r.progressive_frac > 0) + ((True, r.loops),)

    def seq_lens(self) -> tuple[int, ...]:
        """Every training sequence length of the run, in order (the trainer primes each before the clock)."""
        return tuple(dict.fromkeys(self.train.seq_len_stages or (self.train.seq_len,)))

    def at(self, step: int, elapsed_s: float) -> StepSettings:
        """The settings before optimizer step ``step + 1`` after ``elapsed_s`` seconds of training."""
        t, o = self.train, self.optim
        p = progress(step, elapsed_s, t)
        mul = lr_multiplier(step, elapsed_s, t)
        passes = loop_passes(p, self.recur)
        return StepSettings(  # in field order
            step, p, mul, wd_multiplier(p, o), muon_momentum(step, o, p), seq_len_at(p, t),
            passes > 0,  # looping
            t.qat.kind != "off" and t.qat.started(p, mul),  # qat
            ema_decay(step + 1, p, t), swa_snapshot(step + 1, p, mul, t), passes,
        )
