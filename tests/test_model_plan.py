"""The per-layer plan and the first technique switches: U-Net skips, XSA, BigramHash."""

from __future__ import annotations

import pytest
import torch

from pgolf.config import ModelConfig, RunConfig, apply_overrides
from pgolf.model.gpt import GPT, build_plan, exclusive
from pgolf.model.hashed import bigram_hash

TINY = ModelConfig(vocab_size=64, num_layers=5, model_dim=32, num_heads=4, num_kv_heads=2, mlp_mult=2)


def _cfg(*sets: str) -> ModelConfig:
    return apply_overrides(RunConfig(model=TINY), list(sets)).model


def test_plan_reproduces_the_baseline_unet():
    plan = build_plan(apply_overrides(RunConfig(), []).model)  # 9 layers: 4 push, the next 4 pop (LIFO)
    assert [p.push_skip for p in plan] == [True] * 4 + [False] * 5
    assert [p.pop_skip for p in plan] == [None] * 4 + [0, 1, 2, 3, None]
    assert [p.block for p in plan] == list(range(9)) and not any(p.xsa for p in plan)
    flat = build_plan(_cfg("model.skips=none"))
    assert not any(p.push_skip or p.pop_skip is not None for p in flat)
    assert GPT(_cfg("model.skips=none")).skip_weights.numel() == 0


def test_plan_is_built_once_and_forward_follows_it():
    m = GPT(_cfg("model.attn.xsa_layers=1,3"))
    assert [p.xsa for p in m.plan] == [False, True, False, True, False]
    calls = []
    for i, b in enumerate(m.blocks):
        b.attn.register_forward_hook(lambda mod, a, k, o, i=i: calls.append((i, k.get("xsa"))), with_kwargs=True)
    m(torch.randint(0, 64, (1, 8)))
    assert calls == [(0, False), (1, True), (2, False), (3, True), (4, False)]


def test_xsa_output_is_orthogonal_to_the_own_value_direction():
    """XSA property (arXiv:2603.09078, [03-20c]): y·v = 0 for every query head and token (GQA groups)."""
    g = torch.Generator().manual_seed(0)
    y = torch.randn(2, 4, 7, 8, generator=g, dtype=torch.float64)
    v = torch.randn(2, 2, 7, 8, generator=g, dtype=torch.float64)
    out = exclusive(y, v)
    vh = v.repeat_interleave(2, dim=1)  # query head h reads KV head h // 2
    assert torch.allclose((out * vh).sum(-1), torch.zeros(2, 4, 7, dtype=torch.float64), atol=1e-12)
    # the rest is untouched: out = y − (y·v̂)v̂ exactly
    vhat = vh / vh.norm(dim=-1, keepdim=True)
    assert torch.allclose(out, y - (y * vhat).sum(-1, keepdim=True) * vhat, atol=1e-12)
    # in the model: an XSA layer differs from the plain one, a non-XSA layer does not
    torch.manual_seed(1)
    base = GPT(TINY)
    for p in base.parameters():
        torch.nn.init.normal_(p, std=0.1)
    xsa = GPT(_cfg("model.attn.xsa_layers=2"))
    xsa.load_state_dict(base.state_dict())
    x = torch.randint(0, 64, (2, 12))
    assert not torch.allclose(base(x), xsa(x))


def test_xsa_layers_are_checked():
    with pytest.raises(Exception, match="does not exist"):
        _cfg("model.attn.xsa_layers=5")
    with pytest.raises(Exception, match="twice"):
        _cfg("model.attn.xsa_layers=1,1")


def test_bigram_hash_matches_its_formula_and_starts_as_the_baseline():
    idx = torch.randint(0, 64, (3, 10), generator=torch.Generator().manual_seed(2))
    h = bigram_hash(idx, 97)
    for b in range(3):
        assert h[b, 0] == 96
        for t in range(1, 10):
            assert h[b, t] == ((36313 * int(idx[b, t])) ^ (27191 * int(idx[b, t - 1]))) % 96
    torch.manual_seed(3)
    base = GPT(TINY)
    big = GPT(_cfg("model.embed.bigram_buckets=97", "model.embed.bigram_dim=8"))
    assert torch.count_nonzero(big.bigram.table) == 0 and float(big.bigram.scale.detach()) == pytest.approx(0.05)
    big.load_state_dict({**big.state_dict(), **base.state_dict()})
    x = torch.randint(0, 64, (2, 12))
    assert torch.equal(base(x), big(x))  # zero table: the baseline's function
    with torch.no_grad():
        big.bigram.table.normal_()
    assert not torch.equal(base(x), big(x))
    loss = big(x, x)
    loss.backward()  # the projection is not zero-initialised, so the table learns (module docstring)
    assert big.bigram.table.grad.abs().sum() > 0
    n_extra = 97 * 8 + 32 * 8 + 1
    assert big.num_params() - base.num_params() == n_extra


