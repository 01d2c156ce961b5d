"""Fused Triton kernels, an optional CUDA accelerator: softcapped cross-entropy and the LeakyReLU² MLP.

Sources (CATALOGUE §2.2): the fused softcapped CE of [04-23] (PR #1787, also in [04-27a] PR #1855) — "reads
the pre-softcap logits once and computes softcap, log-sum-exp and the loss in registers; backward is written
to match", registered with ``torch.library.custom_op``, used only in training; the fused MLP of [04-10]
(PR #1530) on — "up-projection + LeakyReLU + square in one pass" (LeakyReLU(0.5)²: [03-23] PR #493/#518).
Written here from those descriptions; the PyTorch path of :mod:`pgolf.model.gpt` stays the reference.

The maths. Softcapped CE of one row z ∈ R^V (pre-softcap logits, any float dtype), target t, cap c:

    s = c·tanh(z/c)  (s = z when c = 0),   lse = log Σ_v exp(s_v),   loss = lse − s_t
    ∂loss/∂z_v = (softmax(s)_v − [v = t]) · (1 − (s_v/c)²)

Forward reads z once (an online log-sum-exp over blocks of the vocabulary, one program per row) and keeps
only lse [N] (fp32); backward reads z once more and writes ∂z in z's dtype: the softmax exists only in
registers, once per pass, never as an [N, V] tensor. A negative target (``ignore_index`` −100) has loss 0
and gradient 0. The MLP up-projection with the activation in its epilogue:

    h = x Wᵀ (fp32 accumulation),   y = leaky_relu(h, a)²,   ∂y/∂h = 2h·(1 if h > 0 else a²)

writes h (kept for backward) and y in x's dtype; backward is one elementwise kernel (∂h) and two matmuls
(∂x = ∂h W, ∂W = ∂hᵀ x). :func:`leaky_relu2` is the activation+square alone. a = 0 is ReLU².

Switch: ``model.fused_kernels`` (``off`` | ``auto`` | ``on``). ``auto`` runs the kernels on CUDA tensors where
triton imports, the PyTorch path elsewhere; ``on`` requires them (a :class:`~pgolf.errors.ConfigError` on a
CPU tensor, except under Triton's interpreter, ``TRITON_INTERPRET=1``, which the CPU tests use; the
interpreter reads that variable when this module is imported). Both kernels run only where gradients are
enabled (training, test-time training); a scoring pass without gradients keeps the model's own path, bit for
bit, as the records kept their eager CE for evaluation.

Reference implementations (:func:`reference_softcap_ce`, :func:`reference_leaky_relu2`,
:func:`reference_linear_leaky_relu2`) are what ``tests/test_fused.py`` compares the kernels with.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from pgolf.errors import ConfigError

NEEDED_WHEN = "model.fused_kernels != 'off'"

try:
    import triton
    import triton.language as tl
except ImportError:  # the PyTorch path (the reference) runs everywhere without it
    triton = None

INTERPRET = os.environ.get("TRITON_INTERPRET", "") == "1"
"""Triton's CPU interpreter is on (read at import, as triton itself does)."""


# --------------------------------------------------------------------------- references (the model's path)


def reference_softcap_ce(z: Tensor, targets: Tensor, softcap: float) -> Tensor:
    """Per-row CE [N] fp32 of pre-softcap logits z [N, V]: the model's path (fp32 softcap, then CE)."""
    s = z.float()
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    return F.cross_entropy(s, targets, reduction="none")


def reference_leaky_relu2(h: Tensor, slope: float) -> Tensor:
    """leaky_relu(h, slope)² (relu(h)² for slope 0) in h's dtype, as :class:`pgolf.model.gpt.MLP`."""
    return (F.leaky_relu(h, slope) if slope else torch.relu(h)).square()


def reference_linear_leaky_relu2(x: Tensor, w: Tensor, slope: float) -> Tensor:
    """leaky_relu(x wᵀ, slope)²: the MLP's up-projection and activation."""
    return reference_leaky_relu2(F.linear(x, w), slope)


# --------------------------------------------------------------------------- kernels

