"""Hashed n-gram embeddings: BigramHash.

Source: [03-19h] (PR #65) introduced a hashed bigram table (4096 buckets × 128 → linear → 512); the
hash used here is the one of the code from [03-20a] (PR #162) on — (36313·cur ⊕ 27191·prev) mod (B−1),
with the first position of every sequence (no previous token) mapped to bucket B−1. The README of
[03-20a] gives "(prev·31+cur)", which its code does not use (CATALOGUE §5.3). Sizes in the records:
4096 [03-20a], 10240 [03-20b], 2048 [03-20d]–[03-22], 1536 [03-23], 3072×112 [03-25], 2816×112 [03-29];
removed in [04-01] with the larger vocabularies.

Maths (idx [B, T] token ids, H the bucket count, E_b [H, k] the table, P [d, k], s a learned scalar):

    h_t = (36313·idx_t ⊕ 27191·idx_{t−1}) mod (H − 1)   for t ≥ 1,   h_0 = H − 1
    out_t = s · P E_b[h_t]                                 [B, T, d], added to the token embedding

The table starts at zero (so the model starts as the baseline) and s at 0.05, as [03-20a]. The
projection keeps ``nn.Linear``'s default init: in the records its constructor's zero-init was overwritten
by the orthogonal init (CATALOGUE §5.4), and with both the table and P at zero neither would ever move
(∂out/∂E_b = sPᵀ = 0 and ∂out/∂P = s E_b = 0).

Roles: the table is :attr:`~pgolf.roles.Role.HASH` (Adam at the embedding LR, quantized as its own
group), P is :attr:`~pgolf.roles.Role.PROJ` (Muon), s is a control scalar.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.model.layers import CastedLinear
from pgolf.roles import Role

NEEDED_WHEN = "model.embed.bigram_buckets > 0"

MUL_CUR = 36313
MUL_PREV = 27191


def bigram_hash(idx: Tensor, buckets: int, bos_id: int | None = None) -> Tensor:
    """Bucket ids [B, T] (int64) of the (previous, current) pairs of ``idx`` [B, T] (module docstring).
    With ``bos_id``, a BOS position is a document start too: bucket H − 1, no pair across documents."""
    idx = idx.to(torch.int64)
    h = torch.empty_like(idx)
    h[:, 0] = buckets - 1
    h[:, 1:] = torch.bitwise_xor(MUL_CUR * idx[:, 1:], MUL_PREV * idx[:, :-1]) % (buckets - 1)
    if bos_id is not None:
        h = torch.where(idx == bos_id, torch.full_like(h, buckets - 1), h)
    return h


class BigramHash(nn.Module):
    def __init__(self, buckets: int, dim: int, model_dim: int, scale_init: float = 0.05, bos_id: int | None = None):
        super().__init__()
        self.buckets, self.bos_id = buckets, bos_id
        self.table = nn.Parameter(torch.zeros(buckets, dim, dtype=torch.float32))  # [H, k]
        self.proj = CastedLinear(dim, model_dim, role=Role.PROJ)  # weight [d, k], nn.Linear's default init
        self.scale = nn.Parameter(torch.tensor(float(scale_init), dtype=torch.float32))
        self.param_roles = {"table": Role.HASH, "scale": Role.CONTROL}

    def forward(self, idx: Tensor) -> Tensor:
        e = F.embedding(bigram_hash(idx, self.buckets, self.bos_id), self.table)  # [B, T, k]
        return self.scale.to(e.dtype) * self.proj(e)  # [B, T, d]
