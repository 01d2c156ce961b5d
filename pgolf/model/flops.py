"""Matmul FLOPs of the model, from its per-layer plan (what ``pgolf info --hardware`` predicts time from).

Per token, forward (a multiply-add = 2 FLOPs; causal attention over a window of T tokens sees on
average T/2 keys):

    F_fwd = Σ_virtual layers [ 2·(|W_q|+|W_k|+|W_v|+|W_o|+|W_up|+|W_down|) + 2·2·(T/2)·H·D ]
            + 2·|E| (the LM head) + 2·(|P_bigram| + |P_ve|) (input-side projections)

and training costs F_train = 3·F_fwd (backward ≈ 2× forward). Depth recurrence repeats the looped
blocks' terms; gates, norms, RoPE and element-wise work are left out (a few %). Embedding look-ups are
free. This is the standard 6N + attention count (Kaplan et al. 2020; nanoGPT's ``estimate_mfu``).
"""

from __future__ import annotations

import torch

from pgolf.config import ModelConfig


def forward_flops_per_token(cfg: ModelConfig, seq_len: int, looping: bool | None = None) -> float:
    """F_fwd of the module docstring for sequences of ``seq_len`` tokens."""
    from pgolf.model.gpt import GPT, build_plan

    with torch.device("meta"):
        m = GPT(cfg)
    plan = build_plan(cfg, looping)
    b0 = m.blocks[0]
    attn = sum(w.numel() for w in (b0.attn.c_q.weight, b0.attn.c_k.weight, b0.attn.c_v.weight, b0.attn.proj.weight))
    mlp = b0.mlp.fc.weight.numel() + b0.mlp.proj.weight.numel()
    per_layer = 2 * (attn + mlp) + 2 * seq_len * cfg.num_heads * cfg.head_dim  # 2·2·(T/2)·H·D
    total = len(plan) * per_layer
    total += 2 * m.tok_emb.weight.numel()  # the LM head (tied or not: the same shape)
    if m.bigram is not None:
        total += 2 * m.bigram.proj.weight.numel()
    if m.ve is not None:
        total += 2 * m.ve.proj.weight.numel()
    return float(total)


def train_flops_per_token(cfg: ModelConfig, seq_len: int, looping: bool | None = None) -> float:
    return 3.0 * forward_flops_per_token(cfg, seq_len, looping)
