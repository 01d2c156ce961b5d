"""Tests of pgolf.model.gpt: exact shape/count, causality by perturbation, a float64 reference of
attention (GQA, RoPE, QK-norm, q_gain), the zero-init identity and bf16 autocast agreement."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pgolf.config import ModelConfig
from pgolf.model.gpt import (
    GPT,
    Block,
    CausalSelfAttention,
    Context,
    LayerPlan,
    causal_attention,
    count_params,
    parameter_groups,
    rotary_tables,
)
from pgolf.presets import get_preset

TINY = dict(vocab_size=64, num_layers=3, model_dim=32, num_heads=4, num_kv_heads=2, mlp_mult=2)


def randomize_(model: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> torch.nn.Module:
    """Move every parameter off its init (incl. zero-init projections) so all paths are live."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def tiny_model(seed: int = 0, dtype: torch.dtype = torch.float64, **kw) -> GPT:
    torch.manual_seed(seed)
    return randomize_(GPT(ModelConfig(**{**TINY, **kw})).to(dtype), seed)


# --- shape and parameter count -------------------------------------------------------------------


def test_baseline_param_count_exact() -> None:
    cfg = get_preset("baseline").model
    assert count_params(cfg) == 17_059_912
    assert GPT(cfg).num_params() == 17_059_912
    # untied adds exactly one V×d head
    untied = ModelConfig(tie_embeddings=False)
    assert count_params(untied) == 17_059_912 + 1024 * 512


def test_state_dict_names_and_dtypes() -> None:
    cfg = ModelConfig(**TINY)
    sd = GPT(cfg).state_dict()
    expected = {"tok_emb.weight", "skip_weights"}
    for i in range(cfg.num_layers):
        expected |= {f"blocks.{i}.{n}" for n in (
            "attn.c_q.weight", "attn.c_k.weight", "attn.c_v.weight", "attn.proj.weight", "attn.q_gain",
            "attn_scale", "mlp_scale", "resid_mix", "mlp.fc.weight", "mlp.proj.weight")}
    assert set(sd) == expected
    assert all(t.dtype == torch.float32 for t in sd.values())
    assert sd["blocks.0.attn.c_k.weight"].shape == (2 * 8, 32)
    assert sd["blocks.0.resid_mix"].shape == (2, 32)
    assert sd["skip_weights"].shape == (1, 32)
    assert set(GPT(ModelConfig(**TINY, tie_embeddings=False)).state_dict()) == expected | {"lm_head.weight"}


def test_init_values() -> None:
    torch.manual_seed(0)
    m = GPT(ModelConfig(vocab_size=1024, num_layers=2, model_dim=256, num_heads=4, num_kv_heads=2))
    std = m.tok_emb.weight.std().item()
    assert abs(std - 0.005) < 0.0002
    b = m.blocks[0]
    assert torch.equal(b.resid_mix, torch.stack([torch.ones(256), torch.zeros(256)]))
    assert torch.equal(b.attn.q_gain, torch.full((4,), 1.5))
    assert torch.equal(b.attn_scale, torch.ones(256)) and torch.equal(m.skip_weights, torch.ones(1, 256))
    assert not b.attn.proj.weight.any() and not b.mlp.proj.weight.any()
    assert b.attn.c_q.weight.abs().sum() > 0


def test_parameter_groups_partition() -> None:
    for tie in (True, False):
        m = GPT(ModelConfig(**TINY, tie_embeddings=tie))
        groups = parameter_groups(m)
        names = [n for lst in groups.values() for n, _ in lst]
        assert sorted(names) == sorted(n for n, _ in m.named_parameters())
        assert [n for n, _ in groups["embed"]] == ["tok_emb.weight"]
        assert [n for n, _ in groups["head"]] == ([] if tie else ["lm_head.weight"])
        assert all(p.ndim == 2 and n.startswith("blocks.") for n, p in groups["matrix"])
        assert len(groups["matrix"]) == 6 * m.cfg.num_layers
        assert not any("resid_mix" in n for n, _ in groups["matrix"])  # 2-D but a control tensor
        assert "skip_weights" in [n for n, _ in groups["scalar"]]


