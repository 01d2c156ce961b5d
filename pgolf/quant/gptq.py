"""Full-Hessian GPTQ, and the per-tensor / whole-model quantization driver the budget search calls.

Sources: Frantar et al., GPTQ (IST-DASLab/gptq ``gptq.py``); in the challenge [03-25] (PR #1019, full
GPTQ with GPTQ-lite's clip search inside), [04-05] (PR #1394, SDClip scales, GPTQ on the tied
embedding with the Hessian of the final-norm output), CATALOGUE §2.5. Code written here.

Maths. A linear y = W x, W [rows, cols]; calibration inputs give H = E[x xᵀ] [cols, cols]. The output
error of Ŵ is E‖(W − Ŵ)x‖² = tr((W − Ŵ) H (W − Ŵ)ᵀ) = Σ_i e_i H e_iᵀ (the *Hessian-weighted error*,
:func:`hessian_error`; rows are independent). GPTQ quantizes the columns one at a time and moves each
column's rounding error onto the columns not yet quantized, optimally for this objective (OBS):

1. dead columns (H_jj = 0: the input never fires) get W_:j = 0 and H_jj = 1; damping
   H += damp · mean(diag H) · I (0.01);
2. act-order: columns in descending diag(H) (stable sort), un-permuted at the end;
3. U = the upper Cholesky factor of H⁻¹ (H⁻¹ itself from the Cholesky of H). Row j of U is, up to the
   factor U_jj, the OBS update direction of column j over the later columns;
4. for each column j (in blocks of 128): q_j = clamp(round(w_j / s_j), ±qmax) with the scales s fixed
   beforehand, err_j = (w_j − q_j s_j) / U_jj, w_k −= err_j U_jk for the later k of the block; after a
   block, the later blocks receive −Err · U[block, later] at once (lazy batch update, same result).

Scales come from the spec's clip strategy on the original W (:mod:`pgolf.quant.grid`), per row or
per group (static groups: each column keeps its group's scale whatever the order). With
``clip="gptq_lite"`` every candidate is run through GPTQ (stacked as extra rows, one factorization)
and each row keeps the candidate with the least Hessian-weighted error ([03-25] picks one per matrix
by plain MSE). With H = I there is nothing to propagate and GPTQ is exactly plain rounding.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from pgolf.errors import ConfigError
from pgolf.quant import grid, intgrid
from pgolf.quant.grid import Policy, QuantTensor, dequantize_tensor, float_policy, quantize_tensor
from pgolf.quant.intgrid import QuantSpec

if TYPE_CHECKING:  # LQER is imported where it is used (only the budget search asks for it)
    from pgolf.quant.lqer import LqerSpec

NEEDED_WHEN = "scheme.quantizes"

TensorSpec = QuantSpec | str
"""A low-bit :class:`QuantSpec`, or the name of a fixed scheme (``fp16``, ``fp32``, ``raw``, ``int8_row``…)."""


def hessian_error(err: Tensor, h: Tensor) -> Tensor:
    """Per-row e_i H e_iᵀ in float64 ([rows]); its sum is tr(E H Eᵀ)."""
    e = err.double()
    return ((e @ h.to(e.device, torch.float64)) * e).sum(dim=1)


@contextmanager
def full_fp32_matmul() -> Iterator[None]:
    """fp32 matmuls in full precision (no TF32 / bf16 passes) inside, whatever the trainer set."""
    prev = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(prev)


def _cholesky(a: Tensor, upper: bool = False) -> Tensor | None:
    fac, info = torch.linalg.cholesky_ex(a, upper=upper)
    return fac if int(info) == 0 and bool(torch.isfinite(fac).all()) else None


def prepare_hessian(h: Tensor, damp: float = 0.01, act_order: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """``(U, perm, dead)``: U the upper Cholesky factor of the damped, permuted H⁻¹ (float64), perm the
    column order, dead the mask of dead columns (original order). If H is not positive definite after
    damping (e.g. damp = 0 with too few samples) the damping is raised ×10 up to 6 times."""
    hd = h.detach().to(torch.float64).clone()
    if hd.ndim != 2 or hd.shape[0] != hd.shape[1] or not bool(torch.isfinite(hd).all()):
        raise ValueError(f"Hessian must be a finite square matrix, got shape {tuple(h.shape)}")
    dead = hd.diagonal() == 0
    hd.diagonal()[dead] = 1.0
    n = hd.shape[0]
    perm = torch.argsort(hd.diagonal(), descending=True, stable=True) if act_order else torch.arange(n, device=hd.device)
    hd = hd[perm][:, perm]
    mean_diag = float(hd.diagonal().mean()) if n else 1.0
    lam = damp
    for _ in range(7):
        a = hd.clone()
        a.diagonal().add_(lam * mean_diag)
        low = _cholesky(a)
        if low is not None:
            u = _cholesky(torch.cholesky_inverse(low), upper=True)
            if u is not None:
                return u, perm, dead
        lam = max(lam * 10.0, 1e-6)
    raise ValueError("Hessian is not positive definite even after damping")


def gptq_quantize(
    w: Tensor,
    h: Tensor,
    scale: Tensor,
    bits: int,
    group_size: int = 0,
    *,
    damp: float = 0.01,
    block_size: int = 128,
    act_order: bool = True,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """GPTQ (module docstring) of w [rows, cols] with fixed fp16 ``scale`` ([rows] or [rows, G]) on
    the B-bit grid; returns q int8 [rows, cols] (original column order). Runs on ``w``'s device."""
    rows, cols = w.shape
    m = intgrid.qmax(bits)
    u, perm, dead = prepare_hessian(h.to(w.device), damp, act_order)
    u = u.to(dtype)
    work = w.detach().to(dtype).clone()
    work[:, dead] = 0
    work = work[:, perm].contiguous()
    s = intgrid.expand_scale(scale.to(w.device), cols, group_size)[:, perm].to(dtype)
    q = torch.zeros(rows, cols, dtype=dtype, device=w.device)
    with full_fp32_matmul():
        _gptq_loop(work, u, s, q, m, block_size)
    return q[:, torch.argsort(perm)].to(torch.int8).contiguous()


