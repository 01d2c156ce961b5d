"""Progressive recurrence (model.recur.progressive_frac; [04-06a] 2026-04-06_SP8192_HessianSDClip_ProgressiveRecurrence,
PR #1412): the schedule's rule at its boundaries, the first phase's plan (the record's one-repeat encoder/decoder
split) and its forward equal to a one-loop model with the same weights, and a fake-clock training run whose
forwards follow the schedule step by step (plain → one extra pass → all) and whose final model runs every pass."""

from __future__ import annotations

import types

import pytest
import torch

from pgolf.config import ModelConfig, RunConfig, apply_overrides
from pgolf.errors import ConfigError
from pgolf.model.gpt import GPT, virtual_order
from pgolf.optim.schedule import Schedule, loop_passes
from pgolf.presets import get_preset

TINY = ModelConfig(vocab_size=64, num_layers=5, model_dim=32, num_heads=4, num_kv_heads=2)
RECUR = ["model.recur.loops=2", "model.recur.start=1", "model.recur.end=2", "model.recur.untie_mlp=true"]


def _cfg(*sets: str) -> RunConfig:
    return apply_overrides(RunConfig(model=TINY), [*RECUR, *sets])


@pytest.mark.parametrize("start, prog, cases", [
    (0.5, 0.65, [(0.0, 0), (0.4999, 0), (0.5, 1), (0.6499, 1), (0.65, 2), (1.0, 2)]),  # the record's 0.5 / 0.65
    (0.0, 0.3, [(0.0, 1), (0.2999, 1), (0.3, 2), (1.0, 2)]),
    (0.5, 0.0, [(0.4999, 0), (0.5, 2), (1.0, 2)]),  # off: every pass at once (the switch as before)
])
def test_the_rule_at_its_boundaries(start, prog, cases):
    cfg = _cfg(f"model.recur.start_frac={start}", f"model.recur.progressive_frac={prog}",
               "train.max_wallclock_seconds=100")
    sch = Schedule(cfg)
    for p, want in cases:
        assert loop_passes(p, cfg.model.recur) == want, p
        s = sch.at(3, 100 * p)
        assert (s.looping, s.loop_passes) == (want > 0, want), p
    assert sch.late_loop == (start > 0 or prog > 0)
    assert sch.loop_plans() == (((False, 2),) if start else ()) + (((True, 1),) if prog else ()) + ((True, 2),)


def test_config_refuses_what_is_not_progressive():
    for bad in (["model.recur.progressive_frac=0.6", "model.recur.loops=1"],
                ["model.recur.progressive_frac=0.4", "model.recur.start_frac=0.5"],
                ["model.recur.progressive_frac=0.5", "model.recur.start_frac=0.5"]):
        with pytest.raises(ConfigError, match="progressive_frac"):
            _cfg(*bad)


def test_the_first_phase_is_the_records_one_repeat_plan():
    cfg = _cfg("model.recur.start_frac=0.5", "model.recur.progressive_frac=0.65").model
    m = GPT(cfg)
    m.looping, m.loop_passes = True, 1
    order = [p.block for p in m.plan]
    assert order == virtual_order(cfg, True, passes=1) == [0, 1, 2, 1, 2, 3, 4]  # all1 of the record
    n_enc = len(order) // 2  # the record: phase1_enc = all1[:len(all1) // 2]
    assert [p.push_skip for p in m.plan] == [i < n_enc for i in range(len(order))]
    full = {(p.block, p.index): p.mlp_slot for p in m.plans[True]}
    # pass k of a block uses the same untied MLP in either phase
    slots = {}
    for plan in (m.plan, m.plans[True]):
        seen: dict[int, int] = {}
        for p in plan:
            k = seen.get(p.block, 0)
            seen[p.block] = k + 1
            assert slots.setdefault((p.block, k), p.mlp_slot) == p.mlp_slot
    assert len(full) == 9 and m.loop_passes == 1
    m.loop_passes = 2
    assert [p.block for p in m.plan] == [0, 1, 2, 1, 2, 1, 2, 3, 4]


def test_the_first_phase_computes_what_a_one_loop_model_computes():
    prog = _cfg("model.recur.start_frac=0.5", "model.recur.progressive_frac=0.65").model
    one = _cfg("model.recur.loops=1", "model.recur.start_frac=0.5").model
    torch.manual_seed(0)
    a, b = GPT(prog).double(), GPT(one).double()
    with torch.no_grad():
        for p in a.parameters():
            p.normal_(0, 0.2)
    sa = a.state_dict()
    sb = {k: (sa[k][: v.shape[0]] if k == "skip_weights" else sa[k]) for k, v in b.state_dict().items()}
    b.load_state_dict(sb)  # the one-loop model: the first skip weights and the pass-1 MLPs of the two-loop one
    a.looping, a.loop_passes, b.looping = True, 1, True
    idx = torch.randint(0, 64, (2, 12))
    torch.testing.assert_close(a(idx), b(idx), rtol=0, atol=0)
    a.loop_passes = 2
    assert not torch.allclose(a(idx), b(idx))


def test_a_run_follows_the_phases_step_by_step_and_ends_on_every_pass(tiny_data, tmp_path, monkeypatch):
    """Fake clock: every step takes 0.5 s of a 4 s budget (8 steps); loop on at 0.25, every pass at 0.5."""
    from pgolf.train import loop as loop_mod
    from pgolf.train.log import RunLog

    cfg = apply_overrides(get_preset("tiny"), [
        f"data.path={tiny_data}", "model.vocab_size=384", "model.num_layers=3", "train.iterations=1000",
        "train.max_wallclock_seconds=4", "train.val_every=0", "train.checkpoint_every_seconds=0",
        "model.recur.loops=2", "model.recur.start=1", "model.recur.end=1", "model.recur.start_frac=0.25",
        "model.recur.progressive_frac=0.5", "train.warmup_steps=1"])
    clock = {"now": 100.0}

    def perf_counter() -> float:
        clock["now"] += 0.5
        return clock["now"]

    monkeypatch.setattr(loop_mod, "time", types.SimpleNamespace(perf_counter=perf_counter))
    forwards: list[list[int]] = []
    real_forward = GPT.forward

    def forward(self, idx, targets=None, reduction="mean", adapter=None):
        if targets is not None and self.training:
            forwards.append([p.block for p in self.plan])
        return real_forward(self, idx, targets, reduction, adapter)

    monkeypatch.setattr(GPT, "forward", forward)
    res = loop_mod.train(cfg, tmp_path, progress=False, log=RunLog(tmp_path / "train.log", echo=False))
    assert res.steps == 8 and res.stopped_by == "wallclock"
    sch = Schedule(cfg)
    want = [virtual_order(cfg.model, s.looping, s.loop_passes) for s in (sch.at(k, 0.5 * k) for k in range(8))]
    assert [len(w) for w in want] == [3, 3, 4, 4, 5, 5, 5, 5]
    primed = [[0, 1, 2], [0, 1, 1, 2], [0, 1, 1, 1, 2]]  # every plan primed before the clock (warmup 1 step)
    assert forwards == primed + want
    assert res.model.looping and res.model.loop_passes == 2 and len(res.model.plan) == 5
    switched = [ln for ln in (tmp_path / "train.log").read_text().splitlines() if ln.startswith("layer_loop:enabled")]
    assert [ln.split()[1] for ln in switched] == ["step:2", "step:4"]
    assert switched[0].endswith("order:[0, 1, 1, 2]") and switched[1].endswith("order:[0, 1, 1, 1, 2]")
