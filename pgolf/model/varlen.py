"""Document-aware attention without a T×T mask: the packed ("varlen") form, an optional CUDA accelerator.

Source: [04-10] PR #1530 attends within documents with FlashAttention's varlen kernel; pgolf's portable
reference is the boolean SDPA mask of :func:`pgolf.model.gpt.document_mask` (``model.attn.doc_mask``).

The maths. Row b of a batch idx [B,T] is cut before every BOS (and at its start) into segments; the
segments of all rows, laid end to end, are the documents d = 1..N of the flattened [B·T] stream, with
cumulative boundaries cu = (0, c₁, …, B·T) (int32). For a position t of segment d = [c_{d−1}, c_d):

    y_t = Σ_{s ∈ [c_{d−1}, t]} softmax_s(q_t·k_s / √D) v_s

— the causal rule restricted to the segment, exactly what the mask computes, but in O(Σ L_d²) work and
no O(T²) mask. Query head h reads KV head h // (H/Hkv) (GQA, no K/V copy).

Kernels. ``torch.nn.attention.varlen.varlen_attn`` (torch ≥ 2.9; FlashAttention, CUDA only, fp16/bf16)
where it runs; :func:`reference_kernel`, the same contract in plain per-segment SDPA, is what the tests
compare it with (and what the CPU tests run the packed path through). ``model.attn.doc_kernel``: ``auto``
takes the varlen kernel where it runs and the mask elsewhere; ``varlen`` requires it (one clear error
otherwise); ``mask`` always masks. Under ``torch.compile`` the boundaries (data-dependent count) are
computed outside the attention graph and padded to a multiple of :data:`BUCKET` entries, so the
attention recompiles once per bucket, not once per document count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pgolf.errors import ConfigError

NEEDED_WHEN = "model.attn.doc_mask and model.attn.doc_kernel != 'mask'"

Kernel = Callable[..., Tensor]
_HALF = (torch.float16, torch.bfloat16)


BUCKET = 64
"""cu is padded to a multiple of this many entries (as [04-10] does): the compiled attention then sees a
few distinct shapes (one recompile each) instead of one per document count."""


def boundaries(idx: Tensor, bos_id: int, bucket: int = BUCKET) -> Tensor:
    """cu int32: the start of every segment of the flattened idx [B,T] (each row's first position and every
    BOS), then B·T, padded with B·T (empty segments) to a multiple of ``bucket`` entries."""
    B, T = idx.shape
    start = idx == bos_id
    start[:, 0] = True  # `==` made a new tensor: idx is not written
    starts = start.reshape(-1).nonzero().squeeze(1)  # data-dependent length: a host sync, outside the graph
    n = starts.numel() + 1
    cu = torch.full((-(-n // bucket) * bucket,), B * T, dtype=torch.int32, device=idx.device)
    cu[: n - 1] = starts
    return cu


def reference_kernel(q: Tensor, k: Tensor, v: Tensor, cu_seq_q: Tensor, cu_seq_k: Tensor, max_q: int, max_k: int,
                     *, scale: float | None = None, window_size: tuple[int, int] = (-1, -1),
                     enable_gqa: bool = False) -> Tensor:
    """``varlen_attn``'s contract in plain SDPA, one segment at a time: q [Tq,H,D], k/v [Tk,Hkv,D] packed,
    segment i is rows cu[i]:cu[i+1]; causal when ``window_size == (-1, 0)`` (the only windows used here)."""
    if window_size not in ((-1, -1), (-1, 0)):
        raise ValueError(f"reference_kernel: window_size {window_size} is not implemented")
    causal = window_size == (-1, 0)
    cq, ck = cu_seq_q.tolist(), cu_seq_k.tolist()
    out = []
    for a, b, c, e in zip(cq[:-1], cq[1:], ck[:-1], ck[1:], strict=True):
        if b == a:  # an empty segment (cu's padding)
            continue
        qs, ks, vs = (t.transpose(0, 1)[None] for t in (q[a:b], k[c:e], v[c:e]))  # [1,H,L,D]
        o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=causal, scale=scale, enable_gqa=enable_gqa)
        out.append(o[0].transpose(0, 1))
    return torch.cat(out)


def flash_kernel(device: torch.device, dtype: torch.dtype) -> Kernel | None:
    """torch's FlashAttention varlen kernel where it runs (CUDA, fp16/bf16, torch ≥ 2.9), else None."""
    if device.type != "cuda" or dtype not in _HALF:
        return None
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


@dataclass
class DocSpans:
    """One forward's segments and the kernel that attends within them."""

    cu: Tensor
    """int32 boundaries of the flattened [B·T] stream, padded with empty segments (:func:`boundaries`)."""
    max_len: int
    """An upper bound on the segment length (T: no host sync to find the true one)."""
    kernel: Kernel
    dtype: torch.dtype | None
    """The kernel's input dtype (the autocast dtype; None = the inputs' own)."""

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """q [B,H,T,D], k/v [B,Hkv,T,D] → y [B,H,T,D], attention within each segment (causal)."""
        B, H, T, D = q.shape
        dt = self.dtype or q.dtype
        packed = [t.transpose(1, 2).reshape(B * T, t.size(1), D).to(dt) for t in (q, k, v)]  # [B·T,H(kv),D]
        y = self.kernel(*packed, self.cu, self.cu, self.max_len, self.max_len, window_size=(-1, 0),
                        enable_gqa=H != k.size(1))
        return y.view(B, T, H, D).transpose(1, 2)


def spans(idx: Tensor, bos_id: int, kind: str) -> DocSpans | None:
    """The segments of idx for ``model.attn.doc_kernel`` = ``kind`` on this device and autocast state:
    None when the mask is to be used (``mask``, or ``auto`` where no varlen kernel runs)."""
    if kind == "mask":
        return None
    dt = torch.get_autocast_dtype(idx.device.type) if torch.is_autocast_enabled(idx.device.type) else None
    kernel = flash_kernel(idx.device, dt or torch.float32)
    if kernel is None:
        if kind == "varlen":
            raise ConfigError("model.attn.doc_kernel=varlen needs CUDA, bf16/fp16 autocast and torch >= 2.9 "
                              "(torch.nn.attention.varlen); use auto or mask here")
        return None
    return DocSpans(boundaries(idx, bos_id), idx.size(1), kernel, dt)