def _gptq_loop(work: Tensor, u: Tensor, s: Tensor, q: Tensor, m: int, block_size: int) -> None:
    """Step 4 of the module docstring, in place on ``work`` (permuted W) and ``q``."""
    rows, cols = work.shape
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        blk = work[:, i1:i2]  # a view: updated in place
        errs = torch.zeros(rows, i2 - i1, dtype=work.dtype, device=work.device)
        for j in range(i2 - i1):
            c = i1 + j
            qj = torch.round(blk[:, j] / s[:, c]).clamp_(-m, m)
            q[:, c] = qj
            e = (blk[:, j] - qj * s[:, c]) / u[c, c]
            errs[:, j] = e
            blk[:, j + 1 :] -= e[:, None] * u[c, c + 1 : i2][None, :]
        if i2 < cols:
            work[:, i2:] -= errs @ u[i1:i2, i2:]


@dataclass(frozen=True)
class GPTQStats:
    herr: float
    """tr((W − Ŵ) H (W − Ŵ)ᵀ) of the GPTQ result."""
    herr_rtn: float
    """The same for plain rounding with the same scales."""


def quantize_gptq(w: Tensor, h: Tensor, spec: QuantSpec, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, GPTQStats]:
    """GPTQ with the scales of ``spec`` (``gptq_lite``: per-row pick by Hessian-weighted error).
    Returns ``(q int8, scale fp16, stats)`` on the CPU."""
    w32 = w.detach().float()
    rows, cols = w32.shape
    g, bits = spec.group_size, spec.bits
    h = h.to(w32.device)
    kw = dict(damp=spec.damp, block_size=spec.block_size, act_order=spec.act_order, dtype=dtype)
    clips = intgrid.clip_candidates(w32, spec, h.diagonal())
    scales = [intgrid.store_scale(intgrid.clip_to_scale(c, bits, spec.step_floor), g) for c in clips]
    stack_s = torch.cat(scales, dim=0)  # K candidates stacked as rows
    q_all = gptq_quantize(w32.repeat(len(scales), 1), h, stack_s, bits, g, **kw)
    w64 = w32.double()
    err = hessian_error(w64.repeat(len(scales), 1) - intgrid.dequantize_grid(q_all, stack_s, g, torch.float64), h)
    err = err.view(len(scales), rows)
    if spec.search == "matrix":
        pick = torch.full((rows,), int(err.sum(dim=1).argmin()), device=w32.device)
    else:
        pick = err.argmin(dim=0)
    idx = pick * rows + torch.arange(rows, device=w32.device)
    q, scale = q_all[idx], stack_s[idx]
    q_rtn = intgrid.quantize_with_scale(w32, scale, bits, g)
    stats = GPTQStats(
        herr=float(err.gather(0, pick[None])[0].sum()),
        herr_rtn=float(hessian_error(w64 - intgrid.dequantize_grid(q_rtn, scale, g, torch.float64), h).sum()),
    )
    return q.cpu().contiguous(), scale.cpu().contiguous(), stats


