"""Weight averaging (EMA against a float64 reference, SWA really applied) and QAT as a model transform
(late QAT really switches on under torch.compile)."""

from __future__ import annotations

import copy

import pytest
import torch

from pgolf.config import ModelConfig, QatConfig, RunConfig, apply_overrides
from pgolf.data.prepare import prepare_data
from pgolf.errors import ConfigError
from pgolf.model.gpt import GPT
from pgolf.presets import get_preset
from pgolf.quant import intgrid
from pgolf.quant.qat import FakeQuant, attach_qat
from pgolf.train import averaging
from pgolf.train import checkpoint as ckpt
from pgolf.train.loop import train

SMALL = ModelConfig(vocab_size=64, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1)


def _cfg(data_dir, *extra):
    return apply_overrides(get_preset("tiny"), [f"data.path={data_dir}", "model.vocab_size=384", "train.iterations=8",
                                                *extra])


def _spy(monkeypatch):
    """Record the live weights the trainer hands the averager after every step (behaviour unchanged)."""
    seen: list[dict[str, torch.Tensor]] = []
    orig = averaging.WeightAverager.update

    def update(self, model, step, progress, lr_mult):
        seen.append({k: v.detach().double().clone() for k, v in model.state_dict().items()})
        return orig(self, model, step, progress, lr_mult)

    monkeypatch.setattr(averaging.WeightAverager, "update", update)
    return seen


@pytest.mark.parametrize("warmup", [0, 2])
def test_ema_in_training_equals_a_float64_reference(tiny_data, tmp_path, monkeypatch, warmup):
    """With priming steps too: they are rolled back, and so is what they did to the average."""
    seen = _spy(monkeypatch)
    cfg = _cfg(tiny_data, "train.ema.decay=0.8", f"train.warmup_steps={warmup}")
    res = train(cfg, tmp_path, data=prepare_data(cfg), progress=False)
    seen = seen[warmup:]  # the averager also sees the rolled-back priming steps
    assert len(seen) == 8
    torch.manual_seed(cfg.train.seed)
    ref = {k: v.double() for k, v in GPT(cfg.model).state_dict().items()}  # the EMA starts at the initial weights
    for live in seen:
        ref = {k: 0.8 * ref[k] + 0.2 * live[k] for k in ref}
    out = res.model.state_dict()
    for k, v in ref.items():
        assert torch.allclose(out[k].double(), v, rtol=1e-5, atol=1e-7), k
    assert not torch.allclose(out["blocks.0.attn.c_q.weight"].double(), seen[-1]["blocks.0.attn.c_q.weight"])
    ck = ckpt.load_checkpoint(tmp_path)  # the checkpoint exports the average and keeps the live weights
    assert ck.extra["weights"] == "ema"
    assert torch.equal(ck.model_state["tok_emb.weight"], out["tok_emb.weight"])
    assert torch.allclose(ck.averages["live.tok_emb.weight"].double(), seen[-1]["tok_emb.weight"])


def test_ema_horizon_fraction_and_exclusive_averages():
    t = apply_overrides(RunConfig(), ["train.ema.horizon_frac=0.1"]).train
    av = averaging.WeightAverager(GPT(SMALL), t)
    # at 25 % of the budget after 50 steps: N̂ = 200, horizon 20 steps, d = 1 − 1/20
    assert av.ema_decay(50, 0.25) == pytest.approx(0.95)
    assert av.ema_decay(1, 0.001) == pytest.approx(1 - 1 / 100)
    with pytest.raises(ConfigError, match="not both"):
        apply_overrides(RunConfig(), ["train.ema.decay=0.99", "train.ema.horizon_frac=0.1"])
    with pytest.raises(ConfigError, match="one average"):
        apply_overrides(RunConfig(), ["train.ema.decay=0.99", "train.swa.every=5"])


def test_swa_is_applied_and_is_the_mean_of_its_window(tiny_data, tmp_path, monkeypatch):
    seen = _spy(monkeypatch)
    cfg = _cfg(tiny_data, "train.swa.every=2", "train.swa.start_frac=0.5")
    res = train(cfg, tmp_path, data=prepare_data(cfg), progress=False)
    # progress before step s+1 is s/8; snapshots at steps 2, 4, 6, 8 whose progress ≥ 0.5: steps 6 and 8
    snaps = [seen[i] for i in (5, 7)]
    for k, v in res.model.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(v.double(), (snaps[0][k] + snaps[1][k]) / 2, rtol=1e-5, atol=1e-7), k
    assert ckpt.load_checkpoint(tmp_path).extra["averaging"]["count"] == 2


