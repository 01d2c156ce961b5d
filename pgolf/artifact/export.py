"""Export driver: state dict → quantized, compressed artifact, and back (CATALOGUE §1.7).

Source: the baseline's export in the root ``train_gpt.py`` of openai/parameter-golf ([03-17b]):
``quantize_state_dict_int8`` → ``torch.save`` → ``zlib.compress(level=9)``, reloaded with
``dequantize_state_dict_int8`` for the scored round-trip evaluation. Here the pickle is replaced by
the container of :mod:`pgolf.artifact.format`; the numerics are those of :mod:`pgolf.quant.grid`.

An *export scheme* names a policy (which grid for which tensor, :data:`pgolf.quant.grid.Policy`) and a
codec (:mod:`pgolf.artifact.codecs`):

- ``int8_zlib``: :func:`pgolf.quant.grid.int8_policy` + ``zlib-9`` (the baseline).

Per-tensor share of the compressed bytes (``TensorRow.compressed_bytes``): with
``share_estimate="standalone"`` (default) each tensor's packed parts are compressed alone with the
scheme's codec, giving c_i, and the real compressed payload C is split in proportion to c_i
(largest-remainder rounding, so the rows sum to C exactly). Standalone compression misses
cross-tensor redundancy and pays per-stream framing, so c_i is only used as a weight.
``share_estimate="proportional"`` splits C in proportion to the packed bytes instead (no extra
compression; fast for slow codecs). The container header is reported separately
(``ByteReport.overhead_bytes``).
"""

from __future__ import annotations

import functools

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

import pgolf
from pgolf import fileio
from pgolf.artifact import codecs
from pgolf.artifact.budget import TensorRow
from pgolf.artifact.format import DEFAULT_MAX_RAW_BYTES, pack_artifact, read_artifact, tensor_bytes
from pgolf.config import ExportConfig
from pgolf.errors import ArtifactError, ConfigError
from pgolf.quant import grid


@dataclass(frozen=True)
class ExportScheme:
    name: str
    policy: grid.Policy
    codec: str
    description: str


EXPORT_SCHEMES: dict[str, ExportScheme] = {
    s.name: s
    for s in (ExportScheme("int8_zlib", grid.int8_policy, "zlib-9", "baseline per-row int8 + zlib-9 (CATALOGUE §1.7)"),)
}


def get_export_scheme(name: str) -> ExportScheme:
    try:
        return EXPORT_SCHEMES[name]
    except KeyError:
        raise ConfigError(f"unknown export.scheme {name!r} (known: {', '.join(EXPORT_SCHEMES)})") from None


@dataclass(frozen=True)
class ExportResult:
    blob: bytes
    """The complete artifact file."""
    model_bytes: int
    """``len(blob)``: what counts against the cap."""
    rows: list[TensorRow]
    payload_raw_bytes: int
    """Uncompressed payload (the baseline's "int8 payload" figure, without pickle overhead)."""
    payload_compressed_bytes: int
    scheme: str
    codec: str
    header: dict[str, Any]


def export_model(
    state_dict: Mapping[str, Tensor],
    export_cfg: ExportConfig,
    *,
    meta: Mapping[str, Any] | None = None,
    share_estimate: str = "standalone",
) -> ExportResult:
    """Quantize ``state_dict`` with ``export_cfg.scheme`` and pack it into an artifact (in memory)."""
    scheme = get_export_scheme(export_cfg.scheme)
    if share_estimate not in ("standalone", "proportional"):
        raise ConfigError(f"share_estimate must be 'standalone' or 'proportional', got {share_estimate!r}")
    policy = scheme.policy
    if scheme.policy is grid.int8_policy and export_cfg.keep_float_max_numel != grid.KEEP_FLOAT_MAX_NUMEL:
        policy = functools.partial(grid.int8_policy, keep_float_max_numel=export_cfg.keep_float_max_numel)
    qsd = grid.quantize_state_dict(state_dict, policy)
    full_meta = {"pgolf_version": pgolf.__version__, "export_scheme": scheme.name, **dict(meta or {})}
    blob, header = pack_artifact(qsd, codec=scheme.codec, meta=full_meta, scheme=scheme.name)
    comp_total = header["payload"]["compressed_bytes"]

    packed = {name: b"".join(tensor_bytes(p) for p in qt.parts.values()) for name, qt in qsd.items()}
    if share_estimate == "standalone":
        weights = [len(codecs.compress(b, scheme.codec)) if b else 0 for b in packed.values()]
    else:
        weights = [len(b) for b in packed.values()]
    shares = _split(comp_total, weights)
    rows = [
        TensorRow(
            name=name,
            shape=qt.shape,
            scheme=qt.scheme,
            raw_bytes=state_dict[name].numel() * state_dict[name].element_size(),
            quant_bytes=qt.nbytes,
            compressed_bytes=share,
        )
        for (name, qt), share in zip(qsd.items(), shares, strict=True)
    ]
    return ExportResult(
        blob=blob,
        model_bytes=len(blob),
        rows=rows,
        payload_raw_bytes=header["payload"]["raw_bytes"],
        payload_compressed_bytes=comp_total,
        scheme=scheme.name,
        codec=scheme.codec,
        header=header,
    )


def _split(total: int, weights: list[int]) -> list[int]:
    """Integers proportional to ``weights`` summing exactly to ``total`` (largest remainder; ties to
    the earlier index). All-zero weights: everything to the first entry."""
    if not weights:
        return []
    wsum = sum(weights)
    if wsum == 0:
        return [total] + [0] * (len(weights) - 1)
    base = [total * w // wsum for w in weights]
    rem = total - sum(base)
    order = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % wsum), i))
    for i in order[:rem]:
        base[i] += 1
    return base


def write_export(path: str | os.PathLike[str], result: ExportResult) -> int:
    """Write the artifact atomically; return its size in bytes."""
    fileio.write_bytes(path, result.blob)
    return len(result.blob)


def load_model_state(
    path: str | os.PathLike[str], *, max_raw_bytes: int = DEFAULT_MAX_RAW_BYTES
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read, verify and dequantize an artifact: ``(state_dict, header)``, each tensor with the shape and
    dtype it had at export, ready for ``model.load_state_dict``. Problems → ArtifactError."""
    tensors, header = read_artifact(path, max_raw_bytes=max_raw_bytes)
    out: dict[str, Tensor] = {}
    for name, qt in tensors.items():
        try:
            out[name] = grid.dequantize_tensor(qt)
        except ValueError as e:
            raise ArtifactError(f"{path}: tensor {name}: {e}") from None
    return out, header