# --------------------------------------------------------------------------- per-tensor and model driver


@dataclass(frozen=True)
class TensorStats:
    """What one tensor's quantization cost (uncompressed; the codecs measure compressed bytes)."""

    scheme: str
    numel: int
    bits: float
    """Nominal bits per stored value: the grid's B for low-bit grids (scales and LQER not included),
    8 for int8 schemes, 8 × element size for float/raw passthroughs."""
    raw_bytes: int
    """Bytes of all parts."""
    mse: float
    """mean (w − ŵ)² (0 for an empty tensor)."""
    herr: float | None = None
    """tr((W − Ŵ) H (W − Ŵ)ᵀ) when the tensor's Hessian is known."""
    herr_rtn: float | None = None
    """The same for plain rounding with the same scales (GPTQ specs only)."""
    entropy_bits: float | None = None
    """Zeroth-order entropy of ``q`` in bits per value (int schemes)."""
    lqer_rank: int = 0


@dataclass(frozen=True)
class TensorResult:
    qt: QuantTensor
    stats: TensorStats


@dataclass(frozen=True)
class QuantizeResult:
    tensors: dict[str, QuantTensor]
    stats: dict[str, TensorStats]


def _stats(w: Tensor, qt: QuantTensor, h: Tensor | None, bits: float, herr_rtn: float | None = None) -> TensorStats:
    deq = dequantize_tensor(qt)
    if w.is_floating_point():
        err = w.detach().to("cpu").double() - deq.double()
        mse = float(err.square().mean()) if err.numel() else 0.0
        herr = float(hessian_error(err, h).sum()) if h is not None and err.ndim == 2 else None
    else:
        mse, herr = 0.0, None
    q = qt.parts.get("q")
    ent = intgrid.entropy_bits(q) if q is not None and q.dtype == torch.int8 else None
    p = grid.parse_scheme_name(qt.scheme)
    return TensorStats(qt.scheme, w.numel(), bits, qt.nbytes, mse, herr, herr_rtn, ent, p.lqer_rank if p else 0)


def quantize_weight(w: Tensor, spec: TensorSpec, h: Tensor | None = None, name: str = "tensor") -> TensorResult:
    """One tensor with ``spec`` — a pure function of (w, spec, h), so results can be cached.
    A QuantSpec needs a 2-D float ``w`` (and ``h`` [cols, cols] for GPTQ / ``sdclip_hessian``);
    a string spec is a fixed scheme of :data:`pgolf.quant.grid.SCHEMES` (or a low-bit name)."""
    if h is not None and (w.ndim != 2 or tuple(h.shape) != (w.shape[1], w.shape[1])):
        raise ConfigError(f"{name}: Hessian shape {list(h.shape)} does not match the tensor's shape {list(w.shape)}")
    if isinstance(spec, str):
        try:
            qt = quantize_tensor(w, spec)
        except ValueError as e:
            raise ConfigError(f"{name}: {e}") from None
        bits = 8.0 * min((p.element_size() for p in qt.parts.values()), default=0) if qt.parts else 0.0
        return TensorResult(qt, _stats(w, qt, h, bits))
    if w.ndim != 2 or not w.is_floating_point():
        raise ConfigError(f"{name}: a low-bit spec needs a 2-D float tensor, got {w.dtype} {list(w.shape)}")
    if spec.needs_hessian and h is None:
        raise ConfigError(f"{name}: spec needs a Hessian (gptq or sdclip_hessian) and none was collected")
    herr_rtn = None
    if spec.gptq:
        q, scale, gs = quantize_gptq(w, h, spec)
        herr_rtn = gs.herr_rtn
    else:
        q, scale = intgrid.quantize_rtn(w, spec, None if h is None else h.diagonal())
        q, scale = q.cpu(), scale.cpu()
    qt = QuantTensor(spec.scheme, {"q": q, "scale": scale}, tuple(w.shape), w.dtype)
    return TensorResult(qt, _stats(w, qt, h, float(spec.bits), herr_rtn))