def _quantized_reference(model: torch.nn.Module, bits: int) -> torch.nn.Module:
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for mod in ref.modules():
            if hasattr(mod, "weight_fn"):
                mod.weight_fn = None
                if mod.param_roles["weight"].optimizer == "matrix":
                    q, s = intgrid.quantize_rtn(mod.weight, intgrid.QuantSpec(bits=bits, clip="max"))
                    mod.weight.copy_(intgrid.dequantize_grid(q, s, intgrid.QuantSpec(bits=bits).group_size))
    return ref


def _grid_friendly(m: torch.nn.Module, bits: int) -> None:
    """Weights s·(k + u), |u| ≤ 0.3, with one entry per row at qmax·s (s = 2^−6 exact in fp16): rounding is
    unambiguous, so compiled kernels (which may divide via a reciprocal) and eager agree bit for bit."""
    qm = 2 ** (bits - 1) - 1
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        for mod in m.modules():
            if hasattr(mod, "weight_fn") and mod.param_roles["weight"].optimizer == "matrix":
                w = mod.weight
                k = torch.randint(-qm + 1, qm, w.shape, generator=g).float()
                u = (torch.rand(w.shape, generator=g) - 0.5) * 0.6
                w.copy_((k + u) * 2.0**-6)
                w[:, 0] = qm * 2.0**-6