# --- partial RoPE, LN scale, LeakyReLU², SmearGate, value embeddings, orthogonal init ------------------


def test_partial_rope_leaves_the_unrotated_dims_position_independent():
    from pgolf.model.rotary import apply_rotary, rope_base, rotary_tables

    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 2, 1, 16, generator=g, dtype=torch.float64).expand(1, 2, 9, 16)  # same vector at every t
    cos, sin = rotary_tables(9, 4, 10000.0, torch.device("cpu"), torch.float64)
    y = apply_rotary(x, cos, sin)
    assert torch.equal(y[..., 4:], x[..., 4:])  # dims ≥ r: untouched at every position
    assert not torch.allclose(y[..., 1, :4], y[..., 2, :4])  # rotated dims depend on the position
    # each rotated pair (x_i, x_{i+r/2}) keeps its norm; r = D is the baseline's full RoPE
    n = lambda t: t[..., :2].square() + t[..., 2:4].square()
    assert torch.allclose(n(y[..., :4]), n(x[..., :4]))
    cf, sf = rotary_tables(9, 16, 10000.0, torch.device("cpu"), torch.float64)
    half = 8
    full = torch.cat((x[..., :half] * cf + x[..., half:] * sf, x[..., half:] * cf - x[..., :half] * sf), -1)
    assert torch.allclose(apply_rotary(x, cf, sf), full)
    # NTK scaling beyond the training length: base' = base·s^(r/(r−2))
    assert rope_base(10000.0, 2048, 16, 1024) == pytest.approx(10000.0 * 2 ** (16 / 14))
    assert rope_base(10000.0, 1024, 16, 1024) == 10000.0 and rope_base(10000.0, 4096, 16, 0) == 10000.0


def test_ln_scale_and_leaky_relu_square():
    cfg = _cfg("model.ln_scale=true", "model.mlp_act=leaky_relu2")
    plan = build_plan(cfg)
    assert [p.ln_scale for p in plan] == pytest.approx([1 / (i + 1) ** 0.5 for i in range(5)])
    m = GPT(cfg)
    mlp = m.blocks[0].mlp
    torch.nn.init.normal_(mlp.proj.weight)
    x = torch.randn(2, 3, 32)
    ref = mlp.proj.weight @ (torch.nn.functional.leaky_relu(mlp.fc.weight @ x[..., None], 0.5).square())
    assert torch.allclose(mlp(x), ref[..., 0], atol=1e-5)


@pytest.mark.parametrize("variant", ["v1", "v2", "v3"])
def test_smear_gate_formulas(variant):
    from pgolf.model.smear import SmearGate

    torch.manual_seed(0)
    sg = SmearGate(variant, 16)
    with torch.no_grad():
        for p in sg.parameters():
            p.normal_()
    x = torch.randn(2, 6, 16, dtype=torch.float32)
    idx = torch.randint(2, 50, (2, 6))
    prev = torch.cat((torch.zeros(2, 1, 16), x[:, :-1]), 1)
    if variant == "v3":
        ref = x + sg.lam * torch.sigmoid(x[..., :12] @ sg.gate.t()) * prev
    else:
        s = torch.sigmoid(sg.gamma)
        ref = s * x + (1 - s) * prev if variant == "v1" else (1 - s) * x + s * prev
    assert torch.allclose(sg(x, idx), ref, atol=1e-6)
    assert sg.pre_norm == (variant != "v2")


