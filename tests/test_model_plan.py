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


# --- depth recurrence, parallel lanes, gated skips, attention gates, document-aware attention ---------


def test_recurrence_virtual_order_and_parameters():
    cfg11 = ModelConfig(vocab_size=64, num_layers=11, model_dim=32, num_heads=2, num_kv_heads=1)
    looped = apply_overrides(RunConfig(model=cfg11), ["model.recur.loops=2", "model.recur.start=3",
                                                      "model.recur.end=5"]).model
    plan = build_plan(looped, True)
    assert [p.block for p in plan] == [0, 1, 2, 3, 4, 5, 3, 4, 5, 3, 4, 5, 6, 7, 8, 9, 10]  # [04-09b]
    assert [p.block for p in plan if p.push_skip] == [0, 1, 2, 3, 4, 5, 3, 4]  # the record's encoder list
    assert [p.pop_skip for p in plan if p.pop_skip is not None] == list(range(8))
    assert [p.block for p in build_plan(looped, False)] == list(range(11))
    plain = GPT(cfg11)
    tied = GPT(looped)
    # tied recurrence adds no parameters beyond the 3 extra skip weights of the longer U-Net
    assert tied.num_params() - plain.num_params() == (8 - 5) * 32
    untied = GPT(apply_overrides(RunConfig(model=looped), ["model.recur.untie_mlp=true"]).model)
    assert len(untied.recur_mlps) == 6  # blocks 3, 4, 5 × passes 2, 3
    assert {p.mlp_slot for p in untied.plans[True] if p.mlp_slot is not None} == set(range(6))
    # the looped forward really runs blocks 3..5 three times
    calls = []
    for i, b in enumerate(tied.blocks):
        b.register_forward_hook(lambda m, a, o, i=i: calls.append(i))
    tied(torch.randint(0, 64, (1, 8)))
    assert calls == [p.block for p in plan]
    tied.looping = False
    calls.clear()
    tied(torch.randint(0, 64, (1, 8)))
    assert calls == list(range(11))


@pytest.mark.parametrize("layers", [2, 3, 5])
def test_negative_parallel_start_counts_from_the_end(layers):
    """−k is the layer L−k, so the lanes follow the depth autosize picks: the same plan, parameters and
    outputs as the absolute index."""
    base = [f"model.num_layers={layers}", "model.skips=none"]
    rel, ab = _cfg(*base, "model.parallel_start=-1"), _cfg(*base, f"model.parallel_start={layers - 1}")
    assert rel.parallel_from == ab.parallel_from == layers - 1 and _cfg(*base).parallel_from is None
    assert build_plan(rel) == build_plan(ab)
    assert [p.parallel for p in build_plan(rel)] == [False] * (layers - 1) + [True]
    torch.manual_seed(3)
    m_rel = GPT(rel)
    torch.manual_seed(3)
    m_ab = GPT(ab)
    sd_rel, sd_ab = m_rel.state_dict(), m_ab.state_dict()
    assert sd_rel.keys() == sd_ab.keys() and "lane_post" in sd_rel
    assert all(torch.equal(sd_rel[k], sd_ab[k]) for k in sd_rel)
    x = torch.randint(0, 64, (2, 9))
    assert torch.equal(m_rel(x), m_ab(x))


def test_parallel_lanes_match_a_reference():
    cfg = _cfg("model.parallel_start=3", "model.skips=none")
    torch.manual_seed(6)
    m = GPT(cfg)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(std=0.2)
    plan = m.plan
    assert [p.parallel for p in plan] == [False, False, False, True, True]
    # reference: sequential blocks 0..2, then two lanes updated from the lanes before each block
    from pgolf.model.gpt import Context
    from pgolf.model.layers import rms_norm
    from pgolf.model.rotary import rotary_tables

    x_idx = torch.randint(0, 64, (2, 7))
    x = rms_norm(m.tok_emb(x_idx))
    x0 = x
    cos, sin = rotary_tables(7, cfg.head_dim, cfg.rope_base, x.device, x.dtype)
    ctx = Context(cos, sin)
    for layer in plan[:3]:
        x = m.blocks[layer.block](x, x0, ctx, layer)
    l0 = l1 = x
    for layer in plan[3:]:
        b = m.blocks[layer.block]
        a = b.attn_branch(b.mix(l0, x0), ctx, layer)
        f = b.mlp_branch(l1, layer)
        r, p = m.lane_resid[layer.block], m.lane_post[layer.block]
        l0, l1 = r[0] * l0 + p[0, 0] * a + p[1, 0] * f, r[1] * l1 + p[0, 1] * a + p[1, 1] * f
    h = rms_norm(0.5 * (l0 + l1))
    ref = 30 * torch.tanh(torch.nn.functional.linear(h, m.tok_emb.weight) / 30)
    assert torch.allclose(m(x_idx), ref, atol=1e-5)
    assert m.lane_resid.shape == (5, 2) and m.lane_post.shape == (5, 2, 2)
    assert float(GPT(cfg).lane_resid[0, 0]) == pytest.approx(1.1)


def test_gated_skips_blend_with_a_sigmoid():
    m = GPT(_cfg("model.skips=gated"))
    x, s = torch.randn(2, 3, 32), torch.randn(2, 3, 32)
    with torch.no_grad():
        m.skip_weights.normal_()
    assert torch.allclose(m._merge_skip(1, x, s), 0.5 * x + 0.5 * m.skip_weights[1] * s, atol=1e-6)  # g = 0
    with torch.no_grad():
        m.skip_gates.fill_(2.0)
    g = torch.sigmoid(torch.tensor(2.0))
    assert torch.allclose(m._merge_skip(1, x, s), g * x + (1 - g) * m.skip_weights[1] * s, atol=1e-6)


