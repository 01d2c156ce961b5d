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

Split (DESIGN style rule 10): this module names the *grids* as schemes (per-tensor quantizer and its
inverse, with named parts); a *policy* is a plain function ``(name, tensor) -> scheme name`` that selects
the layers (``int8_policy`` is the baseline's); the *packer* is :mod:`pgolf.artifact.format` and the
*driver* is :mod:`pgolf.export.driver`. Fixed grids are entries of :data:`SCHEMES`; the parametrized
low-bit families (every parameter in the name, below) are built on demand by :func:`family_scheme` and
:func:`get_scheme` resolves them. Their maths — int2…int8 per row or group, ternary, the clip strategies
and :class:`~pgolf.quant.intgrid.QuantSpec` — is :mod:`pgolf.quant.intgrid`; LQER's factors are
:mod:`pgolf.quant.lqer_factors` (imported only for a ``+lqer`` name); GPTQ (:mod:`pgolf.quant.gptq`) is an
algorithm whose output uses the same schemes.

Scheme names (the container stores a per-tensor ``scheme`` string and named parts; every parameter is
in the name, so no new container version is needed):
``int{B}_row`` (B = 2…7; ``int8_row`` is the baseline's scheme, same parts and dequantization),
``int{B}_g{g}`` (B = 2…8), ``ternary_row`` / ``ternary_g{g}`` (same parts; q ∈ {−1, 0, 1}); each may end
in ``+lqer{r}`` (B's group 64) or ``+lqer{r}g{g}``. Parts: ``q`` int8 [rows, cols], ``scale`` fp16, and
with LQER ``lqer_a`` int8 [rows, r], ``lqer_a_scale`` fp16 [], ``lqer_b`` int8 [r, cols],
``lqer_b_scale`` fp16 [r, ⌈cols/g⌉]. :func:`get_scheme` resolves these names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from pgolf.quant import intgrid
from pgolf.roles import Role, RoleMap, role_of
from pgolf.switch import needs

KEEP_FLOAT_MAX_NUMEL = 65_536
"""Float tensors with at most this many elements are stored as floats, not quantized."""
INT8_QMAX = 127


# --------------------------------------------------------------------------- int8 grids


def quantize_int8_per_row(w: Tensor, clip_q: float = intgrid.INT8_CLIP_Q) -> tuple[Tensor, Tensor]:
    """2-D ``w`` [rows, cols] → ``q`` int8 [rows, cols], ``scale`` fp16 [rows] (see module docstring)."""
    if w.ndim != 2:
        raise ValueError(f"per-row int8 needs a 2-D tensor, got shape {tuple(w.shape)}")
    w32 = w.detach().float()
    if w32.shape[1] == 0:
        clip = torch.zeros(w32.shape[0], dtype=torch.float32, device=w32.device)
    else:
        clip = intgrid.quantile_linear(w32.abs(), clip_q, dim=1)
    clipped = torch.maximum(torch.minimum(w32, clip[:, None]), -clip[:, None])
    scale = (clip / INT8_QMAX).clamp_min(1.0 / INT8_QMAX)  # fp32; q uses this, storage rounds to fp16
    q = torch.clamp(torch.round(clipped / scale[:, None]), -INT8_QMAX, INT8_QMAX).to(torch.int8)
    return q.contiguous(), scale.to(torch.float16).contiguous()


def dequantize_int8_per_row(q: Tensor, scale: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """``ŵ[i, j] = q[i, j] · scale[i]`` in fp32, cast to ``dtype``."""
    return (q.float() * scale.float()[:, None]).to(dtype).contiguous()


def quantize_int8_per_tensor(w: Tensor, clip_q: float = intgrid.INT8_CLIP_Q) -> tuple[Tensor, Tensor]:
    """Any-shape ``w`` → ``q`` int8 (same shape), ``scale`` fp32 scalar (see module docstring)."""
    w32 = w.detach().float()
    clip = float(intgrid.quantile_linear(w32.abs().flatten(), clip_q, dim=0).item()) if w32.numel() else 0.0
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


# --------------------------------------------------------------------------- scheme families

_NAME = re.compile(r"(?:int([2-8])|(ternary))_(?:row|g([1-9]\d*))(?:\+lqer([1-9]\d*)(?:g([1-9]\d*))?)?")


@dataclass(frozen=True)
class SchemeName:
    """A parsed low-bit scheme name."""

    bits: int
    group_size: int
    ternary: bool
    lqer_rank: int = 0
    lqer_group: int = intgrid.LQER_GROUP

    @property
    def base(self) -> str:
        return intgrid.QuantSpec(self.bits, self.group_size, "absmean" if self.ternary else "percentile").scheme


def parse_scheme_name(name: str) -> SchemeName | None:
    """The parameters of a low-bit scheme name, or None if ``name`` is not one."""
    m = _NAME.fullmatch(name)
    if m is None:
        return None
    bits, tern, g, r, rg = m.groups()
    if rg is not None and int(rg) == intgrid.LQER_GROUP:
        return None  # one name per format: the default B group is written without "g64"
    return SchemeName(2 if tern else int(bits), int(g or 0), bool(tern), int(r or 0), int(rg or intgrid.LQER_GROUP))


def lqer_scheme_name(base: str, rank: int, group_size: int = intgrid.LQER_GROUP) -> str:
    """``base`` + the LQER suffix (base is a low-bit or the int8_row scheme)."""
    return f"{base}+lqer{rank}" + ("" if group_size == intgrid.LQER_GROUP else f"g{group_size}")


def _part_specs(p: SchemeName) -> Callable[[tuple[int, ...], torch.dtype], dict]:
    def specs(shape: tuple[int, ...], dt: torch.dtype) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
        if not dt.is_floating_point:
            raise ValueError(f"this scheme restores float tensors, not {dt}")
        if len(shape) != 2:
            raise ValueError(f"low-bit schemes need a 2-D shape, got {list(shape)}")
        rows, cols = shape
        sshape = (rows,) if p.group_size == 0 else (rows, intgrid.num_groups(cols, p.group_size))
        out = {"q": (torch.int8, (rows, cols)), "scale": (torch.float16, sshape)}
        if p.lqer_rank:
            r = p.lqer_rank
            out |= {
                "lqer_a": (torch.int8, (rows, r)),
                "lqer_a_scale": (torch.float16, ()),
                "lqer_b": (torch.int8, (r, cols)),
                "lqer_b_scale": (torch.float16, (r, intgrid.num_groups(cols, p.lqer_group))),
            }
        return out

    return specs


def _dequantize(p: SchemeName) -> Callable[[Mapping[str, Tensor], tuple[int, ...], torch.dtype], Tensor]:
    def deq(parts: Mapping[str, Tensor], shape: tuple[int, ...], dt: torch.dtype) -> Tensor:
        w = intgrid.dequantize_grid(parts["q"], parts["scale"], p.group_size)
        if p.lqer_rank:
            from pgolf.quant.lqer_factors import lqer_correction

            w = w + lqer_correction(parts, p.lqer_group)
        return w.to(dt).contiguous()

    return deq


def _quantize(p: SchemeName) -> Callable[[Tensor], dict[str, Tensor]]:
    """The scheme's default quantizer: plain rounding with the percentile clip (absmean for ternary;
    the baseline's own for int8_row), plus unrefined LQER factors of the error when named."""
    spec = intgrid.QuantSpec(p.bits, p.group_size, "absmean" if p.ternary else "percentile")

    def quant(t: Tensor) -> dict[str, Tensor]:
        if p.base == "int8_row":
            parts = SCHEMES["int8_row"].quantize(t)
        else:
            q, s = intgrid.quantize_rtn(t, spec)
            parts = {"q": q, "scale": s}
        if p.lqer_rank:
            from pgolf.quant.lqer_factors import lqer_factors

            err = t.float() - intgrid.dequantize_grid(parts["q"], parts["scale"], p.group_size)
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
