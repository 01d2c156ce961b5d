"""Other stages' work around the training clock (pgolf.train.loop.Hooks, registered by pgolf.runner.train_hooks):
the trainer alone does none of it; a before-clock hook runs before the first (priming) forward on the initial
weights; an after-clock hook runs on the weights that get exported, and the seconds it reports count as
training time; the runner registers the overlap prescan, the removal of stale export Hessians and the GPTQ
calibration exactly where their switches are on."""

from __future__ import annotations

import types

import torch

from pgolf.config import apply_overrides
from pgolf.data.prepare import prepare_data
from pgolf.model.gpt import GPT
from pgolf.presets import get_preset
from pgolf.quant import HESSIANS_FILE
from pgolf.runner import train_hooks
from pgolf.train import checkpoint as ckpt
from pgolf.train import loop as loop_mod
from pgolf.train.log import RunLog


def _cfg(data_dir, *extra):
    return apply_overrides(get_preset("tiny"), [f"data.path={data_dir}", "model.vocab_size=384", "train.iterations=3",
                                                *extra])


def _names(hooks: list) -> list[str]:
    return [h.__name__ for h in hooks]


def test_the_runner_registers_each_hook_behind_its_switch():
    base = get_preset("tiny")
    h = train_hooks(base)
    assert _names(h.before_clock) == ["_prescan_overlap", "_forget_hessians"] and h.after_clock == []
    assert _names(train_hooks(base, resume=True).before_clock) == ["_prescan_overlap"]  # a resumed run keeps its Hessians
    assert _names(train_hooks(apply_overrides(base, ["data.overlap_prescan=false"])).before_clock) == ["_forget_hessians"]
    assert _names(train_hooks(apply_overrides(base, ["data.overlap_check=false"])).before_clock) == ["_forget_hessians"]
    calib = train_hooks(apply_overrides(base, ["train.max_wallclock_seconds=60", "train.calib_reserve_seconds=1"]))
    assert _names(calib.after_clock) == ["_calibrate_in_reserve"]


def test_the_trainer_alone_does_no_other_stage_work_and_the_runner_hooks_do(tiny_data, tmp_path):
    cfg = _cfg(tiny_data, "train.calib_reserve_seconds=0.3", "train.calib_batches=1")
    data = prepare_data(cfg)
    stale = b"an earlier run's Hessians"
    for name in ("alone", "hooked"):
        d = tmp_path / name
        d.mkdir()
        (d / HESSIANS_FILE).write_bytes(stale)
        log = RunLog(d / "train.log")
        if name == "alone":
            loop_mod.train(cfg, d, data=data, progress=False, log=log)
        else:
            loop_mod.train(cfg, d, data=data, progress=False, log=log, hooks=train_hooks(cfg))
        log.close()
        text = (d / "train.log").read_text()
        ran = name == "hooked"
        assert ("overlap: no validation document in the" in text) is ran
        assert ("calibration:" in text) is ran
        assert ((d / HESSIANS_FILE).read_bytes() == stale) is not ran  # replaced by this run's own Hessians


def test_hooks_run_before_the_first_forward_and_on_the_exported_weights(tiny_data, tmp_path, monkeypatch):
    """On a fake clock (0.5 s per step): the before-clock hook sees step 0, no time spent, no forward yet (the
    priming steps come after it) and the initial weights; the after-clock hook sees the EMA applied and QAT
    removed — the weights the final checkpoint holds — and its 1.25 s are added to the training time."""
    cfg = _cfg(tiny_data, "train.warmup_steps=2", "train.max_wallclock_seconds=1.5", "train.iterations=1000",
               "train.ema.decay=0.5", "train.qat.kind=ste", "train.checkpoint_every_seconds=0", "train.val_every=0")
    clock = {"now": 0.0}

    def perf_counter() -> float:
        clock["now"] += 0.5
        return clock["now"]

    monkeypatch.setattr(loop_mod, "time", types.SimpleNamespace(perf_counter=perf_counter))
    forwards = {"n": 0}
    real_forward = GPT.forward

    def forward(self, idx, targets=None, reduction="mean"):
        forwards["n"] += 1
        return real_forward(self, idx, targets, reduction)

    monkeypatch.setattr(GPT, "forward", forward)
    torch.manual_seed(cfg.train.seed)
    init = GPT(cfg.model).state_dict()
    seen: dict = {}

    def before(tr):
        seen["before"] = (tr.step, tr.train_seconds, forwards["n"])
        for k, v in tr.model.state_dict().items():
            assert torch.equal(v, init[k]), k

    def after(tr):
        seen["after"] = (tr.step, tr.train_seconds, forwards["n"])
        seen["weights"] = {k: v.clone() for k, v in tr.model.state_dict().items()}
        seen["averaged"] = tr.averager.averaged_state(tr.model)
        seen["qat_gone"] = all(getattr(m, "weight_fn", None) is None for m in tr.model.modules())
        return 1.25

    res = loop_mod.train(cfg, tmp_path, data=prepare_data(cfg), progress=False,
                         hooks=loop_mod.Hooks(before_clock=[before], after_clock=[after]))
    assert seen["before"] == (0, 0.0, 0)
    assert seen["after"] == (3, 1.5, 2 + 3)  # 2 rolled-back priming steps, then 3 steps of 0.5 s
    assert res.steps == 3 and res.train_seconds == 1.5 + 1.25
    assert seen["qat_gone"]
    ck = ckpt.load_checkpoint(tmp_path)
    assert ck.train_seconds == 2.75 and ck.extra["weights"] == "ema"
    for k, v in seen["weights"].items():
        assert torch.equal(v, ck.model_state[k]), k  # the hook saw what gets exported
        assert torch.equal(v, seen["averaged"][k]), k
        if v.is_floating_point() and v.ndim == 2:
            assert not torch.equal(v, ck.averages[f"live.{k}"]), k  # ... the average, not the live weights
