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

Precision: all weights are fp32 master copies. ``CastedLinear`` casts its weight to the activation
dtype at matmul time, so the same code runs under bf16 autocast on CPU and CUDA (one code path).
Deliberate differences from the baseline script (same function, more precision): the baseline
calls ``.bfloat16()`` on the whole module, which also makes its embedding weight, hence its
residual stream, and its RoPE ``inv_freq``/position grid bf16; here weights and RoPE tables stay
fp32 and the residual stream follows the embedding (fp32). The softcap is applied in fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.config import ModelConfig

CONTROL_TENSOR_PATTERNS: tuple[str, ...] = ("attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weight")
"""Name fragments of the small control tensors: kept fp32, optimised by Adam, never Muon."""

# SDPA's native grouped-query attention (no K/V copy) exists from torch 2.5; older: expand K/V.
_SDPA_HAS_GQA: bool = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 5)


def rms_norm(x: Tensor) -> Tensor:
    """RMS-normalise the last dim (no learned gain; eps = finfo(dtype).eps, as F.rms_norm)."""
    return F.rms_norm(x, (x.size(-1),))


class RMSNorm(nn.Module):
    """:func:`rms_norm` as a parameter-free module: a named hook point (e.g. ``GPT.final_norm``, whose
    output is the LM-head input GPTQ calibrates the tied embedding on); numerics identical."""

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x)


