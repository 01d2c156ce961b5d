"""The planner: artifact bytes of a configuration before training (``pgolf info --json``).

Method. Compressed bytes depend on the *distribution* of the quantized values (and on the codec),
not on the particular weights, so the planner measures the real codecs on representative weights:

1. Every tensor of the model (shapes from the config, no weights) gets the spec the export scheme's
   policy gives it (:data:`pgolf.export.driver.EXPORT_SCHEMES`).
2. Quantized tensors: a sample of its rows (≤ :data:`SAMPLE_VALUES` values, the real row length) is
   synthesized with the statistics of trained weights of its group (embed / attn / mlp): per-row
   generalized-normal values of shape β (trained matrices are near-Gaussian per row with heavier tails,
   β < 2) times log-normal row standard deviations — β (from the pooled kurtosis), the median row std
   and its log-spread fitted on real checkpoints — then
   quantized with the scheme's grid and clip (plain rounding: GPTQ's effect on bytes is in the
   correction below) and compressed with the scheme's codec; bytes scale with the number of rows.
   The result is multiplied by a per-(scheme, group) correction factor, actual / synthetic bytes on
   the same real checkpoints (structure the i.i.d. model misses, and GPTQ).
3. Passthrough tensors: raw bytes × the codec's measured ratio on trained fp16/fp32 small tensors.
4. The container header is built from the shapes alone (its length is exact but for digits).
5. Code bytes are exact: the size of the configuration's bundle (:func:`pgolf.artifact.budget.code_bytes`).

The fitted numbers live in ``planner_table.json`` beside this module, written by
``bench/planner_fit.py`` with its provenance (checkpoints, date, command) inside. ``budget``: the
search fills the budget, so the estimate is min(budget, all-fp16 plan). Typical error: see
``docs/benchmarks.md`` ("Planner: predicted vs actual bytes").
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

import pgolf
from pgolf.artifact import codecs
from pgolf.artifact.budget import code_bytes
from pgolf.artifact.format import DIGEST_BYTES, PREFIX_BYTES, tensor_bytes
from pgolf.config import RunConfig
from pgolf.errors import ConfigError
from pgolf.export.driver import get_export_scheme
from pgolf.model.gpt import GPT, count_params, parameter_roles
from pgolf.quant import grid, intgrid
from pgolf.quant.intgrid import QuantSpec
from pgolf.roles import Role

NEEDED_WHEN = "train.autosize"

TABLE_PATH = Path(__file__).with_name("planner_table.json")
SAMPLE_VALUES = 1 << 17
"""Values synthesized per tensor (whole rows); more only slows the estimate."""
DEFAULT_TAILS = {"beta": 1.6, "row_log_std": 0.2, "row_std_median": 0.05}
"""Used for a group the table does not have (and when the table is missing)."""


@dataclass
class Estimate:
    model_bytes: int
    code_bytes: int
    payload_bytes: int
    """Uncompressed bytes of the quantized payload."""
    method: str
    groups: dict[str, int] = field(default_factory=dict)
    """Estimated compressed bytes per group (embed, attn, mlp, passthrough, header)."""

    @property
    def artifact_bytes(self) -> int:
        return self.model_bytes + self.code_bytes


@lru_cache(maxsize=1)
def load_table(path: str = str(TABLE_PATH)) -> dict[str, Any]:
    """The fitted table (``{}`` if absent: defaults, no corrections)."""
    p = Path(path)
    if not p.exists():
        return {}
    return json.loads(p.read_text())


def group_class(role: Role) -> str:
    """The granularity of the fitted statistics: the role's family (embed: token embedding, head and
    tables; attn; mlp; other)."""
    return role.family


def gn_kurtosis(beta: float) -> float:
    """Excess kurtosis of the generalized normal with shape β: Γ(5/β)Γ(1/β)/Γ(3/β)² − 3
    (β = 2 Gaussian: 0; β = 1 Laplace: 3; β → ∞ uniform: −1.2)."""
    lg = math.lgamma
    return math.exp(lg(5 / beta) + lg(1 / beta) - 2 * lg(3 / beta)) - 3.0


def gn_beta(kurtosis: float) -> float:
    """The shape β whose excess kurtosis is ``kurtosis`` (bisection on the decreasing K(β), β ∈ [0.3, 50])."""
    lo, hi = 0.3, 50.0
    kurtosis = min(max(kurtosis, gn_kurtosis(hi)), gn_kurtosis(lo))
    for _ in range(100):
        mid = math.sqrt(lo * hi)
        if gn_kurtosis(mid) > kurtosis:
            lo = mid
        else:
            hi = mid
    return math.sqrt(lo * hi)


def synthetic_weights(rows: int, cols: int, tails: dict[str, float], seed: int = 0) -> torch.Tensor:
    """[rows, cols] fp32: generalized-normal values of shape β (β < 2: heavier tails than a Gaussian,
    as trained matrices; β > 2: lighter, as barely trained uniform-initialised ones), unit variance,
    times log-normal row standard deviations ``row_std_median · exp(row_log_std · N(0, 1))``. The
    absolute scale matters only where a grid has an absolute floor (the baseline's int8 step ≥ 1/127).
    Seeded numpy generator: the global torch RNG is left alone."""
    beta = float(tails["beta"])
    rng = np.random.default_rng(seed)
    mag = rng.gamma(1.0 / beta, 1.0, (rows, cols)) ** (1.0 / beta)
    z = np.where(rng.random((rows, cols)) < 0.5, -mag, mag)
    z /= math.sqrt(math.exp(math.lgamma(3 / beta) - math.lgamma(1 / beta)))
    scale = float(tails["row_std_median"]) * np.exp(float(tails["row_log_std"]) * rng.standard_normal((rows, 1)))
    return torch.from_numpy((z * scale).astype(np.float32))


def _spec_of(spec: Any) -> Any:
    """The policy's spec with GPTQ dropped (no Hessians before training; its byte effect is corrected)."""
    if isinstance(spec, QuantSpec) and spec.needs_hessian:
        return QuantSpec(bits=spec.bits, group_size=spec.group_size, clip="sdclip" if spec.clip == "sdclip_hessian" else spec.clip,
                         clip_q=spec.clip_q, k=spec.k, search=spec.search)
    return spec


def quantized_sample(name: str, shape: tuple[int, int], spec: Any, tails: dict[str, float]) -> tuple[bytes, int]:
    """(packed bytes of the quantized sample, sample rows) for a quantized 2-D tensor."""
    rows, cols = shape
    n = max(1, min(rows, SAMPLE_VALUES // max(cols, 1)))
    w = synthetic_weights(n, cols, {**DEFAULT_TAILS, **tails}, seed=hash_name(name))
    spec = _spec_of(spec)
    if isinstance(spec, QuantSpec):
        q, s = intgrid.quantize_rtn(w, spec)
        parts = [q, s]
    else:
        parts = list(grid.quantize_tensor(w, spec).parts.values())
    return b"".join(tensor_bytes(p) for p in parts), n


def hash_name(name: str) -> int:
    """A stable seed per tensor name (Python's hash() is salted per process)."""
    h = 0
    for ch in name.encode():
        h = (h * 131 + ch) % (1 << 31)
    return h


def _header_bytes(tensors: dict[str, tuple[str, tuple[int, ...], torch.dtype]], meta: dict[str, Any], scheme: str,
                  codec: str) -> int:
    """Length of the v1 container header for these (scheme, shape, dtype) tensors (sizes ≈ 7 digits)."""
    table: dict[str, Any] = {}
    off = 0
    for name, (sch, shape, dt) in tensors.items():
        parts = {}
        for role, (pdt, pshape) in grid.get_scheme(sch).part_specs(shape, dt).items():
            nb = math.prod(pshape) * pdt.itemsize
            parts[role] = {"dtype": str(pdt).replace("torch.", ""), "shape": list(pshape), "offset": off, "nbytes": nb}
            off += nb
        table[name] = {"scheme": sch, "dtype": str(dt).replace("torch.", ""), "shape": list(shape), "parts": parts}
    header = {"format": "pgolf-artifact", "format_version": 1, "scheme": scheme, "codec": codec, "layout": "concat-v1",
              "payload": {"compressed_bytes": 1_000_000, "raw_bytes": off, "sha256_compressed": "0" * 64,
                          "sha256_raw": "0" * 64}, "tensors": table, "meta": meta}
    return PREFIX_BYTES + len(json.dumps(header, separators=(",", ":")).encode()) + DIGEST_BYTES


@dataclass
class Breakdown:
    """Uncorrected pieces of an estimate (what ``bench/planner_fit.py`` compares with real exports)."""

    synthetic: dict[str, float]
    """Group class → compressed bytes of the synthetic quantized tensors (scaled to full size)."""
    passthrough: dict[str, int]
    """Stored dtype (fp16 / fp32 / raw) → raw bytes of the tensors kept as floats."""
    header: int
    payload: int


def breakdown(cfg: RunConfig, table: dict[str, Any] | None = None) -> Breakdown:
    """Step 1–4 of the module docstring for ``cfg.export.scheme`` (a scheme with a policy), uncorrected."""
    table = load_table() if table is None else table
    scheme = get_export_scheme(cfg.export.scheme)
    if scheme.policy is None:
        raise ConfigError(f"planner: export.scheme={scheme.name} has no fixed policy")
    with torch.device("meta"):
        model = GPT(cfg.model)
    roles = parameter_roles(model)
    # per-group streams (record_0427) pick their codec per stream; brotli-11 stands for them here (the
    # per-scheme correction of step 2 absorbs the difference once bench/planner_fit.py has fitted it)
    codec = "brotli-11" if scheme.codec == "streams" else scheme.codec
    synthetic: dict[str, float] = {}
    passthrough: dict[str, int] = {}
    payload = 0
    header_tensors: dict[str, tuple[str, tuple[int, ...], torch.dtype]] = {}
    for name, t in model.state_dict().items():
        spec = scheme.policy(name, t, roles[name], cfg.export)
        shape = tuple(t.shape)
        if isinstance(spec, str) and spec in ("fp16", "fp32", "raw"):
            nb = t.numel() * (2 if spec == "fp16" else 4 if spec == "fp32" else t.element_size())
            passthrough[spec] = passthrough.get(spec, 0) + nb
            payload += nb
            header_tensors[name] = (spec, shape, t.dtype)
            continue
        if len(shape) != 2:
            raise ConfigError(f"planner: no estimate for {name} {list(shape)} with {spec}")
        gc = group_class(roles[name])
        raw, n = quantized_sample(name, shape, spec, table.get("tails", {}).get(gc, DEFAULT_TAILS))
        synthetic[gc] = synthetic.get(gc, 0.0) + len(codecs.compress(raw, codec)) * shape[0] / n
        payload += len(raw) * shape[0] // n
        header_tensors[name] = (spec.scheme if isinstance(spec, QuantSpec) else spec, shape, t.dtype)
    meta = {"pgolf_version": pgolf.__version__, "export_scheme": scheme.name,
            "hessian_source": "generated" if scheme.needs_hessians else "none", "config": cfg.to_dict(),
            "calibration": {"source": "generated", "tokens": 0, "seqs": 0, "seq_len": 0, "seconds": 0.0}
            if scheme.needs_hessians else {}}
    return Breakdown(synthetic, passthrough, _header_bytes(header_tensors, meta, scheme.name, codec), payload)


def estimate_artifact_bytes(cfg: RunConfig) -> Estimate:
    """Predicted artifact bytes (model + code) of ``cfg`` exported with ``cfg.export.scheme``."""
    scheme = get_export_scheme(cfg.export.scheme)
    code = code_bytes(cfg)
    table = load_table()
    if scheme.policy is None:  # budget: the search fills the budget, or stores everything fp16 if that fits
        fr = float(table.get("float_ratio", {}).get("shuffle2+brotli-11", {}).get("fp16_weights", 1.0))
        model_b = max(0, min(cfg.export.budget_bytes - code, round(2 * count_params(cfg.model) * fr)))
        return Estimate(model_b, code, 0, "budget search: fills export.budget_bytes − code (or all-fp16 if smaller)")
    b = breakdown(cfg, table)
    corr = table.get("correction", {}).get(scheme.name, {})
    fratio = table.get("float_ratio", {}).get(scheme.codec, {})
    groups = {gc: v * float(corr.get(gc, 1.0)) for gc, v in b.synthetic.items()}
    groups["passthrough"] = sum(nb * float(fratio.get(dt, 1.0)) for dt, nb in b.passthrough.items())
    groups["header"] = b.header
    method = "synthetic trained-like weights through the scheme's grid and codec × fitted corrections"
    if not table:
        method += " (no planner_table.json: uncorrected)"
    return Estimate(round(sum(groups.values())), code, b.payload, method, {k: round(v) for k, v in groups.items()})
