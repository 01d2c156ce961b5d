"""``model.z_loss`` ([03-24] PR #640): λ·(logsumexp z)² added to the training loss only."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from pgolf.config import ModelConfig
from pgolf.errors import ConfigError
from pgolf.model.gpt import GPT

CFG = ModelConfig(vocab_size=64, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1, mlp_mult=2)


def _pair(lam):
    torch.manual_seed(0)
    m = GPT(dataclasses.replace(CFG, z_loss=lam)).double()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_training_loss_is_ce_plus_lambda_lse_squared_in_float64(reduction):
    m, idx = _pair(1e-2), torch.randint(0, 64, (2, 12))
    y = torch.roll(idx, -1, 1)
    m.eval()
    logits = m(idx)  # [B,T,V], softcapped
    ce = F.cross_entropy(logits.reshape(-1, 64), y.reshape(-1), reduction=reduction)
    z = torch.logsumexp(logits, -1).reshape(-1) ** 2
    z = z.mean() if reduction == "mean" else z.sum() if reduction == "sum" else z
    expect = ce + 1e-2 * z
    m.train()
    got = m(idx, y, reduction=reduction)
    torch.testing.assert_close(got.reshape(expect.shape), expect, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(got.reshape(ce.shape), ce)  # the term is there


def test_scores_are_the_plain_cross_entropy():
    on, off = _pair(1e-2), _pair(0.0)
    idx = torch.randint(0, 64, (2, 12))
    y = torch.roll(idx, -1, 1)
    for m in (on, off):
        m.eval()
    assert torch.equal(on(idx, y, reduction="none"), off(idx, y, reduction="none"))  # eval mode
    on.train(), off.train()
    with torch.no_grad():  # scoring without gradients, whatever the mode
        assert torch.equal(on(idx, y), off(idx, y))


def test_the_gradient_pulls_the_log_normalizer_down():
    m, idx = _pair(1.0), torch.randint(0, 64, (2, 12))
    m.train()
    m(idx, torch.roll(idx, -1, 1)).backward()
    ref = _pair(0.0)
    ref.train()
    ref(idx, torch.roll(idx, -1, 1)).backward()
    assert not torch.allclose(m.tok_emb.weight.grad, ref.tok_emb.weight.grad)  # the tied head feels the term


def test_it_refuses_the_loss_paths_it_does_not_reach():
    with pytest.raises(ConfigError, match="z_loss"):
        dataclasses.replace(CFG, z_loss=1e-4, ce_chunk_tokens=64)
    with pytest.raises(ConfigError, match="z_loss"):
        dataclasses.replace(CFG, z_loss=-1.0)
