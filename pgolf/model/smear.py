"""SmearGate: a learned blend of each position's embedding with the previous position's.

Sources (CATALOGUE §2.3 "SmearGate"): three variants.

- ``v1`` [03-19h] (PR #65): x'_t = σ(γ)⊙x_t + (1−σ(γ))⊙x_{t−1}, γ per dim initialised to 3 (σ ≈ 0.95),
  applied to the token embedding (+ BigramHash) before the RMSNorm.
- ``v2`` [03-20a] (PR #162), [03-22], [03-23]: x'_t = (1−σ(γ))⊙x_t + σ(γ)⊙x_{t−1}, γ per dim
  initialised to 0 (a 0.5 blend at init), applied after the RMSNorm.
- ``v3`` [04-16] (PR #1667, modded-nanogpt @classiclarryd style): x_t ← x_t + λ·σ(W·x_t[:12])·x_{t−1}
  before the RMSNorm; W (12 → 1) and λ zero-initialised (the identity at init).

x_{−1} = 0 for the first position of a sequence. **BOS fix** ([04-27a]/[04-27b], PR #1855/#1851; the
leak was found on #1797): the x_{t−1} term is multiplied by 1[idx_t ≠ BOS], so the last token of
document n never leaks into the BOS of document n+1 (and through it into document n+1).

Roles: γ (v1, v2) and λ (v3) are control tensors; W (v3) is a gate.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pgolf.roles import Role

NEEDED_WHEN = "model.embed.smear != 'off'"

V3_GATE_DIMS = 12


class SmearGate(nn.Module):
    def __init__(self, variant: str, dim: int, bos_fix: bool = False, bos_id: int = 1):
        super().__init__()
        if variant not in ("v1", "v2", "v3"):
            raise ValueError(f"unknown SmearGate variant {variant!r}")
        self.variant, self.bos_fix, self.bos_id = variant, bos_fix, bos_id
        self.pre_norm = variant in ("v1", "v3")
        """Applied to the embedding before the input RMSNorm (else after it)."""
        if variant == "v3":
            self.gate = nn.Parameter(torch.zeros(1, min(V3_GATE_DIMS, dim), dtype=torch.float32))  # W [1, 12]
            self.lam = nn.Parameter(torch.zeros((), dtype=torch.float32))
            self.param_roles = {"gate": Role.GATE, "lam": Role.CONTROL}
        else:
            init = 3.0 if variant == "v1" else 0.0
            self.gamma = nn.Parameter(torch.full((dim,), init, dtype=torch.float32))
            self.param_roles = {"gamma": Role.CONTROL}

    def forward(self, x: Tensor, idx: Tensor) -> Tensor:
        """x [B, T, d], idx [B, T] → [B, T, d]."""
        prev = torch.cat((torch.zeros_like(x[:, :1]), x[:, :-1]), dim=1)  # x_{t−1}, 0 at t = 0
        if self.bos_fix:
            prev = prev * (idx != self.bos_id).unsqueeze(-1).to(x.dtype)
        if self.variant == "v3":
            g = torch.sigmoid(x[..., : self.gate.size(1)] @ self.gate.to(x.dtype).t())  # [B, T, 1]
            return x + self.lam.to(x.dtype) * g * prev
        s = torch.sigmoid(self.gamma.to(x.dtype))
        if self.variant == "v1":
            return s * x + (1 - s) * prev
        return (1 - s) * x + s * prev