# --- attention against a float64 reference -------------------------------------------------------


def reference_attention(attn: CausalSelfAttention, x: torch.Tensor, base: float) -> torch.Tensor:
    """Hand-written float64 attention: explicit per-head loops, explicit 2×2 rotations, masked softmax."""
    B, T, d = x.shape
    H, Hkv, D = attn.num_heads, attn.num_kv_heads, attn.head_dim
    q = (x @ attn.c_q.weight.T).view(B, T, H, D)
    k = (x @ attn.c_k.weight.T).view(B, T, Hkv, D)
    v = (x @ attn.c_v.weight.T).view(B, T, Hkv, D)

    def rms(z: torch.Tensor) -> torch.Tensor:
        return z / torch.sqrt((z * z).mean(-1, keepdim=True) + torch.finfo(z.dtype).eps)

    def rope(z: torch.Tensor) -> torch.Tensor:  # z [B,T,h,D]; pair (i, i+D/2) rotated by -t·base^(-2i/D)
        out = torch.empty_like(z)
        for t in range(T):
            for i in range(D // 2):
                th = t * base ** (-2 * i / D)
                c, s = math.cos(th), math.sin(th)
                a, b = z[:, t, :, i], z[:, t, :, i + D // 2]
                out[:, t, :, i], out[:, t, :, i + D // 2] = c * a + s * b, c * b - s * a
        return out

    q, k = rope(rms(q)), rope(rms(k))
    q = q * attn.q_gain.view(1, 1, H, 1)
    y = torch.empty(B, T, H, D, dtype=x.dtype)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    for h in range(H):
        kv = h // (H // Hkv)
        s = q[:, :, h] @ k[:, :, kv].transpose(1, 2) / math.sqrt(D)  # [B,T,T]
        s = s.masked_fill(~mask, float("-inf"))
        y[:, :, h] = torch.softmax(s, -1) @ v[:, :, kv]
    return y.reshape(B, T, d) @ attn.proj.weight.T


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
def test_attention_matches_float64_reference(kv_heads: int) -> None:
    cfg = ModelConfig(**{**TINY, "num_kv_heads": kv_heads}, rope_base=500.0)
    torch.manual_seed(1)
    attn = randomize_(CausalSelfAttention(cfg)).double()
    x = torch.randn(2, 9, 32, dtype=torch.float64)
    cos, sin = rotary_tables(9, cfg.head_dim, cfg.rope_base, x.device, x.dtype)
    got = attn(x, cos, sin)
    ref = reference_attention(attn, x, cfg.rope_base)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


def test_native_gqa_equals_expanded_kv() -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 7, 8, generator=g, dtype=torch.float64)
    k, v = (torch.randn(2, 2, 7, 8, generator=g, dtype=torch.float64) for _ in range(2))
    expanded = causal_attention(q, k, v, native_gqa=False)
    torch.testing.assert_close(causal_attention(q, k, v, native_gqa=True), expanded, rtol=1e-12, atol=1e-12)
    full = F.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), is_causal=True)
    torch.testing.assert_close(expanded, full, rtol=0, atol=0)


# --- whole-model properties ----------------------------------------------------------------------


@pytest.mark.parametrize("kv_heads", [2, 4])
def test_causality_by_perturbation(kv_heads: int) -> None:
    m = tiny_model(num_kv_heads=kv_heads)
    T = 12
    idx = torch.randint(0, 64, (2, T), generator=torch.Generator().manual_seed(3))
    base = m(idx)
    for t in (0, 5, T - 1):
        pert = idx.clone()
        pert[:, t] = (pert[:, t] + 17) % 64
        out = m(pert)
        assert torch.equal(out[:, :t], base[:, :t]), f"positions < {t} changed"
        assert not torch.allclose(out[:, t], base[:, t])  # and the perturbation is visible at t


def test_logits_shape_dtype_and_softcap() -> None:
    m = tiny_model(dtype=torch.float32, logit_softcap=2.0)
    idx = torch.randint(0, 64, (3, 5))
    logits = m(idx)
    assert logits.shape == (3, 5, 64) and logits.dtype == torch.float32
    assert logits.abs().max() < 2.0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert m(idx).dtype == torch.float32


