"""LQER factor storage: the quantized low-rank factors of a ``…+lqer{r}`` scheme (:mod:`pgolf.quant.grid`) and
their fit. Which tensors get a correction is :mod:`pgolf.quant.lqer`.

Source: [04-27a] (PR #1855, from PR #1797), CATALOGUE §2.5 "LQER"; code written here.

Storage, as [04-27a]: a rank-r correction E ≈ A B of a tensor's quantization error E [rows, cols]; A [rows, r]
as int2 in [−2, 1] with one fp16 scale max|A|/1.5, B [r, cols] as int4 in [−8, 7] with one fp16 scale
max|B_group|/7.5 per group of g columns of each row of B; correction = (q_A s_A)(q_B s_B). (The record groups
the flattened B; the same when g | cols.)

The fit (:func:`lqer_factors`: truncated SVD E ≈ U_r S_r V_rᵀ, A = U_r S_r, B = V_rᵀ) makes three choices
of ours, none costing bytes:

1. sign: each component (A column, B row) is flipped so that the A entry of largest magnitude is
   negative — the asymmetric int2 grid reaches −2 but only +1;
2. refit (``refit=True``): with Â fixed, B = Â⁺E (least squares, pseudo-inverse for columns of Â that
   rounded to zero) before B is quantized — the int2 rounding of A is otherwise uncompensated;
3. gain: the product P = Â·B̂ is scaled by α = ⟨E, P⟩/‖P‖² (the optimal scalar, folded into A's
   scale), so ‖E − αP‖² = ‖E‖² − ⟨E,P⟩²/‖P‖² < ‖E‖_F² whenever ⟨E, P⟩ > 0; the result is checked
   after fp16 rounding of the scale and the correction is dropped (None) unless it strictly reduces
   ‖W − Ŵ‖_F. So LQER reduces the Frobenius error by construction.

Only the per-group streams' schemes store LQER factors, so a bundle whose export scheme packs one payload
leaves this module out (``NEEDED_WHEN``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from pgolf.quant.intgrid import (
    LQER_GROUP,
    SCALE_MAX,
    SCALE_MIN,
    dequantize_grid,
    expand_scale,
    num_groups,
    reduce_groups,
)

NEEDED_WHEN = "scheme.codec == 'streams'"

LQER_A_RANGE, LQER_A_DIV = (-2, 1), 1.5
"""A's int2 levels and the divisor of its one scale (max|A| / 1.5)."""
LQER_B_RANGE, LQER_B_DIV = (-8, 7), 7.5
"""B's int4 levels and the divisor of its per-group scales (max|B_g| / 7.5)."""


def quantize_lqer_factors(a: Tensor, b: Tensor, group_size: int = LQER_GROUP) -> dict[str, Tensor]:
    """A [rows, r] → int2 [−2, 1] with one scale max|A|/1.5; B [r, cols] → int4 [−8, 7] per group (max/7.5)."""
    a32, b32 = a.detach().float(), b.detach().float()
    sa = (a32.abs().amax() / LQER_A_DIV).clamp(SCALE_MIN, SCALE_MAX).to(torch.float16)
    qa = torch.round(a32 / sa.float()).clamp_(*LQER_A_RANGE).to(torch.int8)
    sb = (reduce_groups(b32.abs(), group_size, lambda t: t.amax(dim=-1)) / LQER_B_DIV).clamp(SCALE_MIN, SCALE_MAX)
    sb = sb.to(torch.float16)
    qb = torch.round(b32 / expand_scale(sb, b32.shape[1], group_size)).clamp_(*LQER_B_RANGE).to(torch.int8)
    return {"lqer_a": qa.contiguous(), "lqer_a_scale": sa, "lqer_b": qb.contiguous(), "lqer_b_scale": sb.contiguous()}


def lqer_correction(parts: Mapping[str, Tensor], group_size: int = LQER_GROUP) -> Tensor:
    """(q_A s_A)(q_B s_B) in fp32, [rows, cols]."""
    a = parts["lqer_a"].float() * parts["lqer_a_scale"].float()
    return a @ dequantize_grid(parts["lqer_b"], parts["lqer_b_scale"], group_size)


def lqer_factors(err: Tensor, rank: int = 4, group_size: int = LQER_GROUP, refit: bool = True) -> dict[str, Tensor]:
    """The quantized factor parts (``lqer_a``, ``lqer_a_scale``, ``lqer_b``, ``lqer_b_scale``) of a
    rank-``rank`` correction of ``err`` [rows, cols]; all-zero factors if none reduces ‖err‖_F."""
    e = err.detach().double()
    rows, cols = e.shape
    parts = _factors(e, rank, group_size, refit) if e.numel() and bool(e.any()) else None
    if parts is None:
        return _zero_parts(rows, cols, rank, group_size)
    return parts


def _zero_parts(rows: int, cols: int, rank: int, group_size: int) -> dict[str, Tensor]:
    z8, z16 = torch.int8, torch.float16
    return {
        "lqer_a": torch.zeros(rows, rank, dtype=z8),
        "lqer_a_scale": torch.zeros((), dtype=z16),
        "lqer_b": torch.zeros(rank, cols, dtype=z8),
        "lqer_b_scale": torch.zeros(rank, num_groups(cols, group_size), dtype=z16),
    }


def _factors(e: Tensor, rank: int, group_size: int, refit: bool) -> dict[str, Tensor] | None:
    rows, cols = e.shape
    u, s, vh = torch.linalg.svd(e, full_matrices=False)
    r = min(rank, s.numel())
    a, b = u[:, :r] * s[:r], vh[:r].clone()  # [rows, r], [r, cols]
    # 1. sign: the largest-magnitude entry of each A column goes to the −2 side.
    peak = a.gather(0, a.abs().argmax(dim=0, keepdim=True))[0]
    sign = torch.where(peak > 0, -1.0, 1.0).to(a.dtype)
    a, b = a * sign, b * sign[:, None]
    if r < rank:  # pad to the scheme's rank with zero components
        a = torch.cat([a, a.new_zeros(rows, rank - r)], dim=1)
        b = torch.cat([b, b.new_zeros(rank - r, cols)], dim=0)
    parts = quantize_lqer_factors(a, b, group_size)
    if refit:  # 2. B = Â⁺ E with Â as stored
        a_hat = parts["lqer_a"].double() * parts["lqer_a_scale"].double()
        b = torch.linalg.pinv(a_hat) @ e
        parts = {**parts, **{k: v for k, v in quantize_lqer_factors(a, b, group_size).items() if k.startswith("lqer_b")}}
    # 3. gain α folded into A's scale, then verified with the stored fp16 scale.
    p = lqer_correction(parts, group_size).double()
    pp, ep = float((p * p).sum()), float((e * p).sum())
    if pp == 0.0 or ep <= 0.0:
        return None
    alpha = ep / pp
    parts["lqer_a_scale"] = (parts["lqer_a_scale"].double() * alpha).clamp(SCALE_MIN, SCALE_MAX).to(torch.float16)
    after = float((e - lqer_correction(parts, group_size).double()).square().sum())
    return parts if after < float(e.square().sum()) else None
