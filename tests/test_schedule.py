"""The one training schedule (pgolf.optim.schedule.Schedule): every preset's settings at the fractions where
they change, against values computed by hand from the preset's numbers; each rule's boundaries on its own;
and a short run whose applied lr / weight decay / momentum / sequence length / recurrence / QAT / EMA decay,
read where they take effect (optimizer groups, the model's forward, the averager), equal the schedule's."""

from __future__ import annotations

import types

import pytest
from torch.optim.optimizer import register_optimizer_step_pre_hook

from pgolf.config import RunConfig, apply_overrides
from pgolf.optim.schedule import Schedule, StepSettings
from pgolf.presets import PRESETS, get_preset

EXACT = {"rel": 1e-12, "abs": 1e-12}

# (preset, steps taken, training seconds elapsed, the settings computed by hand)
PRESET_CASES = [
    # demo: 150 s, warmdown over the last 30 %, Muon momentum 0.85 → 0.95 over 100 steps, nothing else scheduled
    ("demo", 0, 0.0, dict(progress=0.0, lr_mult=1.0, wd_mult=1.0, momentum=0.85, seq_len=256, looping=False,
                          qat=False, ema_decay=0.0, swa_snapshot=False)),
    ("demo", 50, 105.0, dict(progress=0.7, lr_mult=1.0, momentum=0.90)),  # the warmdown starts at p = 0.7
    ("demo", 100, 120.0, dict(progress=0.8, lr_mult=2 / 3, momentum=0.95)),  # (1 − 0.8) / 0.3
    ("demo", 400, 150.0, dict(progress=1.0, lr_mult=0.0)),
    ("demo", 400, 200.0, dict(progress=1.0, lr_mult=0.0)),  # past the budget: clamped
    # cpu: 600 s, last 40 %, momentum over 200 steps, EMA with a horizon of 7 % of the projected steps N̂ = (s+1)/p
    ("cpu", 0, 0.0, dict(progress=0.0, lr_mult=1.0, wd_mult=1.0, momentum=0.85, seq_len=256, looping=False,
                         qat=False, ema_decay=1 - 1 / (0.07 * 1e9), swa_snapshot=False)),  # p floored at 1e-9
    ("cpu", 99, 60.0, dict(progress=0.1, lr_mult=1.0, momentum=0.85 + 0.1 * 99 / 200, ema_decay=1 - 1 / 70)),
    ("cpu", 359, 360.0, dict(progress=0.6, lr_mult=1.0, momentum=0.95, ema_decay=1 - 1 / 42)),  # N̂ = 600
    ("cpu", 399, 480.0, dict(progress=0.8, lr_mult=0.5, ema_decay=1 - 1 / 35)),  # N̂ = 500
    ("cpu", 599, 600.0, dict(progress=1.0, lr_mult=0.0, ema_decay=1 - 1 / 42)),
    ("cpu-fixed", 399, 480.0, dict(progress=0.8, lr_mult=0.5, momentum=0.95, seq_len=256, ema_decay=1 - 1 / 35)),
    ("cpu-v1", 399, 480.0, dict(progress=0.8, lr_mult=0.5, momentum=0.95, seq_len=256, ema_decay=0.0)),
    # baseline: rule (b), window = 1200 steps × the mean step time so far; momentum over 500 steps
    ("baseline", 0, 0.0, dict(progress=0.0, lr_mult=1.0, wd_mult=1.0, momentum=0.85, seq_len=1024, looping=False,
                              qat=False, ema_decay=0.0, swa_snapshot=False)),
    ("baseline", 250, 15.0, dict(progress=0.025, lr_mult=1.0, momentum=0.90)),
    ("baseline", 6000, 500.0, dict(lr_mult=1.0, momentum=0.95)),  # window 100 s = remaining 100 s: not yet
    ("baseline", 6000, 550.0, dict(lr_mult=5 / 11)),  # window 110 s, remaining 50 s
    ("baseline", 6000, 600.0, dict(progress=1.0, lr_mult=0.0)),
    # baseline-cpu: 600 s, last 8.7 %
    ("baseline-cpu", 0, 547.8, dict(progress=0.913, lr_mult=1.0, momentum=0.85, seq_len=1024)),
    ("baseline-cpu", 0, 573.9, dict(progress=0.9565, lr_mult=0.5)),
    # tiny: no wallclock budget, 20 iterations (p = step / 20), last 20 %, momentum over 10 steps
    ("tiny", 0, 0.0, dict(progress=0.0, lr_mult=1.0, wd_mult=1.0, momentum=0.85, seq_len=64, looping=False,
                          qat=False, ema_decay=0.0, swa_snapshot=False)),
    ("tiny", 5, 99.0, dict(progress=0.25, lr_mult=1.0, momentum=0.90)),  # seconds do not count without a budget
    ("tiny", 16, 0.0, dict(progress=0.8, lr_mult=1.0)),
    ("tiny", 18, 0.0, dict(progress=0.9, lr_mult=0.5)),
    ("tiny", 20, 0.0, dict(progress=1.0, lr_mult=0.0)),
    # record-0322: rule (b) with 3500 steps; momentum 0.92 → 0.99 over 1500 steps; late QAT once lr_mult < 0.15;
    # EMA 0.997 every step
    ("record-0322", 0, 0.0, dict(progress=0.0, lr_mult=1.0, wd_mult=1.0, momentum=0.92, seq_len=2048, looping=False,
                                 qat=False, ema_decay=0.997, swa_snapshot=False)),
    ("record-0322", 750, 60.0, dict(progress=0.1, lr_mult=1.0, momentum=0.955, qat=False)),
    ("record-0322", 7000, 540.0, dict(progress=0.9, lr_mult=2 / 9, momentum=0.99, qat=False)),  # 60 s of 270
    ("record-0322", 7000, 560.0, dict(lr_mult=1 / 7, qat=True)),  # 40 s left of a 280 s window: < 0.15
    ("record-0322", 7000, 590.0, dict(lr_mult=2 / 59, qat=True, ema_decay=0.997)),
    # record-0414 / 0419: 600 s less the 4 s calibration reserve = 596 s; last 75 %; recurrence from 35 %;
    # momentum 0.92 → 0.97 over 1500 steps; EMA 0.9965
    *[(name, *case) for name in ("record-0414", "record-0419") for case in (
        (0, 0.0, dict(progress=0.0, lr_mult=1.0, wd_mult=1.0, momentum=0.92, seq_len=2048, looping=False, qat=False,
                      ema_decay=0.9965, swa_snapshot=False)),
        (100, 149.0, dict(progress=0.25, lr_mult=1.0, looping=False)),  # the warmdown starts at p = 0.25
        (750, 208.5, dict(progress=208.5 / 596, looping=False, momentum=0.945)),  # 596 × 0.35 = 208.6
        (1500, 208.75, dict(progress=208.75 / 596, looping=True, momentum=0.97)),
        (3000, 298.0, dict(progress=0.5, lr_mult=2 / 3, looping=True)),
        (6000, 447.0, dict(progress=0.75, lr_mult=1 / 3)),
        (9000, 596.0, dict(progress=1.0, lr_mult=0.0, looping=True)),  # the reserve starts here
        (9000, 598.0, dict(progress=1.0, lr_mult=0.0)),
    )],
    # record-0427: 600 s less 5 s = 595 s; last 85 %; MIN_LR 0.1; recurrence from 35 %
    ("record-0427", 0, 0.0, dict(progress=0.0, lr_mult=1.0, wd_mult=1.0, momentum=0.92, seq_len=2048, looping=False,
                                 qat=False, ema_decay=0.9965, swa_snapshot=False)),
    ("record-0427", 1500, 89.25, dict(progress=0.15, lr_mult=1.0, momentum=0.97)),  # the warmdown starts at 0.15
    ("record-0427", 2000, 208.0, dict(looping=False)),
    ("record-0427", 2000, 208.25, dict(progress=0.35, looping=True, lr_mult=13 / 17)),  # 595 × 0.35; 0.65 / 0.85
    ("record-0427", 3000, 297.5, dict(progress=0.5, lr_mult=10 / 17)),
    ("record-0427", 5000, 505.75, dict(progress=0.85, lr_mult=3 / 17)),
    ("record-0427", 5000, 547.4, dict(progress=0.92, lr_mult=0.1)),  # 0.08 / 0.85 < 0.1: the floor
    ("record-0427", 5000, 595.0, dict(progress=1.0, lr_mult=0.1)),
]