@pytest.mark.parametrize("variant", ["v1", "v2", "v3"])
def test_smear_gate_bos_fix_blocks_the_previous_document(variant):
    """Perturb the token just before a BOS: with the fix nothing at or after the BOS changes; without it
    the BOS position does (the leak of #1797)."""
    from pgolf.model.smear import SmearGate

    torch.manual_seed(1)
    fixed, leaky = SmearGate(variant, 16, bos_fix=True), SmearGate(variant, 16, bos_fix=False)
    with torch.no_grad():
        for p, q in zip(fixed.parameters(), leaky.parameters(), strict=True):
            p.normal_()
            q.copy_(p)
    idx = torch.tensor([[5, 6, 7, 1, 8, 9]])  # BOS (1) at position 3
    x = torch.randn(1, 6, 16)
    x2 = x.clone()
    x2[:, :3] += torch.randn(1, 3, 16)  # the previous document changes
    assert torch.equal(fixed(x, idx)[:, 3:], fixed(x2, idx)[:, 3:])
    assert not torch.allclose(leaky(x, idx)[:, 3], leaky(x2, idx)[:, 3])


def test_smear_v3_is_the_identity_at_init_and_in_the_model():
    torch.manual_seed(2)
    base = GPT(TINY)
    sm = GPT(_cfg("model.embed.smear=v3", "model.embed.smear_bos_fix=true"))
    sm.load_state_dict({**sm.state_dict(), **base.state_dict()})
    x = torch.randint(0, 64, (2, 10))
    assert torch.equal(base(x), sm(x))
    r = __import__("pgolf.model.gpt", fromlist=["parameter_roles"]).parameter_roles(sm)
    assert r["smear.gate"].value == "gate" and r["smear.lam"].value == "control"


def test_value_embeddings_start_as_the_baseline_and_reach_only_their_layers():
    torch.manual_seed(3)
    base = GPT(TINY)
    with torch.no_grad():
        for p in base.parameters():  # non-zero output projections, so values matter
            p.normal_(std=0.1)
    ve = GPT(_cfg("model.attn.ve_layers=1,3", "model.attn.ve_dim=8"))
    assert ve.num_params() - base.num_params() == 64 * 8 + 8 * (2 * 8) + 1 + 2  # table, proj, scale, 2 layer scales
    ve.load_state_dict({**ve.state_dict(), **base.state_dict()})
    x = torch.randint(0, 64, (2, 10))
    assert torch.equal(base(x), ve(x))  # P starts at zero
    seen = {}
    for i, b in enumerate(ve.blocks):
        b.attn.register_forward_hook(lambda mod, a, k, o, i=i: seen.__setitem__(i, k.get("v_extra") is not None),
                                     with_kwargs=True)
    with torch.no_grad():
        ve.ve.proj.weight.normal_()
    out = ve(x)
    assert seen == {0: False, 1: True, 2: False, 3: True, 4: False} and not torch.equal(out, base(x))


@pytest.mark.parametrize("mode", ["orthogonal", "orthogonal_records"])
def test_orthogonal_init_respects_zero_init(mode):
    cfg = ModelConfig(vocab_size=64, num_layers=2, model_dim=64, num_heads=2, num_kv_heads=2, mlp_mult=2)
    cfg = apply_overrides(RunConfig(model=cfg), [f"model.init={mode}", "model.attn.ve_layers=1",
                                                 "model.attn.ve_dim=64", "model.embed.bigram_buckets=16",
                                                 "model.embed.bigram_dim=64"]).model
    torch.manual_seed(4)
    m = GPT(cfg)
    q = m.blocks[0].attn.c_q.weight.double()
    assert torch.allclose(q @ q.T, torch.eye(64, dtype=torch.float64), atol=1e-5)  # orthogonal rows
    up = m.blocks[0].mlp.fc.weight.double()  # [128, 64]: orthonormal columns
    assert torch.allclose(up.T @ up, torch.eye(64, dtype=torch.float64), atol=1e-5)
    assert not m.blocks[0].attn.proj.weight.any() and not m.blocks[0].mlp.proj.weight.any()  # zero-init kept
    bp = m.bigram.proj.weight.double()  # a projection: orthogonal × 1/√(2L)
    assert torch.allclose(bp @ bp.T, torch.eye(64, dtype=torch.float64) / 4, atol=1e-5)
    ve_zero = not m.ve.proj.weight.any()
    assert ve_zero == (mode == "orthogonal")  # the records overwrote the value-embedding projection's zero
