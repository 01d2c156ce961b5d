"""Rotary position embedding: full or partial, with NTK-style base scaling beyond a training length.

Sources: RoPE as in the baseline [03-17b] (base 10,000, the whole head, pairs (x_i, x_{i+D/2}) rotated
by −θ); partial RoPE [03-21] (PR #315, ``ROPE_DIMS=16``: only the first r dims of each head rotate,
the pairs being (x_i, x_{i+r/2}) within them); NTK scaling as the records' ``Rotary`` does for
T > L: base' = base · (T/L)^(r/(r−2)) (CATALOGUE §2.3 "Partial RoPE").

Maths (r rotated dims, t the position, i < r/2):  θ_{t,i} = t · base'^(−2i/r)

    (x_i, x_{i+r/2}) ← (x_i cos θ + x_{i+r/2} sin θ,  x_{i+r/2} cos θ − x_i sin θ);  x_j for j ≥ r unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor


def rope_base(base: float, seq_len: int, rope_dims: int, train_len: int = 0) -> float:
    """The (possibly NTK-scaled) base for sequences of ``seq_len`` tokens."""
    if train_len > 0 and seq_len > train_len and rope_dims > 2:
        return base * (seq_len / train_len) ** (rope_dims / (rope_dims - 2))
    return base


def rotary_tables(seq_len: int, rope_dims: int, base: float, device: torch.device, dtype: torch.dtype,
                  train_len: int = 0) -> tuple[Tensor, Tensor]:
    """cos, sin of θ_{t,i}, each [1, 1, T, r/2]; computed in fp32 (fp64 for fp64)."""
    ct = torch.float64 if dtype == torch.float64 else torch.float32
    b = rope_base(base, seq_len, rope_dims, train_len)
    inv_freq = 1.0 / (b ** (torch.arange(0, rope_dims, 2, device=device, dtype=ct) / rope_dims))  # [r/2]
    freqs = torch.outer(torch.arange(seq_len, device=device, dtype=ct), inv_freq)  # [T, r/2]
    return freqs.cos()[None, None].to(dtype), freqs.sin()[None, None].to(dtype)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the first r = 2·cos.size(-1) dims of ``x`` [..., T, D] (module docstring); the rest pass."""
    r = 2 * cos.size(-1)
    if r < x.size(-1):
        return torch.cat((apply_rotary(x[..., :r], cos, sin), x[..., r:]), dim=-1)
    half = r // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)
