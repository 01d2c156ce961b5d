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
:mod:`pgolf.model.value`), ``ln_scale``, ``mlp_act`` (LeakyReLU²), ``init`` (orthogonal),
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

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.config import ModelConfig
from pgolf.errors import ConfigError
from pgolf.model.hashed import BigramHash
from pgolf.model.layers import CastedLinear, RMSNorm, declare, rms_norm
from pgolf.model.rotary import apply_rotary, rotary_tables
from pgolf.model.smear import SmearGate
from pgolf.model.value import ValueEmbedding
from pgolf.roles import Role

# SDPA's native grouped-query attention (no K/V copy) exists from torch 2.5; older: expand K/V.
_SDPA_HAS_GQA: bool = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 5)


def causal_attention(q: Tensor, k: Tensor, v: Tensor, native_gqa: bool = _SDPA_HAS_GQA) -> Tensor:
    """Causal SDPA. q [B,H,T,D]; k, v [B,Hkv,T,D] with Hkv | H (query head h reads KV head h // (H/Hkv))."""
    if k.size(1) != q.size(1):
        if native_gqa:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        rep = q.size(1) // k.size(1)
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


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
        self.c_q = CastedLinear(d, cfg.num_heads * hd, bias=False, role=Role.ATTN_Q)
        self.c_k = CastedLinear(d, cfg.num_kv_heads * hd, bias=False, role=Role.ATTN_K)
        self.c_v = CastedLinear(d, cfg.num_kv_heads * hd, bias=False, role=Role.ATTN_V)
        self.proj = CastedLinear(d, d, bias=False, zero_init=True, role=Role.ATTN_O)
        self.q_gain = nn.Parameter(torch.full((cfg.num_heads,), cfg.qk_gain_init, dtype=torch.float32))
        declare(self, q_gain=Role.CONTROL)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, xsa: bool = False, v_extra: Tensor | None = None) -> Tensor:
        """x [B,T,d]; ``v_extra`` [B,T,Hkv·D] is added to the values before the head split (value embeddings)."""
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
        y = causal_attention(q.to(v.dtype), k.to(v.dtype), v)  # [B,H,T,D]
        if xsa:
            y = exclusive(y, v)
        return self.proj(y.transpose(1, 2).reshape(B, T, d))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hidden = cfg.mlp_mult * cfg.model_dim
        self.fc = CastedLinear(cfg.model_dim, hidden, bias=False, role=Role.MLP_UP)
        self.proj = CastedLinear(hidden, cfg.model_dim, bias=False, zero_init=True, role=Role.MLP_DOWN)
        self.slope = cfg.leaky_slope if cfg.mlp_act == "leaky_relu2" else 0.0

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc(x)  # [B,T,d] → [B,T,mlp_mult·d]
        h = F.leaky_relu(h, self.slope) if self.slope else torch.relu(h)  # LeakyReLU(0.5)²: [03-23] PR #493
        return self.proj(h.square())  # → [B,T,d]


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.model_dim
        self.attn = CausalSelfAttention(cfg)
        self.mlp = MLP(cfg)
        self.attn_scale = nn.Parameter(torch.ones(d, dtype=torch.float32))
        self.mlp_scale = nn.Parameter(torch.ones(d, dtype=torch.float32))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(d), torch.zeros(d))).float())  # [2, d]
        declare(self, attn_scale=Role.CONTROL, mlp_scale=Role.CONTROL, resid_mix=Role.CONTROL)

    def forward(self, x: Tensor, x0: Tensor, cos: Tensor, sin: Tensor, layer: LayerPlan | None = None,
                v_extra: Tensor | None = None) -> Tensor:
        mix = self.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        xsa, ln = (layer.xsa, layer.ln_scale) if layer is not None else (False, 1.0)
        h = rms_norm(x) if ln == 1.0 else rms_norm(x) * ln  # LN scale: 1/√(i+1), [03-21]
        x = x + self.attn_scale.to(x.dtype) * self.attn(h, cos, sin, xsa=xsa, v_extra=v_extra)
        h = rms_norm(x) if ln == 1.0 else rms_norm(x) * ln
        x = x + self.mlp_scale.to(x.dtype) * self.mlp(h)
        return x


@dataclass(frozen=True)
class LayerPlan:
    """What virtual layer ``index`` does (built once by :func:`build_plan`)."""

    index: int
    block: int
    """Physical block it runs (= ``index`` without recurrence)."""
    xsa: bool = False
    push_skip: bool = False
    """Push its output onto the U-Net skip stack."""
    pop_skip: int | None = None
    """Before running, add ``skip_weights[pop_skip] ⊙ pop()``."""
    ln_scale: float = 1.0
    """Factor on the block's RMSNorm outputs (LN scale: 1/√(block+1))."""
    ve: bool = False
    """Add the value embedding (× its per-layer scale) to this layer's values."""


