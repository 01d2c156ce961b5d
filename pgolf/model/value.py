"""Value embeddings: token identity re-injected into the attention values of chosen layers.

Source: [03-22] (PR #414; CATALOGUE §2.3 "Value embeddings (VE)", credited to PR #374 @unnir); removed
from [04-05] on. One table is shared by all chosen layers:

    ve = s · P E_v[idx]         E_v [V, k] ~ N(0, 0.01),  P [kv_dim, k],  s learned (init 0.1)
    v_l ← v_l + a_l · ve        in each chosen layer l, a_l learned (init 1)

before the values are split into heads (so XSA sees the same v). P is zero-initialised, so the model
starts as it would without VE (in the records the orthogonal init overwrote that zero; see
``model.init=orthogonal_records``). Roles: E_v value_embed, P proj, s and a_l control.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pgolf.model.layers import CastedLinear
from pgolf.roles import Role

NEEDED_WHEN = "len(model.attn.ve_layers) > 0"


class ValueEmbedding(nn.Module):
    def __init__(self, vocab_size: int, dim: int, kv_dim: int, layers: tuple[int, ...]):
        super().__init__()
        self.table = nn.Parameter(torch.empty(vocab_size, dim, dtype=torch.float32))  # [V, k]
        nn.init.normal_(self.table, std=0.01)
        self.proj = CastedLinear(dim, kv_dim, zero_init=True, role=Role.PROJ)
        self.scale = nn.Parameter(torch.tensor(0.1, dtype=torch.float32))
        self.layer_scales = nn.Parameter(torch.ones(len(layers), dtype=torch.float32))  # [n_layers]
        self.slot = {layer: i for i, layer in enumerate(layers)}
        self.param_roles = {"table": Role.VALUE_EMBED, "scale": Role.CONTROL, "layer_scales": Role.CONTROL}

    def forward(self, idx: Tensor) -> Tensor:
        """The shared term s·P E_v[idx], [B, T, kv_dim] (per-layer scales applied by the caller)."""
        e = torch.nn.functional.embedding(idx, self.table)
        return self.scale.to(e.dtype) * self.proj(e)
