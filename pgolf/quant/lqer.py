"""LQER: a low-rank correction of the largest quantization errors, with quantized factors.

Source: [04-27a] (PR #1855, from PR #1797), CATALOGUE §2.5 "LQER"; code written here.

Maths. After quantization, E = W − Ŵ for every eligible matrix; the ``top_k`` (3) with the largest
‖E‖_F get a rank-r (4) correction. Truncated SVD E ≈ U_r S_r V_rᵀ, A = U_r S_r [rows, r], B = V_rᵀ
[r, cols]; storage as [04-27a]: A int2 in [−2, 1] with one fp16 scale max|A|/1.5, B int4 in [−8, 7]
with an fp16 scale max|B_g|/7.5 per group of 64 columns (:func:`pgolf.quant.lqer_factors.quantize_lqer_factors`).
Dequantization adds Â·B̂. The factor fit is :func:`pgolf.quant.lqer_factors.lqer_factors` (beside the
storage, because the ``…+lqer{r}`` schemes quantize with it; this module is the selection on top); its three
choices of ours (sign, refit, gain; none costs bytes) make LQER reduce the Frobenius error by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from torch import Tensor

from pgolf.errors import ConfigError
from pgolf.quant import grid
from pgolf.quant.grid import QuantTensor, dequantize_tensor
from pgolf.quant.intgrid import LQER_GROUP
from pgolf.quant.lqer_factors import lqer_factors

NEEDED_WHEN = "scheme.codec == 'streams'"


@dataclass(frozen=True)
class LqerSpec:
    """Which tensors get an LQER correction, and its shape ([04-27a] defaults)."""

    top_k: int = 3
    """Correct the k eligible tensors with the largest ‖W − Ŵ‖_F."""
    rank: int = 4
    group_size: int = LQER_GROUP
    """Columns per B scale."""
    refit: bool = True
    """Least-squares refit of B after A is quantized (module docstring, 2)."""

    def __post_init__(self) -> None:
        if self.top_k < 0 or self.rank < 1 or self.group_size < 1:
            raise ConfigError("lqer needs top_k >= 0, rank >= 1, group_size >= 1")


def add_lqer(w: Tensor, qt: QuantTensor, spec: LqerSpec = LqerSpec()) -> QuantTensor | None:
    """``qt`` (a 2-D ``int8_row`` or low-bit scheme without LQER, quantizing ``w``) with LQER parts
    added and its scheme renamed ``…+lqer{r}``; None if ineligible or no correction reduces the error."""
    if not is_eligible(qt):
        return None
    err = w.detach().to("cpu").float() - dequantize_tensor(qt).float()
    parts = lqer_factors(err, spec.rank, spec.group_size, spec.refit)
    if not bool(parts["lqer_a"].any()) or not bool(parts["lqer_b"].any()):
        return None
    name = grid.lqer_scheme_name(qt.scheme, spec.rank, spec.group_size)
    return QuantTensor(name, {**qt.parts, **parts}, qt.shape, qt.dtype)


def is_eligible(qt: QuantTensor) -> bool:
    """2-D int8_row / low-bit tensors without LQER yet (float passthroughs and int8_tensor are not)."""
    p = grid.parse_scheme_name(qt.scheme)
    return len(qt.shape) == 2 and p is not None and p.lqer_rank == 0


def top_k_by_error(errors: Mapping[str, float], k: int) -> list[str]:
    """The k names with the largest error (ties: name order), largest first."""
    return [n for n, _ in sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def apply_lqer(
    state_dict: Mapping[str, Tensor],
    qsd: Mapping[str, QuantTensor],
    spec: LqerSpec = LqerSpec(),
    eligible: Callable[[str], bool] = lambda name: True,
) -> dict[str, QuantTensor]:
    """``qsd`` with LQER added to the ``spec.top_k`` eligible tensors of largest ‖W − Ŵ‖_F (order kept)."""
    errors = {
        name: float((state_dict[name].detach().to("cpu").float() - dequantize_tensor(qt).float()).norm())
        for name, qt in qsd.items()
        if is_eligible(qt) and eligible(name)
    }
    out = dict(qsd)
    for name in top_k_by_error(errors, spec.top_k):
        new = add_lqer(state_dict[name], qsd[name], spec)
        if new is not None:
            out[name] = new
    return out