if triton is not None:

    @triton.jit
    def _softcap(z, c, HAS_CAP: tl.constexpr):
        if HAS_CAP:  # c·tanh(z/c), tanh(u) = 1 − 2/(e^{2u} + 1): exact limits ±1 at ±inf
            z = c * (1.0 - 2.0 / (tl.exp(2.0 * z / c) + 1.0))
        return z

    @triton.jit
    def _ce_fwd_kernel(z_ptr, stride_z, t_ptr, loss_ptr, lse_ptr, V, c,
                       HAS_CAP: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        base = z_ptr + row * stride_z
        t = tl.load(t_ptr + row)
        m = float("-inf")
        d = 0.0
        for start in range(0, V, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            z = tl.load(base + offs, mask=offs < V, other=0.0).to(tl.float32)
            s = tl.where(offs < V, _softcap(z, c, HAS_CAP), float("-inf"))
            m_new = tl.maximum(m, tl.max(s, 0))
            d = d * tl.exp(m - m_new) + tl.sum(tl.exp(s - m_new), 0)
            m = m_new
        lse = m + tl.log(d)
        valid = t >= 0
        st = _softcap(tl.load(base + tl.where(valid, t, 0)).to(tl.float32), c, HAS_CAP)
        tl.store(lse_ptr + row, lse)
        tl.store(loss_ptr + row, tl.where(valid, lse - st, 0.0))

    @triton.jit
    def _ce_bwd_kernel(z_ptr, stride_z, dz_ptr, stride_dz, t_ptr, lse_ptr, g_ptr, V, c,
                       HAS_CAP: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        base = z_ptr + row * stride_z
        t = tl.load(t_ptr + row)
        lse = tl.load(lse_ptr + row)
        g = tl.where(t >= 0, tl.load(g_ptr + row).to(tl.float32), 0.0)
        for start in range(0, V, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            mask = offs < V
            z = tl.load(base + offs, mask=mask, other=0.0).to(tl.float32)
            s = _softcap(z, c, HAS_CAP)
            gs = (tl.exp(s - lse) - tl.where(offs == t, 1.0, 0.0)) * g
            if HAS_CAP:
                r = s / c
                gs = gs * (1.0 - r * r)
            tl.store(dz_ptr + row * stride_dz + offs, gs.to(dz_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _act_fwd_kernel(h_ptr, y_ptr, n, slope, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        h = tl.load(h_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        a = tl.where(h > 0, h, slope * h)
        tl.store(y_ptr + offs, (a * a).to(y_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _act_bwd_kernel(g_ptr, h_ptr, dh_ptr, n, slope, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        h = tl.load(h_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dh = 2.0 * g * tl.where(h > 0, h, slope * slope * h)
        tl.store(dh_ptr + offs, dh.to(dh_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _linear_act_kernel(x_ptr, w_ptr, h_ptr, y_ptr, M, N, K, sxm, sxk, swn, swk, slope,
                           IEEE: tl.constexpr, UPCAST: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
        rm = tl.program_id(0) * BM + tl.arange(0, BM)
        rn = tl.program_id(1) * BN + tl.arange(0, BN)
        rk = tl.arange(0, BK)
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for k0 in range(0, K, BK):
            kk = k0 + rk
            a = tl.load(x_ptr + rm[:, None].to(tl.int64) * sxm + kk[None, :] * sxk,
                        mask=(rm[:, None] < M) & (kk[None, :] < K), other=0.0)  # [BM, BK]
            b = tl.load(w_ptr + rn[None, :].to(tl.int64) * swn + kk[:, None] * swk,
                        mask=(rn[None, :] < N) & (kk[:, None] < K), other=0.0)  # [BK, BN] = Wᵀ tile
            if UPCAST:  # the interpreter's tl.dot misreads bf16 operands: feed it fp32 (exact products)
                a, b = a.to(tl.float32), b.to(tl.float32)
            if IEEE:
                acc = tl.dot(a, b, acc, input_precision="ieee")
            else:
                acc = tl.dot(a, b, acc)
        act = tl.where(acc > 0, acc, slope * acc)
        out = rm[:, None].to(tl.int64) * N + rn[None, :]
        mask = (rm[:, None] < M) & (rn[None, :] < N)
        tl.store(h_ptr + out, acc.to(h_ptr.dtype.element_ty), mask=mask)
        tl.store(y_ptr + out, (act * act).to(y_ptr.dtype.element_ty), mask=mask)


def _ce_block(V: int) -> int:
    """Vocabulary block per loop step: wide on the GPU, small under the interpreter (several steps)."""
    return min(triton.next_power_of_2(V), 64 if INTERPRET else 4096)


def _elem_block() -> int:
    return 256 if INTERPRET else 1024


def _mm_blocks(M: int, N: int, K: int) -> tuple[int, int, int, int]:
    """(BM, BN, BK, num_warps) of the fused up-projection: 16s under the interpreter (tl.dot's minimum)."""
    if INTERPRET:
        return 16, 16, 16, 4
    return 128, 128, 64, 8


# --------------------------------------------------------------------------- custom ops (compile-safe)


@torch.library.custom_op("pgolf::softcap_ce_fwd", mutates_args=())
def _softcap_ce_fwd(z: Tensor, targets: Tensor, softcap: float) -> tuple[Tensor, Tensor]:
    N, V = z.shape
    loss = torch.empty(N, dtype=torch.float32, device=z.device)
    lse = torch.empty(N, dtype=torch.float32, device=z.device)
    if N:
        _ce_fwd_kernel[(N,)](z, z.stride(0), targets, loss, lse, V, float(softcap),
                             HAS_CAP=softcap > 0, BLOCK=_ce_block(V))
    return loss, lse


@_softcap_ce_fwd.register_fake
def _(z, targets, softcap):
    return z.new_empty(z.shape[0], dtype=torch.float32), z.new_empty(z.shape[0], dtype=torch.float32)


@torch.library.custom_op("pgolf::softcap_ce_bwd", mutates_args=())
def _softcap_ce_bwd(z: Tensor, targets: Tensor, lse: Tensor, grad: Tensor, softcap: float) -> Tensor:
    N, V = z.shape
    dz = torch.empty((N, V), dtype=z.dtype, device=z.device)
    if N:
        _ce_bwd_kernel[(N,)](z, z.stride(0), dz, dz.stride(0), targets, lse, grad.contiguous(), V, float(softcap),
                             HAS_CAP=softcap > 0, BLOCK=_ce_block(V))
    return dz


@_softcap_ce_bwd.register_fake
def _(z, targets, lse, grad, softcap):
    return torch.empty_like(z, memory_format=torch.contiguous_format)


def _ce_setup(ctx, inputs, output):
    z, targets, softcap = inputs
    ctx.save_for_backward(z, targets, output[1])
    ctx.softcap = softcap


def _ce_backward(ctx, grad_loss, grad_lse):
    z, targets, lse = ctx.saved_tensors
    return _softcap_ce_bwd(z, targets, lse, grad_loss, ctx.softcap), None, None


_softcap_ce_fwd.register_autograd(_ce_backward, setup_context=_ce_setup)


@torch.library.custom_op("pgolf::leaky_relu2_fwd", mutates_args=())
def _leaky_relu2_fwd(h: Tensor, slope: float) -> Tensor:
    h = h.contiguous()
    y = torch.empty_like(h)
    n = h.numel()
    if n:
        _act_fwd_kernel[(triton.cdiv(n, _elem_block()),)](h, y, n, float(slope), BLOCK=_elem_block())
    return y


@_leaky_relu2_fwd.register_fake
def _(h, slope):
    return torch.empty_like(h, memory_format=torch.contiguous_format)


@torch.library.custom_op("pgolf::leaky_relu2_bwd", mutates_args=())
def _leaky_relu2_bwd(grad: Tensor, h: Tensor, slope: float) -> Tensor:
    h, grad = h.contiguous(), grad.contiguous()
    dh = torch.empty_like(h)
    n = h.numel()
    if n:
        _act_bwd_kernel[(triton.cdiv(n, _elem_block()),)](grad, h, dh, n, float(slope), BLOCK=_elem_block())
    return dh


@_leaky_relu2_bwd.register_fake
def _(grad, h, slope):
    return torch.empty_like(h, memory_format=torch.contiguous_format)


def _act_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])
    ctx.slope = inputs[1]


def _act_backward(ctx, grad):
    (h,) = ctx.saved_tensors
    return _leaky_relu2_bwd(grad, h, ctx.slope), None


_leaky_relu2_fwd.register_autograd(_act_backward, setup_context=_act_setup)


@torch.library.custom_op("pgolf::linear_leaky_relu2_fwd", mutates_args=())
def _linear_leaky_relu2_fwd(x: Tensor, w: Tensor, slope: float) -> tuple[Tensor, Tensor]:
    M, K = x.shape
    N = w.shape[0]
    h = torch.empty((M, N), dtype=x.dtype, device=x.device)
    y = torch.empty_like(h)
    if M and N:
        bm, bn, bk, warps = _mm_blocks(M, N, K)
        _linear_act_kernel[(triton.cdiv(M, bm), triton.cdiv(N, bn))](
            x, w, h, y, M, N, K, x.stride(0), x.stride(1), w.stride(0), w.stride(1), float(slope),
            IEEE=x.dtype == torch.float32 or INTERPRET, UPCAST=INTERPRET, BM=bm, BN=bn, BK=bk, num_warps=warps)
    return h, y


@_linear_leaky_relu2_fwd.register_fake
def _(x, w, slope):
    h = x.new_empty((x.shape[0], w.shape[0]))
    return h, torch.empty_like(h)


def _lin_setup(ctx, inputs, output):
    x, w, slope = inputs
    ctx.save_for_backward(x, w, output[0])
    ctx.slope = slope


def _lin_backward(ctx, grad_h, grad_y):
    x, w, h = ctx.saved_tensors
    dh = _leaky_relu2_bwd(grad_y, h, ctx.slope)  # [M, N]
    if grad_h is not None:
        dh = dh + grad_h
    return dh @ w, dh.t() @ x, None


_linear_leaky_relu2_fwd.register_autograd(_lin_backward, setup_context=_lin_setup)


# --------------------------------------------------------------------------- public functions


def softcap_ce(z: Tensor, targets: Tensor, softcap: float) -> Tensor:
    """Fused per-row softcapped CE [N] fp32 of pre-softcap logits z [N, V] (gradient w.r.t. z in z's dtype);
    equals :func:`reference_softcap_ce`."""
    if z.stride(-1) != 1:
        z = z.contiguous()
    return _softcap_ce_fwd(z, targets.contiguous(), float(softcap))[0]


def leaky_relu2(h: Tensor, slope: float) -> Tensor:
    """Fused leaky_relu(h, slope)² (forward and backward kernels); equals :func:`reference_leaky_relu2`."""
    return _leaky_relu2_fwd(h, float(slope))


def linear_leaky_relu2(x: Tensor, w: Tensor, slope: float) -> Tensor:
    """Fused leaky_relu(x wᵀ, slope)² for x [..., K], w [N, K] of one dtype: the up-projection with the
    activation in its epilogue; equals :func:`reference_linear_leaky_relu2`."""
    lead = x.shape[:-1]
    y = _linear_leaky_relu2_fwd(x.reshape(-1, x.shape[-1]), w, float(slope))[1]
    return y.view(*lead, w.shape[0])


# --------------------------------------------------------------------------- the model's hooks


def active(mode: str, t: Tensor) -> bool:
    """Whether ``model.fused_kernels`` = ``mode`` runs the kernels on tensor ``t``'s device."""
    if mode == "off":
        return False
    runs = triton is not None and (t.is_cuda or INTERPRET)
    if mode == "on" and not runs:
        raise ConfigError("model.fused_kernels=on needs triton and CUDA tensors (or TRITON_INTERPRET=1 on the CPU); "
                          f"{'triton is not installed' if triton is None else f'got a {t.device.type} tensor'}: "
                          "use auto or off here")
    return runs and (t.is_cuda or mode == "on")


def _compute_dtype(x: Tensor) -> torch.dtype:
    t = x.device.type
    return torch.get_autocast_dtype(t) if torch.is_autocast_enabled(t) else x.dtype


def mlp_forward(mlp: nn.Module, x: Tensor, mode: str) -> Tensor:
    """:class:`pgolf.model.gpt.MLP`'s forward with the up-projection + activation fused where the kernels run
    and gradients are enabled;
    the weights pass through their ``weight_fn`` (QAT) as :class:`~pgolf.model.layers.CastedLinear` does."""
    if not (torch.is_grad_enabled() and active(mode, x)) or mlp.fc.bias is not None:
        h = mlp.fc(x)
        return mlp.proj(reference_leaky_relu2(h, mlp.slope))
    fc = mlp.fc
    w = fc.weight if fc.weight_fn is None else fc.weight_fn(fc.weight)
    dt = _compute_dtype(x)
    with torch.autocast(x.device.type, enabled=False):
        y = linear_leaky_relu2(x.to(dt), w.to(dt), mlp.slope)
    return mlp.proj(y)


def loss(model: nn.Module, x: Tensor, targets: Tensor, reduction: str, mode: str) -> Tensor:
    """The model's cross-entropy of final hidden states x [B,T,d] (``GPT.forward`` with targets, no adapter):
    the fused softcapped CE where gradients are enabled and the kernels run, chunked over ``ce_chunk_tokens``
    rows as the model's path (each chunk recomputed in backward); the model's own path otherwise."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be mean, sum or none, got {reduction!r}")
    B, T, d = x.shape
    cfg = model.cfg
    if not (torch.is_grad_enabled() and active(mode, x)):
        if cfg.ce_chunk_tokens:
            return model._chunked_loss(x, targets, reduction)
        ce = F.cross_entropy(model._logits(x).reshape(B * T, -1), targets.reshape(B * T), reduction=reduction)
        return ce.view(B, T) if reduction == "none" else ce  # GPT.forward's own lines, the same bits
    else:
        w = model.tok_emb.weight if model.lm_head is None else model.lm_head.weight  # [V, d]
        h, y = x.reshape(B * T, d), targets.reshape(B * T)
        n = cfg.ce_chunk_tokens or B * T

        def chunk(hc: Tensor, yc: Tensor) -> Tensor:
            return softcap_ce(F.linear(hc, w.to(hc.dtype)), yc, cfg.logit_softcap)

        if n >= B * T:
            ce = chunk(h, y)
        else:
            ce = torch.cat([torch.utils.checkpoint.checkpoint(chunk, h[i : i + n], y[i : i + n], use_reentrant=False)
                            for i in range(0, B * T, n)])
    if reduction == "none":
        return ce.view(B, T)
    return ce.sum() if reduction == "sum" else ce.mean()
