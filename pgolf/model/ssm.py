"""A Mamba-2 SSD mixer in pure PyTorch: the chunked (matmul) form that trains, and the token-by-token
recurrence that is its reference.

Sources. Mamba-2's state-space duality (SSD; Dao & Gu 2024, "Transformers are SSMs", arXiv:2405.21060,
§6–7: the chunked algorithm, §7.3 the block layout). In the challenge's non-record track:
``2026-03-26_37M_LeWM_Jepa_Mamba2_10L_UNet_INT4FP8QAT_Brotli`` (Mamba-2 blocks throughout, ``mamba_ssm``
CUDA kernels), ``2026-04-15_Mamba3Hybrid_SP8192_GPTQ_TTT`` (1.1473: 7 layers, 5 Mamba-3 SISO + attention
at layers 2 and 5, d_state 64, expand 2, head dim 64, chunk 64) and ``2026-04-04_GDN_Hybrid_LongContext``
(Gated DeltaNet on 7 of 9 layers, a win over attention only from 16k-token contexts). Those folders call
fused CUDA/Triton kernels; this module is written from the paper so that it runs anywhere torch runs.

Why Mamba-2 SSD rather than Gated DeltaNet: SSD's decay is a scalar per head and step, so the chunked form
is three batched matmuls and a cumulative sum — no triangular solve (GDN's delta rule needs the WY/UT
transform per chunk) — which keeps the pure-PyTorch training path fast on a CPU and a GPU alike and its
float64 check exact; and the best-scoring hybrid of the track (Mamba-3, 1.1473) is of this family.

The layer (per token t, d = model width, D_i = expand·d, H = D_i / P heads of width P, G groups of B/C
sharing heads, N = state size, K = conv width)::

    [z, u, B, C, δ] = W_in x_t                                 z, u ∈ R^{D_i}; B, C ∈ R^{G·N}; δ ∈ R^H
    [u, B, C] ← SiLU(causal depthwise conv_K([u, B, C]) + b)   (over t, K taps)
    Δ_h = softplus(δ_h + dt_bias_h),  a_h = −exp(A_log_h)
    S_{t,h} = exp(Δ_h a_h) · S_{t−1,h} + Δ_h · u_{t,h} B_{t,g(h)}ᵀ      S ∈ R^{P×N}, S_{−1} = 0
    y_{t,h} = S_{t,h} C_{t,g(h)} + D_h · u_{t,h}
    out_t   = W_out (rms(y_t ⊙ SiLU(z_t)) ⊙ w_norm)             W_out zero-initialised (a fresh block = identity)

Unrolled, y_t = Σ_{s≤t} exp(Σ_{k=s+1..t} Δ_k a) (C_t·B_s) Δ_s u_s + D u_t — a causal "attention" whose
mask decays. The chunked form (:func:`ssd_chunked`) cuts the sequence into chunks of Q tokens: inside a
chunk that sum is a masked matmul (the decays from a cumulative sum); across chunks the state S at each
chunk boundary is passed on by a second decayed sum over the chunks. :func:`ssd_recurrent` runs the
recurrence above one token at a time. The two agree to float64 rounding for every Q and any T (tests).

Document boundaries. With ``model.attn.doc_mask`` the records pack documents into one sequence and no
token attends across a BOS; the SSM does the same: at a BOS position t the decay is 0 (exp(−∞): the
state from the previous document is dropped, S_t = Δ_t u_t B_tᵀ) and the convolution reads no input
before that BOS. Without ``doc_mask`` the state runs through the whole training sequence, as attention
then sees across BOS too. Each sequence starts from S = 0 and a zero-padded convolution.

Decays are computed without subtracting cumulative sums (a masked cumulative sum per pair), so −∞ at a
reset gives exact zeros, no NaN, in the forward and backward passes. The SSD core runs in float32 (float64
for a float64 model) with autocast off; the projections follow the activation dtype (bf16 under autocast).

Parameter roles (:mod:`pgolf.roles`): ``W_in`` ``ssm_in``, ``W_out`` ``ssm_out`` (2-D: Muon, quantized
as the attention family); conv weight and bias, ``dt_bias``, ``A_log``, ``D`` and ``w_norm`` are control
tensors (Adam, kept float). This module is imported only where ``model.ssm_layers`` is non-empty.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.config import SsmConfig
from pgolf.model.layers import CastedLinear, declare, rms_norm
from pgolf.roles import Role

NEEDED_WHEN = "len(model.ssm_layers) > 0"


def segsum(x: Tensor) -> Tensor:
    """x [..., Q] → [..., Q, Q] with out[..., i, j] = Σ_{k=j+1..i} x_k for i ≥ j (0 on the diagonal) and −∞
    above it. Each entry is its own masked cumulative sum (no difference of two cumulative sums), so an
    x_k = −∞ gives −∞ exactly where k lies in (j, i] and never −∞ − (−∞)."""
    Q = x.size(-1)
    z = x.unsqueeze(-1).expand(*x.shape, Q)  # z[..., k, j] = x_k
    strict = torch.ones(Q, Q, dtype=torch.bool, device=x.device).tril(-1)  # k > j
    out = torch.cumsum(z.masked_fill(~strict, 0.0), dim=-2)  # out[i, j] = Σ_{j<k≤i} x_k
    return out.masked_fill(~torch.ones(Q, Q, dtype=torch.bool, device=x.device).tril(), -math.inf)


def _log_decay(dt: Tensor, A: Tensor, reset: Tensor | None) -> Tensor:
    """ℓ [b,T,H] = Δ·a per step, −∞ where a document starts (the state is dropped there)."""
    ell = dt * A
    if reset is not None:
        ell = ell.masked_fill(reset.unsqueeze(-1), -math.inf)
    return ell


def ssd_recurrent(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, reset: Tensor | None = None) -> Tensor:
    """The reference: y_t = S_t C_t with S_t = exp(Δ_t a) S_{t−1} + Δ_t x_t B_tᵀ, one token at a time.

    x [b,T,H,P], dt [b,T,H] (Δ > 0), A [H] (a < 0), B, C [b,T,G,N] (head h reads group h // (H/G)),
    reset [b,T] bool (True: a document starts here, S_{t−1} is dropped) → y [b,T,H,P] (no D term)."""
    b, T, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    rep = H // G
    Bh, Ch = B.repeat_interleave(rep, dim=2), C.repeat_interleave(rep, dim=2)  # [b,T,H,N]
    decay = torch.exp(_log_decay(dt, A, reset))  # [b,T,H]
    S = x.new_zeros(b, H, P, N)
    ys = []
    for t in range(T):
        S = decay[:, t, :, None, None] * S + (dt[:, t, :, None] * x[:, t]).unsqueeze(-1) * Bh[:, t].unsqueeze(-2)
        ys.append(torch.einsum("bhpn,bhn->bhp", S, Ch[:, t]))
    return torch.stack(ys, dim=1)


def ssd_chunked(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk: int,
                reset: Tensor | None = None) -> Tensor:
    """:func:`ssd_recurrent` by chunks of ``chunk`` tokens (Mamba-2's SSD algorithm, §6 of the paper).

    The sequence is zero-padded at the end to a multiple of Q = ``chunk`` (padding is after every real
    token, so it changes none of their outputs) and cut into c chunks. With ℓ = Δ·a (−∞ at a reset) and
    cs_i = Σ_{k≤i} ℓ_k inside a chunk:

    1. intra-chunk:  Y_diag[i] = Σ_{j≤i} exp(Σ_{j<k≤i} ℓ_k) (C_i·B_j) Δ_j x_j      (a [Q,Q] masked matmul)
    2. chunk states: S_c = Σ_j exp(Σ_{j<k<Q} ℓ_k) Δ_j x_j B_jᵀ                       (the state a chunk leaves)
    3. passing:      H_c = Σ_{c'<c} exp(Σ_{c'<m<c} ℓ̄_m) S_{c'}, ℓ̄_m = Σ_{k∈m} ℓ_k  (the state entering c)
    4. inter-chunk:  Y_off[i] = exp(cs_i) · H_c C_i

    y = Y_diag + Y_off. Shapes as :func:`ssd_recurrent`."""
    b, T, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    hg = H // G
    Q = chunk
    pad = (-T) % Q
    ell = _log_decay(dt, A, reset)
    xdt = x * dt.unsqueeze(-1)  # Δ_j x_j [b,T,H,P]
    if pad:
        xdt, ell = F.pad(xdt, (0, 0, 0, 0, 0, pad)), F.pad(ell, (0, 0, 0, pad))
        B, C = F.pad(B, (0, 0, 0, 0, 0, pad)), F.pad(C, (0, 0, 0, 0, 0, pad))
    c = (T + pad) // Q
    xdt = xdt.reshape(b, c, Q, G, hg, P)
    Bc, Cc = B.reshape(b, c, Q, G, N), C.reshape(b, c, Q, G, N)
    ell = ell.reshape(b, c, Q, G, hg).permute(0, 3, 4, 1, 2)  # [b,G,hg,c,Q]
    cs = torch.cumsum(ell, dim=-1)  # [b,G,hg,c,Q]
    L = torch.exp(segsum(ell))  # [b,G,hg,c,Q(i),Q(j)]
    # 1. within each chunk
    scores = torch.einsum("bcign,bcjgn->bgcij", Cc, Bc)  # C_i·B_j [b,G,c,Q,Q]
    y_diag = torch.einsum("bgcij,bghcij,bcjghp->bcighp", scores, L, xdt)
    # 2. the state each chunk leaves: decay from j to the chunk's end = L[Q−1, j]
    to_end = L[..., -1, :]  # [b,G,hg,c,Q]
    states = torch.einsum("bcjgn,bghcj,bcjghp->bcghpn", Bc, to_end, xdt)  # [b,c,G,hg,P,N]
    # 3. pass states across chunks: chunk totals ℓ̄ (cs at the last token), a leading 0 for the empty initial state
    totals = F.pad(cs[..., -1], (1, 0))  # [b,G,hg,c+1]
    carry = torch.exp(segsum(totals))  # [b,G,hg,c+1,c+1]
    states = torch.cat((torch.zeros_like(states[:, :1]), states), dim=1)  # [b,c+1,...]
    entering = torch.einsum("bghzm,bmghpn->bzghpn", carry, states)[:, :c]  # H_c [b,c,G,hg,P,N]
    # 4. the entering state read out at every position of the chunk
    y_off = torch.einsum("bcign,bcghpn,bghci->bcighp", Cc, entering, torch.exp(cs))
    y = (y_diag + y_off).reshape(b, c * Q, H, P)
    return y[:, :T]


def causal_conv(u: Tensor, w: Tensor, bias: Tensor, doc: Tensor | None = None) -> Tensor:
    """Depthwise causal convolution: out_t = bias + Σ_{j<K} w[:, K−1−j] ⊙ u_{t−j} (u_{<0} = 0).

    u [b,T,C], w [C,K], bias [C]; ``doc`` [b,T] int (document number of each position): a tap reads u_{t−j}
    only if it belongs to t's document."""
    K, T = w.size(1), u.size(1)
    w, bias = w.to(u.dtype), bias.to(u.dtype)
    out = u * w[:, K - 1]
    for j in range(1, min(K, T)):
        shifted = F.pad(u[:, :-j], (0, 0, j, 0))  # shifted[t] = u[t−j]
        if doc is not None:
            same = doc[:, j:] == doc[:, :-j]  # [b,T−j]
            shifted = shifted * F.pad(same, (j, 0)).unsqueeze(-1).to(u.dtype)
        out = out + shifted * w[:, K - 1 - j]
    return out + bias


class Mamba2Mixer(nn.Module):
    """The Mamba-2 layer of the module docstring, mapping [B,T,d] → [B,T,d] (the sequence mixer of a block
    whose physical index is in ``model.ssm_layers``; it takes the place of attention, the MLP stays)."""

    def __init__(self, d: int, cfg: SsmConfig):
        super().__init__()
        self.d_inner = di = cfg.expand * d
        self.headdim, self.state, self.groups, self.chunk = cfg.headdim, cfg.state, cfg.groups, cfg.chunk
        self.nheads = H = di // cfg.headdim
        gn = cfg.groups * cfg.state
        self.conv_dim = di + 2 * gn
        self.in_proj = CastedLinear(d, 2 * di + 2 * gn + H, bias=False, role=Role.SSM_IN)  # [z, u, B, C, δ]
        bound = 1.0 / math.sqrt(cfg.conv)  # nn.Conv1d's default init for a depthwise kernel (fan-in K)
        self.conv_w = nn.Parameter(torch.empty(self.conv_dim, cfg.conv).uniform_(-bound, bound))  # [C, K]
        self.conv_b = nn.Parameter(torch.empty(self.conv_dim).uniform_(-bound, bound))
        # Mamba's init: Δ log-uniform in [1e-3, 0.1] through the inverse softplus; a = −uniform[1, 16]
        dt = torch.exp(torch.rand(H) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # [H]
        self.A_log = nn.Parameter(torch.empty(H).uniform_(1.0, 16.0).log())  # [H]
        self.D = nn.Parameter(torch.ones(H))  # [H]
        self.norm_w = nn.Parameter(torch.ones(di))  # [D_i]
        self.out_proj = CastedLinear(di, d, bias=False, zero_init=True, role=Role.SSM_OUT)
        declare(self, conv_w=Role.CONTROL, conv_b=Role.CONTROL, dt_bias=Role.CONTROL, A_log=Role.CONTROL,
                D=Role.CONTROL, norm_w=Role.CONTROL)

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [b,T,d] → z [b,T,D_i], xBC [b,T,C] (before the conv), δ [b,T,H]."""
        zxbcdt = self.in_proj(x)
        di = self.d_inner
        return zxbcdt[..., :di], zxbcdt[..., di : di + self.conv_dim], zxbcdt[..., di + self.conv_dim :]

    def _params(self, delta: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        dt = F.softplus(delta.to(dtype) + self.dt_bias.to(dtype))  # Δ [b,T,H]
        return dt, -torch.exp(self.A_log.to(dtype))  # a [H]

    def _out(self, y: Tensor, u: Tensor, z: Tensor) -> Tensor:
        """y [b,T,H,P] (SSD output, no D term), u [b,T,H,P], z [b,T,D_i] → [b,T,d]; the gated norm in the
        core dtype with autocast off, the output projection in the activation dtype (bf16 under autocast)."""
        with torch.autocast(y.device.type, enabled=False):
            y = y + self.D.to(y.dtype)[:, None] * u
            y = y.reshape(*y.shape[:2], self.d_inner)
            y = rms_norm(y * F.silu(z.to(y.dtype))) * self.norm_w.to(y.dtype)
        return self.out_proj(y.to(z.dtype))

    def forward(self, x: Tensor, reset: Tensor | None = None) -> Tensor:
        """x [b,T,d] → [b,T,d], chunked SSD. ``reset`` [b,T] bool: positions where a document starts
        (None: the sequence is one stream)."""
        z, xbc, delta = self._split(x)
        doc = torch.cumsum(reset.to(torch.int32), dim=1) if reset is not None else None
        xbc = F.silu(causal_conv(xbc, self.conv_w, self.conv_b, doc))
        core = torch.promote_types(x.dtype, torch.float32)  # fp32 (fp64 for a float64 model)
        with torch.autocast(x.device.type, enabled=False):
            u, B, C = self._heads(xbc.to(core))
            dt, A = self._params(delta, core)
            y = ssd_chunked(u, dt, A, B, C, self.chunk, reset)
        return self._out(y, u, z)

    def _heads(self, xbc: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, T, _ = xbc.shape
        di, gn = self.d_inner, self.groups * self.state
        u = xbc[..., :di].reshape(b, T, self.nheads, self.headdim)
        B = xbc[..., di : di + gn].reshape(b, T, self.groups, self.state)
        C = xbc[..., di + gn :].reshape(b, T, self.groups, self.state)
        return u, B, C

    @torch.no_grad()
    def recurrent(self, x: Tensor, reset: Tensor | None = None) -> Tensor:
        """The same layer run one token at a time with explicit state (a K-tap conv buffer and S [b,H,P,N]):
        the reference :meth:`forward` is tested against, and the form a streaming decoder would use."""
        b, T, _ = x.shape
        K = self.conv_w.size(1)
        z, xbc, delta = self._split(x)
        core = torch.promote_types(x.dtype, torch.float32)
        buf = xbc.new_zeros(b, K, self.conv_dim)  # the last K inputs of the conv, oldest first
        S = x.new_zeros(b, self.nheads, self.headdim, self.state, dtype=core)
        rep = self.nheads // self.groups
        dt, A = self._params(delta, core)
        ys, us = [], []
        w, cb = self.conv_w.to(xbc.dtype), self.conv_b.to(xbc.dtype)
        for t in range(T):
            if reset is not None:
                keep = (~reset[:, t]).to(core)[:, None, None, None]
                S = S * keep
                buf = buf * keep[:, :, 0].to(buf.dtype)
            buf = torch.cat((buf[:, 1:], xbc[:, t : t + 1]), dim=1)
            conv = F.silu((buf * w.t().unsqueeze(0)).sum(1) + cb)  # [b,C]
            u, B, C = self._heads(conv[:, None].to(core))
            u, B, C = u[:, 0], B[:, 0].repeat_interleave(rep, dim=1), C[:, 0].repeat_interleave(rep, dim=1)
            S = torch.exp(dt[:, t, :, None, None] * A[:, None, None]) * S \
                + (dt[:, t, :, None] * u).unsqueeze(-1) * B.unsqueeze(-2)
            ys.append(torch.einsum("bhpn,bhn->bhp", S, C))
            us.append(u)
        return self._out(torch.stack(ys, 1), torch.stack(us, 1), z)
