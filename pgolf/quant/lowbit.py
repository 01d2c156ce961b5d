"""Low-bit weights: ternary (BitNet b1.58 absmean) and binary grids, their straight-through weight
function for training, and their packing in the artifact (base 3, 5 trits per byte; 1 bit per weight).

Sources (CATALOGUE §2.8; code written here): the ternary record [03-24]
``2026-03-24_74M_Ternary_UNet_FP8_10L_8192BPE_YaRN_NeoMuon`` (PR #640: ``TernaryLinear``, ``q_sd`` /
``deq_sd``, ``pack_ternary``), the non-record ``2026-03-24_106M_Binary_Asymmetric_UNet_FP8_15L…``
(``BinaryLinear``, ``pack_binary``), BitNet b1.58 (Ma et al. 2024) for the absmean grid.

Maths, for a weight W [rows, cols] in fp32, in groups of g consecutive columns of a row (the last group
of a row may be shorter; ``group_size`` 0 = one group per row):

    s_G    = fp16(mean_{j∈G} |W_ij|)  clamped to [2^−24, 65504]       the stored scale, one per group
    ternary   q_ij = clamp(round(W_ij / s_G), −1, 1)  ∈ {−1, 0, 1}      (round half to even)
    binary    q_ij = +1 if W_ij ≥ 0 else −1          ∈ {−1, +1}
    Ŵ_ij   = q_ij · σ_G,   σ_G = s_G  (in fp32), or with ``shrink`` (ternary): σ_G = s_G / mean_{j∈G}|q_ij|
             (s_G where a group is all zeros)

The record's "shrinkage fix" (its README: "inflate by 1/mean(|Q|) during dequantisation") divides by
mean|q| at *load* only, so its artifact computes a different function from the one it trained
(q·absmean). Here ``shrink`` is part of the grid: the training forward uses the same σ_G, so the trained
forward and the artifact's stay equal (below). Binary has no zeros (mean|q| = 1, as its README says), so
``shrink`` is a ternary option. The binary folder's "Asymmetric" is its U-Net split (7 encoder / 8
decoder blocks at 15 layers, :func:`pgolf.model.gpt.build_plan` does the same), not a quantizer property.

Training (:class:`LowBitWeight`, attached by :func:`pgolf.quant.qat.attach_qat` for ``train.qat.kind``
``ternary`` / ``binary``): the forward uses Ŵ(W) exactly, the backward passes the gradient straight through
to W (STE: ∂Ŵ/∂W := I), as the records' ``w + (q·s − w).detach()``. Here the value is Ŵ itself, not
``w + (Ŵ − w)``, which can differ from Ŵ in the last bit: that is what makes the property below exact.
Differences from the records, for exactness: Ŵ is computed in fp32 from the fp32 master weight with the
*stored* fp16 scale (the records train on the bf16 weight with an unrounded scale and store fp16 scales);
the record groups the flattened matrix after zero-padding each row to a multiple of g, which equals the
per-row groups here whenever g divides cols (the records' shapes: 768 and 3072 columns, g = 128).

**Property** (tested): quantize → pack → compress → unpack → dequantize gives Ŵ bit for bit, so a model
whose low-bit linears run :class:`LowBitWeight` (and whose other tensors are stored exactly) computes the
same logits as the model loaded from its artifact, bit for bit, on the same device. (On another device
the fp32 mean |W| of a group may differ in its last bit from the CPU's, which the fp16 rounding of the
scale almost always, but not provably, absorbs.)

Packing (a part of the artifact; :func:`pack_trits` / :func:`pack_bits`), over q flattened row-major:

- **base 3** (the record's ``pack_ternary``): digit d = q + 1 ∈ {0, 1, 2}; byte k holds trits 5k…5k+4 as
  d₀ + 3d₁ + 9d₂ + 27d₃ + 81d₄ ≤ 242 (3⁵ = 243 ≤ 256: log₂3 ≈ 1.585 bits per weight in 1.6); the last byte
  is padded with d = 0. ⌈n/5⌉ bytes.
- **1 bit** (the binary folder's ``pack_binary``): bit i of byte k (least significant first) is
  [q_{8k+i} = +1]; the last byte is padded with 0 bits. ⌈n/8⌉ bytes.

Unpacking refuses what packing never writes (a byte > 242, non-zero padding, a wrong length), so every
packed part has exactly one meaning. The compressor (``lzma-9`` as the record, which also tried a
zero-mask + sign-bitmap layout and found it "nearly identical") runs over the container's payload.

Storage scheme names (:func:`lowbit_scheme`, reached through :func:`pgolf.quant.grid.get_scheme`):
``ternary_b3_row`` / ``ternary_b3_g{g}`` (``ternary_b3s_…`` with ``shrink``) and ``binary_b1_row`` /
``binary_b1_g{g}``, parts ``codes`` uint8 [⌈rows·cols/5⌉] or [⌈rows·cols/8⌉] and ``scale`` fp16 [rows] or
[rows, ⌈cols/g⌉]; ``fp8_e4m3``, part ``w`` uint8 (the e4m3 bytes of each element, the record's
``FP_STORAGE=FP8`` for its non-ternary matrices; float8 is no artifact dtype, its bytes are).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor, nn

from pgolf.quant.intgrid import SCALE_MAX, SCALE_MIN, expand_scale, num_groups, reduce_groups
from pgolf.roles import Role

NEEDED_WHEN = "train.qat.kind in ('ternary', 'binary') or export.scheme.startswith(('ternary', 'binary'))"


@dataclass(frozen=True)
class Scheme:
    """A storage scheme, the shape of :class:`pgolf.quant.grid.Scheme` (which ``grid.get_scheme`` returns)."""

    name: str
    quantize: Callable[[Tensor], dict[str, Tensor]]
    dequantize: Callable[[Mapping[str, Tensor], tuple[int, ...], torch.dtype], Tensor]
    part_specs: Callable[[tuple[int, ...], torch.dtype], dict[str, tuple[torch.dtype, tuple[int, ...]]]]

KINDS = ("ternary", "binary")
LOWBIT_FAMILIES = ("attn", "mlp")
"""Role families whose linears are low-bit: the records' ``TernaryLinear`` / ``BinaryLinear`` are the
attention (fused QKV, output) and MLP (up, down) projections; embeddings, the factored-embedding
projections, gates and control tensors stay float (the records' ``q_sd`` exclusions)."""
TRITS_PER_BYTE = 5
_POW3 = (1, 3, 9, 27, 81)
MAX_TRIT_BYTE = 242  # 3^5 − 1


def is_lowbit_role(role: Role) -> bool:
    """Whether a tensor of this role is trained and stored low-bit (2-D attention/MLP weights)."""
    return role.optimizer == "matrix" and role.family in LOWBIT_FAMILIES


# --------------------------------------------------------------------------- the grid


def lowbit_scale(w: Tensor, group_size: int) -> Tensor:
    """s = fp16(mean |w|) per group, clamped to [2^−24, 65504]: fp16 [rows, G] (module docstring)."""
    a = w.detach().float().abs()
    return reduce_groups(a, group_size, lambda t: t.mean(dim=-1)).clamp(SCALE_MIN, SCALE_MAX).to(torch.float16)


def lowbit_codes(w: Tensor, scale: Tensor, kind: str, group_size: int) -> Tensor:
    """q int8 [rows, cols]: ternary clamp(round(w / s), −1, 1); binary sign with 0 → +1."""
    w32 = w.detach().float()
    if kind == "binary":
        return torch.where(w32 >= 0, 1, -1).to(torch.int8)
    s = expand_scale(scale, w32.shape[1], group_size)
    return torch.round(w32 / s).clamp_(-1, 1).to(torch.int8)


def effective_scale(q: Tensor, scale: Tensor, group_size: int, shrink: bool) -> Tensor:
    """σ [rows, G] fp32: the stored scale, or s / mean|q| per group with ``shrink`` (s where mean|q| = 0)."""
    s = scale.float().reshape(q.shape[0], -1)
    if not shrink:
        return s
    m = reduce_groups(q.abs().float(), group_size, lambda t: t.mean(dim=-1))
    return torch.where(m > 0, s / torch.where(m > 0, m, torch.ones_like(m)), s)


def lowbit_dequantize(q: Tensor, scale: Tensor, group_size: int, shrink: bool = False) -> Tensor:
    """Ŵ = q · σ in fp32 [rows, cols]."""
    sigma = effective_scale(q, scale, group_size, shrink)
    return q.float() * expand_scale(sigma if group_size else sigma[:, 0], q.shape[1], group_size)


def lowbit_quantize(w: Tensor, kind: str, group_size: int) -> tuple[Tensor, Tensor]:
    """(q int8 [rows, cols], scale fp16 [rows, G]) of a 2-D weight."""
    if w.ndim != 2:
        raise ValueError(f"low-bit grids need a 2-D tensor, got shape {tuple(w.shape)}")
    if kind not in KINDS:
        raise ValueError(f"unknown low-bit kind {kind!r} (known: {', '.join(KINDS)})")
    s = lowbit_scale(w, group_size)
    return lowbit_codes(w, s, kind, group_size), s


def fake_lowbit(w: Tensor, kind: str, group_size: int, shrink: bool = False) -> Tensor:
    """Ŵ(w) in fp32: what the artifact will hold for ``w`` (no gradient)."""
    q, s = lowbit_quantize(w, kind, group_size)
    return lowbit_dequantize(q, s, group_size, shrink and kind == "ternary")


class _StraightThrough(torch.autograd.Function):
    """Forward: the quantized value exactly. Backward: the incoming gradient to the float weight."""

    @staticmethod
    def forward(ctx, w: Tensor, wq: Tensor) -> Tensor:  # noqa: ANN001
        return wq

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: ANN001
        return grad, None


class LowBitWeight(nn.Module):
    """The weight function W → Ŵ(W) of a low-bit linear (``CastedLinear.weight_fn``), straight-through.

    ``active`` (a buffer, not saved) switches it: a tensor, read by a compiled graph like any input
    (:mod:`pgolf.quant.qat`). Unlike int-k fake quantization it applies in evaluation mode too: the model
    *is* low-bit, and its evaluation before export is the artifact's."""

    def __init__(self, kind: str, group_size: int, shrink: bool = False):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown low-bit kind {kind!r}")
        self.kind, self.group_size, self.shrink = kind, group_size, shrink and kind == "ternary"
        self.register_buffer("active", torch.zeros((), dtype=torch.float32), persistent=False)

    def forward(self, w: Tensor) -> Tensor:
        wq = fake_lowbit(w, self.kind, self.group_size, self.shrink).to(w.dtype)
        return torch.where(self.active > 0, _StraightThrough.apply(w, wq), w)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, group_size={self.group_size}, shrink={self.shrink}"


# --------------------------------------------------------------------------- packing


def packed_trit_bytes(n: int) -> int:
    return -(-n // TRITS_PER_BYTE)


def packed_bit_bytes(n: int) -> int:
    return -(-n // 8)


def pack_trits(q: Tensor) -> Tensor:
    """q ∈ {−1, 0, 1} (any shape, read row-major) → uint8 [⌈n/5⌉], base 3, first trit least significant."""
    d = (q.reshape(-1).to(torch.int16) + 1)
    if bool(((d < 0) | (d > 2)).any()):
        raise ValueError("ternary codes must be in {-1, 0, 1}")
    n = d.numel()
    pad = packed_trit_bytes(n) * TRITS_PER_BYTE - n
    if pad:
        d = torch.cat([d, d.new_zeros(pad)])
    pw = torch.tensor(_POW3, dtype=torch.int16)
    return (d.view(-1, TRITS_PER_BYTE) * pw).sum(dim=1).to(torch.uint8).contiguous()


def unpack_trits(packed: Tensor, n: int) -> Tensor:
    """Inverse of :func:`pack_trits`: int8 [n] in {−1, 0, 1}. ValueError on a byte > 242, a length other
    than ⌈n/5⌉ or non-zero padding."""
    if packed.dtype != torch.uint8 or packed.ndim != 1 or packed.numel() != packed_trit_bytes(n):
        raise ValueError(f"base-3 codes of {n} trits must be {packed_trit_bytes(n)} uint8 bytes")
    v = packed.to(torch.int16)
    if bool((v > MAX_TRIT_BYTE).any()):
        raise ValueError(f"a base-3 byte exceeds {MAX_TRIT_BYTE}")
    digits = torch.stack([(v // p) % 3 for p in _POW3], dim=1).reshape(-1)
    if bool(digits[n:].any()):
        raise ValueError("base-3 padding trits must be 0")
    return (digits[:n] - 1).to(torch.int8)


def pack_bits(q: Tensor) -> Tensor:
    """q ∈ {−1, +1} (row-major) → uint8 [⌈n/8⌉], bit i of byte k = [q_{8k+i} = +1] (LSB first)."""
    f = q.reshape(-1)
    if bool(((f != 1) & (f != -1)).any()):
        raise ValueError("binary codes must be in {-1, +1}")
    b = (f > 0).to(torch.int16)
    n = b.numel()
    pad = packed_bit_bytes(n) * 8 - n
    if pad:
        b = torch.cat([b, b.new_zeros(pad)])
    w = torch.tensor([1 << i for i in range(8)], dtype=torch.int16)
    return (b.view(-1, 8) * w).sum(dim=1).to(torch.uint8).contiguous()


def unpack_bits(packed: Tensor, n: int) -> Tensor:
    """Inverse of :func:`pack_bits`: int8 [n] in {−1, +1}. ValueError on a wrong length or set padding bits."""
    if packed.dtype != torch.uint8 or packed.ndim != 1 or packed.numel() != packed_bit_bytes(n):
        raise ValueError(f"1-bit codes of {n} weights must be {packed_bit_bytes(n)} uint8 bytes")
    v = packed.to(torch.int16)
    bits = torch.stack([(v >> i) & 1 for i in range(8)], dim=1).reshape(-1)
    if bool(bits[n:].any()):
        raise ValueError("1-bit padding bits must be 0")
    return (bits[:n] * 2 - 1).to(torch.int8)


# --------------------------------------------------------------------------- storage schemes

_NAME = re.compile(r"(ternary_b3s?|binary_b1)_(?:row|g([1-9]\d*))")


@dataclass(frozen=True)
class LowBitName:
    kind: str
    group_size: int
    shrink: bool

    @property
    def name(self) -> str:
        base = {"binary": "binary_b1", "ternary": "ternary_b3s" if self.shrink else "ternary_b3"}[self.kind]
        return f"{base}_{'row' if self.group_size == 0 else f'g{self.group_size}'}"


def parse_lowbit_name(name: str) -> LowBitName | None:
    m = _NAME.fullmatch(name)
    if m is None:
        return None
    base, g = m.groups()
    return LowBitName("binary" if base == "binary_b1" else "ternary", int(g or 0), base == "ternary_b3s")


def storage_scheme_name(kind: str, group_size: int, shrink: bool = False) -> str:
    """The storage scheme of a low-bit tensor (``ternary_b3_g128``, ``binary_b1_row``, …)."""
    return LowBitName(kind, group_size, shrink and kind == "ternary").name


def _specs(p: LowBitName):
    def specs(shape: tuple[int, ...], dt: torch.dtype) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
        if not dt.is_floating_point:
            raise ValueError(f"this scheme restores float tensors, not {dt}")
        if len(shape) != 2:
            raise ValueError(f"low-bit schemes need a 2-D shape, got {list(shape)}")
        rows, cols = shape
        n = rows * cols
        nb = packed_bit_bytes(n) if p.kind == "binary" else packed_trit_bytes(n)
        sshape = (rows,) if p.group_size == 0 else (rows, num_groups(cols, p.group_size))
        return {"codes": (torch.uint8, (nb,)), "scale": (torch.float16, sshape)}

    return specs


def _quantize(p: LowBitName):
    def quant(t: Tensor) -> dict[str, Tensor]:
        q, s = lowbit_quantize(t, p.kind, p.group_size)
        codes = pack_bits(q) if p.kind == "binary" else pack_trits(q)
        return {"codes": codes, "scale": (s[:, 0] if p.group_size == 0 else s).contiguous()}

    return quant


def _dequantize(p: LowBitName):
    def deq(parts: Mapping[str, Tensor], shape: tuple[int, ...], dt: torch.dtype) -> Tensor:
        rows, cols = shape
        unpack = unpack_bits if p.kind == "binary" else unpack_trits
        q = unpack(parts["codes"], rows * cols).reshape(rows, cols)
        s = parts["scale"].reshape(rows, -1)
        return lowbit_dequantize(q, s, p.group_size, p.shrink).to(dt).contiguous()

    return deq


FP8_SCHEME = "fp8_e4m3"


def _fp8_specs(shape: tuple[int, ...], dt: torch.dtype) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
    if not dt.is_floating_point:
        raise ValueError(f"this scheme restores float tensors, not {dt}")
    return {"w": (torch.uint8, tuple(shape))}


@lru_cache(maxsize=64)
def lowbit_scheme(name: str) -> Scheme | None:
    """The :class:`~pgolf.quant.grid.Scheme` of a low-bit storage name (module docstring), or None."""
    if name == FP8_SCHEME:
        return Scheme(
            FP8_SCHEME,
            lambda t: {"w": t.detach().float().to(torch.float8_e4m3fn).view(torch.uint8).contiguous()},
            lambda parts, shape, dt: parts["w"].view(torch.float8_e4m3fn).float().to(dt).contiguous(),
            _fp8_specs,
        )
    p = parse_lowbit_name(name)
    if p is None:
        return None
    return Scheme(name, _quantize(p), _dequantize(p), _specs(p))


# --------------------------------------------------------------------------- export schemes

_EXPORT = re.compile(r"(ternary|ternary_shrink|binary)_(?:row|g([1-9]\d*))(?:\+(fp16|fp8))?")
LOWBIT_CODEC = "lzma-9"
"""The record's ``lzma.compress(..., preset=9)`` over the whole payload."""


@dataclass(frozen=True)
class LowBitExport:
    """A parsed low-bit export scheme name: ``{ternary|ternary_shrink|binary}_{row|g<g>}[+fp16|+fp8]``."""

    kind: str
    group_size: int
    shrink: bool
    floats: str
    """How the other float tensors are stored: ``fp32`` (exactly; the default), ``fp16`` (all of them),
    ``fp8`` (the record's ``FP_STORAGE=FP8``: 2-D ones as fp8 e4m3, the rest fp16)."""

    @property
    def storage(self) -> str:
        return storage_scheme_name(self.kind, self.group_size, self.shrink)


def parse_export_name(name: str) -> LowBitExport | None:
    m = _EXPORT.fullmatch(name)
    if m is None:
        return None
    kind, g, floats = m.groups()
    return LowBitExport("binary" if kind == "binary" else "ternary", int(g or 0), kind == "ternary_shrink",
                        floats or "fp32")


def export_scheme_name(kind: str, group_size: int, shrink: bool = False, floats: str = "fp32") -> str:
    """The export scheme that stores what ``train.qat`` of this kind trained (``ternary_g128+fp8``, …)."""
    base = "binary" if kind == "binary" else ("ternary_shrink" if shrink else "ternary")
    return f"{base}_{'row' if group_size == 0 else f'g{group_size}'}" + ("" if floats == "fp32" else f"+{floats}")


def lowbit_spec(e: LowBitExport, t: Tensor, role: Role) -> str:
    """The storage scheme of one tensor under export scheme ``e``: attention/MLP matrices low-bit, other
    floats per ``e.floats`` (control tensors fp32 unless fp16/fp8 storage, as the record's fp16), the rest raw."""
    if not t.is_floating_point():
        return "raw"
    if t.ndim == 2 and is_lowbit_role(role):
        return e.storage
    if e.floats == "fp8" and t.ndim == 2:
        return FP8_SCHEME
    if e.floats in ("fp16", "fp8"):
        return "fp16" if t.dtype in (torch.float32, torch.bfloat16) else "raw"
    return "fp32" if t.dtype == torch.float32 else "raw"
