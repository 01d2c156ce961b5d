"""Export schemes: the named recipes of :mod:`pgolf.export.driver` (which grid each tensor gets, which codec
packs them) and their per-tensor policies. The table is data the bundle's switches read too (a condition may
name ``scheme.codec``, ``scheme.needs_hessians`` or ``scheme.quantizes``, :mod:`pgolf.switch`); the driver
runs them. The schemes themselves are described in :mod:`pgolf.export.driver`'s docstring.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from pgolf.config import ExportConfig
from pgolf.errors import ConfigError
from pgolf.quant import grid
from pgolf.quant.intgrid import QuantSpec
from pgolf.roles import Role

if TYPE_CHECKING:
    from pgolf.quant.gptq import TensorSpec

PolicyFn = Callable[[str, Tensor, Role, ExportConfig], "TensorSpec"]
"""``(name, tensor, role, export_cfg) -> spec``: a QuantSpec or a fixed scheme name. The role (declared
by the model, :mod:`pgolf.roles`) says what the tensor is; its name is only a label."""

_MATRIX_FAMILIES = ("attn", "mlp")


def _is_matrix(t: Tensor) -> bool:
    return t.is_floating_point() and t.ndim == 2 and t.numel() > 0


def int8_zlib_policy(name: str, t: Tensor, role: Role, cfg: ExportConfig) -> TensorSpec:
    return grid.int8_policy(name, t, role, keep_float_max_numel=cfg.keep_float_max_numel)


def gptqlite_policy(name: str, t: Tensor, role: Role, cfg: ExportConfig) -> TensorSpec:
    """[03-22]: int6 GPTQ-lite attention/MLP matrices, int8 for the other quantized matrices (embeddings,
    head, projections, tables), the baseline's small-tensor rule for the rest."""
    if _is_matrix(t) and role.family in _MATRIX_FAMILIES:
        return QuantSpec(bits=6, clip="gptq_lite", search="matrix")
    if _is_matrix(t) and role.quantized:
        return "int8_row"
    return grid.int8_policy(name, t, role, keep_float_max_numel=grid.KEEP_FLOAT_MAX_NUMEL)


SDCLIP_K_0414 = {"attn": 13.0, "mlp": 12.0, "embed": 15.0}
"""[04-14]'s SDClip multipliers (CATALOGUE §2.5 "SDClip")."""


def gptq_0414_policy(name: str, t: Tensor, role: Role, cfg: ExportConfig) -> TensorSpec:
    """[04-14]: GPTQ + SDClip int6 matrices (MLP k 12, attention k 13), int7 embedding (k 15; also the
    other quantized matrices: head, projections, tables), fp16 rest (control tensors included)."""
    if _is_matrix(t) and role.family in _MATRIX_FAMILIES:
        return QuantSpec(bits=6, clip="sdclip", k=SDCLIP_K_0414[role.family], gptq=True)
    if _is_matrix(t) and role.quantized:
        return QuantSpec(bits=7, clip="sdclip", k=SDCLIP_K_0414["embed"], gptq=True)
    if t.is_floating_point() and t.dtype in (torch.float32, torch.bfloat16):
        return "fp16"
    return "raw"


# --------------------------------------------------------------------------- the records' own exports
# Each ``record_*`` policy is its record's quantizer choice, tensor by tensor, keyed by role instead of
# name; "small" is the records' ``t.numel() <= 65536`` (``export.keep_float_max_numel``, default 65,536:
# lower it to exercise the grids on a narrow model).


def _small_float(t: Tensor, cfg: ExportConfig) -> TensorSpec | None:
    """The records' first branch: non-floats raw, floats of ≤ keep_float_max_numel elements fp16 (control
    tensors included: the size test comes first), else None (quantize)."""
    if not t.is_floating_point():
        return "raw"
    if t.numel() <= cfg.keep_float_max_numel:
        return "fp16" if t.dtype in (torch.float32, torch.bfloat16) else "raw"
    return None


GPTQLITE_0322 = QuantSpec(bits=6, clip="gptq_lite", search="matrix", step_floor=1.0 / 31)
"""[03-22] ``quantize_int6_per_row`` (``train_gpt.py`` L885-899): five quantiles of |w| per row, the one of
least mean squared error for the whole matrix (strict ``<``: the first of equals), step
``fp16(max(clip / 31, 1/31))`` — the 1/31 floor — and q = clamp(round(w / s), ±31) with the fp16 step."""


