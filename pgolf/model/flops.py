"""Matmul FLOPs of the model, from its per-layer plan (what ``pgolf info --hardware`` predicts time from).

Per token, forward (a multiply-add = 2 FLOPs; causal attention over a window of T tokens sees on
average T/2 keys):

    F_fwd = Σ_virtual layers [ 2·(|W_q|+|W_k|+|W_v|+|W_o|+|W_up|+|W_gate|+|W_down|) + 2·2·(T/2)·H·D ]
            + 2·|E| (the LM head) + 2·(|P_bigram| + |P_ve|) (input-side projections)

(|W_gate| = 0 but with SwiGLU, ``model.mlp_act``), and training costs F_train = 3·F_fwd (backward ≈ 2× forward). A sliding-window layer (``model.attn.window``
= W) sees ≈ W − W²/(2T) keys instead of T/2; an SSM layer (``model.ssm_layers``) counts its two projections
and the SSD's chunk matmuls (:func:`_ssm_flops`). Depth recurrence repeats the looped
blocks' terms; gates, norms, RoPE and element-wise work are left out (a few %). Embedding look-ups are
free. This is the standard 6N + attention count (Kaplan et al. 2020; nanoGPT's ``estimate_mfu``).
"""

from __future__ import annotations

import torch

from pgolf.config import ModelConfig


def _attn_keys(seq_len: int, window: int) -> float:
    """Keys a query sees on average: T/2 for full causal attention; with a window W < T,
    (1/T)·Σ_t min(t+1, W) ≈ W − W²/(2T) (= T/2 at W = T)."""
    if window <= 0 or window >= seq_len:
        return seq_len / 2
    return window - window * window / (2 * seq_len)


def _ssm_flops(mixer, seq_len: int) -> float:
    """Forward FLOPs per token of a Mamba-2 SSD layer (:mod:`pgolf.model.ssm`) besides its projections, with
    Q = min(chunk, T): the intra-chunk scores C·B (Q/2 positions × G·N) and their product with the inputs
    (Q/2 × H·P), the chunk state it leaves and the entering state read out (H·P·N each), all × 2 FLOPs."""
    q = min(mixer.chunk, seq_len)
    hp = mixer.nheads * mixer.headdim
    return 2 * (q / 2) * (mixer.groups * mixer.state + hp) + 2 * 2 * hp * mixer.state


def forward_flops_per_token(cfg: ModelConfig, seq_len: int, looping: bool | None = None) -> float:
    """F_fwd of the module docstring for sequences of ``seq_len`` tokens."""
    from pgolf.model.gpt import GPT, build_plan

    with torch.device("meta"):
        m = GPT(cfg)
    plan = build_plan(cfg, looping)
    total = 0.0
    for layer in plan:
        b = m.blocks[layer.block]
        mlp = sum(lin.weight.numel() for lin in (b.mlp.fc, b.mlp.gate, b.mlp.proj) if lin is not None)  # gate: SwiGLU
        if layer.ssm:
            mix = 2 * (b.ssm.in_proj.weight.numel() + b.ssm.out_proj.weight.numel()) + _ssm_flops(b.ssm, seq_len)
        else:
            a = b.attn
            w = sum(t.weight.numel() for t in (a.c_q, a.c_k, a.c_v, a.proj))
            keys = _attn_keys(seq_len, cfg.attn.window if layer.window else 0)
            mix = 2 * w + 2 * 2 * keys * cfg.num_heads * cfg.head_dim  # 2·2·keys·H·D
        total += 2 * mlp + mix
    total += 2 * m.tok_emb.weight.numel()  # the LM head (tied or not: the same shape)
    if m.bigram is not None:
        total += 2 * m.bigram.proj.weight.numel()
    if m.ve is not None:
        total += 2 * m.ve.proj.weight.numel()
    return float(total)


def train_flops_per_token(cfg: ModelConfig, seq_len: int, looping: bool | None = None) -> float:
    return 3.0 * forward_flops_per_token(cfg, seq_len, looping)