class CastedLinear(nn.Linear):
    """``nn.Linear`` with fp32 weights cast to the input dtype at matmul time (bf16 compute).

    ``zero_init=True`` starts the weight at zero and marks it (``_zero_init``) so that later
    re-initialisations (e.g. orthogonal init) can leave it alone, as the records do.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False, zero_init: bool = False):
        super().__init__(in_features, out_features, bias=bias)
        self._zero_init = zero_init
        if zero_init:
            nn.init.zeros_(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(x, self.weight.to(x.dtype), bias)


def rotary_tables(seq_len: int, head_dim: int, base: float, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos, sin of θ_{t,i} = t · base^(-2i/D), each [1, 1, T, D/2]; computed in fp32 (fp64 for fp64)."""
    ct = torch.float64 if dtype == torch.float64 else torch.float32
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device, dtype=ct) / head_dim))  # [D/2]
    freqs = torch.outer(torch.arange(seq_len, device=device, dtype=ct), inv_freq)  # [T, D/2]
    return freqs.cos()[None, None].to(dtype), freqs.sin()[None, None].to(dtype)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate each pair (x_i, x_{i+D/2}) by −θ (the baseline's sign convention, so its weights load)."""
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


def causal_attention(q: Tensor, k: Tensor, v: Tensor, native_gqa: bool = _SDPA_HAS_GQA) -> Tensor:
    """Causal SDPA. q [B,H,T,D]; k, v [B,Hkv,T,D] with Hkv | H (query head h reads KV head h // (H/Hkv))."""
    if k.size(1) != q.size(1):
        if native_gqa:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        rep = q.size(1) // k.size(1)
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, hd = cfg.model_dim, cfg.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, hd
        self.c_q = CastedLinear(d, cfg.num_heads * hd, bias=False)
        self.c_k = CastedLinear(d, cfg.num_kv_heads * hd, bias=False)
        self.c_v = CastedLinear(d, cfg.num_kv_heads * hd, bias=False)
        self.proj = CastedLinear(d, d, bias=False, zero_init=True)
        self.q_gain = nn.Parameter(torch.full((cfg.num_heads,), cfg.qk_gain_init, dtype=torch.float32))

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        B, T, d = x.shape
        q = self.c_q(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # [B,H,T,D]
        k = self.c_k(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)  # [B,Hkv,T,D]
        v = self.c_v(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)  # [B,Hkv,T,D]
        q, k = rms_norm(q), rms_norm(k)
        q, k = apply_rotary(q, cos.to(q.dtype), sin.to(q.dtype)), apply_rotary(k, cos.to(k.dtype), sin.to(k.dtype))
        q = q * self.q_gain.to(q.dtype)[None, :, None, None]
        # Same dtype for SDPA whatever autocast does to rms_norm (no-op in practice).
        y = causal_attention(q.to(v.dtype), k.to(v.dtype), v)  # [B,H,T,D]
        return self.proj(y.transpose(1, 2).reshape(B, T, d))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hidden = cfg.mlp_mult * cfg.model_dim
        self.fc = CastedLinear(cfg.model_dim, hidden, bias=False)
        self.proj = CastedLinear(hidden, cfg.model_dim, bias=False, zero_init=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(torch.relu(self.fc(x)).square())  # [B,T,d] → [B,T,mlp_mult·d] → [B,T,d]


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.model_dim
        self.attn = CausalSelfAttention(cfg)
        self.mlp = MLP(cfg)
        self.attn_scale = nn.Parameter(torch.ones(d, dtype=torch.float32))
        self.mlp_scale = nn.Parameter(torch.ones(d, dtype=torch.float32))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(d), torch.zeros(d))).float())  # [2, d]

    def forward(self, x: Tensor, x0: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        mix = self.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        x = x + self.attn_scale.to(x.dtype) * self.attn(rms_norm(x), cos, sin)
        x = x + self.mlp_scale.to(x.dtype) * self.mlp(rms_norm(x))
        return x


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.model_dim
        self.tok_emb = nn.Embedding(cfg.vocab_size, d)  # [V, d]
        self.num_encoder_layers = cfg.num_layers // 2
        self.num_decoder_layers = cfg.num_layers - self.num_encoder_layers
        num_skips = min(self.num_encoder_layers, self.num_decoder_layers)
        self.skip_weights = nn.Parameter(torch.ones(num_skips, d, dtype=torch.float32))  # [L//2, d]
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.final_norm = RMSNorm()  # no parameters: the state dict is unchanged
        self.lm_head: CastedLinear | None = None
        if not cfg.tie_embeddings:
            self.lm_head = CastedLinear(d, cfg.vocab_size, bias=False, zero_init=True)  # [V, d]
        self._init_weights()

    def _init_weights(self) -> None:
        # Tied: N(0, tied_embed_init_std). Untied: nn.Embedding's N(0, 1), as the baseline.
        # Linears keep nn.Linear's default (Kaiming-uniform) unless zero-init (set at construction).
        if self.cfg.tie_embeddings:
            nn.init.normal_(self.tok_emb.weight, mean=0.0, std=self.cfg.tied_embed_init_std)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: Tensor, targets: Tensor | None = None, reduction: str = "mean") -> Tensor:
        """idx [B,T] int64 → fp32 logits [B,T,V] (fp64 for a float64 model) if ``targets`` is None, else the cross-entropy in
        nats: a scalar (``reduction`` "mean" or "sum") or [B,T] (``reduction="none"``)."""
        B, T = idx.shape
        x = rms_norm(self.tok_emb(idx))  # [B,T,d]
        x0 = x
        cos, sin = rotary_tables(T, self.cfg.head_dim, self.cfg.rope_base, idx.device, x.dtype)  # [1,1,T,D/2]
        skips: list[Tensor] = []
        for i, block in enumerate(self.blocks):
            if i >= self.num_encoder_layers and skips:  # decoder: LIFO skip from the encoder half
                x = x + self.skip_weights[i - self.num_encoder_layers].to(x.dtype) * skips.pop()
            x = block(x, x0, cos, sin)
            if i < self.num_encoder_layers:
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


def is_control(name: str) -> bool:
    return any(p in name for p in CONTROL_TENSOR_PATTERNS)


def parameter_groups(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Split the parameters as the baseline's optimizers do (CATALOGUE §1.4 "Optimizer split").

    Keys: ``embed`` (tok_emb.weight → Adam), ``head`` (untied lm_head.weight → Adam),
    ``matrix`` (2-D block weights that are not control tensors → Muon), ``scalar`` (everything else:
    vectors, control tensors such as the 2×d resid_mix, skip_weights → Adam). Each parameter
    appears in exactly one list, as (name, parameter).
    """
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {"embed": [], "head": [], "matrix": [], "scalar": []}
    for name, p in unwrap(model).named_parameters():
        if name == "tok_emb.weight":
            key = "embed"
        elif name == "lm_head.weight":
            key = "head"
        elif name.startswith("blocks.") and p.ndim == 2 and not is_control(name):
            key = "matrix"
        else:
            key = "scalar"
        groups[key].append((name, p))
    return groups