def test_per_token_loss_mean_equals_scalar_loss() -> None:
    m = tiny_model()
    g = torch.Generator().manual_seed(4)
    idx, tgt = torch.randint(0, 64, (3, 10), generator=g), torch.randint(0, 64, (3, 10), generator=g)
    per_tok = m(idx, tgt, reduction="none")
    assert per_tok.shape == (3, 10)
    torch.testing.assert_close(per_tok.mean(), m(idx, tgt), rtol=1e-13, atol=0)
    torch.testing.assert_close(per_tok.sum(), m(idx, tgt, reduction="sum"), rtol=1e-13, atol=0)
    # and it is the cross-entropy of the returned logits
    logp = torch.log_softmax(m(idx), -1)
    torch.testing.assert_close(per_tok, -logp.gather(-1, tgt[..., None])[..., 0], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError):
        m(idx, tgt, reduction="max")


def test_bf16_autocast_matches_fp32() -> None:
    m = tiny_model(dtype=torch.float32, mlp_mult=3)
    g = torch.Generator().manual_seed(5)
    idx, tgt = torch.randint(0, 64, (2, 16), generator=g), torch.randint(0, 64, (2, 16), generator=g)
    ref_logits, ref_loss = m(idx), m(idx, tgt)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, loss = m(idx), m(idx, tgt)
    assert not torch.equal(logits, ref_logits)  # bf16 really was used
    scale = ref_logits.abs().max()
    assert (logits - ref_logits).abs().max() < 0.05 * scale
    assert abs(loss.item() - ref_loss.item()) < 0.005 * ref_loss.item()
    assert m.tok_emb.weight.dtype == torch.float32  # master weights untouched


def test_fresh_blocks_are_identity() -> None:
    cfg = ModelConfig(**TINY)
    torch.manual_seed(0)
    block = Block(cfg).double()
    with torch.no_grad():  # live attention/MLP inputs, but output projections still zero
        block.attn.c_q.weight.normal_()
        block.mlp.fc.weight.normal_()
    x, x0 = torch.randn(2, 6, 32, dtype=torch.float64), torch.randn(2, 6, 32, dtype=torch.float64)
    cos, sin = rotary_tables(6, cfg.head_dim, cfg.rope_base, x.device, x.dtype)
    assert torch.equal(block(x, x0, Context(cos, sin), LayerPlan(index=0, block=0)), x)


def test_fresh_model_logits_depend_only_on_embedding_path() -> None:
    cfg = ModelConfig(**{**TINY, "num_layers": 5})
    torch.manual_seed(0)
    m = GPT(cfg).double()
    with torch.no_grad():
        for b in m.blocks:  # perturb everything inside blocks except the zero-init projections
            for n, p in b.named_parameters():
                if not n.endswith("proj.weight") and n != "resid_mix":
                    p.add_(torch.randn_like(p))
    idx = torch.randint(0, 64, (2, 7))
    E = m.tok_emb.weight

    def rms(z: torch.Tensor) -> torch.Tensor:
        return z / torch.sqrt((z * z).mean(-1, keepdim=True) + torch.finfo(z.dtype).eps)

    x0 = rms(E[idx])
    n_skips = min(cfg.num_layers // 2, cfg.num_layers - cfg.num_layers // 2)
    # identity blocks: every encoder output is x0 and each decoder skip adds one more x0
    z = rms((1 + n_skips) * x0) @ E.T
    ref = 30.0 * torch.tanh(z / 30.0)
    torch.testing.assert_close(m(idx), ref, rtol=1e-12, atol=1e-12)


def test_untied_head_zero_init_gives_uniform_loss() -> None:
    m = GPT(ModelConfig(**TINY, tie_embeddings=False))
    assert not m.lm_head.weight.any()
    idx = torch.randint(0, 64, (2, 5))
    assert m(idx, idx).item() == pytest.approx(math.log(64), abs=1e-6)


def test_backward_reaches_every_parameter() -> None:
    m = tiny_model(dtype=torch.float32)
    idx = torch.randint(0, 64, (2, 8))
    m(idx, idx.roll(-1, 1)).backward()
    for n, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n