class ModelQuantizer:
    """Quantizes one state dict (with its Hessians) under many spec maps, caching every per-tensor
    result by (name, spec) and every LQER result by (name, spec, lqer spec): the budget search varies
    the specs of a few groups at a time and pays only for what changed."""

    def __init__(
        self,
        state_dict: Mapping[str, Tensor],
        hessians: Mapping[str, Tensor] | None = None,
        policy: Policy = float_policy,
    ):
        self.state_dict = dict(state_dict)
        self.hessians = dict(hessians or {})
        self.policy = policy
        self._cache: dict[tuple, TensorResult] = {}
        self._lqer_cache: dict[tuple, TensorResult | None] = {}

    def tensor(self, name: str, spec: TensorSpec | None = None) -> TensorResult:
        """One tensor's result (``spec`` None: the policy's scheme)."""
        w = self.state_dict[name]
        spec = self.policy(name, w) if spec is None else spec
        key = (name, spec)
        if key not in self._cache:
            self._cache[key] = quantize_weight(w, spec, self.hessians.get(name), name)
        return self._cache[key]

    def with_lqer(self, name: str, spec: TensorSpec | None, lqer: LqerSpec) -> TensorResult | None:
        """The tensor's result with an LQER correction, or None (ineligible or no gain)."""
        from pgolf.quant.lqer import add_lqer

        base = self.tensor(name, spec)
        key = (name, spec, lqer.rank, lqer.group_size, lqer.refit)
        if key not in self._lqer_cache:
            qt = add_lqer(self.state_dict[name], base.qt, lqer)
            self._lqer_cache[key] = None if qt is None else TensorResult(
                qt, _stats(self.state_dict[name], qt, self.hessians.get(name), base.stats.bits, base.stats.herr_rtn)
            )
        return self._lqer_cache[key]

    def quantize(self, specs: Mapping[str, TensorSpec], lqer: LqerSpec | None = None) -> QuantizeResult:
        """Every tensor (state-dict order) with ``specs[name]`` or the policy's scheme; then LQER on the
        ``lqer.top_k`` eligible tensors with the largest ‖W − Ŵ‖_F."""
        unknown = sorted(set(specs) - set(self.state_dict))
        if unknown:
            raise ConfigError(f"quant specs name tensors not in the state dict: {', '.join(unknown[:5])}")
        res = {name: self.tensor(name, specs.get(name)) for name in self.state_dict}
        if lqer is not None and lqer.top_k > 0:
            from pgolf.quant.lqer import is_eligible, top_k_by_error

            errors = {n: r.stats.mse * r.stats.numel for n, r in res.items() if is_eligible(r.qt)}
            for name in top_k_by_error(errors, lqer.top_k):
                better = self.with_lqer(name, specs.get(name), lqer)
                if better is not None:
                    res[name] = better
        return QuantizeResult({n: r.qt for n, r in res.items()}, {n: r.stats for n, r in res.items()})


def quantize_model(
    state_dict: Mapping[str, Tensor],
    specs: Mapping[str, TensorSpec],
    hessians: Mapping[str, Tensor] | None = None,
    *,
    lqer: LqerSpec | None = None,
    policy: Policy = float_policy,
) -> QuantizeResult:
    """One-shot :meth:`ModelQuantizer.quantize` (tensors absent from ``specs`` follow ``policy``)."""
    return ModelQuantizer(state_dict, hessians, policy).quantize(specs, lqer)


__all__ = [
    "GPTQStats",
    "ModelQuantizer",
    "QuantizeResult",
    "TensorResult",
    "TensorSpec",
    "TensorStats",
    "gptq_quantize",
    "hessian_error",
    "prepare_hessian",
    "quantize_gptq",
    "quantize_model",
    "quantize_weight",
]
