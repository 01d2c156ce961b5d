"""Document-aware attention in packed ("varlen") form (pgolf.model.varlen): the segment boundaries, the
reference kernel against the T×T mask, the whole model through the packed path (forward and gradients),
where each kernel is chosen, and — on CUDA — torch's FlashAttention varlen kernel against the reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pgolf.config import apply_overrides
from pgolf.errors import ConfigError
from pgolf.model import varlen
from pgolf.model.gpt import GPT, causal_attention, document_mask
from pgolf.presets import get_preset

BOS = 1


def _idx(B: int = 3, T: int = 40, vocab: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(2, vocab, (B, T), generator=g)
    idx[0, [0, 9, 10, 30]] = BOS  # a BOS first, two in a row (a one-token document)
    idx[1, [17]] = BOS
    return idx  # row 2: one document, no BOS


def test_boundaries_are_every_row_start_and_every_bos():
    idx = _idx()
    B, T = idx.shape
    want = sorted({b * T for b in range(B)} | {b * T + t for b in range(B) for t in range(T) if idx[b, t] == BOS})
    cu = varlen.boundaries(idx, BOS)
    assert cu.dtype == torch.int32 and len(cu) == varlen.BUCKET  # padded with empty segments
    assert cu.tolist() == [*want, *[B * T] * (varlen.BUCKET - len(want))]
    assert varlen.boundaries(idx, BOS, bucket=1).tolist() == [*want, B * T]
    assert len(want) == 7 and len(varlen.boundaries(idx, BOS, bucket=4)) == 8  # 7 starts + the end
    assert varlen.boundaries(idx, BOS, bucket=5).tolist() == [*want, *[B * T] * 3]  # 8 entries → 10
    assert idx[0, 0] == BOS  # the input is not written (the row-start flag is set on a copy)


@pytest.mark.parametrize("hkv", [4, 2, 1])
def test_reference_kernel_equals_the_document_mask(hkv):
    idx = _idx()
    B, T = idx.shape
    g = torch.Generator().manual_seed(1)
    q = torch.randn(B, 4, T, 8, generator=g, dtype=torch.float64)
    k, v = (torch.randn(B, hkv, T, 8, generator=g, dtype=torch.float64) for _ in range(2))
    want = causal_attention(q, k, v, mask=document_mask(idx, BOS))
    spans = varlen.DocSpans(varlen.boundaries(idx, BOS), T, varlen.reference_kernel, None)
    got = spans.attend(q, k, v)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # and it is not the plain causal attention (the documents really are cut)
    assert not torch.allclose(got, causal_attention(q, k, v))


def test_reference_kernel_refuses_windows_it_does_not_implement():
    x = torch.randn(4, 1, 8)
    cu = torch.tensor([0, 4], dtype=torch.int32)
    with pytest.raises(ValueError, match="window_size"):
        varlen.reference_kernel(x, x, x, cu, cu, 4, 4, window_size=(2, 0))


def _model(**attn) -> GPT:
    cfg = apply_overrides(get_preset("tiny"), [f"model.{k}={v}" for k, v in {
        "vocab_size": 64, "num_layers": 3, "model_dim": 32, "num_heads": 4, "num_kv_heads": 2,
        "attn.doc_mask": "true", **{f"attn.{k}": v for k, v in attn.items()}}.items()]).model
    torch.manual_seed(0)
    m = GPT(cfg).double()
    for p in m.parameters():  # zero-initialised projections would hide the attention
        with torch.no_grad():
            p.add_(0.05 * torch.randn_like(p))
    return m


def test_the_model_through_the_packed_path_equals_the_mask_path(monkeypatch):
    """With a kernel available (here the reference kernel standing in for FlashAttention), ``auto`` and
    ``varlen`` take the packed path; logits and every gradient equal the mask path's in float64."""
    idx = _idx()
    ref = _model(doc_kernel="mask")
    calls = []

    def kernel(device, dtype):
        calls.append(device.type)
        return varlen.reference_kernel

    monkeypatch.setattr(varlen, "flash_kernel", kernel)
    for kind in ("auto", "varlen"):
        m = _model(doc_kernel=kind)
        m.load_state_dict(ref.state_dict())
        calls.clear()
        torch.testing.assert_close(m(idx), ref(idx), rtol=1e-10, atol=1e-10)
        assert calls  # the packed path ran
        m(idx[:, :-1], idx[:, 1:]).backward()
        ref.zero_grad()
        ref(idx[:, :-1], idx[:, 1:]).backward()
        for (n, p), (_, r) in zip(m.named_parameters(), ref.named_parameters(), strict=True):
            torch.testing.assert_close(p.grad, r.grad, rtol=1e-9, atol=1e-12, msg=n)


def test_where_each_kernel_is_chosen(monkeypatch):
    idx = _idx()
    # on this CPU no varlen kernel runs: auto masks, varlen is one clear error, mask never asks
    assert varlen.flash_kernel(torch.device("cpu"), torch.bfloat16) is None
    assert varlen.spans(idx, BOS, "auto") is None and varlen.spans(idx, BOS, "mask") is None
    with pytest.raises(ConfigError, match="doc_kernel=varlen needs CUDA"):
        varlen.spans(idx, BOS, "varlen")
    with pytest.raises(ConfigError, match="doc_kernel=varlen"):
        _model(doc_kernel="varlen")(idx)
    # fp32 never takes FlashAttention, even on CUDA
    assert varlen.flash_kernel(torch.device("cuda"), torch.float32) is None
    # the autocast dtype is the kernel's input dtype
    monkeypatch.setattr(varlen, "flash_kernel", lambda device, dtype: varlen.reference_kernel)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s = varlen.spans(idx, BOS, "auto")
    assert s is not None and s.dtype == torch.bfloat16 and s.max_len == idx.size(1)
    assert varlen.spans(idx, BOS, "auto").dtype is None
    with pytest.raises(ConfigError, match="auto, mask, varlen|doc_kernel"):
        apply_overrides(get_preset("tiny"), ["model.attn.doc_kernel=flash"])


def test_a_mask_config_never_imports_the_packed_form():
    assert _model(doc_kernel="mask")._doc_spans is None
    assert _model(doc_kernel="auto")._doc_spans is varlen.spans


@pytest.mark.skipif(not torch.cuda.is_available(), reason="FlashAttention varlen runs on CUDA only")
@pytest.mark.parametrize("hkv", [4, 2])
def test_flash_varlen_equals_the_reference_on_cuda(hkv):
    kernel = varlen.flash_kernel(torch.device("cuda"), torch.bfloat16)
    if kernel is None:
        pytest.skip("this torch has no torch.nn.attention.varlen")
    idx = _idx().cuda()
    B, T = idx.shape
    q = torch.randn(B, 4, T, 64, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(B, hkv, T, 64, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    cu = varlen.boundaries(idx, BOS)
    got = varlen.DocSpans(cu, T, kernel, None).attend(q, k, v)
    want = varlen.DocSpans(cu, T, varlen.reference_kernel, None).attend(q.float(), k.float(), v.float())
    torch.testing.assert_close(got.float(), want, rtol=2e-2, atol=2e-2)
    assert F.mse_loss(got.float(), want) < 1e-4