def _check(s: StepSettings, want: dict) -> None:
    for k, v in want.items():
        got = getattr(s, k)
        if isinstance(v, bool) or k in ("step", "seq_len"):
            assert got == v, (k, got, v)
        else:
            assert got == pytest.approx(v, **EXACT), (k, got, v)


def test_hand_computed_cases_name_real_presets():
    assert {c[0] for c in PRESET_CASES} <= set(PRESETS)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_schedule_is_in_range_and_switches_once(preset):
    """Any preset (those above and those added later): over the run at a constant step time, the LR multiplier
    stays in [0, 1] (momentum and EMA decay in [0, 1)), p rises from 0 to 1, the sequence length never shrinks, and
    recurrence and QAT switch on at most once and stay on."""
    sch = Schedule(get_preset(preset))
    budget = sch.budget_seconds
    n = 400
    seen = [sch.at(k, budget * k / n) for k in range(n + 1)] if budget else [
        sch.at(k * sch.train.iterations // n, 0.0) for k in range(n + 1)]
    assert seen[0].progress == 0.0 and seen[-1].progress == 1.0
    for a, b in zip(seen, seen[1:], strict=False):
        assert a.progress <= b.progress and a.seq_len <= b.seq_len
        assert b.looping >= a.looping and b.qat >= a.qat
    for s in seen:
        assert 0 <= s.lr_mult <= 1 and s.wd_mult >= 0 and 0 <= s.momentum < 1 and 0 <= s.ema_decay < 1


@pytest.mark.parametrize(("preset", "step", "elapsed", "want"), PRESET_CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in PRESET_CASES])
def test_preset_schedule_at_its_boundaries(preset, step, elapsed, want):
    s = Schedule(get_preset(preset)).at(step, elapsed)
    assert s.step == step
    _check(s, want)


def test_the_calibration_reserve_shortens_the_budget_every_rule_sees():
    assert Schedule(get_preset("record-0427")).budget_seconds == 595.0
    assert Schedule(get_preset("record-0414")).budget_seconds == 596.0
    assert Schedule(get_preset("baseline")).budget_seconds == 600.0
    assert Schedule(get_preset("tiny")).budget_seconds == 0


def _sched(*sets: str) -> Schedule:
    """100 iterations, no wallclock budget: p = step / 100."""
    return Schedule(apply_overrides(get_preset("tiny"), ["train.iterations=100", *sets]))


@pytest.mark.parametrize(("sets", "cases"), [
    # WD taper ([04-18]): 1 until 70 %, then linear to 0.5 at the end
    (["optim.wd_taper_start_frac=0.7", "optim.wd_taper_final_mult=0.5"],
     [(0, dict(wd_mult=1.0)), (70, dict(wd_mult=1.0)), (85, dict(wd_mult=0.75)), (100, dict(wd_mult=0.5))]),
    # progressive sequence length: 16 from 0, 32 from 25 %, 64 (= seq_len) from 50 %
    (["train.seq_len_stages=16,32,64", "train.seq_len_stage_fracs=0,0.25,0.5"],
     [(0, dict(seq_len=16)), (24, dict(seq_len=16)), (25, dict(seq_len=32)), (49, dict(seq_len=32)),
      (50, dict(seq_len=64)), (99, dict(seq_len=64))]),
    # late QAT by fraction
    (["train.qat.kind=ste", "train.qat.start_frac=0.6"], [(59, dict(qat=False)), (60, dict(qat=True))]),
    # late QAT by LR multiplier (the records' rule): warmdown over the last half, on once lr_mult < 0.5
    (["train.qat.kind=ste", "train.qat.start_lr_mult=0.5", "train.warmdown_frac=0.5"],
     [(75, dict(lr_mult=0.5, qat=False)), (76, dict(lr_mult=0.48, qat=True))]),
    (["train.qat.start_frac=0.6"], [(60, dict(qat=False))]),  # kind off: never
    # SWA every 10 steps from 50 %: a snapshot after steps 60, 70, … (the step number after the update)
    (["train.swa.every=10", "train.swa.start_frac=0.5"],
     [(49, dict(swa_snapshot=False)), (58, dict(swa_snapshot=False)), (59, dict(swa_snapshot=True)),
      (69, dict(swa_snapshot=True)), (70, dict(swa_snapshot=False))]),
    # SWA every 5 once lr_mult < 0.5
    (["train.swa.every=5", "train.swa.start_lr_mult=0.5", "train.warmdown_frac=0.5"],
     [(74, dict(lr_mult=0.52, swa_snapshot=False)), (79, dict(lr_mult=0.42, swa_snapshot=True))]),
    # momentum warm-up over a fraction (0.9 → 0.99 over the first 20 %)
    (["optim.muon_momentum_warmup_frac=0.2", "optim.muon_momentum_warmup_start=0.9", "optim.muon_momentum=0.99"],
     [(0, dict(momentum=0.9)), (10, dict(momentum=0.945)), (20, dict(momentum=0.99)), (90, dict(momentum=0.99))]),
    # recurrence: late from 40 %, or from the start
    (["model.recur.loops=1", "model.recur.start=0", "model.recur.end=1", "model.recur.start_frac=0.4"],
     [(39, dict(looping=False)), (40, dict(looping=True)), (100, dict(looping=True))]),
    (["model.recur.loops=1", "model.recur.start=0", "model.recur.end=1"], [(0, dict(looping=True))]),
    # EMA: fixed decay; by horizon fraction without a budget N̂ = iterations (0.1 × 100 = 10 steps)
    (["train.ema.decay=0.99"], [(0, dict(ema_decay=0.99)), (99, dict(ema_decay=0.99))]),
    (["train.ema.horizon_frac=0.1"], [(0, dict(ema_decay=0.9)), (99, dict(ema_decay=0.9))]),
    # MIN_LR floor over rule (a)
    (["train.warmdown_frac=0.5", "train.min_lr_mult=0.2"],
     [(50, dict(lr_mult=1.0)), (75, dict(lr_mult=0.5)), (95, dict(lr_mult=0.2)), (100, dict(lr_mult=0.2))]),
])
def test_each_rule_at_its_boundaries(sets, cases):
    sch = _sched(*sets)
    for step, want in cases:
        _check(sch.at(step, 0.0), want)


def test_sequence_length_stages_match_the_shares_autosize_prices():
    """The stage each step trains at (the schedule) spends exactly the share of the run that
    ``TrainConfig.seq_len_shares`` reports (what autosize's time model charges each length)."""
    cfg = apply_overrides(get_preset("tiny"), ["train.iterations=1000", "train.seq_len_stages=16,32,64",
                                               "train.seq_len_stage_fracs=0,0.25,0.5"])
    sch = Schedule(cfg)
    counts: dict[int, int] = {}
    for step in range(1000):
        n = sch.at(step, 0.0).seq_len
        counts[n] = counts.get(n, 0) + 1
    assert [(n, c / 1000) for n, c in counts.items()] == cfg.train.seq_len_shares() == [(16, 0.25), (32, 0.25), (64, 0.5)]
    assert sch.seq_lens() == (16, 32, 64) and Schedule(get_preset("tiny")).seq_lens() == (64,)


def test_late_loop_flag():
    assert not Schedule(RunConfig()).late_loop
    assert Schedule(get_preset("record-0427")).late_loop
    assert not _sched("model.recur.loops=1", "model.recur.start=0", "model.recur.end=1").late_loop


def test_a_short_run_applies_the_schedule_step_by_step(tiny_data, tmp_path, monkeypatch):
    """A wallclock run on a fake clock (every step takes 0.5 s, so the elapsed time before step k is 0.5·k): what
    reaches the optimizers' groups, the model's forward (plan, sequence length, QAT switch) and the averager's
    decay is :meth:`Schedule.at` of that step, for every step, with each switch crossing during the run."""
    from pgolf.model.gpt import GPT
    from pgolf.quant.qat import FakeQuant
    from pgolf.train import averaging
    from pgolf.train import loop as loop_mod

    cfg = apply_overrides(get_preset("tiny"), [
        f"data.path={tiny_data}", "model.vocab_size=384", "train.iterations=1000", "train.max_wallclock_seconds=4",
        "train.val_every=0", "train.checkpoint_every_seconds=0", "train.warmdown_frac=0.5", "train.min_lr_mult=0.1",
        "optim.muon_wd=0.05", "optim.adam_wd=0.1", "optim.wd_taper_start_frac=0.5", "optim.wd_taper_final_mult=0.2",
        "optim.muon_momentum_warmup_frac=0.5", "train.seq_len_stages=16,32,64", "train.seq_len_stage_fracs=0,0.25,0.5",
        "model.recur.loops=1", "model.recur.start=0", "model.recur.end=1", "model.recur.start_frac=0.5",
        "train.qat.kind=ste", "train.qat.start_frac=0.75", "train.ema.horizon_frac=0.5"])

    clock = {"now": 100.0}

    def perf_counter() -> float:  # advances 0.5 s per reading: one reading before and one after each step
        clock["now"] += 0.5
        return clock["now"]

    monkeypatch.setattr(loop_mod, "time", types.SimpleNamespace(perf_counter=perf_counter))
    forwards: list[tuple[bool, int, bool]] = []
    real_forward = GPT.forward

    def forward(self, idx, targets=None, reduction="mean"):
        qat_on = any(float(m.active) == 1.0 for m in self.modules() if isinstance(m, FakeQuant))
        forwards.append((self.looping, idx.shape[1], qat_on))
        return real_forward(self, idx, targets, reduction)

    monkeypatch.setattr(GPT, "forward", forward)
    groups: list[list[dict]] = []

    def pre_hook(opt, args, kwargs):
        groups.append([{k: g[k] for k in ("lr", "base_lr", "weight_decay", "base_wd", "momentum") if k in g}
                       for g in opt.param_groups])

    decays: list[float] = []
    real_update = averaging.WeightAverager.update

    def update(self, model, step, progress, lr_mult):
        real_update(self, model, step, progress, lr_mult)
        decays.append(self.last_decay)

    monkeypatch.setattr(averaging.WeightAverager, "update", update)
    handle = register_optimizer_step_pre_hook(pre_hook)
    try:
        res = loop_mod.train(cfg, tmp_path, progress=False)
    finally:
        handle.remove()

    assert res.steps == 8 and res.train_seconds == 4.0 and res.stopped_by == "wallclock"
    sch = Schedule(cfg)
    plans = [sch.at(k, 0.5 * k) for k in range(8)]
    # every switch crosses during the run
    assert [p.seq_len for p in plans] == [16, 16, 32, 32, 64, 64, 64, 64]
    assert [p.looping for p in plans] == [False] * 4 + [True] * 4
    assert [p.qat for p in plans] == [False] * 6 + [True] * 2
    assert [round(p.lr_mult, 12) for p in plans] == [1.0] * 5 + [0.75, 0.5, 0.25]
    assert forwards == [(p.looping, p.seq_len, p.qat) for p in plans]
    n_opt = len(groups) // 8
    assert len(groups) == 8 * n_opt and n_opt >= 2
    for k, p in enumerate(plans):
        for opt_groups in groups[k * n_opt:(k + 1) * n_opt]:
            for g in opt_groups:
                assert g["lr"] == pytest.approx(g["base_lr"] * p.lr_mult, **EXACT)
                if "base_wd" in g:
                    assert g["weight_decay"] == pytest.approx(g["base_wd"] * p.wd_mult, **EXACT)
                if "momentum" in g:
                    assert g["momentum"] == pytest.approx(p.momentum, **EXACT)
    assert any("momentum" in g for opt_groups in groups for g in opt_groups)
    assert any(g.get("base_wd") for opt_groups in groups for g in opt_groups)
    assert decays == pytest.approx([p.ema_decay for p in plans], **EXACT)
    assert plans[2].momentum == pytest.approx(0.9) and plans[6].wd_mult == pytest.approx(0.6)