def build_plan(cfg: ModelConfig) -> tuple[LayerPlan, ...]:
    """The per-layer plan: U-Net skips (the first ⌊L/2⌋ layers push, each later layer pops while the
    stack is non-empty, LIFO — the baseline), XSA layers, LN-scale factors, value-embedding layers."""
    n = cfg.num_virtual_layers
    n_enc = n // 2 if cfg.skips == "unet" else 0
    n_skip = min(n_enc, n - n_enc)
    xsa, ve = set(cfg.attn.xsa_layers), set(cfg.attn.ve_layers)
    plan = []
    for i in range(n):
        block = i
        pop = i - n_enc if (n_enc <= i < n_enc + n_skip) else None
        ln = 1.0 / math.sqrt(block + 1) if cfg.ln_scale else 1.0
        plan.append(LayerPlan(index=i, block=block, xsa=i in xsa, push_skip=i < n_enc, pop_skip=pop, ln_scale=ln,
                              ve=i in ve))
    return tuple(plan)


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.model_dim
        self.plan = build_plan(cfg)
        self.tok_emb = declare(nn.Embedding(cfg.vocab_size, d), weight=Role.EMBED)  # [V, d]
        self.bigram: BigramHash | None = None
        if cfg.embed.bigram_buckets:
            self.bigram = BigramHash(cfg.embed.bigram_buckets, cfg.embed.bigram_dim, d, cfg.embed.bigram_scale_init)
        self.smear: SmearGate | None = None
        if cfg.embed.smear != "off":
            self.smear = SmearGate(cfg.embed.smear, d, bos_fix=cfg.embed.smear_bos_fix, bos_id=cfg.embed.bos_id)
        self.ve: ValueEmbedding | None = None
        if cfg.attn.ve_layers:
            self.ve = ValueEmbedding(cfg.vocab_size, cfg.attn.ve_dim, cfg.num_kv_heads * cfg.head_dim,
                                     tuple(sorted(cfg.attn.ve_layers)))
        num_skips = sum(p.pop_skip is not None for p in self.plan)
        self.skip_weights = nn.Parameter(torch.ones(num_skips, d, dtype=torch.float32))  # [num_skips, d]
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.final_norm = RMSNorm()  # no parameters: the state dict is unchanged
        self.lm_head: CastedLinear | None = None
        if not cfg.tie_embeddings:
            self.lm_head = CastedLinear(d, cfg.vocab_size, bias=False, zero_init=True, role=Role.HEAD)  # [V, d]
        declare(self, skip_weights=Role.CONTROL)
        self._init_weights()

    def _init_weights(self) -> None:
        # Tied: N(0, tied_embed_init_std). Untied: nn.Embedding's N(0, 1), as the baseline.
        # Linears keep nn.Linear's default (Kaiming-uniform) unless zero-init (set at construction),
        # or get the orthogonal init of [03-19h]/[03-20a] (model.init).
        if self.cfg.tie_embeddings:
            nn.init.normal_(self.tok_emb.weight, mean=0.0, std=self.cfg.tied_embed_init_std)
        if self.cfg.init != "default":
            orthogonal_init(self, self.cfg.num_layers, override_zero_proj=self.cfg.init == "orthogonal_records")

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: Tensor, targets: Tensor | None = None, reduction: str = "mean") -> Tensor:
        """idx [B,T] int64 → fp32 logits [B,T,V] (fp64 for a float64 model) if ``targets`` is None, else the cross-entropy in
        nats: a scalar (``reduction`` "mean" or "sum") or [B,T] (``reduction="none"``)."""
        B, T = idx.shape
        x = self.tok_emb(idx)  # [B,T,d]
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
        ve = self.ve(idx) if self.ve is not None else None  # [B,T,Hkv·D], shared by the VE layers
        skips: list[Tensor] = []
        for layer in self.plan:
            if layer.pop_skip is not None and skips:  # decoder: LIFO skip from the encoder half
                x = x + self.skip_weights[layer.pop_skip].to(x.dtype) * skips.pop()
            v_extra = None
            if layer.ve and ve is not None:
                v_extra = ve * self.ve.layer_scales[self.ve.slot[layer.index]].to(ve.dtype)
            x = self.blocks[layer.block](x, x0, cos, sin, layer, v_extra)
            if layer.push_skip:
                skips.append(x)
        x = self.final_norm(x)  # [B,T,d], the LM-head input
        w = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight  # [V, d]
        logits = F.linear(x, w.to(x.dtype))  # [B,T,V]
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # fp32 (fp64 stays fp64)
        c = self.cfg.logit_softcap
        if c > 0:
            logits = c * torch.tanh(logits / c)
        if targets is None:
            return logits
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be mean, sum or none, got {reduction!r}")
        loss = F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(B * T), reduction=reduction)
        return loss.view(B, T) if reduction == "none" else loss

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
