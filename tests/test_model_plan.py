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
