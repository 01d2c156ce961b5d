"""Quantization grids (per-tensor quantizers and their inverses, as named schemes).

Part 1 — the baseline's int8 export (CATALOGUE §1.7).

Source: the challenge's naive baseline, ``quantize_state_dict_int8`` / ``dequantize_state_dict_int8``
in the root ``train_gpt.py`` of openai/parameter-golf (record [03-17b] NaiveBaseline); numerics
matched, code written here.

Maths (w a float tensor, computed in fp32):

- **int8_row** (2-D float tensors with more than 65,536 elements), per row i:
  ``c_i = quantile_q(|w_i|)`` with ``q = 0.9999984`` (the 99.99984th percentile, torch.quantile's
  linear interpolation), ``s_i = max(c_i / 127, 1/127)`` (fp32),
  ``q_ij = round(clamp(w_ij, -c_i, c_i) / s_i)`` ∈ [−127, 127] (round half to even), stored int8;
  ``s_i`` is *stored* as fp16 after ``q`` was computed with the fp32 value (as the baseline does),
  so ``ŵ_ij = q_ij · fp16(s_i)``. The floor at 1/127 means rows with ``c_i < 1`` share the step 1/127.
- **int8_tensor** (other float tensors with more than 65,536 elements): one scale
  ``s = c/127`` if ``c > 0`` else 1 (fp32, no floor), ``c`` the same quantile over all elements.
- **fp32** / **fp16**: passthrough casts for float tensors with at most 65,536 elements: fp32 for
  control tensors (role :attr:`~pgolf.roles.Role.CONTROL`: the baseline's ``attn_scale, mlp_scale,
  resid_mix, q_gain, skip_weight`` name patterns, here declared by the model), fp16 when the tensor is
  fp32 or bf16, else **raw** (fp16/fp64 kept as they are, as the baseline).
- **raw**: stored bit-exactly (non-float tensors).

Every scheme dequantizes to the tensor's original dtype and shape (the baseline leaves control
tensors fp32; restoring the original dtype is lossless there and lets ``load_state_dict`` match).

Split (DESIGN style rule 10): this module is the *grid* (per-tensor quantizer and its inverse, as
named schemes with named parts); a *policy* is a plain function ``(name, tensor) -> scheme name``
that selects the layers (``int8_policy`` is the baseline's); the *packer* is
:mod:`pgolf.artifact.format` and the *driver* is :mod:`pgolf.export.driver`. Fixed grids are entries
of :data:`SCHEMES`; the parametrized low-bit families (int2…int8 per row/group, ternary, LQER
factors; every parameter in the name) are built on demand by :func:`family_scheme` (second part of
this module) and :func:`get_scheme` resolves them. GPTQ (:mod:`pgolf.quant.gptq`) is an algorithm: its output uses the same schemes.

Part 2 — low-bit grids (int2…int8 per row or per group, ternary), clip strategies, LQER factor storage.

Sources (CATALOGUE §2.5, §2.8; code written here): int5/int6 in int8 containers [03-19c]/[03-20b];
GPTQ-lite clip search [03-22] (PR #414); SDClip [04-05] (PR #1394); Hessian-aware SDClip [04-06a]
(PR #1412); ternary absmean [03-24] (PR #640); asymmetric LQER factors [04-27a] (PR #1855, from #1797).

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
- LQER factors (A [rows, r], B [r, cols]): A as int2 in [−2, 1] with one fp16 scale max|A|/1.5,
  B as int4 in [−8, 7] with one fp16 scale max|B_group|/7.5 per group of g columns of each row of B;
  correction = (q_A s_A)(q_B s_B). (The record groups the flattened B; the same when g | cols.)

Scheme names (the container stores a per-tensor ``scheme`` string and named parts; every parameter is
in the name, so no new container version is needed):
``int{B}_row`` (B = 2…7; ``int8_row`` is the baseline's scheme, same parts and dequantization),
``int{B}_g{g}`` (B = 2…8), ``ternary_row`` / ``ternary_g{g}`` (same parts; q ∈ {−1, 0, 1}); each may end
in ``+lqer{r}`` (B's group 64) or ``+lqer{r}g{g}``. Parts: ``q`` int8 [rows, cols], ``scale`` fp16, and
with LQER ``lqer_a`` int8 [rows, r], ``lqer_a_scale`` fp16 [], ``lqer_b`` int8 [r, cols],
``lqer_b_scale`` fp16 [r, ⌈cols/g⌉]. :func:`pgolf.quant.grid.get_scheme` resolves these names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from pgolf.errors import ConfigError
from pgolf.roles import Role, RoleMap, role_of
from pgolf.switch import needs

KEEP_FLOAT_MAX_NUMEL = 65_536
"""Float tensors with at most this many elements are stored as floats, not quantized."""
INT8_CLIP_Q = 99.99984 / 100.0
"""Per-row clip quantile of |w| (the baseline's ``INT8_CLIP_PERCENTILE / 100``)."""
INT8_QMAX = 127


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


# --------------------------------------------------------------------------- int8 grids


def quantize_int8_per_row(w: Tensor, clip_q: float = INT8_CLIP_Q) -> tuple[Tensor, Tensor]:
    """2-D ``w`` [rows, cols] → ``q`` int8 [rows, cols], ``scale`` fp16 [rows] (see module docstring)."""
    if w.ndim != 2:
        raise ValueError(f"per-row int8 needs a 2-D tensor, got shape {tuple(w.shape)}")
    w32 = w.detach().float()
    if w32.shape[1] == 0:
        clip = torch.zeros(w32.shape[0], dtype=torch.float32, device=w32.device)
    else:
        clip = quantile_linear(w32.abs(), clip_q, dim=1)
    clipped = torch.maximum(torch.minimum(w32, clip[:, None]), -clip[:, None])
    scale = (clip / INT8_QMAX).clamp_min(1.0 / INT8_QMAX)  # fp32; q uses this, storage rounds to fp16
    q = torch.clamp(torch.round(clipped / scale[:, None]), -INT8_QMAX, INT8_QMAX).to(torch.int8)
    return q.contiguous(), scale.to(torch.float16).contiguous()


def dequantize_int8_per_row(q: Tensor, scale: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """``ŵ[i, j] = q[i, j] · scale[i]`` in fp32, cast to ``dtype``."""
    return (q.float() * scale.float()[:, None]).to(dtype).contiguous()


def quantize_int8_per_tensor(w: Tensor, clip_q: float = INT8_CLIP_Q) -> tuple[Tensor, Tensor]:
    """Any-shape ``w`` → ``q`` int8 (same shape), ``scale`` fp32 scalar (see module docstring)."""
    w32 = w.detach().float()
    clip = float(quantile_linear(w32.abs().flatten(), clip_q, dim=0).item()) if w32.numel() else 0.0
    scale = torch.tensor(clip / INT8_QMAX if clip > 0 else 1.0, dtype=torch.float32)
    q = torch.clamp(torch.round(torch.clamp(w32, -clip, clip) / scale), -INT8_QMAX, INT8_QMAX).to(torch.int8)
    return q.contiguous(), scale


def dequantize_int8_per_tensor(q: Tensor, scale: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """``ŵ = q · scale`` in fp32, cast to ``dtype``."""
    return (q.float() * float(scale.item())).to(dtype).contiguous()


# --------------------------------------------------------------------------- schemes


@dataclass(frozen=True)
class QuantTensor:
    """One tensor as stored: its scheme, its named parts, and the original shape/dtype to restore."""

    scheme: str
    parts: dict[str, Tensor]
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        """Bytes of all parts, uncompressed."""
        return sum(p.numel() * p.element_size() for p in self.parts.values())


@dataclass(frozen=True)
class Scheme:
    """A grid as a named scheme. ``quantize(t) -> parts``; ``dequantize(parts, shape, dtype) -> Tensor``;
    ``part_specs(shape)`` gives each part's expected (dtype, shape), used to validate a loaded artifact."""

    name: str
    quantize: Callable[[Tensor], dict[str, Tensor]]
    dequantize: Callable[[Mapping[str, Tensor], tuple[int, ...], torch.dtype], Tensor]
    part_specs: Callable[[tuple[int, ...], torch.dtype], dict[str, tuple[torch.dtype, tuple[int, ...]]]]


def _q_row(t: Tensor) -> dict[str, Tensor]:
    q, s = quantize_int8_per_row(t)
    return {"q": q, "scale": s}


def _q_tensor(t: Tensor) -> dict[str, Tensor]:
    q, s = quantize_int8_per_tensor(t)
    return {"q": q, "scale": s}


def _need_float(dt: torch.dtype) -> None:
    if not dt.is_floating_point:
        raise ValueError(f"this scheme restores float tensors, not {dt}")


def _specs_row(shape: tuple[int, ...], dt: torch.dtype) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
    _need_float(dt)
    if len(shape) != 2:
        raise ValueError(f"scheme int8_row needs a 2-D shape, got {list(shape)}")
    return {"q": (torch.int8, shape), "scale": (torch.float16, shape[:1])}


def _specs_tensor(shape: tuple[int, ...], dt: torch.dtype) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
    _need_float(dt)
    return {"q": (torch.int8, shape), "scale": (torch.float32, ())}


def _specs_cast(store: torch.dtype) -> Callable[[tuple[int, ...], torch.dtype], dict]:
    def specs(shape: tuple[int, ...], dt: torch.dtype) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
        _need_float(dt)
        return {"w": (store, shape)}

    return specs


def _cast_back(p: Mapping[str, Tensor], shape: tuple[int, ...], dt: torch.dtype) -> Tensor:
    return p["w"].to(dt).contiguous()


SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in (
        Scheme("int8_row", _q_row, lambda p, shape, dt: dequantize_int8_per_row(p["q"], p["scale"], dt), _specs_row),
        Scheme(
            "int8_tensor",
            _q_tensor,
            lambda p, shape, dt: dequantize_int8_per_tensor(p["q"], p["scale"], dt),
            _specs_tensor,
        ),
        Scheme("fp32", lambda t: {"w": t.detach().float().contiguous()}, _cast_back, _specs_cast(torch.float32)),
        Scheme("fp16", lambda t: {"w": t.detach().to(torch.float16).contiguous()}, _cast_back, _specs_cast(torch.float16)),
        Scheme(
            "raw",
            lambda t: {"w": t.detach().contiguous()},
            lambda p, shape, dt: p["w"].clone(),
            lambda shape, dt: {"w": (dt, shape)},
        ),
    )
}


def get_scheme(name: str) -> Scheme:
    """A registered scheme, or a member of the parametrized low-bit families of
    the low-bit families below (``int6_row``, ``int5_g64``, ``ternary_g64``, ``…+lqer4``)."""
    if name in SCHEMES:
        return SCHEMES[name]
    scheme = family_scheme(name)
    if scheme is None and name.startswith(("ternary_b3", "binary_b1", "fp8_")):  # packed low-bit storage
        from pgolf.quant.lowbit import lowbit_scheme

        scheme = lowbit_scheme(name)
    if scheme is None:
        raise ValueError(
            f"unknown quant scheme {name!r} (known: {', '.join(SCHEMES)}, int{{2..8}}_row|g{{G}}, "
            "ternary_row|g{G}, each optionally +lqer{r}[g{G}]; ternary_b3[s]_row|g{G}, binary_b1_row|g{G}, fp8_e4m3)"
        )
    return scheme


Policy = Callable[[str, Tensor], str]
"""A filter function choosing each tensor's scheme from its name and value."""


def int8_policy(name: str, t: Tensor, role: Role, keep_float_max_numel: int = KEEP_FLOAT_MAX_NUMEL) -> str:
    """The baseline's choice (CATALOGUE §1.7): raw non-floats; small floats fp32 (control role) / fp16
    (fp32 or bf16) / raw (fp16, fp64); large 2-D floats per-row int8; other large floats per-tensor.

    ``keep_float_max_numel`` is the baseline's 65,536: right for 512-wide models, where only control
    vectors are that small; a 128-wide model's matrices are all below it (``export.keep_float_max_numel``)."""
    if not t.is_floating_point():
        return "raw"
    if t.numel() <= keep_float_max_numel:
        if role is Role.CONTROL:
            return "fp32"
        return "fp16" if t.dtype in (torch.float32, torch.bfloat16) else "raw"
    return "int8_row" if t.ndim == 2 else "int8_tensor"


def int8_policy_for(roles: RoleMap, keep_float_max_numel: int = KEEP_FLOAT_MAX_NUMEL) -> Policy:
    """:func:`int8_policy` as a :data:`Policy`, reading each tensor's role from ``roles``."""

    def policy(name: str, t: Tensor) -> str:
        return int8_policy(name, t, role_of(roles, name), keep_float_max_numel)

    return policy


def float_policy(name: str, t: Tensor) -> str:
    """fp16 for fp32/bf16 floats, raw otherwise (the records' rule for what they do not quantize)."""
    if t.is_floating_point() and t.dtype in (torch.float32, torch.bfloat16):
        return "fp16"
    return "raw"


def quantize_tensor(t: Tensor, scheme: str) -> QuantTensor:
    """Quantize one tensor (moved to CPU) with the named scheme."""
    t = t.detach().to("cpu").contiguous()
    return QuantTensor(scheme, get_scheme(scheme).quantize(t), tuple(t.shape), t.dtype)


def dequantize_tensor(qt: QuantTensor) -> Tensor:
    """Inverse of :func:`quantize_tensor`: a tensor of ``qt.shape`` and ``qt.dtype``. Raises
    ``ValueError`` if the parts do not have the dtypes/shapes the scheme defines."""
    scheme = get_scheme(qt.scheme)
    check_parts(qt.scheme, qt.parts, qt.shape, qt.dtype)
    out = scheme.dequantize(qt.parts, qt.shape, qt.dtype)
    return out.reshape(qt.shape)


def check_parts(scheme: str, parts: Mapping[str, Tensor], shape: tuple[int, ...], dtype: torch.dtype) -> None:
    """Raise ``ValueError`` unless ``parts`` are exactly the scheme's parts with their dtypes and shapes."""
    specs = get_scheme(scheme).part_specs(tuple(shape), dtype)
    if set(parts) != set(specs):
        raise ValueError(f"scheme {scheme} expects parts {sorted(specs)}, got {sorted(parts)}")
    for role, (pdt, pshape) in specs.items():
        p = parts[role]
        if p.dtype != pdt or tuple(p.shape) != tuple(pshape):
            raise ValueError(
                f"scheme {scheme} part {role!r} must be {pdt} {list(pshape)}, got {p.dtype} {list(p.shape)}"
            )


def quantize_state_dict(state_dict: Mapping[str, Tensor], policy: Policy) -> dict[str, QuantTensor]:
    """Quantize every tensor with the scheme ``policy(name, tensor)`` picks (order kept)."""
    return {name: quantize_tensor(t, policy(name, t)) for name, t in state_dict.items()}


def dequantize_state_dict(qsd: Mapping[str, QuantTensor]) -> dict[str, Tensor]:
    """Inverse of :func:`quantize_state_dict`."""
    return {name: dequantize_tensor(qt) for name, qt in qsd.items()}


# =========================================================================== low-bit grids

CLIPS = ("percentile", "max", "gptq_lite", "sdclip", "sdclip_hessian", "absmean")
GPTQ_LITE_CANDIDATES: tuple[float, ...] = (0.999, 0.9995, 0.9999, 0.99999, 1.0)
"""Clip quantiles of |w| tried by ``gptq_lite`` ([03-22])."""
SCALE_MIN = 2.0**-24
"""Smallest positive fp16: the step floor (only all-zero groups reach it)."""
SCALE_MAX = 65504.0
"""Largest fp16."""
LQER_A_RANGE, LQER_A_DIV = (-2, 1), 1.5
LQER_B_RANGE, LQER_B_DIV = (-8, 7), 7.5
LQER_GROUP = 64


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


def _reduce_groups(x: Tensor, group_size: int, fn: Callable[[Tensor], Tensor]) -> Tensor:
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
        clip = torch.where(bad, _reduce_groups(w32.abs(), group_size, lambda t: t.amax(dim=-1)), clip)
    return clip


def clip_candidates(w32: Tensor, spec: QuantSpec, h_diag: Tensor | None = None) -> list[Tensor]:
    """The clip(s) [rows, G] of ``spec.clip`` (``gptq_lite``: one per candidate quantile)."""
    a, g = w32.abs(), spec.group_size
    if spec.clip == "gptq_lite":
        qs = GPTQ_LITE_CANDIDATES
        clips = [_reduce_groups(a, g, (lambda t, p=p: quantile_linear(t, p, dim=-1))) for p in qs]
    elif spec.clip == "percentile":
        clips = [_reduce_groups(a, g, lambda t: quantile_linear(t, spec.clip_q, dim=-1))]
    elif spec.clip == "max":
        clips = [_reduce_groups(a, g, lambda t: t.amax(dim=-1))]
    elif spec.clip == "absmean":
        clips = [_reduce_groups(a, g, lambda t: t.mean(dim=-1))]
    else:  # sdclip, sdclip_hessian
        c = spec.k * _reduce_groups(w32, g, _std)
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
        errs.append(_reduce_groups(e.square(), spec.group_size, lambda t: t.sum(dim=-1)))
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


# --------------------------------------------------------------------------- LQER factor storage


def quantize_lqer_factors(a: Tensor, b: Tensor, group_size: int = LQER_GROUP) -> dict[str, Tensor]:
    """A [rows, r] → int2 [−2, 1] with one scale max|A|/1.5; B [r, cols] → int4 [−8, 7] per group (max/7.5)."""
    a32, b32 = a.detach().float(), b.detach().float()
    sa = (a32.abs().amax() / LQER_A_DIV).clamp(SCALE_MIN, SCALE_MAX).to(torch.float16)
    qa = torch.round(a32 / sa.float()).clamp_(*LQER_A_RANGE).to(torch.int8)
    sb = (_reduce_groups(b32.abs(), group_size, lambda t: t.amax(dim=-1)) / LQER_B_DIV).clamp(SCALE_MIN, SCALE_MAX)
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


# --------------------------------------------------------------------------- scheme families

_NAME = re.compile(r"(?:int([2-8])|(ternary))_(?:row|g([1-9]\d*))(?:\+lqer([1-9]\d*)(?:g([1-9]\d*))?)?")


@dataclass(frozen=True)
class SchemeName:
    """A parsed low-bit scheme name."""

    bits: int
    group_size: int
    ternary: bool
    lqer_rank: int = 0
    lqer_group: int = LQER_GROUP

    @property
    def base(self) -> str:
        return QuantSpec(self.bits, self.group_size, "absmean" if self.ternary else "percentile").scheme


def parse_scheme_name(name: str) -> SchemeName | None:
    """The parameters of a low-bit scheme name, or None if ``name`` is not one."""
    m = _NAME.fullmatch(name)
    if m is None:
        return None
    bits, tern, g, r, rg = m.groups()
    if rg is not None and int(rg) == LQER_GROUP:
        return None  # one name per format: the default B group is written without "g64"
    return SchemeName(2 if tern else int(bits), int(g or 0), bool(tern), int(r or 0), int(rg or LQER_GROUP))


def lqer_scheme_name(base: str, rank: int, group_size: int = LQER_GROUP) -> str:
    """``base`` + the LQER suffix (base is a low-bit or the int8_row scheme)."""
    return f"{base}+lqer{rank}" + ("" if group_size == LQER_GROUP else f"g{group_size}")


def _part_specs(p: SchemeName) -> Callable[[tuple[int, ...], torch.dtype], dict]:
    def specs(shape: tuple[int, ...], dt: torch.dtype) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
        if not dt.is_floating_point:
            raise ValueError(f"this scheme restores float tensors, not {dt}")
        if len(shape) != 2:
            raise ValueError(f"low-bit schemes need a 2-D shape, got {list(shape)}")
        rows, cols = shape
        sshape = (rows,) if p.group_size == 0 else (rows, num_groups(cols, p.group_size))
        out = {"q": (torch.int8, (rows, cols)), "scale": (torch.float16, sshape)}
        if p.lqer_rank:
            r = p.lqer_rank
            out |= {
                "lqer_a": (torch.int8, (rows, r)),
                "lqer_a_scale": (torch.float16, ()),
                "lqer_b": (torch.int8, (r, cols)),
                "lqer_b_scale": (torch.float16, (r, num_groups(cols, p.lqer_group))),
            }
        return out

    return specs


def _dequantize(p: SchemeName) -> Callable[[Mapping[str, Tensor], tuple[int, ...], torch.dtype], Tensor]:
    def deq(parts: Mapping[str, Tensor], shape: tuple[int, ...], dt: torch.dtype) -> Tensor:
        w = dequantize_grid(parts["q"], parts["scale"], p.group_size)
        if p.lqer_rank:
            w = w + lqer_correction(parts, p.lqer_group)
        return w.to(dt).contiguous()

    return deq


def _quantize(p: SchemeName) -> Callable[[Tensor], dict[str, Tensor]]:
    """The scheme's default quantizer: plain rounding with the percentile clip (absmean for ternary;
    the baseline's own for int8_row), plus unrefined LQER factors of the error when named."""
    spec = QuantSpec(p.bits, p.group_size, "absmean" if p.ternary else "percentile")

    def quant(t: Tensor) -> dict[str, Tensor]:
        if p.base == "int8_row":
            parts = SCHEMES["int8_row"].quantize(t)
        else:
            q, s = quantize_rtn(t, spec)
            parts = {"q": q, "scale": s}
        if p.lqer_rank:
            err = t.float() - dequantize_grid(parts["q"], parts["scale"], p.group_size)
            parts |= lqer_factors(err, p.lqer_rank, p.lqer_group)
        return parts

    return quant


@needs("scheme.quantizes")
@lru_cache(maxsize=256)
def family_scheme(name: str) -> Scheme | None:
    """The :class:`~pgolf.quant.grid.Scheme` of a low-bit name (module docstring), or None.
    Plain ``int8_row`` is not a family member: it is the baseline's registered scheme."""
    p = parse_scheme_name(name)
    if p is None or name == "int8_row":
        return None
    return Scheme(name, _quantize(p), _dequantize(p), _part_specs(p))


def entropy_bits(q: Tensor) -> float:
    """Empirical zeroth-order entropy of the int8 values, bits per value (a compressibility guide)."""
    if q.numel() == 0:
        return 0.0
    counts = torch.bincount((q.reshape(-1).to(torch.int64) + 128), minlength=256).double()
    p = counts[counts > 0] / q.numel()
    return float(-(p * p.log2()).sum())

