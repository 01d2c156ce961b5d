"""Sliding-window attention (model.attn.window): the output at t does not move when tokens at or before
t − window change (and does when the oldest token inside the window changes); a window ≥ the sequence is
full causal attention; window_layers picks the layers; with the document mask it stays inside the document;
FLOPs count the window."""

from __future__ import annotations

import pytest
import torch

from pgolf.config import AttnConfig, ModelConfig, SsmConfig
from pgolf.errors import ConfigError
from pgolf.model.flops import forward_flops_per_token
from pgolf.model.gpt import GPT, build_plan, window_mask

F64 = torch.float64


def _cfg(num_layers=1, **attn) -> ModelConfig:
    return ModelConfig(vocab_size=64, num_layers=num_layers, model_dim=32, num_heads=4, num_kv_heads=2,
                       attn=AttnConfig(**attn))


def _model(cfg: ModelConfig, seed=0) -> GPT:
    torch.manual_seed(seed)
    g = GPT(cfg).double()
    for b in g.blocks:  # zero-initialised outputs: give them a value so attention reaches the logits
        torch.nn.init.normal_(b.attn.proj.weight, std=0.3)
        torch.nn.init.normal_(b.mlp.proj.weight, std=0.3)
    return g.eval()


def test_window_mask_is_the_causal_band():
    m = window_mask(6, 3, torch.device("cpu"))[0, 0]
    for t in range(6):
        assert [s for s in range(6) if m[t, s]] == [s for s in range(max(0, t - 2), t + 1)]


@pytest.mark.parametrize("window", [1, 4, 7])
def test_output_at_t_ignores_tokens_outside_the_window(window):
    g = _model(_cfg(window=window))
    T = 24
    idx = torch.randint(0, 64, (1, T))
    with torch.no_grad():
        base = g(idx)
        for t in (window + 2, 15, T - 1):
            for s in range(t + 1):
                idx2 = idx.clone()
                idx2[0, s] = (idx[0, s] + 7) % 64
                out = g(idx2)
                if s <= t - window:  # outside the window: bit for bit unchanged
                    assert torch.equal(out[0, t], base[0, t]), (t, s)
                elif s == t - window + 1:  # the oldest token inside it matters (the test can fail)
                    assert not torch.allclose(out[0, t], base[0, t]), (t, s)


def test_receptive_field_grows_by_window_minus_one_per_layer():
    window, L, T = 3, 2, 20
    g = _model(_cfg(num_layers=L, window=window))
    idx = torch.randint(0, 64, (1, T))
    t, reach = T - 1, L * (window - 1)  # two layers see back t − 4
    with torch.no_grad():
        base = g(idx)
        for s, moves in ((t - reach - 1, False), (t - reach, True)):
            idx2 = idx.clone()
            idx2[0, s] = (idx[0, s] + 7) % 64
            assert torch.equal(g(idx2)[0, t], base[0, t]) is not moves, s


@pytest.mark.parametrize("doc_mask", [False, True])
def test_a_window_at_least_the_sequence_is_full_attention(doc_mask):
    T = 17
    idx = torch.randint(2, 64, (2, T))
    idx[:, [0, 9]] = 1
    full = _model(_cfg(num_layers=2, doc_mask=doc_mask, doc_kernel="mask"))
    for window in (T, T + 5):
        win = _model(_cfg(num_layers=2, window=window, doc_mask=doc_mask, doc_kernel="mask"))
        assert all(p.window for p in win.plan)
        with torch.no_grad():
            torch.testing.assert_close(win(idx), full(idx), rtol=1e-12, atol=1e-12)  # same weights (seed)


def test_window_layers_pick_the_layers_and_the_rest_attend_fully():
    cfg = _cfg(num_layers=4, window=8, window_layers=(-1, 1))
    assert [p.window for p in build_plan(cfg)] == [False, True, False, True]
    assert [p.window for p in build_plan(_cfg(num_layers=3))] == [False] * 3  # off by default
    # SSM layers never window; an SSM layer named in window_layers is an error
    hy = ModelConfig(vocab_size=64, num_layers=3, model_dim=32, num_heads=2, num_kv_heads=1, ssm_layers=(0,),
                     ssm=SsmConfig(state=8, headdim=16), attn=AttnConfig(window=4))
    assert [p.window for p in build_plan(hy)] == [False, True, True]
    with pytest.raises(ConfigError, match="window_layers: layer 0 is an SSM layer"):
        ModelConfig(vocab_size=64, num_layers=3, model_dim=32, num_heads=2, num_kv_heads=1, ssm_layers=(0,),
                    ssm=SsmConfig(state=8, headdim=16), attn=AttnConfig(window=4, window_layers=(0,)))
    with pytest.raises(ConfigError, match="model.attn.window must be >= 0"):
        AttnConfig(window=-1)


def test_window_with_the_document_mask_stays_in_the_document():
    g = _model(_cfg(num_layers=2, window=5, doc_mask=True, doc_kernel="mask"))
    idx = torch.randint(2, 64, (1, 26))
    idx[0, [0, 12]] = 1
    with torch.no_grad():
        both, alone = g(idx), g(idx[:, 12:])
    torch.testing.assert_close(both[:, 12:], alone, rtol=1e-9, atol=1e-9)


def test_flops_count_the_window():
    T = 1024
    full = forward_flops_per_token(_cfg(num_layers=2), T)
    assert forward_flops_per_token(_cfg(num_layers=2, window=T), T) == full
    w = 128
    win = forward_flops_per_token(_cfg(num_layers=2, window=w), T)
    keys = sum(min(t + 1, w) for t in range(T)) / T  # exact mean keys per query
    per_key = 2 * 2 * 4 * 8  # 2·2·H·D per key per layer
    assert full - win == pytest.approx(2 * per_key * (T / 2 - keys), rel=0.01)
