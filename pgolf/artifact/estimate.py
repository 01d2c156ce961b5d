"""Artifact bytes of a configuration before training (``pgolf info --json``).

Method for the ``int8_zlib`` scheme: the exact int8 payload the exporter would produce for the
model's tensor shapes (per-row int8 values + fp16 row scales for matrices, fp16/fp32 passthrough
for small tensors; see :mod:`pgolf.quant.grid`), times zlib-9's compression ratio on trained int8
weights as measured on the baseline [03-17b]: 15,815,847 compressed / 17,178,912 payload bytes
(CATALOGUE §1.7). Code bytes are exact (:func:`pgolf.artifact.budget.code_bytes`). A measured,
per-group planner replaces this estimate for the other schemes (issue: byte-budget export).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pgolf.artifact.budget import code_bytes
from pgolf.config import RunConfig
from pgolf.errors import ConfigError

BASELINE_ZLIB_RATIO = 15_815_847 / 17_178_912
CONTROL_PATTERNS = ("attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weight")
SMALL_TENSOR_MAX = 65_536


@dataclass
class Estimate:
    model_bytes: int
    code_bytes: int
    payload_bytes: int
    method: str

    @property
    def artifact_bytes(self) -> int:
        return self.model_bytes + self.code_bytes


def int8_payload_bytes(shapes: dict[str, tuple[int, ...]], keep_float_max_numel: int = SMALL_TENSOR_MAX) -> int:
    """Raw (uncompressed) bytes of the baseline int8 export for these float tensor shapes."""
    total = 0
    for name, shape in shapes.items():
        numel = 1
        for s in shape:
            numel *= s
        if numel <= keep_float_max_numel:
            total += numel * (4 if any(p in name for p in CONTROL_PATTERNS) else 2)
        elif len(shape) == 2:
            total += numel + 2 * shape[0]
        else:
            total += numel + 4
    return total


def estimate_artifact_bytes(cfg: RunConfig) -> Estimate:
    from pgolf.model.gpt import GPT

    if cfg.export.scheme != "int8_zlib":
        raise ConfigError(f"no size estimate for export.scheme={cfg.export.scheme!r} yet")
    with torch.device("meta"):
        model = GPT(cfg.model)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    payload = int8_payload_bytes(shapes, cfg.export.keep_float_max_numel)
    return Estimate(
        model_bytes=round(payload * BASELINE_ZLIB_RATIO),
        code_bytes=code_bytes(),
        payload_bytes=payload,
        method="int8 payload × baseline zlib ratio 0.9207",
    )
