"""Low-bit integer grids: int2…int8 per row or per group of columns, ternary, and their clip strategies —
the tensor maths under :mod:`pgolf.quant.grid`'s scheme families, GPTQ (:mod:`pgolf.quant.gptq`) and QAT
(:mod:`pgolf.quant.qat`). Names and storage: :mod:`pgolf.quant.grid` (``int6_row``, ``int5_g64``, ``ternary_g64``);
the LQER factors stored on int2/int4 grids: :mod:`pgolf.quant.lqer_factors`.

Sources (CATALOGUE §2.5, §2.8; code written here): int5/int6 in int8 containers [03-19c]/[03-20b];
GPTQ-lite clip search [03-22] (PR #414); SDClip [04-05] (PR #1394); Hessian-aware SDClip [04-06a]
(PR #1412); ternary absmean [03-24] (PR #640).

Maths (w [rows, cols] in fp32; B bits; qmax = 2^(B−1) − 1; groups of g consecutive columns of a row,
the last one possibly shorter; "per row" is one group of all columns):

- a clip c > 0 per group → step s = fp16(c / qmax) (floored at 2^−24, the smallest positive fp16),
  ``q = clamp(round(w / s), −qmax, qmax)`` (round half to even) computed with the *stored* fp16 step,
  ``ŵ = q · s``. So |w − ŵ| ≤ s/2 wherever |w| ≤ qmax·s, and values q·s survive bit-exactly.
  q sits in an int8 container whatever B is: the compressor removes the unused high bits, as the
  records do. Scales are fp16 as in the records: ``scale`` is [rows] per row, [rows, ⌈cols/g⌉] per group.
- clip strategies (per group; a group whose clip comes out 0 or non-finite falls back to max|w|):
  ``percentile``  c = quantile_q(|w|) (the baseline's q = 0.9999984 by default);
  ``max``         c = max|w|;
  ``gptq_lite``   c ∈ {quantile_p(|w|): p ∈ 0.999, 0.9995, 0.9999, 0.99999, 1.0}, keeping the candidate
                  with the least squared reconstruction error — per scale (each row/group its own,
                  ``search="scale"``, never worse) or one for the whole matrix as [03-22] (``"matrix"``);
  ``sdclip``      c = k · std(w_group) (unbiased std, as PR #1394);
  ``sdclip_hessian``  c_i = k · std · [1 + λ(r_i − 1)], λ = 0.175 (PR #1412): with d = diag H (dead
                  columns set to 1, plus the GPTQ damping), u_j = d_j / mean(d), r_i = mean_j |w_ij| u_j
                  normalised to mean 1 over rows (1 + λ(r − 1) ≥ 1 − λ > 0 since r ≥ 0);
  ``absmean``     c = mean|w| with B = 2 (qmax = 1): **ternary** q ∈ {−1, 0, 1}, ŵ = q · absmean
                  (BitNet b1.58, [03-24] with its per-group fp16 absmean; no "shrinkage fix").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from pgolf.errors import ConfigError

INT8_CLIP_Q = 99.99984 / 100.0
"""Per-row clip quantile of |w| (the baseline's ``INT8_CLIP_PERCENTILE / 100``)."""


def quantile_linear(x: Tensor, q: float, dim: int = -1) -> Tensor:
    """``torch.quantile(x, q, dim)`` with linear interpolation, bit-identical, without its 2^24-element
    input limit: rank ``r = q·(n−1)`` in ``x``'s dtype, ``lerp(sorted[⌊r⌋], sorted[⌈r⌉], r−⌊r⌋)``;
    NaN if the slice has a NaN. ``x`` must be non-empty along ``dim``."""
    dim = dim % x.ndim
    n = x.shape[dim]
    if n == 0:
        raise ValueError("quantile of an empty slice")
    s = x.sort(dim=dim).values
    rank = torch.tensor(q, dtype=x.dtype) * (n - 1)  # computed in x's dtype, as torch does
    lo, hi = int(rank.long()), int(rank.ceil().long())
    out = torch.lerp(s.narrow(dim, lo, 1), s.narrow(dim, hi, 1), (rank - lo).to(x.device))
    out = out.squeeze(dim)
    if x.is_floating_point():
        out = torch.where(x.isnan().any(dim=dim), torch.full_like(out, float("nan")), out)
    return out


# --------------------------------------------------------------------------- specs

CLIPS = ("percentile", "max", "gptq_lite", "sdclip", "sdclip_hessian", "absmean")
GPTQ_LITE_CANDIDATES: tuple[float, ...] = (0.999, 0.9995, 0.9999, 0.99999, 1.0)
"""Clip quantiles of |w| tried by ``gptq_lite`` ([03-22])."""
SCALE_MIN = 2.0**-24
"""Smallest positive fp16: the step floor (only all-zero groups reach it)."""
SCALE_MAX = 65504.0
"""Largest fp16."""
LQER_GROUP = 64
"""Columns per scale of an LQER B factor unless a scheme name says otherwise (``+lqer{r}`` vs ``+lqer{r}g{g}``)."""


def qmax(bits: int) -> int:
    """Largest level of the symmetric B-bit grid, 2^(B−1) − 1 (int2: 1 = ternary)."""
    if not 2 <= bits <= 8:
        raise ConfigError(f"quantization bits must be in 2..8, got {bits}")
    return 2 ** (bits - 1) - 1


@dataclass(frozen=True)
class QuantSpec:
    """One tensor's quantization choice (hashable: a cache key for the budget search)."""

    bits: int = 6
    """Grid bits B (2…8): levels −qmax…qmax, qmax = 2^(B−1) − 1."""
    group_size: int = 0
    """Columns per scale along the input dim (0 = one scale per row)."""
    clip: str = "percentile"
    """One of :data:`CLIPS` (module docstring)."""
    clip_q: float = INT8_CLIP_Q
    """Quantile of |w| for ``percentile``."""
    k: float = 12.85
    """SDClip multiplier of the std ([04-05]: matrices 12.85 at int6, embeddings 20 at int8)."""
    hessian_lambda: float = 0.175
    """λ of ``sdclip_hessian`` ([04-06a])."""
    search: str = "scale"
    """``gptq_lite``: pick the clip per scale ("scale") or per matrix ("matrix", as [03-22]).
    Under GPTQ the pick is per row (rows are independent there, groups of a row are not)."""
    gptq: bool = False
    """Full-Hessian GPTQ ([03-25]) instead of plain rounding; needs the tensor's Hessian."""
    damp: float = 0.01
    """GPTQ damping: H += damp · mean(diag H) · I (also used by ``sdclip_hessian``)."""
    block_size: int = 128
    """GPTQ columns per lazily-propagated block."""
    act_order: bool = True
    """GPTQ column order: descending diag(H)."""
    step_floor: float = 0.0
    """Least step before the fp16 cast: s = fp16(max(c / qmax, step_floor)). 0 (default) keeps only the
    2^−24 floor; [03-22] floors at 1/qmax (``(row_clip / clip_range).clamp_min(1.0 / clip_range)``,
    its ``train_gpt.py`` L894), so rows with clip < 1 all share the step 1/31 at int6."""

    def __post_init__(self) -> None:
        qmax(self.bits)
        if self.clip not in CLIPS:
            raise ConfigError(f"unknown clip strategy {self.clip!r} (known: {', '.join(CLIPS)})")
        if self.clip == "absmean" and self.bits != 2:
            raise ConfigError("clip 'absmean' is the ternary grid and needs bits=2")
        if self.group_size < 0 or self.block_size < 1:
            raise ConfigError("group_size must be >= 0 and block_size >= 1")
        if not 0.0 < self.clip_q <= 1.0 or self.k <= 0 or self.damp < 0 or self.hessian_lambda < 0:
            raise ConfigError("need 0 < clip_q <= 1, k > 0, damp >= 0, hessian_lambda >= 0")
        if not 0.0 <= self.step_floor <= SCALE_MAX:
            raise ConfigError(f"step_floor must be in [0, {SCALE_MAX}], got {self.step_floor}")
        if self.search not in ("scale", "matrix"):
            raise ConfigError(f"search must be 'scale' or 'matrix', got {self.search!r}")

    @classmethod
    def ternary(cls, group_size: int = 64, **kw) -> QuantSpec:
        return cls(bits=2, group_size=group_size, clip="absmean", **kw)

    @property
    def qmax(self) -> int:
        return qmax(self.bits)

    @property
    def needs_hessian(self) -> bool:
        return self.gptq or self.clip == "sdclip_hessian"

    @property
    def scheme(self) -> str:
        """The storage scheme name (module docstring)."""
        base = "ternary" if self.clip == "absmean" else f"int{self.bits}"
        return f"{base}_{'row' if self.group_size == 0 else f'g{self.group_size}'}"


# --------------------------------------------------------------------------- groups and scales


def num_groups(cols: int, group_size: int) -> int:
    """Scales per row: 1 per row (group_size 0), else ⌈cols / g⌉."""
    return 1 if group_size == 0 else -(-cols // group_size)


def reduce_groups(x: Tensor, group_size: int, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """``fn`` (reducing the last dim) over each group of each row of x [rows, cols] → [rows, G]."""
    rows, cols = x.shape
    g = cols if group_size == 0 else group_size
    if cols == 0:
        return x.new_zeros(rows, num_groups(0, group_size))
    n_full, rem = divmod(cols, g)
    out = []
    if n_full:
        out.append(fn(x[:, : n_full * g].reshape(rows, n_full, g)))
    if rem:
        out.append(fn(x[:, n_full * g :].reshape(rows, 1, rem)))
    return torch.cat(out, dim=1)


def expand_scale(scale: Tensor, cols: int, group_size: int) -> Tensor:
    """A scale part ([rows] or [rows, G]) as fp32 [rows, cols] (each column's step)."""
    s = scale.float()
    if group_size == 0:
        return s.reshape(-1, 1).expand(-1, cols)
    return s.repeat_interleave(group_size, dim=1)[:, :cols]


def _std(x: Tensor) -> Tensor:
    return x.std(dim=-1) if x.shape[-1] > 1 else torch.zeros_like(x[..., 0])


def row_importance(w32: Tensor, h_diag: Tensor, damp: float = 0.01) -> Tensor:
    """r_i of Hessian-aware SDClip (module docstring), mean 1 over rows; [rows]."""
    d = h_diag.detach().to(w32.device, torch.float32).clone()
    d[d == 0] = 1.0
    d = (d + damp * d.mean()).clamp_min(1e-8)
    r = (w32.abs() * (d / d.mean())[None, :]).mean(dim=1)
    m = r.mean()
    return r / m if m > 0 else torch.ones_like(r)


def clip_to_scale(clip: Tensor, bits: int, floor: float = 0.0) -> Tensor:
    """Step s = fp16(c / qmax) clamped to [max(2^−24, floor), 65504] (``floor``: QuantSpec.step_floor)."""
    return (clip.float() / qmax(bits)).clamp(max(SCALE_MIN, floor), SCALE_MAX).to(torch.float16)


def _fallback_max(clip: Tensor, w32: Tensor, group_size: int) -> Tensor:
    bad = ~(clip > 0) | ~torch.isfinite(clip)
    if bool(bad.any()):
        clip = torch.where(bad, reduce_groups(w32.abs(), group_size, lambda t: t.amax(dim=-1)), clip)
    return clip


def clip_candidates(w32: Tensor, spec: QuantSpec, h_diag: Tensor | None = None) -> list[Tensor]:
    """The clip(s) [rows, G] of ``spec.clip`` (``gptq_lite``: one per candidate quantile)."""
    a, g = w32.abs(), spec.group_size
    if spec.clip == "gptq_lite":
        qs = GPTQ_LITE_CANDIDATES
        clips = [reduce_groups(a, g, (lambda t, p=p: quantile_linear(t, p, dim=-1))) for p in qs]
    elif spec.clip == "percentile":
        clips = [reduce_groups(a, g, lambda t: quantile_linear(t, spec.clip_q, dim=-1))]
    elif spec.clip == "max":
        clips = [reduce_groups(a, g, lambda t: t.amax(dim=-1))]
    elif spec.clip == "absmean":
        clips = [reduce_groups(a, g, lambda t: t.mean(dim=-1))]
    else:  # sdclip, sdclip_hessian
        c = spec.k * reduce_groups(w32, g, _std)
        if spec.clip == "sdclip_hessian":
            if h_diag is None:
                raise ConfigError("clip 'sdclip_hessian' needs the tensor's Hessian diagonal")
            c = c * (1.0 + spec.hessian_lambda * (row_importance(w32, h_diag, spec.damp) - 1.0))[:, None]
        clips = [c]
    return [_fallback_max(c, w32, g) for c in clips]


def store_scale(scale: Tensor, group_size: int) -> Tensor:
    """A [rows, G] scale in its stored shape ([rows] per row)."""
    return (scale[:, 0] if group_size == 0 else scale).contiguous()


def quantize_with_scale(w32: Tensor, scale: Tensor, bits: int, group_size: int) -> Tensor:
    """q = clamp(round(w / s), ±qmax) as int8, with s the stored fp16 step of each column."""
    m = qmax(bits)
    q = torch.round(w32 / expand_scale(scale, w32.shape[1], group_size)).clamp_(-m, m)
    return q.to(torch.int8).contiguous()


def dequantize_grid(q: Tensor, scale: Tensor, group_size: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """ŵ = q · s (fp32), cast to ``dtype``."""
    return (q.float() * expand_scale(scale, q.shape[1], group_size)).to(dtype).contiguous()


def select_clip(w32: Tensor, clips: list[Tensor], spec: QuantSpec) -> Tensor:
    """The candidate clip with the least squared rounding error, per scale or per matrix."""
    if len(clips) == 1:
        return clips[0]
    errs = []
    for c in clips:
        s = clip_to_scale(c, spec.bits, spec.step_floor)
        e = (w32 - dequantize_grid(quantize_with_scale(w32, s, spec.bits, spec.group_size), s, spec.group_size))
        errs.append(reduce_groups(e.square(), spec.group_size, lambda t: t.sum(dim=-1)))
    err = torch.stack(errs)  # [K, rows, G]
    stack = torch.stack(clips)
    if spec.search == "matrix":
        return stack[int(err.sum(dim=(1, 2)).argmin())]
    return stack.gather(0, err.argmin(dim=0, keepdim=True))[0]  # first candidate wins ties


def compute_scale(w: Tensor, spec: QuantSpec, h_diag: Tensor | None = None) -> Tensor:
    """The stored fp16 scale part of ``spec`` for w [rows, cols] (rounding-error search for gptq_lite)."""
    w32 = _check_2d(w)
    clip = select_clip(w32, clip_candidates(w32, spec, h_diag), spec)
    return store_scale(clip_to_scale(clip, spec.bits, spec.step_floor), spec.group_size)


def quantize_rtn(w: Tensor, spec: QuantSpec, h_diag: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Plain rounding on the grid of ``spec``: ``(q int8 [rows, cols], scale fp16)``."""
    scale = compute_scale(w, spec, h_diag)
    return quantize_with_scale(_check_2d(w), scale, spec.bits, spec.group_size), scale


def _check_2d(w: Tensor) -> Tensor:
    if w.ndim != 2:
        raise ValueError(f"low-bit grids need a 2-D tensor, got shape {tuple(w.shape)}")
    return w.detach().float()


def entropy_bits(q: Tensor) -> float:
    """Empirical zeroth-order entropy of the int8 values, bits per value (a compressibility guide)."""
    if q.numel() == 0:
        return 0.0
    counts = torch.bincount((q.reshape(-1).to(torch.int64) + 128), minlength=256).double()
    p = counts[counts > 0] / q.numel()
    return float(-(p * p.log2()).sum())
