"""SwiGLU and non-integer MLP widths (model.mlp_act=swiglu, model.mlp_hidden; the non-record
2026-03-19_SwiGLU_WarmdownFix_QuarterBatch_1x5090): the folder's logged parameter count, the MLP against a float64
reference, mlp_hidden = 0 keeping every existing model as it was, the gate's role (Muon, QAT, low-bit), FLOPs, the
preset. Training, export, exact rescoring and the bundle: tests/test_fam5_run.py."""

from __future__ import annotations

import pytest
import torch

from pgolf.config import ModelConfig, RunConfig, apply_overrides
from pgolf.errors import ConfigError
from pgolf.model.flops import forward_flops_per_token
from pgolf.model.gpt import GPT, MLP, count_params, parameter_groups, parameter_roles
from pgolf.presets import get_preset
from pgolf.roles import Role

TINY = dict(vocab_size=64, num_layers=3, model_dim=32, num_heads=4, num_kv_heads=2)


def test_the_folders_logged_parameter_count():
    """README of the folder: 9×512, vocab 1024, MLP_HIDDEN=640 with SwiGLU — "Model params: 16,470,088". ``pgolf info``
    prints ``count_params(cfg.model)`` (``pgolf info swiglu-5090 --json`` gives "params": 16470088)."""
    assert count_params(ModelConfig(mlp_act="swiglu", mlp_hidden=640)) == 16_470_088
    assert count_params(ModelConfig()) == 17_059_912  # the baseline, unchanged
    cfg = get_preset("swiglu-5090")
    assert count_params(cfg.model) == 16_470_088 and cfg.model.mlp_width == 640
    assert (cfg.train.batch_tokens, cfg.train.warmdown_frac, cfg.train.grad_accum) == (131072, 0.2, 2)


def test_swiglu_against_a_float64_reference():
    torch.manual_seed(0)
    cfg = ModelConfig(**TINY, mlp_act="swiglu", mlp_hidden=45)  # 45: not a multiple of d = 32
    mlp = MLP(cfg).double()
    with torch.no_grad():
        for p in mlp.parameters():
            p.normal_(0, 0.3)
    assert mlp.fc.weight.shape == mlp.gate.weight.shape == (45, 32) and mlp.proj.weight.shape == (32, 45)
    x = torch.randn(2, 5, 32, dtype=torch.float64)
    zg, zu = x @ mlp.gate.weight.T, x @ mlp.fc.weight.T
    want = (zg / (1 + torch.exp(-zg)) * zu) @ mlp.proj.weight.T  # W_down (silu(W_gate x) ⊙ W_up x)
    torch.testing.assert_close(mlp(x), want, rtol=1e-12, atol=1e-12)
    relu2 = MLP(ModelConfig(**TINY, mlp_hidden=45)).double()
    relu2.load_state_dict({k: v for k, v in mlp.state_dict().items() if not k.startswith("gate")})
    assert not torch.allclose(relu2(x), want)  # the gate is what makes it SwiGLU


def test_mlp_hidden_zero_keeps_every_model_as_it_was():
    for mult in (1, 2, 3):
        a, b = ModelConfig(**TINY, mlp_mult=mult), ModelConfig(**TINY, mlp_mult=mult, mlp_hidden=mult * 32)
        assert a.mlp_width == b.mlp_width == mult * 32
        torch.manual_seed(1)
        ma = GPT(a)
        torch.manual_seed(1)
        mb = GPT(b)
        sa, sb = ma.state_dict(), mb.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    with pytest.raises(ConfigError, match="mlp_hidden"):
        apply_overrides(RunConfig(), ["model.mlp_hidden=-1"])


def test_the_gate_is_an_mlp_up_matrix_for_muon_qat_and_low_bit():
    cfg = apply_overrides(RunConfig(model=ModelConfig(**TINY, mlp_act="swiglu", mlp_hidden=40)),  # + an untied MLP
                          ["model.recur.loops=1", "model.recur.start=1", "model.recur.end=1",
                           "model.recur.untie_mlp=true"]).model
    model = GPT(cfg)
    roles = parameter_roles(model)
    gates = [n for n in roles if n.endswith("mlp.gate.weight") or (n.startswith("recur_mlps") and ".gate." in n)]
    assert len(gates) == cfg.num_layers + 1 and all(roles[n] is Role.MLP_UP for n in gates)
    muon = {n for n, _ in parameter_groups(model)["matrix"]}
    assert set(gates) <= muon
    from pgolf.config import QatConfig
    from pgolf.quant.lowbit import LowBitWeight
    from pgolf.quant.qat import FakeQuant, attach_qat

    for kind, fn in (("ste", FakeQuant), ("ternary", LowBitWeight)):
        m = GPT(cfg)
        attach_qat(m, QatConfig(kind=kind, group_size=8))
        assert all(isinstance(b.mlp.gate.weight_fn, fn) for b in m.blocks)


def test_flops_count_the_gate():
    base = ModelConfig(**TINY, mlp_hidden=40)
    glu = ModelConfig(**TINY, mlp_hidden=40, mlp_act="swiglu")
    diff = forward_flops_per_token(glu, 64) - forward_flops_per_token(base, 64)
    assert diff == 2 * glu.num_layers * glu.model_dim * 40  # one more d×hidden matmul per layer
