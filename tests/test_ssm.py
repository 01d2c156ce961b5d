"""The Mamba-2 SSD mixer (pgolf.model.ssm): the chunked form equals the token-by-token recurrence in float64
(every chunk size, lengths not divisible by it, grouped B/C, document resets), the whole layer equals its
streaming form, outputs are causal by perturbation, document resets drop the previous document exactly,
gradients match the recurrence's and stay finite through resets, and the layer mixes with attention through
the per-layer plan (roles for the optimizer and the exporter, one-line config errors)."""

from __future__ import annotations

import pytest
import torch

from pgolf.config import AttnConfig, ModelConfig, SsmConfig
from pgolf.errors import ConfigError
from pgolf.model.gpt import GPT, build_plan, parameter_groups, parameter_roles
from pgolf.model.ssm import Mamba2Mixer, causal_conv, segsum, ssd_chunked, ssd_recurrent
from pgolf.roles import QUANT_GROUPS, Role

F64 = torch.float64


def _inputs(b=2, T=37, H=4, P=3, G=2, N=5, seed=0, resets=0.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, T, H, P, generator=g, dtype=F64)
    dt = torch.rand(b, T, H, generator=g, dtype=F64) * 0.5 + 0.01
    A = -(torch.rand(H, generator=g, dtype=F64) + 0.1)
    B = torch.randn(b, T, G, N, generator=g, dtype=F64)
    C = torch.randn(b, T, G, N, generator=g, dtype=F64)
    reset = (torch.rand(b, T, generator=g) < resets) if resets else None
    return x, dt, A, B, C, reset


def test_segsum_is_the_sum_over_the_segment_and_minus_inf_above():
    x = torch.tensor([0.5, -1.0, 2.0, -float("inf"), 3.0], dtype=F64)
    s = segsum(x)
    for i in range(5):
        for j in range(5):
            want = -float("inf") if j > i else sum(x[j + 1 : i + 1].tolist(), 0.0)
            assert s[i, j].item() == want, (i, j)
    assert not torch.isnan(s).any()


@pytest.mark.parametrize("resets", [0.0, 0.15])
@pytest.mark.parametrize("chunk", [1, 3, 8, 16, 64])
def test_chunked_equals_recurrent_in_float64(chunk, resets):
    x, dt, A, B, C, reset = _inputs(T=37, resets=resets)  # 37: no chunk size above divides it
    ref = ssd_recurrent(x, dt, A, B, C, reset)
    y = ssd_chunked(x, dt, A, B, C, chunk, reset)
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)


def test_one_group_per_head_and_long_decays():
    # G = H (every head its own B, C) and decays near 1 (long memory) and near 0
    x, dt, A, B, C, _ = _inputs(T=50, H=3, G=3)
    A = torch.tensor([-1e-4, -0.5, -20.0], dtype=F64)
    torch.testing.assert_close(ssd_chunked(x, dt, A, B, C, 7), ssd_recurrent(x, dt, A, B, C), rtol=1e-12, atol=1e-12)


def _mixer(seed=0, groups=2, chunk=8, conv=4, d=16):
    torch.manual_seed(seed)
    m = Mamba2Mixer(d, SsmConfig(state=8, headdim=8, expand=2, groups=groups, chunk=chunk, conv=conv)).double()
    torch.nn.init.normal_(m.out_proj.weight, std=0.3)  # zero-initialised: give it a value so outputs differ
    return m


@pytest.mark.parametrize("chunk,conv", [(8, 4), (5, 2), (64, 1)])
def test_layer_equals_its_streaming_form(chunk, conv):
    m = _mixer(chunk=chunk, conv=conv)
    x = torch.randn(2, 29, 16, dtype=F64)
    reset = torch.zeros(2, 29, dtype=torch.bool)
    reset[0, [0, 5, 6, 20]] = True  # a one-token document (5) and a reset inside a chunk
    reset[1, 13] = True
    for r in (None, reset):
        torch.testing.assert_close(m(x, r), m.recurrent(x, r), rtol=1e-11, atol=1e-12)


def test_conv_taps_read_the_past_only_and_stop_at_a_document_start():
    u = torch.arange(1, 7, dtype=F64).view(1, 6, 1)  # u_t = t + 1
    w = torch.tensor([[100.0, 10.0, 1.0]], dtype=F64)  # out_t = u_t + 10 u_{t-1} + 100 u_{t-2}
    out = causal_conv(u, w, torch.zeros(1, dtype=F64))[0, :, 0]
    assert out.tolist() == [1.0, 12.0, 123.0, 234.0, 345.0, 456.0]
    doc = torch.tensor([[1, 1, 1, 2, 2, 2]])
    out = causal_conv(u, w, torch.zeros(1, dtype=F64), doc)[0, :, 0]
    assert out.tolist() == [1.0, 12.0, 123.0, 4.0, 45.0, 456.0]


@pytest.mark.parametrize("with_resets", [False, True])
def test_causal_by_perturbation(with_resets):
    m = _mixer()
    x = torch.randn(1, 40, 16, dtype=F64)
    reset = torch.zeros(1, 40, dtype=torch.bool)
    if with_resets:
        reset[0, [0, 17]] = True
    base = m(x, reset if with_resets else None)
    for t in (0, 7, 8, 23, 39):  # chunk starts, ends and middles (chunk 8)
        x2 = x.clone()
        x2[0, t] += torch.randn(16, dtype=F64)
        out = m(x2, reset if with_resets else None)
        assert torch.equal(out[0, :t], base[0, :t]), t  # nothing before t moves, bit for bit
        assert not torch.allclose(out[0, t], base[0, t])  # and t itself does (the test can fail)