def record_0322_policy(name: str, t: Tensor, role: Role, cfg: ExportConfig) -> TensorSpec:
    """[03-22] ``mixed_quantize_int6(sd, {"mlp", "attn"})`` (``train_gpt.py`` L905-934, called L1314):
    small/non-float → fp16/raw (L916-919; so its 128×512 = 65,536-element ``bigram.proj`` stays fp16);
    large control tensors fp32 (L920-923); ``_classify_param`` (L877-884) "mlp" (``.mlp.``) and "attn"
    (``.attn.``, or ``.proj.`` outside the MLP: roles attn_*, proj) → :data:`GPTQLITE_0322`; the rest
    ("embed": tok_emb/lm_head, "other": hash and value-embedding tables) → the baseline's per-row int8
    ``quantize_float_tensor`` (L272-287: ``int8_row``, 1-D ``int8_tensor``)."""
    small = _small_float(t, cfg)
    if small is not None:
        return small
    if role is Role.CONTROL:
        return "fp32"
    if t.ndim != 2:
        return "int8_tensor"  # the record's int6 1-D branch (one amax/31 scale) has no such tensors
    if role.family in _MATRIX_FAMILIES or role is Role.PROJ:
        return GPTQLITE_0322
    return "int8_row"


SDCLIP_K_MATRIX = 12.85
"""[04-14]/[04-27a] ``MATRIX_CLIP_SIGMAS`` default: a quantized matrix neither embedding, MLP nor attention."""


def _gptq_record_spec(t: Tensor, role: Role, cfg: ExportConfig, k: Mapping[str, float], embed_bits: int) -> TensorSpec:
    """The ``gptq_mixed_quantize`` branch shared by [04-14] and [04-27a]: every large float matrix gets
    full-Hessian GPTQ with SDClip (row std, unbiased) — int{embed_bits} with k["embed"] for ``tok_emb``
    (role embed), int6 for the rest with k["mlp"] (``.mlp.``), k["attn"] (``.attn.``) or 12.85."""
    small = _small_float(t, cfg)
    if small is not None:
        return small
    if t.ndim != 2:  # the records have no large non-matrix floats (GPTQ would fail on them)
        return "fp16"
    if role is Role.EMBED:
        return QuantSpec(bits=embed_bits, clip="sdclip", k=k["embed"], gptq=True)
    kk = k.get(role.family, SDCLIP_K_MATRIX) if role.family in _MATRIX_FAMILIES else SDCLIP_K_MATRIX
    return QuantSpec(bits=6, clip="sdclip", k=kk, gptq=True)


SDCLIP_K_0414_RUN = {"attn": 13.0, "mlp": 12.0, "embed": 15.0}
"""[04-14]'s run: ``MLP_CLIP_SIGMAS=12.0 ATTN_CLIP_SIGMAS=13.0 EMBED_BITS=7 EMBED_CLIP_SIGMAS=15.0``
(README L110, ``train_seed42.log`` L9-50)."""


def record_0414_policy(name: str, t: Tensor, role: Role, cfg: ExportConfig) -> TensorSpec:
    """[04-14] ``gptq_mixed_quantize`` (``train_gpt.py`` L1657-1690; GPTQ L1619-1654): small/non-float →
    fp16/raw (L1662-1665, control tensors included); ``tok_emb`` int7 k 15, MLP int6 k 12, attention
    int6 k 13, any other matrix int6 k 12.85 (L1666-1678, the run's settings :data:`SDCLIP_K_0414_RUN`).
    Serialized with a stride-2 byte shuffle + brotli-11 (L1722-1760)."""
    return _gptq_record_spec(t, role, cfg, SDCLIP_K_0414_RUN, 7)


SDCLIP_K_0427_RUN = {"attn": 13.0, "mlp": 11.5, "embed": 14.0}
"""[04-27a]'s run (``train_seed42.log`` L9-64): ``ATTN_CLIP_SIGMAS 13``, ``MLP_CLIP_SIGMAS 11.5``,
``EMBED_BITS 7``, ``EMBED_CLIP_SIGMAS 14``."""
GATE_INT8_0427 = QuantSpec(bits=8, clip="max")
"""[04-27a] ``_quantize_gate_int8_row`` (``train_gpt.py`` L2185-2194): s = fp16(max|w_i| / 127), q = round(w / s)."""


