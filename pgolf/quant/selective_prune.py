"""Selective ±1 pruning: zero the quantized ±1 entries that cost the least, to close a small overshoot.

Source: [03-25] (PR #1019, from PR #609), CATALOGUE §2.5 "Selective ±1 pruning": zero quantized ±1
entries in order of scale² until the compressed artifact fits. Code written here.

Maths. An entry q_ij = ±1 with step s_ij reconstructs ŵ_ij = ±s_ij; zeroing it changes the squared
error of that entry from (w_ij − q_ij s_ij)² to w_ij², i.e. by

    δ_ij = w_ij² − (w_ij − q_ij s_ij)² = q_ij s_ij (2 w_ij − q_ij s_ij)      (≈ s² when |w| ≈ s/2…s)

and, with the tensor's input Hessian H (diagonal approximation, the cross terms with the other
errors of the row are dropped), its Hessian-weighted error by ≈ δ_ij · H_jj. Entries are pruned in
ascending order of δ_ij · H_jj (H_jj = 1 without a Hessian; [03-25] orders by s² alone, the same
order when |w| ≈ s and H = I). Zeros are the most frequent value of a trained int grid, so each
pruned entry lowers the entropy the compressor sees; how many bytes that frees is measured by
packing (:mod:`pgolf.export.search`), never assumed. Ties keep (tensor order, row-major index).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from pgolf.quant import grid, intgrid
from pgolf.quant.grid import QuantTensor

NEEDED_WHEN = "scheme.quantizes and (export.fit == 'prune' or scheme.codec == 'streams')"


@dataclass(frozen=True)
class PruneOrder:
    """Every prunable ±1 entry, cheapest first."""

    names: tuple[str, ...]
    tensor_index: np.ndarray
    """[N] index into ``names``."""
    flat_index: np.ndarray
    """[N] row-major index into the tensor's ``q`` part."""
    cost: np.ndarray
    """[N] δ_ij · H_jj (ascending)."""

    def __len__(self) -> int:
        return int(self.cost.shape[0])


def prunable(qt: QuantTensor) -> bool:
    """Low-bit grid tensors (``int{B}_row|g{G}``, with or without LQER) have a ``q`` part to prune."""
    p = grid.parse_scheme_name(qt.scheme)
    return p is not None and not p.ternary and "q" in qt.parts and len(qt.shape) == 2


def prune_order(
    state_dict: Mapping[str, Tensor],
    tensors: Mapping[str, QuantTensor],
    hessians: Mapping[str, Tensor] | None = None,
    names: list[str] | None = None,
) -> PruneOrder:
    """The ±1 entries of the prunable ``tensors`` (restricted to ``names`` if given), cheapest first."""
    hessians = hessians or {}
    chosen = [n for n in (names if names is not None else list(tensors)) if prunable(tensors[n])]
    ti, fi, cost = [], [], []
    for k, name in enumerate(chosen):
        qt = tensors[name]
        p = grid.parse_scheme_name(qt.scheme)
        q = qt.parts["q"].to(torch.int64)
        w = state_dict[name].detach().to("cpu", torch.float64)
        s = intgrid.expand_scale(qt.parts["scale"], q.shape[1], p.group_size).double()
        delta = q * s * (2 * w - q * s)  # [rows, cols]
        h = hessians.get(name)
        if h is not None:
            d = h.detach().to("cpu", torch.float64).diagonal()
            delta = delta * d[None, :]
        mask = q.abs() == 1
        idx = mask.reshape(-1).nonzero().squeeze(1)
        ti.append(np.full(idx.numel(), k, dtype=np.int64))
        fi.append(idx.numpy())
        cost.append(delta.reshape(-1)[idx].numpy())
    if not chosen:
        z = np.zeros(0, dtype=np.int64)
        return PruneOrder((), z, z, np.zeros(0))
    t_all, f_all, c_all = np.concatenate(ti), np.concatenate(fi), np.concatenate(cost)
    order = np.lexsort((f_all, t_all, c_all))  # by cost, then tensor, then index
    return PruneOrder(tuple(chosen), t_all[order], f_all[order], c_all[order])


def apply_pruning(tensors: Mapping[str, QuantTensor], order: PruneOrder, n: int) -> dict[str, QuantTensor]:
    """``tensors`` with the ``n`` cheapest ±1 entries of ``order`` set to 0 (others shared, not copied)."""
    n = max(0, min(int(n), len(order)))
    out = dict(tensors)
    if n == 0:
        return out
    ti, fi = order.tensor_index[:n], order.flat_index[:n]
    for k in np.unique(ti):
        name = order.names[int(k)]
        qt = tensors[name]
        q = qt.parts["q"].clone()
        q.view(-1)[torch.from_numpy(fi[ti == k])] = 0
        out[name] = QuantTensor(qt.scheme, {**qt.parts, "q": q}, qt.shape, qt.dtype)
    return out


def pruned_cost(order: PruneOrder, n: int) -> float:
    """Σ δ·H_jj of the first ``n`` entries (the estimated increase of the Hessian-weighted error)."""
    return float(order.cost[: max(0, min(int(n), len(order)))].sum())