def test_a_reset_drops_the_previous_document_exactly():
    m = _mixer()
    x = torch.randn(1, 30, 16, dtype=F64)
    reset = torch.zeros(1, 30, dtype=torch.bool)
    reset[0, [0, 11]] = True
    both = m(x, reset)
    alone = m(x[:, 11:], reset[:, 11:])  # the second document run on its own
    torch.testing.assert_close(both[:, 11:], alone, rtol=1e-12, atol=1e-12)
    # without the reset the first document leaks into the second (the property is not vacuous)
    assert not torch.allclose(m(x)[:, 11:], alone)


def test_gradients_match_the_recurrence_and_are_finite_through_resets():
    x, dt, A, B, C, reset = _inputs(T=21, resets=0.2)
    reset[:, 0] = True
    reset[0, 1] = True  # two starts in a row
    ins = [t.clone().requires_grad_() for t in (x, dt, A, B, C)]
    w = torch.randn(x.shape, dtype=F64)
    (ssd_chunked(*ins, chunk=4, reset=reset) * w).sum().backward()
    chunked = [t.grad for t in ins]
    ins = [t.detach().clone().requires_grad_() for t in ins]
    (ssd_recurrent(*ins, reset=reset) * w).sum().backward()
    for a, b in zip(chunked, [t.grad for t in ins], strict=True):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-11)


def test_layer_gradients_finite_in_float32():
    torch.manual_seed(1)
    m = Mamba2Mixer(32, SsmConfig(state=16, headdim=16, chunk=8))
    torch.nn.init.normal_(m.out_proj.weight, std=0.02)
    x = torch.randn(2, 45, 32, requires_grad=True)
    reset = torch.rand(2, 45) < 0.1
    m(x, reset).square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def _hybrid(**kw) -> ModelConfig:
    base = dict(vocab_size=64, num_layers=4, model_dim=32, num_heads=2, num_kv_heads=1, ssm_layers=(0, -2),
                ssm=SsmConfig(state=8, headdim=16, chunk=8))
    base.update(kw)
    return ModelConfig(**base)


def test_plan_places_ssm_layers_and_negative_indices_follow_the_depth():
    cfg = _hybrid()
    assert [p.ssm for p in build_plan(cfg)] == [True, False, True, False]
    g = GPT(cfg)
    assert hasattr(g.blocks[0], "ssm") and not hasattr(g.blocks[0], "attn")
    assert hasattr(g.blocks[1], "attn") and not hasattr(g.blocks[1], "ssm")
    # without the switch the state dict is the transformer's (no ssm tensors anywhere)
    assert not any(".ssm." in k for k in GPT(_hybrid(ssm_layers=())).state_dict())


def test_roles_send_projections_to_muon_and_the_rest_to_adam():
    g = GPT(_hybrid())
    roles = parameter_roles(g)
    ssm = {k: r for k, r in roles.items() if ".ssm." in k}
    assert ssm["blocks.0.ssm.in_proj.weight"] is Role.SSM_IN and ssm["blocks.0.ssm.out_proj.weight"] is Role.SSM_OUT
    assert {r for k, r in ssm.items() if "proj" not in k} == {Role.CONTROL}
    matrix = {n for n, _ in parameter_groups(g)["matrix"]}
    assert {"blocks.0.ssm.in_proj.weight", "blocks.2.ssm.out_proj.weight"} <= matrix
    assert not any("A_log" in n or "conv_w" in n for n in matrix)
    assert {"ssm_in", "ssm_out"} <= set(QUANT_GROUPS)
    assert Role.SSM_IN.family == "attn" and Role.SSM_IN.hessian == "input" and not Role.SSM_IN.hot


def test_hybrid_model_is_causal_and_resets_at_bos_with_the_document_mask():
    torch.manual_seed(0)
    cfg = _hybrid(attn=AttnConfig(doc_mask=True, doc_kernel="mask"))
    g = GPT(cfg).double()
    for b in g.blocks:  # give the zero-initialised outputs a value so every layer matters
        for mod in (getattr(b, "ssm", None), getattr(b, "attn", None)):
            if mod is not None:
                torch.nn.init.normal_((mod.out_proj if hasattr(mod, "out_proj") else mod.proj).weight, std=0.2)
        torch.nn.init.normal_(b.mlp.proj.weight, std=0.2)
    idx = torch.randint(2, 64, (1, 33))
    idx[0, [0, 14]] = 1  # BOS: two documents
    with torch.no_grad():
        base = g(idx)
        idx2 = idx.clone()
        idx2[0, 20] = (idx[0, 20] + 5) % 62 + 2
        out = g(idx2)
        assert torch.equal(out[0, :20], base[0, :20]) and not torch.allclose(out[0, 20], base[0, 20])
        alone = g(idx[:, 14:])  # the second document on its own: RoPE is relative, so equal up to rounding
        torch.testing.assert_close(base[:, 14:], alone, rtol=1e-9, atol=1e-9)


def test_config_errors_are_one_line():
    with pytest.raises(ConfigError, match="xsa_layers: layer 0 is an SSM layer"):
        _hybrid(attn=AttnConfig(xsa_layers=(0,)))
    with pytest.raises(ConfigError, match="model.ssm_layers: layer 4 does not exist"):
        _hybrid(ssm_layers=(4,))
    with pytest.raises(ConfigError, match="model.ssm_layers lists a layer twice"):
        _hybrid(ssm_layers=(1, -3))
    with pytest.raises(ConfigError, match="headdim must divide"):
        _hybrid(ssm=SsmConfig(headdim=24))
    with pytest.raises(ConfigError, match="groups must divide"):
        _hybrid(ssm=SsmConfig(headdim=16, groups=3))