def record_0427_policy(name: str, t: Tensor, role: Role, cfg: ExportConfig) -> TensorSpec:
    """[04-27a] ``gptq_mixed_quantize`` (``train_gpt.py`` L2220-2267): attention-gate rows int8 (role gate,
    2-D, 32 ≤ numel ≤ 8192 — L2232-2246, before the size test; the 12-element smear gate stays fp16),
    then as [04-14] with the run's k (:data:`SDCLIP_K_0427_RUN`): tok_emb int7 k 14, MLP int6 k 11.5,
    attention int6 k 13. LQER and the per-group streams: :func:`_export_record_0427`."""
    if role is Role.GATE and t.is_floating_point() and t.ndim == 2 and 32 <= t.numel() <= 8192:
        return GATE_INT8_0427
    return _gptq_record_spec(t, role, cfg, SDCLIP_K_0427_RUN, 7)


@dataclass(frozen=True)
class ExportScheme:
    name: str
    description: str
    policy: PolicyFn | None
    """Per-tensor spec (None: the budget search chooses)."""
    codec: str
    """Codec of the one payload (container v1), or ``"streams"`` (per-group streams, container v2)."""
    needs_hessians: bool = False
    quantizes: bool = True
    """Whether it quantizes to other grids than the registered int8 rows (GPTQ / GPTQ-lite specs, the
    int2..7 / ternary families); False only for the baseline's ``int8_zlib``, whose bundle then leaves
    those out (their switches: ``scheme.quantizes``, :mod:`pgolf.switch`)."""


EXPORT_SCHEMES: dict[str, ExportScheme] = {
    s.name: s
    for s in (
        ExportScheme("int8_zlib", "baseline per-row int8 + zlib-9 (CATALOGUE §1.7)", int8_zlib_policy, "zlib-9",
                     quantizes=False),
        ExportScheme("int6_gptqlite_zstd", "int6 GPTQ-lite matrices, int8 embedding, zstd-22 ([03-22])",
                     gptqlite_policy, "zstd-22"),
        ExportScheme("gptq6_emb7_brotli", "GPTQ+SDClip int6 matrices, int7 embedding, shuffle+brotli-11 ([04-14])",
                     gptq_0414_policy, "shuffle2+brotli-11", needs_hessians=True),
        ExportScheme("record_0322", "[03-22]'s own: int6 GPTQ-lite (1/31 step floor) attn/MLP/proj, int8 rest, "
                     "fp16 ≤65,536-element floats, zstd-22", record_0322_policy, "zstd-22"),
        ExportScheme("record_0414", "[04-14]'s own: GPTQ+SDClip int6 (MLP 12, attn 13), int7 tok_emb (15), "
                     "fp16 ≤65,536-element floats, shuffle2+brotli-11", record_0414_policy, "shuffle2+brotli-11",
                     needs_hessians=True),
        ExportScheme("record_0427", "[04-27a]'s own: GPTQ+SDClip int6 (MLP 11.5, attn 13), int7 tok_emb (14), "
                     "int8 gate rows, LQER rank 4 on the top 3, per-group streams with row reordering",
                     record_0427_policy, "streams", needs_hessians=True),
        ExportScheme("budget", "byte-budget search of bits/clip/GPTQ/LQER per group, per-group streams",
                     None, "streams", needs_hessians=True),
    )
}


def get_export_scheme(name: str) -> ExportScheme:
    if name in EXPORT_SCHEMES:
        return EXPORT_SCHEMES[name]
    lowbit = lowbit_export_scheme(name)
    if lowbit is not None:
        return lowbit
    raise ConfigError(f"unknown export.scheme {name!r} (known: {', '.join(EXPORT_SCHEMES)}, "
                      "{ternary|ternary_shrink|binary}_{row|g<G>}[+fp16|+fp8])")


def lowbit_export_scheme(name: str) -> ExportScheme | None:
    """The low-bit export of a ``train.qat.kind`` ternary/binary model ([03-24] PR #640 and the binary
    non-record folder; :mod:`pgolf.quant.lowbit`): ``{ternary|ternary_shrink|binary}_{row|g<G>}[+fp16|+fp8]``
    stores the attention/MLP matrices as packed trits (5 per byte) or bits with their fp16 group scales, the
    other floats fp32 (exactly), fp16 or, with ``+fp8``, 2-D ones as fp8 e4m3 (the record's ``FP_STORAGE=FP8``),
    then lzma-9 over the payload as the record. None if ``name`` is not such a name."""
    if not name.startswith(("ternary", "binary")):
        return None
    from pgolf.quant.lowbit import LOWBIT_CODEC, lowbit_spec, parse_export_name

    e = parse_export_name(name)
    if e is None:
        return None
    return ExportScheme(name, f"{e.kind} {e.storage} matrices, other floats {e.floats}, {LOWBIT_CODEC}",
                        lambda n, t, role, cfg: lowbit_spec(e, t, role), LOWBIT_CODEC)
