"""The challenge's naive baseline GPT, shaped by :class:`pgolf.config.ModelConfig`.

Source: root ``train_gpt.py`` of openai/parameter-golf, record [03-17b] NaiveBaseline (no PR;
CATALOGUE §1.3). Defaults: 9 blocks × d=512, 8 query / 4 KV heads, MLP 2d, vocab 1024, tied
embeddings — 17,059,912 parameters.

The maths (E = token embedding [V,d], rms(x) = x / sqrt(mean(x²) + eps), no learned gain):

    x0 = x = rms(E[idx])
    block (i):  x ← m0⊙x + m1⊙x0                               resid_mix (2×d), init (1, 0)
                h = rms(x)
                q = rms(h W_qᵀ), k = rms(h W_kᵀ), v = h W_vᵀ    per head, QK-norm
                q, k ← RoPE(q), RoPE(k)                         base rope_base, full head dim
                q ← g_head · q                                  q_gain, init qk_gain_init
                x ← x + attn_scale ⊙ (softmax(q kᵀ/√D + causal) v) W_oᵀ
                x ← x + mlp_scale ⊙ relu(rms(x) W_1ᵀ)² W_2ᵀ
    U-Net:      blocks 0..⌊L/2⌋-1 push x after themselves; each later block first does
                x ← x + skip_weights[j] ⊙ pop() (LIFO) while the stack is non-empty
    logits = c · tanh((rms(x) Eᵀ) / c)     (lm_head instead of E when untied; c = 0: no cap)
    loss   = cross-entropy(logits, targets) in fp32, nats

W_o and W_2 are zero-initialised, so a fresh block is the identity on x.

Options (each off by default, one field of :class:`pgolf.config.ModelConfig`, source in its docstring):
``skips`` (U-Net or none), ``attn.xsa_layers`` (XSA), ``attn.rope_dims`` / ``attn.rope_train_len``
(partial RoPE, NTK scaling: :mod:`pgolf.model.rotary`), ``attn.ve_layers`` (value embeddings:
:mod:`pgolf.model.value`), ``ln_scale``, ``mlp_act`` (LeakyReLU²; SwiGLU, a gate matrix beside W_1),
``mlp_hidden`` (an MLP width that need not be a multiple of d), ``init`` (orthogonal),
``embed.bigram_buckets`` (BigramHash: :mod:`pgolf.model.hashed`), ``embed.smear`` (SmearGate v1–v3 with
the BOS fix: :mod:`pgolf.model.smear`). Which layer does what is decided once in ``__init__`` by
:func:`build_plan`; ``forward`` walks that plan.

Parameter roles: every module lists its own parameters in ``param_roles`` (:mod:`pgolf.roles`), and
:func:`parameter_roles` collects and checks them; the optimizer split, quantization, streams,
calibration and the planner read those roles, never the names.

Precision: all weights are fp32 master copies. ``CastedLinear`` casts its weight to the activation
dtype at matmul time, so the same code runs under bf16 autocast on CPU and CUDA (one code path).
Deliberate differences from the baseline script (same function, more precision): the baseline
calls ``.bfloat16()`` on the whole module, which also makes its embedding weight, hence its
residual stream, and its RoPE ``inv_freq``/position grid bf16; here weights and RoPE tables stay
fp32 and the residual stream follows the embedding (fp32). The softcap is applied in fp32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from pgolf.config import ModelConfig
from pgolf.errors import ConfigError
from pgolf.model.layers import CastedLinear, RMSNorm, declare, rms_norm
from pgolf.model.rotary import apply_rotary, rotary_tables
from pgolf.roles import Role
from pgolf.switch import needs

if TYPE_CHECKING:  # optional parts are imported where their switch is on (a bundle leaves the others out)
    from pgolf.model.hashed import BigramHash
    from pgolf.model.smear import SmearGate
    from pgolf.model.value import ValueEmbedding
    from pgolf.model.varlen import DocSpans

# SDPA's native grouped-query attention (no K/V copy) exists from torch 2.5; older: expand K/V.
_SDPA_HAS_GQA: bool = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 5)


def causal_attention(q: Tensor, k: Tensor, v: Tensor, native_gqa: bool = _SDPA_HAS_GQA,
                     mask: Tensor | None = None) -> Tensor:
    """Causal SDPA. q [B,H,T,D]; k, v [B,Hkv,T,D] with Hkv | H (query head h reads KV head h // (H/Hkv)).
    ``mask`` [B,1,T,T] bool (True = may attend) replaces the causal rule (it must include it)."""
    if k.size(1) != q.size(1):
        if native_gqa:
            if mask is not None:
                return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        rep = q.size(1) // k.size(1)
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    if mask is not None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


@needs("model.objective == 'mdlm'")
def bidirectional_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """SDPA where every position attends to every position: the masked diffusion LM (``model.objective=mdlm``,
    :mod:`pgolf.model.mdlm`), which is scored by a variational bound, never as a causal LM. Its own function,
    so an autoregressive bundle ships (and ``pgolf review`` reads) only causal attention calls."""
    if k.size(1) != q.size(1):
        rep = q.size(1) // k.size(1)
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    return F.scaled_dot_product_attention(q, k, v, is_causal=False)


@needs("model.attn.window > 0")
def window_mask(T: int, window: int, device: torch.device) -> Tensor:
    """[1,1,T,T] bool: position t may attend to s with t − window < s ≤ t (sliding-window attention): the causal
    triangle less what lies ``window`` or more behind (written as ``tril`` so ``pgolf review`` proves it causal)."""
    ones = torch.ones(T, T, dtype=torch.bool, device=device)
    return (ones.tril() & ~ones.tril(-window))[None, None]


@needs("model.attn.doc_mask")
def document_mask(idx: Tensor, bos_id: int) -> Tensor:
    """[B,1,T,T] bool: position t may attend to s ≤ t of the same document (documents start at BOS)."""
    doc = torch.cumsum((idx == bos_id).to(torch.int32), dim=1)  # [B,T]: document number of each position
    T = idx.size(1)
    causal = torch.ones(T, T, dtype=torch.bool, device=idx.device).tril()
    return (causal[None] & (doc[:, :, None] == doc[:, None, :]))[:, None]


@needs("len(model.attn.xsa_layers) > 0")
def exclusive(y: Tensor, v: Tensor) -> Tensor:
    """XSA: each head output minus its component along its own token's value direction.

    y [B,H,T,D], v [B,Hkv,T,D] (query head h reads KV head h // (H/Hkv)): y ← y − (y·v̂)v̂ with
    v̂ = v/‖v‖ per token, computed on the grouped view [B,Hkv,H/Hkv,T,D] without copying K/V
    (the GQA-aware form of [03-20c]). Afterwards y·v = 0 for every head and token."""
    B, H, T, D = y.shape
    hkv = v.size(1)
    yg = y.view(B, hkv, H // hkv, T, D)
    vhat = F.normalize(v, dim=-1).unsqueeze(2)  # [B,Hkv,1,T,D]
    yg = yg - (yg * vhat).sum(-1, keepdim=True) * vhat
    return yg.view(B, H, T, D)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, hd = cfg.model_dim, cfg.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, hd
        self.causal = cfg.objective == "ar"  # a masked diffusion LM (objective mdlm) attends both ways
        self.c_q = CastedLinear(d, cfg.num_heads * hd, bias=False, role=Role.ATTN_Q)
        self.c_k = CastedLinear(d, cfg.num_kv_heads * hd, bias=False, role=Role.ATTN_K)
        self.c_v = CastedLinear(d, cfg.num_kv_heads * hd, bias=False, role=Role.ATTN_V)
        self.proj = CastedLinear(d, d, bias=False, zero_init=True, role=Role.ATTN_O)
        self.q_gain = nn.Parameter(torch.full((cfg.num_heads,), cfg.qk_gain_init, dtype=torch.float32))
        declare(self, q_gain=Role.CONTROL)
        a = cfg.attn
        self.gate_kind, self.gate_window, self.gate_scale = a.gate, a.gate_window, a.gate_scale
        if a.gate == "out":  # AttnOutGate [04-16]: 2σ(W x[:w]), W zero-init
            self.gate = CastedLinear(a.gate_window, cfg.num_heads, zero_init=True, role=Role.GATE)
        elif a.gate in ("dense", "sparse"):  # GatedAttn [04-19] / SparseAttnGate [04-23]
            w = torch.zeros(cfg.num_heads, d if a.gate == "dense" else a.gate_window, dtype=torch.float32)
            if a.gate_init_std > 0:
                nn.init.normal_(w, std=a.gate_init_std)
            self.gate_w = nn.Parameter(w)  # [H, d] or [H, w]
            declare(self, gate_w=Role.GATE)

    @needs("model.attn.gate != 'off'")
    def head_gate(self, x: Tensor) -> Tensor:
        """[B,T,H] multipliers of the head outputs (called only when ``attn.gate`` is not ``off``)."""
        k = self.gate_kind
        if k == "out":
            return 2.0 * torch.sigmoid(self.gate(x[..., : self.gate_window]))
        if k == "dense":
            return torch.sigmoid(F.linear(x, self.gate_w.to(x.dtype)))
        return torch.sigmoid(self.gate_scale * F.linear(x[..., : self.gate_window], self.gate_w.to(x.dtype)))

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, xsa: bool = False, v_extra: Tensor | None = None,
                mask: Tensor | None = None, spans: DocSpans | None = None) -> Tensor:
        """x [B,T,d]; ``v_extra`` [B,T,Hkv·D] is added to the values before the head split (value
        embeddings); ``mask`` [B,1,T,T] replaces the causal mask, or ``spans`` attends within the packed
        documents (document-aware attention, :mod:`pgolf.model.varlen`)."""
        B, T, d = x.shape
        q = self.c_q(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # [B,H,T,D]
        k = self.c_k(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)  # [B,Hkv,T,D]
        v = self.c_v(x)  # [B,T,Hkv·D]
        if v_extra is not None:
            v = v + v_extra.to(v.dtype)
        v = v.view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)  # [B,Hkv,T,D]
        q, k = rms_norm(q), rms_norm(k)
        q, k = apply_rotary(q, cos.to(q.dtype), sin.to(q.dtype)), apply_rotary(k, cos.to(k.dtype), sin.to(k.dtype))
        q = q * self.q_gain.to(q.dtype)[None, :, None, None]
        # Same dtype for SDPA whatever autocast does to rms_norm (no-op in practice).
        if spans is not None:
            y = spans.attend(q, k, v).to(v.dtype)  # [B,H,T,D]
        else:
            q, k = q.to(v.dtype), k.to(v.dtype)
            y = causal_attention(q, k, v, mask=mask) if self.causal else bidirectional_attention(q, k, v)  # [B,H,T,D]
        if xsa:
            y = exclusive(y, v)
        if self.gate_kind != "off":
            y = y * self.head_gate(x).transpose(1, 2).unsqueeze(-1).to(y.dtype)  # [B,H,T,1]
        return self.proj(y.transpose(1, 2).reshape(B, T, d))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hidden = cfg.mlp_width  # mlp_mult·d, or model.mlp_hidden
        self.fc = CastedLinear(cfg.model_dim, hidden, bias=False, role=Role.MLP_UP)
        self.proj = CastedLinear(hidden, cfg.model_dim, bias=False, zero_init=True, role=Role.MLP_DOWN)
        self.gate: CastedLinear | None = None
        if cfg.mlp_act == "swiglu":  # SwiGLU's gate, the same shape as the up projection (role mlp_up)
            self.gate = CastedLinear(cfg.model_dim, hidden, bias=False, role=Role.MLP_UP)
        self.slope = cfg.leaky_slope if cfg.mlp_act == "leaky_relu2" else 0.0
        self.fused = cfg.fused_kernels

    @needs("model.mlp_act == 'swiglu'")
    def swiglu(self, x: Tensor) -> Tensor:
        """SwiGLU (Shazeer 2020; ``2026-03-19_SwiGLU_WarmdownFix_QuarterBatch_1x5090``): W_down·(silu(W_gate x) ⊙ W_up x)."""
        return self.proj(F.silu(self.gate(x)) * self.fc(x))  # [B,T,d] → [B,T,hidden] → [B,T,d]

    def forward(self, x: Tensor) -> Tensor:
        if self.gate is not None:
            return self.swiglu(x)
        if self.fused != "off":  # the fused up-projection + activation ([04-10]), an optional accelerator
            from pgolf.model.fused import mlp_forward

            return mlp_forward(self, x, self.fused)
        h = self.fc(x)  # [B,T,d] → [B,T,hidden]
        h = F.leaky_relu(h, self.slope) if self.slope else torch.relu(h)  # LeakyReLU(0.5)²: [03-23] PR #493
        return self.proj(h.square())  # → [B,T,d]


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, ssm: bool = False):
        super().__init__()
        d = cfg.model_dim
        if ssm:  # the Mamba-2 mixer in attention's place (model.ssm_layers); attn_scale scales its output
            self.ssm = _ssm_mixer(cfg)
        else:
            self.attn = CausalSelfAttention(cfg)
        self.mlp = MLP(cfg)
        self.attn_scale = nn.Parameter(torch.ones(d, dtype=torch.float32))
        self.mlp_scale = nn.Parameter(torch.ones(d, dtype=torch.float32))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(d), torch.zeros(d))).float())  # [2, d]
        declare(self, attn_scale=Role.CONTROL, mlp_scale=Role.CONTROL, resid_mix=Role.CONTROL)

    def mix(self, x: Tensor, x0: Tensor) -> Tensor:
        m = self.resid_mix.to(x.dtype)
        return m[0] * x + m[1] * x0

    @staticmethod
    def normed(x: Tensor, layer: LayerPlan) -> Tensor:
        """rms(x), times the LN-scale factor 1/√(block+1) when ``ln_scale`` ([03-21])."""
        return rms_norm(x) if layer.ln_scale == 1.0 else rms_norm(x) * layer.ln_scale

    def attn_branch(self, x: Tensor, ctx: Context, layer: LayerPlan) -> Tensor:
        """attn_scale ⊙ attn(rms(x)·ln) for the (already mixed) residual read x (the SSM mixer on an SSM layer)."""
        if layer.ssm:
            return self.attn_scale.to(x.dtype) * self.ssm(self.normed(x, layer), ctx.starts)
        mask = ctx.window_mask if layer.window else ctx.mask
        spans = None if layer.window else ctx.spans
        out = self.attn(self.normed(x, layer), ctx.cos, ctx.sin, xsa=layer.xsa, v_extra=ctx.v_extra(layer),
                        mask=mask, spans=spans)
        return self.attn_scale.to(x.dtype) * out

    def mlp_branch(self, x: Tensor, layer: LayerPlan, mlp: nn.Module | None = None) -> Tensor:
        return self.mlp_scale.to(x.dtype) * (mlp or self.mlp)(self.normed(x, layer))

    def forward(self, x: Tensor, x0: Tensor, ctx: Context, layer: LayerPlan, mlp: nn.Module | None = None) -> Tensor:
        x = self.mix(x, x0)
        if layer.gptj:
            return self._gptj(x, ctx, layer, mlp)
        x = x + self.attn_branch(x, ctx, layer)
        return x + self.mlp_branch(x, layer, mlp)

    @needs("len(model.gptj_layers) > 0")
    def _gptj(self, x: Tensor, ctx: Context, layer: LayerPlan, mlp: nn.Module | None) -> Tensor:
        """The GPT-J single-stream parallel block ([04-06a], [04-09b] PR #1493; ``model.gptj_layers``):
        x + attn(n(x)) + mlp(n(x)) — both branches read the same normalized input, one residual."""
        return x + self.attn_branch(x, ctx, layer) + self.mlp_branch(x, layer, mlp)


def _ssm_mixer(cfg: ModelConfig) -> nn.Module:
    """The SSM layer of an SSM block (imported here: a bundle without ``model.ssm_layers`` leaves it out)."""
    from pgolf.model.ssm import Mamba2Mixer

    return Mamba2Mixer(cfg.model_dim, cfg.ssm)


@dataclass
class Context:
    """Per-forward tensors shared by every layer."""

    cos: Tensor
    sin: Tensor
    mask: Tensor | None = None
    spans: DocSpans | None = None
    ve: Tensor | None = None
    """The shared value-embedding term s·P E_v[idx] [B,T,Hkv·D] of ``ve_mod``."""
    ve_mod: ValueEmbedding | None = None
    window_mask: Tensor | None = None
    """[1|B,1,T,T] bool of the sliding-window layers (``model.attn.window``; with the document mask when on)."""
    starts: Tensor | None = None
    """[B,T] bool, True where a document starts (BOS): the SSM layers reset their state there (``doc_mask``)."""

    def v_extra(self, layer: LayerPlan) -> Tensor | None:
        if not layer.ve or self.ve is None or self.ve_mod is None:
            return None
        return self.ve * self.ve_mod.layer_scales[self.ve_mod.slot[layer.block]].to(self.ve.dtype)


@dataclass(frozen=True)
class LayerPlan:
    """What virtual layer ``index`` does (built once by :func:`build_plan`)."""

    index: int
    block: int
    """Physical block it runs (a looped block appears several times)."""
    xsa: bool = False
    push_skip: bool = False
    """Push its output onto the U-Net skip stack."""
    pop_skip: int | None = None
    """Before running, merge ``skip_weights[pop_skip] ⊙ pop()`` (added, or gated)."""
    ln_scale: float = 1.0
    """Factor on the block's RMSNorm outputs (LN scale: 1/√(block+1))."""
    ve: bool = False
    """Add the value embedding (× its per-layer scale) to this layer's values."""
    parallel: bool = False
    """Run as a parallel-lane block."""
    mlp_slot: int | None = None
    """An untied MLP of a repeated pass (index into ``GPT.recur_mlps``), else the block's own."""
    ssm: bool = False
    """The block's mixer is the SSM layer (``model.ssm_layers``), not attention."""
    window: bool = False
    """Attention over the last ``model.attn.window`` positions only."""
    gptj: bool = False
    """A GPT-J single-stream parallel block (``model.gptj_layers``)."""


def virtual_order(cfg: ModelConfig, looping: bool, passes: int | None = None) -> list[int]:
    """Physical block of each virtual layer: 0..L−1, or with recurrence on the segment start..end
    repeated 1 + loops times in a row ([04-09b]: 0 1 2 3 4 5 3 4 5 3 4 5 6 7 8 9 10); ``passes`` extra passes
    instead of ``loops`` (the first phase of progressive recurrence, ``recur.progressive_frac``: 1)."""
    L, r = cfg.num_layers, cfg.recur
    if not looping or r.loops == 0:
        return list(range(L))
    seg = list(range(r.start, r.end + 1))
    return list(range(r.start)) + seg * ((r.loops if passes is None else passes) + 1) + list(range(r.end + 1, L))


def build_plan(cfg: ModelConfig, looping: bool | None = None, passes: int | None = None) -> tuple[LayerPlan, ...]:
    """The per-layer plan: the virtual layer order (depth recurrence), U-Net skips (the first half of
    the virtual layers push, each later one pops while the stack is non-empty, LIFO — the baseline),
    per-block XSA / value embeddings / LN scale, the parallel-lane layers (from the first decoder layer
    whose block is ≥ ``parallel_from`` to the end) and untied MLPs of repeated passes (pass k of a block
    takes the same MLP whatever ``passes``, the extra passes of the looped segment, :func:`virtual_order`)."""
    looping = cfg.recur.loops > 0 if looping is None else looping
    order = virtual_order(cfg, looping, passes)
    n = len(order)
    n_enc = n // 2 if cfg.skips != "none" else 0
    n_skip = min(n_enc, n - n_enc)
    xsa, ve = set(cfg.layers("xsa_layers")), set(cfg.layers("ve_layers"))
    ssm = set(cfg.layers("ssm_layers"))
    windowed = (set(cfg.layers("window_layers")) or set(range(cfg.num_layers))) - ssm if cfg.attn.window else set()
    gptj = set(cfg.layers("gptj_layers"))
    seen: dict[int, int] = {}
    untied: dict[tuple[int, int], int] = {}
    plan, lanes, start = [], False, cfg.parallel_from
    for i, block in enumerate(order):
        pop = i - n_enc if (n_enc <= i < n_enc + n_skip) else None
        ln = 1.0 / math.sqrt(block + 1) if cfg.ln_scale else 1.0
        lanes = lanes or (start is not None and i >= (n // 2) and block >= start)
        passes = seen.get(block, 0)
        seen[block] = passes + 1
        slot = None
        if cfg.recur.untie_mlp and passes > 0:
            slot = untied.setdefault((block, passes), len(untied))
        if lanes and block in gptj:
            raise ConfigError(f"model.gptj_layers: layer {block} runs in the parallel lanes (model.parallel_start); "
                              "a layer is one parallel form or the other")
        plan.append(LayerPlan(index=i, block=block, xsa=block in xsa, push_skip=i < n_enc, pop_skip=pop,
                              ln_scale=ln, ve=block in ve, parallel=lanes, mlp_slot=slot,
                              ssm=block in ssm, window=block in windowed, gptj=block in gptj))
    return tuple(plan)


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.model_dim
        self.plans = {False: build_plan(cfg, False), True: build_plan(cfg, True)}
        self.looping = cfg.recur.loops > 0
        """Depth recurrence on (the trainer switches it on at ``recur.start_frac``); evaluation runs looped."""
        self.loop_passes = cfg.recur.loops
        """Extra passes of the looped segment while ``looping``: ``recur.loops``, or 1 in the first phase of
        progressive recurrence (``recur.progressive_frac``; the trainer raises it); evaluation runs them all."""
        self.partial_plans = {}
        """Looped plans with fewer extra passes, by passes: progressive recurrence's first phase ([04-06a])."""
        if cfg.recur.progressive_frac > 0:
            self.partial_plans[1] = build_plan(cfg, True, passes=1)
        self.tok_emb = declare(nn.Embedding(cfg.vocab_size, cfg.embed.factor_dim or d), weight=Role.EMBED)  # [V, d|e]
        self.factored = None  # the factored embedding's projections ([03-24]), pgolf.model.factored
        if cfg.embed.factor_dim:
            from pgolf.model.factored import FactoredEmbedding

            self.factored = FactoredEmbedding(cfg)
        if cfg.embed.vocab_bias:  # [V], zero-init, added to the logits ([03-24])
            self.vocab_bias = nn.Parameter(torch.zeros(cfg.vocab_size, dtype=torch.float32))
            declare(self, vocab_bias=Role.CONTROL)
        self.bigram: BigramHash | None = None
        if cfg.embed.bigram_buckets:
            from pgolf.model.hashed import BigramHash

            self.bigram = BigramHash(cfg.embed.bigram_buckets, cfg.embed.bigram_dim, d, cfg.embed.bigram_scale_init,
                                     bos_id=cfg.embed.bos_id if cfg.embed.bigram_bos_reset else None)
        self.smear: SmearGate | None = None
        if cfg.embed.smear != "off":
            from pgolf.model.smear import SmearGate

            self.smear = SmearGate(cfg.embed.smear, d, bos_fix=cfg.embed.smear_bos_fix, bos_id=cfg.embed.bos_id)
        self.ve: ValueEmbedding | None = None
        if cfg.attn.ve_layers:
            from pgolf.model.value import ValueEmbedding

            self.ve = ValueEmbedding(cfg.vocab_size, cfg.attn.ve_dim, cfg.num_kv_heads * cfg.head_dim,
                                     cfg.layers("ve_layers"))
        self._doc_spans = None  # pgolf.model.varlen.spans, for the packed form where a varlen kernel runs
        if cfg.attn.doc_mask and cfg.attn.doc_kernel != "mask":
            from pgolf.model.varlen import spans

            self._doc_spans = spans
        num_skips = max(sum(p.pop_skip is not None for p in plan) for plan in self.plans.values())
        self.skip_weights = nn.Parameter(torch.ones(num_skips, d, dtype=torch.float32))  # [num_skips, d]
        declare(self, skip_weights=Role.CONTROL)
        if cfg.skips == "gated":  # σ(0) = ½ at init, as [04-01]
            self.skip_gates = nn.Parameter(torch.zeros(num_skips, d, dtype=torch.float32))
            declare(self, skip_gates=Role.CONTROL)
        ssm = set(cfg.layers("ssm_layers"))
        self.blocks = nn.ModuleList(Block(cfg, i in ssm) for i in range(cfg.num_layers))
        n_untied = max((p.mlp_slot + 1 for p in self.plans[True] if p.mlp_slot is not None), default=0)
        self.recur_mlps = nn.ModuleList(MLP(cfg) for _ in range(n_untied))
        if cfg.parallel_from is not None:  # [layer, 2 lanes] residual scales and [layer, from, to] post lambdas
            self.lane_resid = nn.Parameter(torch.full((cfg.num_layers, 2), cfg.parallel_resid_init, dtype=torch.float32))
            self.lane_post = nn.Parameter(torch.ones(cfg.num_layers, 2, 2, dtype=torch.float32))
            declare(self, lane_resid=Role.CONTROL, lane_post=Role.CONTROL)
        self.final_norm = RMSNorm()  # no parameters: the state dict is unchanged
        self.lm_head: CastedLinear | None = None
        if not cfg.tie_embeddings:
            self.lm_head = CastedLinear(d, cfg.vocab_size, bias=False, zero_init=True, role=Role.HEAD)  # [V, d]
        self._init_weights()

    @property
    def plan(self) -> tuple[LayerPlan, ...]:
        """The plan the forward pass runs now."""
        if self.looping and self.loop_passes != self.cfg.recur.loops:
            return self._phase_plan()
        return self.plans[self.looping]

    @needs("model.recur.progressive_frac > 0")
    def _phase_plan(self) -> tuple[LayerPlan, ...]:
        """The looped plan with ``loop_passes`` extra passes (progressive recurrence's first phase)."""
        return self.partial_plans[self.loop_passes]

    def _init_weights(self) -> None:
        # Tied: N(0, tied_embed_init_std). Untied: nn.Embedding's N(0, 1), as the baseline.
        # Linears keep nn.Linear's default (Kaiming-uniform) unless zero-init (set at construction),
        # or get the orthogonal init of [03-19h]/[03-20a] (model.init).
        if self.cfg.tie_embeddings:
            nn.init.normal_(self.tok_emb.weight, mean=0.0, std=self.cfg.tied_embed_init_std)
        if self.cfg.embed_init == "overtone":
            overtone_(self.tok_emb.weight)
        if self.cfg.resid_mix_init == "schedule":
            self._resid_mix_schedule()
        if self.cfg.init != "default":
            orthogonal_init(self, self.cfg.num_layers, override_zero_proj=self.cfg.init == "orthogonal_records")

    @needs("model.resid_mix_init == 'schedule'")
    def _resid_mix_schedule(self) -> None:
        """[03-19f] residual-mix schedule init: block i gets m0 = σ(3(i/(L−1) − ½)), m1 = 1 − m0."""
        L = self.cfg.num_layers
        with torch.no_grad():
            for i, b in enumerate(self.blocks):
                m0 = torch.sigmoid(torch.tensor(3.0 * (i / max(L - 1, 1) - 0.5)))
                b.resid_mix[0].fill_(float(m0))
                b.resid_mix[1].fill_(float(1 - m0))

    def num_params(self) -> int:
        """Elements of every parameter (+ V·d with ``model.embed.count_frozen_head``, the record's count)."""
        frozen = self.cfg.vocab_size * self.cfg.model_dim if self.cfg.embed.count_frozen_head else 0
        return sum(p.numel() for p in self.parameters()) + frozen

    def _merge_skip(self, j: int, x: Tensor, skip: Tensor) -> Tensor:
        s = self.skip_weights[j].to(x.dtype) * skip
        if self.cfg.skips == "gated":
            return self._gated_skip(j, x, s)
        return x + s

    @needs("model.skips == 'gated'")
    def _gated_skip(self, j: int, x: Tensor, s: Tensor) -> Tensor:
        """Sigmoid-gated U-Net skip ([04-01] PR #1218, from PR #1089): σ(g)⊙x + (1 − σ(g))⊙(w⊙skip)."""
        return torch.lerp(s, x, torch.sigmoid(self.skip_gates[j].to(x.dtype)))

    def _untied_mlp(self, layer: LayerPlan) -> nn.Module | None:
        """The repeated pass's own MLP (``recur.untie_mlp``), or None for the block's."""
        return self.recur_mlps[layer.mlp_slot] if layer.mlp_slot is not None else None

    @needs("model.parallel_start != 0")
    def _parallel(self, layer: LayerPlan, lane0: Tensor, lane1: Tensor, x0: Tensor, ctx: Context) -> tuple[Tensor, Tensor]:
        """Parallel lanes ([03-31] PR #1204, [04-10]+): both branches read the lanes before the block."""
        b = self.blocks[layer.block]
        a = b.attn_branch(b.mix(lane0, x0), ctx, layer)
        m = b.mlp_branch(lane1, layer, self._untied_mlp(layer))
        r, p = self.lane_resid[layer.block].to(lane0.dtype), self.lane_post[layer.block].to(lane0.dtype)
        return r[0] * lane0 + p[0, 0] * a + p[1, 0] * m, r[1] * lane1 + p[0, 1] * a + p[1, 1] * m

    def forward(self, idx: Tensor, targets: Tensor | None = None, reduction: str = "mean", adapter=None) -> Tensor:
        """idx [B,T] int64 → fp32 logits [B,T,V] (fp64 for a float64 model) if ``targets`` is None, else the cross-entropy in
        nats: a scalar (``reduction`` "mean" or "sum") or [B,T] (``reduction="none"``). ``adapter``: a callable on the
        final hidden states [B,T,d] whose output [B,T,V] is added to the logits before the softcap (the LM-head
        adapter of test-time training, :mod:`pgolf.eval.lora`); None = the model as trained.
        With ``model.objective=mdlm`` and ``targets``, the masked-diffusion loss of the clean sequence ``targets``
        (:func:`pgolf.model.mdlm.diffusion_loss`; ``idx`` is not read): the model has no next-token loss."""
        if targets is not None and self.cfg.objective != "ar":
            from pgolf.model.mdlm import diffusion_loss

            return diffusion_loss(self, targets, reduction)
        B, T = idx.shape
        x = self.tok_emb(idx)  # [B,T,d]
        if self.factored is not None:
            x = self.factored.proj_in(x)  # [B,T,e] → [B,T,d]
        if self.bigram is not None:
            x = x + self.bigram(idx).to(x.dtype)
        if self.smear is not None and self.smear.pre_norm:
            x = self.smear(x, idx)
        x = rms_norm(x)
        if self.smear is not None and not self.smear.pre_norm:
            x = self.smear(x, idx)
        x0 = x
        a = self.cfg.attn
        cos, sin = rotary_tables(T, a.rope_dims or self.cfg.head_dim, self.cfg.rope_base, idx.device, x.dtype,
                                 a.rope_train_len)  # [1,1,T,r/2]
        ctx = Context(cos, sin)
        if a.doc_mask:  # packed documents where a varlen kernel runs (a.doc_kernel), else the T×T mask
            ctx.spans = self._doc_spans(idx, self.cfg.embed.bos_id, a.doc_kernel) if self._doc_spans else None
            if ctx.spans is None:
                ctx.mask = document_mask(idx, self.cfg.embed.bos_id)
            if self.cfg.ssm_layers:
                ctx.starts = idx == self.cfg.embed.bos_id  # [B,T]
        if a.window:  # sliding-window layers: the band, within the document under doc_mask
            band = window_mask(T, a.window, idx.device)  # [1,1,T,T]
            ctx.window_mask = band & document_mask(idx, self.cfg.embed.bos_id) if a.doc_mask else band
        if self.ve is not None:  # [B,T,Hkv·D], shared by the VE layers
            ctx.ve, ctx.ve_mod = self.ve(idx), self.ve
        skips: list[Tensor] = []
        lane0 = lane1 = None
        for layer in self.plan:
            if layer.parallel and lane0 is None:
                lane0 = lane1 = x
            if layer.pop_skip is not None and skips:  # decoder: LIFO skip from the encoder half
                if layer.parallel:
                    lane0 = self._merge_skip(layer.pop_skip, lane0, skips.pop())
                else:
                    x = self._merge_skip(layer.pop_skip, x, skips.pop())
            if layer.parallel:
                lane0, lane1 = self._parallel(layer, lane0, lane1, x0, ctx)
            else:
                x = self.blocks[layer.block](x, x0, ctx, layer, self._untied_mlp(layer))
            if layer.push_skip:
                skips.append(x)
        if lane0 is not None:
            f = self.cfg.parallel_final
            x = 0.5 * (lane0 + lane1) if f == "mean" else lane0 if f == "attn" else lane1
        x = self.final_norm(x)  # [B,T,d], the LM-head input
        if targets is not None and self.cfg.fused_kernels != "off" and adapter is None:  # fused CE ([04-23])
            from pgolf.model.fused import loss

            return loss(self, x, targets, reduction, self.cfg.fused_kernels)
        if targets is not None and self.cfg.ce_chunk_tokens and adapter is None:
            return self._chunked_loss(x, targets, reduction)
        logits = self._logits(x, adapter)  # [B,T,V], fp32 (fp64 stays fp64), softcapped
        if targets is None:
            return logits
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be mean, sum or none, got {reduction!r}")
        loss = F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(B * T), reduction=reduction)
        if self.cfg.z_loss and self.training and torch.is_grad_enabled():
            loss = loss + self._z_loss(logits, reduction)
        return loss.view(B, T) if reduction == "none" else loss

    @needs("model.z_loss > 0")
    def _z_loss(self, logits: Tensor, reduction: str) -> Tensor:
        """z-loss ([03-24] PR #640, 1e-4; PaLM): λ·(log Σ_v exp z_v)² per position, z the softcapped logits —
        pulls the log-normalizer towards 0. Training only: a score is the plain cross-entropy."""
        z = torch.logsumexp(logits, dim=-1).reshape(-1) ** 2  # [B·T] (logits are fp32, or fp64 for a fp64 model)
        z = z.mean() if reduction == "mean" else z.sum() if reduction == "sum" else z
        return self.cfg.z_loss * z

    @needs("model.ce_chunk_tokens > 0")
    def _chunked_loss(self, x: Tensor, targets: Tensor, reduction: str) -> Tensor:
        """Cross-entropy of the final hidden states x [B,T,d] in chunks of ``ce_chunk_tokens``, each
        recomputed in backward (``torch.utils.checkpoint``): the [B·T, V] logits never exist at once."""
        B, T, d = x.shape
        h, y = x.reshape(B * T, d), targets.reshape(B * T)
        n = self.cfg.ce_chunk_tokens
        if torch.is_grad_enabled():
            parts = [torch.utils.checkpoint.checkpoint(self._chunk_ce, h[i : i + n], y[i : i + n], use_reentrant=False)
                     for i in range(0, B * T, n)]
        else:
            parts = [self._chunk_ce(h[i : i + n], y[i : i + n]) for i in range(0, B * T, n)]
        ce = torch.cat(parts)  # [B·T] nats
        if reduction == "none":
            return ce.view(B, T)
        return ce.sum() if reduction == "sum" else ce.mean()

    @needs("model.ce_chunk_tokens > 0")
    def _chunk_ce(self, h: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(self._logits(h), y, reduction="none")

    def _logits(self, x: Tensor, adapter=None) -> Tensor:
        """Softcapped logits (fp32; fp64 for a float64 model) of final hidden states x [..., d]."""
        w = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight  # [V, d]
        logits = F.linear(x if self.factored is None else self.factored.proj_out(x), w.to(x.dtype))
        if self.cfg.embed.vocab_bias:
            logits = logits + self.vocab_bias.to(logits.dtype)
        if adapter is not None:
            logits = logits + adapter(x).to(logits.dtype)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        c = self.cfg.logit_softcap
        return c * torch.tanh(logits / c) if c > 0 else logits

    @property
    def head_weight_name(self) -> str:
        """The tensor that acts as the LM head on ``final_norm``'s output (the tied embedding or ``lm_head``)."""
        return "tok_emb.weight" if self.lm_head is None else "lm_head.weight"


def count_params(cfg: ModelConfig) -> int:
    """Parameter count of ``GPT(cfg)`` without allocating it (built on the meta device)."""
    with torch.device("meta"):
        return GPT(cfg).num_params()


def unwrap(model: nn.Module) -> nn.Module:
    """The underlying module of a ``torch.compile`` and/or DDP wrapper."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


@needs("model.embed_init == 'overtone'")
def overtone_(w: Tensor) -> None:
    """[03-19f] overtone/spectral init, in place: W = U S Vᵀ → U diag(S₁·k^(−1/2)) Vᵀ, k = 1, 2, … ."""
    with torch.no_grad():
        u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
        k = torch.arange(1, s.numel() + 1, dtype=torch.float64)
        w.copy_(((u * (s[0] * k.rsqrt())) @ vh).to(w.dtype))


@needs("model.init != 'default'")
def orthogonal_init(model: nn.Module, num_layers: int, override_zero_proj: bool = False) -> None:
    """[03-19h]/[03-20a]: ``orthogonal_(gain=1)`` on every 2-D linear weight with both sides ≥ 64 that is
    not zero-initialised; output-side ones (attention out, MLP down, other projections) then × 1/√(2L).
    Zero-initialised weights stay zero, except, with ``override_zero_proj``, ``proj``-role ones (what the
    records' name-based code did to the value-embedding projection, CATALOGUE §5.4)."""
    scale = 1.0 / math.sqrt(2 * num_layers)
    with torch.no_grad():
        for mod in model.modules():
            if not isinstance(mod, CastedLinear):
                continue
            w, role = mod.weight, mod.param_roles["weight"]
            if w.ndim != 2 or min(w.shape) < 64:
                continue
            if mod._zero_init and not (override_zero_proj and role is Role.PROJ):
                continue
            nn.init.orthogonal_(w, gain=1.0)
            if role in (Role.ATTN_O, Role.MLP_DOWN, Role.PROJ):
                w.mul_(scale)


def parameter_roles(model: nn.Module) -> dict[str, Role]:
    """``{parameter name: Role}`` for every parameter of ``model`` (unwrapped), in ``named_parameters``
    order, from the ``param_roles`` each module declares for its own parameters.

    The coverage check: a parameter with no declared role, a role declared for a name that is not a
    parameter of that module, a role that is not a :class:`~pgolf.roles.Role`, one tensor given two
    different roles through two modules, or a ``matrix`` role on a tensor that is not 2-D is an error."""
    net = unwrap(model)
    by_id: dict[int, tuple[str, Role]] = {}
    for mname, mod in net.named_modules(remove_duplicate=False):
        declared = dict(getattr(mod, "param_roles", {}))
        own = dict(mod.named_parameters(recurse=False))
        stray = sorted(set(declared) - set(own))
        if stray:
            raise ConfigError(f"module {mname or type(mod).__name__} declares a role for {stray[0]!r}, not one of its parameters")
        for pname, p in own.items():
            full = f"{mname}.{pname}" if mname else pname
            role = declared.get(pname)
            if not isinstance(role, Role):
                raise ConfigError(f"parameter {full} has no declared role ({type(mod).__name__}.param_roles)")
            if role.optimizer == "matrix" and p.ndim != 2:
                raise ConfigError(f"parameter {full} has matrix role {role.value} but shape {list(p.shape)}")
            prev = by_id.get(id(p))
            if prev is not None and prev[1] is not role:
                raise ConfigError(f"parameter {prev[0]} (also {full}) has two roles: {prev[1].value} and {role.value}")
            by_id.setdefault(id(p), (full, role))
    roles = {}
    for name, p in net.named_parameters():
        roles[name] = by_id[id(p)][1]
    return roles


def model_roles(cfg: ModelConfig) -> dict[str, Role]:
    """:func:`parameter_roles` of ``GPT(cfg)`` without allocating it (meta device): the roles of the
    tensors of any state dict or artifact of this config."""
    with torch.device("meta"):
        return parameter_roles(GPT(cfg))


def parameter_groups(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """The optimizer split, read from the roles (:attr:`pgolf.roles.Role.optimizer`): ``embed``
    (token embedding, hashed/value-embedding tables → Adam), ``head`` (untied head → Adam), ``matrix``
    (2-D attention/MLP/projection weights → Muon), ``scalar`` (control tensors, gates → Adam). For the
    baseline this is the split of CATALOGUE §1.4. Each parameter is in exactly one list, as (name, p)."""
    net = unwrap(model)
    roles = parameter_roles(net)
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {"embed": [], "head": [], "matrix": [], "scalar": []}
    for name, p in net.named_parameters():
        groups[roles[name].optimizer].append((name, p))
    return groups
