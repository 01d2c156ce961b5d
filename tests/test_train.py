"""The budgeted trainer: determinism, exact resume after a kill, NaN handling, wallclock stop."""


import pytest
import torch

from pgolf.config import apply_overrides
from pgolf.data.prepare import prepare_data
from pgolf.errors import TrainingError
from pgolf.model.gpt import GPT
from pgolf.presets import get_preset
from pgolf.train import checkpoint as ckpt
from pgolf.train.loop import grad_accum_steps, train


def _cfg(data_dir, *extra):
    return apply_overrides(get_preset("tiny"), [f"data.path={data_dir}", "model.vocab_size=384", "train.iterations=8", *extra])


def test_same_seed_same_losses(tiny_data, tmp_path):
    cfg = _cfg(tiny_data)
    data = prepare_data(cfg)
    a = train(cfg, tmp_path / "a", data=data, progress=False)
    b = train(cfg, tmp_path / "b", data=data, progress=False)
    assert len(a.losses) == 8
    assert a.losses == b.losses  # bit-identical on CPU
    assert a.losses[-1] < a.losses[0]
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    c = train(_cfg(tiny_data, "train.seed=7"), tmp_path / "c", data=data, progress=False)
    assert c.losses != a.losses


def test_killed_run_resumes_exactly(tiny_data, tmp_path):
    cfg = _cfg(tiny_data, "train.checkpoint_every_seconds=1e-9")
    data = prepare_data(cfg)
    straight = train(cfg, tmp_path / "straight", data=data, progress=False)

    class Kill(Exception):
        pass

    def kill_at_5(step, loss):
        if step == 5:
            raise Kill

    with pytest.raises(Kill):
        train(cfg, tmp_path / "killed", data=data, progress=False, on_step=kill_at_5)
    assert ckpt.load_checkpoint(tmp_path / "killed").step == 5
    resumed = train(cfg, tmp_path / "killed", data=data, resume=True, progress=False)
    assert resumed.steps == 8
    assert resumed.losses == straight.losses[5:]
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_data, tmp_path, monkeypatch):
    cfg = _cfg(tiny_data, "train.checkpoint_every_seconds=1e-9")
    data = prepare_data(cfg)
    calls = {"n": 0}
    real_forward = GPT.forward

    def poisoned(self, idx, targets=None, reduction="mean"):
        out = real_forward(self, idx, targets, reduction)
        calls["n"] += 1
        return out * float("nan") if calls["n"] >= 3 else out

    monkeypatch.setattr(GPT, "forward", poisoned)
    with pytest.raises(TrainingError) as e:
        train(cfg, tmp_path / "r", data=data, progress=False)
    assert "at step 3" in str(e.value) and "\n" not in str(e.value)
    good = ckpt.load_checkpoint(tmp_path / "r")
    assert good.step == 2
    assert all(torch.isfinite(v).all() for v in good.model_state.values())


def test_wallclock_budget_stops_training(tiny_data, tmp_path):
    cfg = _cfg(tiny_data, "train.iterations=100000", "train.max_wallclock_seconds=1.5", "train.warmdown_frac=0.5")
    res = train(cfg, tmp_path / "w", data=prepare_data(cfg), progress=False)
    assert res.stopped_by == "wallclock"
    assert res.train_seconds >= 1.5
    # the step in flight finishes, nothing more
    assert res.train_seconds - 1.5 < 3 * res.train_seconds / res.steps + 0.2
    assert res.steps < 100000


def test_grad_accum_rule_and_errors():
    cfg = get_preset("baseline")
    assert grad_accum_steps(cfg, 1) == 8 and grad_accum_steps(cfg, 8) == 1 and grad_accum_steps(cfg, 2) == 4
    from pgolf.errors import ConfigError

    with pytest.raises(ConfigError):
        grad_accum_steps(cfg, 3)
    with pytest.raises(ConfigError):
        grad_accum_steps(apply_overrides(cfg, ["train.batch_tokens=1000"]), 1)


# Gradient accumulation's defining property (same update as more ranks with the same global batch)
# is tested against a real 2-process gloo run in test_ddp.py.


def test_weight_decay_taper_reaches_the_optimizers(tiny_data, tmp_path):
    """The trainer sets every group's weight_decay = base_wd × wd_multiplier(progress) before each step."""
    from pgolf.config import OptimConfig
    from pgolf.optim.schedule import wd_multiplier

    cfg = _cfg(tiny_data, "optim.adam_wd=0.1", "optim.muon_wd=0.05", "optim.wd_taper_start_frac=0.5",
               "optim.wd_taper_final_mult=0.2")
    train(cfg, tmp_path, data=prepare_data(cfg), progress=False)
    groups = [g for s in ckpt.load_checkpoint(tmp_path).optimizer_states for g in s["param_groups"]]
    mul = wd_multiplier(7 / 8, OptimConfig(wd_taper_start_frac=0.5, wd_taper_final_mult=0.2))  # before step 8
    assert mul == pytest.approx(0.4)
    wds = sorted(round(g["weight_decay"], 12) for g in groups)
    assert wds == sorted(round(w * mul, 12) for w in (0.1, 0.05, 0.1))  # embed AdamW, Muon, scalar AdamW