@pytest.mark.parametrize("gate", ["out", "dense", "sparse"])
def test_attention_output_gates(gate):
    from pgolf.model.gpt import parameter_roles

    torch.manual_seed(7)
    base = GPT(TINY)
    with torch.no_grad():
        for p in base.parameters():
            p.normal_(std=0.1)
    gated = GPT(_cfg(f"model.attn.gate={gate}", "model.attn.gate_scale=0.5"))
    gated.load_state_dict({**gated.state_dict(), **base.state_dict()})
    x = torch.randint(0, 64, (2, 9))
    attn = gated.blocks[0].attn
    h = torch.randn(2, 9, 32)
    g = attn.head_gate(h)
    assert g.shape == (2, 9, 4)
    if gate == "out":  # zero-init: 2σ(0) = 1, the model is unchanged
        assert torch.equal(g, torch.ones_like(g)) and torch.allclose(gated(x), base(x), atol=1e-6)
    else:  # zero-init σ(0) = ½ halves every head at init
        assert torch.equal(g, torch.full_like(g, 0.5))
    roles = parameter_roles(gated)
    assert {r.value for n, r in roles.items() if "gate" in n} == {"gate"}
    n_gate = {"out": 12 * 4, "dense": 4 * 32, "sparse": 4 * 12}[gate]
    assert gated.num_params() - base.num_params() == 5 * n_gate


def test_document_aware_model_never_crosses_a_bos():
    """Change every token of the first document: the second document's logits are bit-identical with
    document-aware attention, the SmearGate BOS fix and BigramHash reset at BOS; different without."""
    sets = ["model.embed.smear=v3", "model.embed.smear_bos_fix=true", "model.embed.bigram_buckets=31",
            "model.embed.bigram_bos_reset=true"]
    torch.manual_seed(8)
    aware = GPT(_cfg(*sets, "model.attn.doc_mask=true"))
    with torch.no_grad():
        for p in aware.parameters():
            p.normal_(std=0.2)
    plain = GPT(_cfg(*sets))
    plain.load_state_dict(aware.state_dict())
    a = torch.tensor([[1, 5, 9, 12, 7, 1, 20, 21, 22, 23, 24, 25]])  # BOS = 1 at 0 and 5
    b = a.clone()
    b[0, 1:5] = torch.tensor([40, 41, 42, 43])
    with torch.no_grad():
        assert torch.equal(aware(a)[:, 5:], aware(b)[:, 5:])
        assert not torch.allclose(plain(a)[:, 5:], plain(b)[:, 5:])
        # causality within the stream is kept: a later change never reaches an earlier position
        c = a.clone()
        c[0, 9:] = 3
        assert torch.equal(aware(a)[:, :9], aware(c)[:, :9])


# --- chunked cross-entropy, overtone embedding init, resid-mix schedule, momentum warm-up by fraction --


def test_chunked_cross_entropy_equals_the_full_one_with_gradients():
    torch.manual_seed(9)
    full = GPT(TINY).double()
    with torch.no_grad():
        for p in full.parameters():
            p.normal_(std=0.1)
    chunked = GPT(_cfg("model.ce_chunk_tokens=7")).double()
    chunked.load_state_dict(full.state_dict())
    x, y = torch.randint(0, 64, (3, 10)), torch.randint(0, 64, (3, 10))
    for red in ("mean", "sum", "none"):
        assert torch.allclose(full(x, y, reduction=red), chunked(x, y, reduction=red), atol=1e-12)
    full(x, y).backward()
    chunked(x, y).backward()
    for (n, p), q in zip(full.named_parameters(), chunked.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-12), n


def test_overtone_init_gives_a_power_law_spectrum():
    from pgolf.model.gpt import overtone_

    w = torch.randn(64, 32, dtype=torch.float64) * 0.005
    s0 = torch.linalg.svdvals(w)[0]
    overtone_(w)
    s = torch.linalg.svdvals(w)
    assert torch.allclose(s, s0 * torch.arange(1, 33, dtype=torch.float64).rsqrt(), rtol=1e-10)
    m = GPT(_cfg("model.embed_init=overtone"))
    sv = torch.linalg.svdvals(m.tok_emb.weight.double())
    assert torch.allclose(sv / sv[0], torch.arange(1, 33, dtype=torch.float64).rsqrt(), rtol=1e-4)


def test_resid_mix_schedule_init():
    m = GPT(_cfg("model.resid_mix_init=schedule"))
    for i, b in enumerate(m.blocks):
        m0 = 1 / (1 + torch.exp(torch.tensor(-3.0 * (i / 4 - 0.5))))
        assert torch.allclose(b.resid_mix[0], m0.expand(32)) and torch.allclose(b.resid_mix[1], 1 - m0.expand(32))


def test_momentum_warmup_by_fraction():
    from pgolf.config import OptimConfig
    from pgolf.optim.schedule import muon_momentum

    o = OptimConfig(muon_momentum=0.99, muon_momentum_warmup_start=0.9, muon_momentum_warmup_frac=0.2)
    assert muon_momentum(5, o, 0.0) == pytest.approx(0.9) and muon_momentum(5, o, 0.1) == pytest.approx(0.945)
    assert muon_momentum(5, o, 0.5) == pytest.approx(0.99)
    assert muon_momentum(250, OptimConfig(), None) == pytest.approx(0.9)  # the step rule when frac = 0