def test_late_qat_forward_equals_the_quantized_weights_once_active_compiled():
    torch.manual_seed(0)
    m = GPT(SMALL)
    _grid_friendly(m, 4)
    qat = attach_qat(m, QatConfig(kind="ste", bits=4))
    assert len(qat.fns) == 2 * 6  # q, k, v, o, up, down per layer
    compiled = torch.compile(m, dynamic=False)
    x = torch.randint(0, 64, (2, 16))
    m.train()
    plain = compiled(x)  # compiled while QAT is off
    assert torch.allclose(plain, _quantized_reference(m, 4).train()(x)) is False
    qat.set(True)  # flipped after compilation: must take effect in the compiled graph
    on = compiled(x)
    ref = _quantized_reference(m, 4).train()(x)
    assert torch.allclose(on, ref, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(on, plain)
    m.eval()  # fake quantization is a training-time transform
    plain_ref = copy.deepcopy(m)
    for mod in plain_ref.modules():
        if hasattr(mod, "weight_fn"):
            mod.weight_fn = None
    assert torch.allclose(compiled(x), plain_ref(x), atol=1e-5, rtol=1e-5)


def test_ste_gradient_is_the_identity_and_soft_round_approaches_round():
    w = torch.randn(8, 16, requires_grad=True)
    fq = FakeQuant(6, "ste").train()
    fq.active.fill_(1.0)
    (fq(w) * torch.arange(16.0)).sum().backward()
    assert torch.equal(w.grad, torch.arange(16.0).expand(8, 16))
    sr = FakeQuant(6, "soft_round").train()
    sr.active.fill_(1.0)
    sr.alpha.fill_(2000.0)
    ste = FakeQuant(6, "ste").train()
    ste.active.fill_(1.0)
    z = torch.randn(64, 32)
    step = ste.scale(z)  # [rows, 1]
    diff = (sr(z) - ste(z)).abs() / step
    assert diff.max() <= 1.0 + 1e-5  # never more than one step apart
    assert (diff > 1e-3).float().mean() < 0.05  # and equal except next to the half-way points


def test_late_qat_switches_on_in_training_at_its_fraction_and_is_removed_after(tiny_data, tmp_path):
    from pgolf.train.log import RunLog

    cfg = _cfg(tiny_data, "train.qat.kind=ste", "train.qat.start_frac=0.5", "train.compile=true")
    log = RunLog(tmp_path / "train.log")
    res = train(cfg, tmp_path, data=prepare_data(cfg), progress=False, log=log)
    log.close()
    text = (tmp_path / "train.log").read_text()
    assert "late_qat:enabled step:4 progress:0.5000" in text  # before step 5: progress 4/8
    assert all(getattr(m, "weight_fn", None) is None for m in res.model.modules())
    assert list(res.model.state_dict()) == list(GPT(cfg.model).state_dict())  # no QAT buffers exported


def test_recurrence_switches_on_at_its_fraction(tiny_data, tmp_path):
    from pgolf.train.log import RunLog

    cfg = _cfg(tiny_data, "model.recur.loops=1", "model.recur.start=0", "model.recur.end=1",
               "model.recur.start_frac=0.5", "train.warmup_steps=1")
    log = RunLog(tmp_path / "train.log")
    res = train(cfg, tmp_path, data=prepare_data(cfg), progress=False, log=log)
    log.close()
    text = (tmp_path / "train.log").read_text()
    assert "layer_loop:enabled step:4 progress:0.5000 order:[0, 1, 0, 1]" in text
    assert res.model.looping and res.model.num_params() == GPT(cfg.model).num_params()


def _spy_batches(monkeypatch) -> list[tuple[int, ...]]:
    """Record the shape of every training batch the loader hands out (behaviour unchanged)."""
    from pgolf.data.loader import DistributedTokenLoader

    seen: list[tuple[int, ...]] = []
    orig = DistributedTokenLoader.next_batch

    def spy(self, global_tokens, seq_len, grad_accum):
        x, y = orig(self, global_tokens, seq_len, grad_accum)
        seen.append(tuple(x.shape))
        return x, y

    monkeypatch.setattr(DistributedTokenLoader, "next_batch", spy)
    return seen


def test_progressive_sequence_length_switches_at_its_fractions(tiny_data, tmp_path, monkeypatch):
    from pgolf.train.log import RunLog

    seen = _spy_batches(monkeypatch)
    cfg = _cfg(tiny_data, "train.seq_len_stages=16,32,64", "train.seq_len_stage_fracs=0,0.25,0.5")
    log = RunLog(tmp_path / "train.log")
    train(cfg, tmp_path, data=prepare_data(cfg), progress=False, log=log)
    log.close()
    assert seen == [(128, 16)] * 2 + [(64, 32)] * 2 + [(32, 64)] * 4  # 2048 tokens per step throughout
    assert "seq_len:32 step:2 progress:0.2500" in (tmp_path / "train.log").read_text()
    with pytest.raises(ConfigError, match="end with train.seq_len"):
        apply_overrides(cfg, ["train.seq_len_stages=16,32", "train.seq_len_stage_fracs=0,0.5"])


def test_priming_compiles_every_progressive_length_before_the_clock(tiny_data, tmp_path, monkeypatch):
    """A stage switch must not recompile inside the training clock: the rolled-back priming steps run at
    every stage's length (in order), then training follows the schedule as without priming."""
    from pgolf.train.log import RunLog

    seen = _spy_batches(monkeypatch)
    cfg = _cfg(tiny_data, "train.seq_len_stages=16,32,64", "train.seq_len_stage_fracs=0,0.25,0.5",
               "train.warmup_steps=2")
    log = RunLog(tmp_path / "train.log")
    train(cfg, tmp_path, data=prepare_data(cfg), progress=False, log=log)
    log.close()
    primed = [(128, 16)] * 2 + [(64, 32)] * 2 + [(32, 64)] * 2
    assert seen == primed + [(128, 16)] * 2 + [(64, 32)] * 2 + [(32, 64)] * 4


@pytest.mark.parametrize("start", [0.0, 0.4])
def test_soft_round_alpha_ramps_from_where_qat_switched_on(start):
    q = attach_qat(GPT(SMALL), QatConfig(kind="soft_round", start_frac=start, soft_alpha_start=1.0,
                                         soft_alpha_end=16.0, soft_ramp_frac=0.1))
    assert q.update(start, 1.0) and float(q.fns[0].alpha) == pytest.approx(1.0)
    q.update(start + 0.05, 1.0)
    assert float(q.fns[0].alpha) == pytest.approx(8.5)
    q.update(start + 0.5, 1.0)
    assert float(q.fns[0].alpha) == pytest.approx(16.0) and all(float(f.active) == 1.0 for f in q.fns)
