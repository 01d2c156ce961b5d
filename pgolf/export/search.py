"""Byte-budget search, steps 1–2 (the measurements): per tensor group the grid (bits, clip, GPTQ) and LQER correction that minimize
the estimated loss increase subject to artifact bytes ≤ budget.

Sources (CATALOGUE §2.5; code written here): mixed precision by tensor group — int5 MLP / int6
attention [03-20b], Hessian-sensitivity ranking of layers [03-31], per-group SDClip k [04-14]/[04-22];
LQER on the largest errors [04-27a] (PR #1855); selective ±1 pruning to close an overshoot [03-25]
(PR #1019); per-group compressed streams [04-27a].

Problem. Every 2-D float tensor that is not a control tensor belongs to a group g
(its declared role, :mod:`pgolf.roles`: embed, head, attn_q/k/v/o, mlp_up/down, proj, hash, …); everything
else is stored as fp16 (raw for non-floats), as the records do. An *option* o for a group is a grid
(B bits, clip = SDClip k or GPTQ-lite, GPTQ on/off), optionally with a rank-r LQER correction of the
group's m largest-error tensors, or plain fp16. Choose one option per group:

    minimize  Σ_g w_g · err_g(o_g)   subject to   fixed + header + Σ_g bytes_g(o_g) ≤ budget

**Bytes are exact.** Each group is packed into streams of its own (int parts in stream ``g``, fp16
parts in ``g:fp16``) with the same codec/transform search as the final artifact
(:func:`pgolf.artifact.streams.pack`), so the final file's streams are byte-identical to the measured
ones; only its compressed header (tens of bytes of drift between plans) is not additive.

**The error proxy.** err_g(o) = Σ_{W∈g} tr(E H Eᵀ), E = W − Ŵ, H = E[x xᵀ] the second moment of the
layer's calibration inputs (what GPTQ minimizes; H = I, i.e. ‖E‖²_F, for a tensor without one) — the
expected squared error of the layer's *output*. It equals 2·Δloss to second order only if H were
the loss Hessian with respect to W (for a linear at a minimum: the Gauss–Newton block
E[∇²_y ℓ ⊗ x xᵀ]); x xᵀ alone ignores how much the loss cares about each output (attn_scale /
mlp_scale gains, the residual path, the softmax), so raw errors of different groups are in different
units (``weights="hessian"``, w_g = 1). ``weights="loss"`` measures the exchange rate: quantize group
g alone at a probe option p_g and set w_g = Δloss_g / err_g(p_g) with the loss on self-generated text
(never validation). Sampled at temperature 1, E_{x∼p_θ}[∇ log p_θ(x)] = 0, so that Δloss has no
first-order term: it is the Fisher quadratic form, the second-order loss increase. w_g·err_g then
assumes Δloss ∝ err within a group and additivity across groups (both second-order statements), so
the final word is an evaluation: the plans that are optimal under each weighting are scored by that
loss and the best is kept (``loss_fn`` + ``verify``).

**Algorithm.**

1. Screen: quantize every group with every option (cached per (tensor, spec) by
   :class:`~pgolf.quant.gptq.ModelQuantizer`); estimate bytes by the zeroth-order entropy of q plus the
   fp16 scale bytes; keep the near-Pareto options (not dominated by an option with ≤ 98 % of the
   bytes), at most ``max_options`` spread along the bytes axis, and fp16.
2. Measure: the exact compressed bytes of every kept option, and of its LQER variant.

Steps 3–4 (select one option per group, pack and fit the file) are :mod:`pgolf.export.solve`;
:func:`pgolf.export.solve.search_budget` is the one-call form the ``budget`` export scheme runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pgolf.artifact import streams
from pgolf.errors import ConfigError
from pgolf.quant import intgrid
from pgolf.quant.gptq import ModelQuantizer, TensorResult, TensorSpec
from pgolf.quant.grid import QuantTensor, dequantize_tensor, float_policy
from pgolf.quant.intgrid import QuantSpec
from pgolf.quant.lqer import LqerSpec
from pgolf.roles import QUANT_GROUPS, Role, RoleMap, check_roles

NEEDED_WHEN = "scheme.name == 'budget'"

GROUP_ORDER: tuple[str, ...] = QUANT_GROUPS
"""One group per quantized role, in :class:`pgolf.roles.Role` order."""
SCREEN_SLACK = 0.02
"""An option survives the screen unless another has ≤ (1 − slack) × its estimated bytes and less error."""

LossFn = Callable[[Mapping[str, Tensor]], float]
"""A state dict (dequantized) → mean loss in nats on some fixed text (never validation)."""


# --------------------------------------------------------------------------- policy and options


fixed_scheme = float_policy
"""The scheme of a tensor the search does not choose: fp16 for fp32/bf16 floats, raw otherwise."""


def search_group(name: str, t: Tensor, role: Role) -> str | None:
    """The group whose option the search chooses for this tensor (its role's name), or None (fixed:
    control tensors, vectors, non-floats)."""
    if not t.is_floating_point() or t.ndim != 2 or t.numel() == 0 or not role.quantized:
        return None
    return role.value


def make_grouping(searchable: Mapping[str, str], roles: RoleMap) -> streams.Grouping:
    """Streams of the search artifact: for the tensors in ``searchable`` (name → group), stream ``g``
    (int parts) and ``g:fp16`` (float parts); every other tensor as
    :func:`pgolf.artifact.streams.role_grouping` (control tensors: ``small``/``scales``/``control:…``)."""
    others = streams.role_grouping(roles)

    def grouping(name: str, role: str, part: Tensor) -> str:
        g = searchable.get(name)
        if g is None:
            return others(name, role, part)
        return f"{g}:fp16" if part.is_floating_point() else g

    return grouping


@dataclass(frozen=True)
class Option:
    """One choice for a group: a grid spec (or a fixed scheme name such as ``fp16``) and LQER."""

    spec: TensorSpec
    lqer_rank: int = 0
    lqer_top: int = 0
    """LQER on this many tensors of the group, largest error first (0 with rank 0)."""

    @property
    def bits(self) -> str:
        return str(self.spec.bits) if isinstance(self.spec, QuantSpec) else self.spec

    @property
    def clip(self) -> str:
        s = self.spec
        if not isinstance(s, QuantSpec):
            return "-"
        return f"sdclip k={s.k:g}" if s.clip == "sdclip" else s.clip

    @property
    def gptq(self) -> str:
        return ("yes" if self.spec.gptq else "no") if isinstance(self.spec, QuantSpec) else "-"

    @property
    def lqer(self) -> str:
        return f"r{self.lqer_rank}×{self.lqer_top}" if self.lqer_rank else "-"

    @property
    def label(self) -> str:
        if not isinstance(self.spec, QuantSpec):
            return self.spec
        g = "+gptq" if self.spec.gptq else ""
        lq = f"+lqer{self.lqer_rank}x{self.lqer_top}" if self.lqer_rank else ""
        return f"int{self.spec.bits} {self.clip}{g}{lq}"

    def to_json(self) -> dict[str, Any]:
        s = self.spec
        spec = {"bits": s.bits, "clip": s.clip, "k": s.k, "gptq": s.gptq} if isinstance(s, QuantSpec) else s
        return {"spec": spec, "lqer_rank": self.lqer_rank, "lqer_top": self.lqer_top}


@dataclass(frozen=True)
class SearchSpace:
    """The options tried for every group."""

    bits: tuple[int, ...] = (4, 5, 6, 7, 8)
    sdclip_k: tuple[float, ...] = (6.0, 8.0, 10.0, 12.0, 13.0, 15.0, 17.0, 20.0, 24.0)
    gptq_lite: bool = True
    gptq: bool = True
    """Also GPTQ versions of every grid (used only for tensors with a Hessian)."""
    fp16: bool = True
    lqer_rank: int = 4
    lqer_top: int = 1
    max_options: int = 10

    def __post_init__(self) -> None:
        if not self.bits or any(not 2 <= b <= 8 for b in self.bits) or any(k <= 0 for k in self.sdclip_k):
            raise ConfigError("search space: bits must be in 2..8 and SDClip k > 0")
        if self.max_options < 1 or self.lqer_rank < 0 or self.lqer_top < 0:
            raise ConfigError("search space: max_options >= 1, lqer_rank >= 0, lqer_top >= 0")

    @classmethod
    def from_config(cls, e: Any) -> SearchSpace:
        """The space ``export.search_*`` (an :class:`~pgolf.config.ExportConfig`) asks for."""
        return cls(bits=tuple(e.search_bits), sdclip_k=tuple(e.search_k), gptq=e.search_gptq,
                   lqer_rank=e.search_lqer_rank, lqer_top=e.search_lqer_top, max_options=e.search_max_options)

    def grid_options(self, with_gptq: bool) -> list[Option]:
        out: list[Option] = []
        for b in self.bits:
            for g in (False, True) if (with_gptq and self.gptq) else (False,):
                out += [Option(QuantSpec(bits=b, clip="sdclip", k=float(k), gptq=g)) for k in self.sdclip_k]
                if self.gptq_lite:
                    out.append(Option(QuantSpec(bits=b, clip="gptq_lite", gptq=g)))
        return out


@dataclass(frozen=True)
class PackSettings:
    """How streams are compressed (the same for measuring and for the final artifact)."""

    candidates: tuple[str, ...] = ("none", "zstd-22", "brotli-11", "shuffle2+zstd-22", "shuffle2+brotli-11")
    """brotli-11 wins on int grids (zstd-22 within ≈1 %, lzma-9e ≈4 % and zlib-9 ≈12 % larger on the cpu
    preset's int4…int8 groups); shuffle2 variants only run on fp16 streams (scales)."""
    transforms: tuple[str, ...] = ("none", "T")
    """T (column-major) wins ≈3 % on the embedding under brotli-11, nothing elsewhere."""
    reorder: tuple[str, ...] = ()
    """Groups whose rows are greedily reordered ([04-27a]); O(rows²·cols) per matrix."""

    def pack(self, tensors: Mapping[str, QuantTensor], grouping: streams.Grouping, *,
             meta: Mapping[str, Any] | None = None, scheme: str = "budget",
             verify: bool = True) -> tuple[bytes, streams.PackReport]:
        return streams.pack(
            tensors, grouping=grouping, candidates=self.candidates, transforms=self.transforms,
            reorder=self.reorder, meta=meta, scheme=scheme, verify=verify,
        )


FAST_PACK = PackSettings(candidates=("none", "zlib-9", "zstd-22", "shuffle2+zstd-22"), transforms=("none",))
"""For tests and quick looks: ≈10× faster, a few % larger."""


# --------------------------------------------------------------------------- measurements


@dataclass(frozen=True)
class Measured:
    """One (group, option): its exact compressed bytes and errors."""

    group: str
    option: Option
    bytes: int
    herr: float
    """Σ tr(E H Eᵀ) over the group's tensors (‖E‖²_F for tensors without a Hessian)."""
    sq_err: float
    """Σ ‖E‖²_F."""


def _err(r: TensorResult) -> float:
    s = r.stats
    return float(s.herr) if s.herr is not None else float(s.mse * s.numel)


def _sq(r: TensorResult) -> float:
    return float(r.stats.mse * r.stats.numel)


def _entropy_bytes(qt: QuantTensor) -> float:
    """Zeroth-order entropy bytes of the int parts plus raw bytes of the float parts (a screen only)."""
    total = 0.0
    for p in qt.parts.values():
        if p.dtype == torch.int8:
            total += p.numel() * intgrid.entropy_bits(p) / 8
        else:
            total += p.numel() * p.element_size()
    return total


class Search:
    """The state of one search: the quantizer cache, the groups and every measurement."""

    def __init__(
        self,
        state_dict: Mapping[str, Tensor],
        roles: RoleMap,
        hessians: Mapping[str, Tensor] | None = None,
        *,
        space: SearchSpace = SearchSpace(),
        settings: PackSettings = PackSettings(),
        log: Callable[[str], None] | None = None,
    ):
        self.state_dict = {k: v.detach().to("cpu") for k, v in state_dict.items()}
        check_roles(roles, self.state_dict)
        self.roles = dict(roles)
        self.hessians = {k: v for k, v in (hessians or {}).items() if k in self.state_dict}
        self.space, self.settings = space, settings
        self.log = log or (lambda s: None)
        self.q = ModelQuantizer(self.state_dict, self.hessians, policy=fixed_scheme)
        self.groups: dict[str, list[str]] = {}
        for name, t in self.state_dict.items():
            g = search_group(name, t, self.roles[name])
            if g is not None:
                self.groups.setdefault(g, []).append(name)
        self.groups = {g: self.groups[g] for g in GROUP_ORDER if g in self.groups}
        self.group_of = {n: g for g, names in self.groups.items() for n in names}
        self.grouping = make_grouping(self.group_of, self.roles)
        self.fixed = [n for n in self.state_dict if n not in self.group_of]
        self.measured: dict[str, list[Measured]] = {}
        self._results: dict[tuple[str, Option], tuple[dict[str, TensorResult], tuple[str, ...]]] = {}

    # ---------------------------------------------------------------- one group, one option

    def results(self, group: str, opt: Option) -> tuple[dict[str, TensorResult], tuple[str, ...]]:
        """Per-tensor results of ``opt`` on ``group`` and the names that got an LQER correction (the
        ``lqer_top`` of largest error, where it lowers the error)."""
        key = (group, opt)
        if key not in self._results:
            res = {n: self.q.tensor(n, self._spec_for(n, opt.spec)) for n in self.groups[group]}
            fixed: tuple[str, ...] = ()
            if opt.lqer_rank and opt.lqer_top:
                lq = LqerSpec(top_k=opt.lqer_top, rank=opt.lqer_rank)
                for n in sorted(res, key=lambda n: (-_err(res[n]), n))[: opt.lqer_top]:
                    better = self.q.with_lqer(n, self._spec_for(n, opt.spec), lq)
                    if better is not None and _err(better) < _err(res[n]):
                        res[n] = better
                        fixed += (n,)
            self._results[key] = (res, fixed)
        return self._results[key]

    def _spec_for(self, name: str, spec: TensorSpec) -> TensorSpec:
        """GPTQ / Hessian SDClip fall back to their plain version for a tensor without a Hessian."""
        if isinstance(spec, QuantSpec) and spec.needs_hessian and name not in self.hessians:
            return replace(spec, gptq=False, clip="sdclip" if spec.clip == "sdclip_hessian" else spec.clip)
        return spec

    def measure(self, group: str, opt: Option) -> Measured:
        res, _ = self.results(group, opt)
        _, rep = self.settings.pack({n: r.qt for n, r in res.items()}, self.grouping, verify=False)
        return Measured(group, opt, rep.compressed_bytes, sum(map(_err, res.values())), sum(map(_sq, res.values())))

    # ---------------------------------------------------------------- screen + measure

    def run_measurements(self) -> dict[str, list[Measured]]:
        """Steps 1–2 of the module docstring for every group (once)."""
        for g, names in self.groups.items():
            if g in self.measured:
                continue
            t0 = time.perf_counter()
            with_h = any(n in self.hessians for n in names)
            cands = self.space.grid_options(with_h)
            screened = []
            for opt in cands:
                res, _ = self.results(g, opt)
                est = sum(_entropy_bytes(r.qt) for r in res.values())
                screened.append((est, sum(map(_err, res.values())), opt))
            keep = _screen(screened, self.space.max_options)
            todo = list(keep)
            if self.space.lqer_rank and self.space.lqer_top:
                todo += [Option(o.spec, self.space.lqer_rank, self.space.lqer_top) for o in keep]
            if self.space.fp16:
                todo.append(Option("fp16"))
            ms = [self.measure(g, o) for o in todo]
            self.measured[g] = _dedupe(ms)
            self.log(f"search: group {g} ({len(names)} tensors): {len(cands)} grids screened, "
                     f"{len(ms)} measured in {time.perf_counter() - t0:.1f}s")
        return self.measured

    # ---------------------------------------------------------------- assembling plans

    def tensors_for(self, plan: Mapping[str, Option]) -> dict[str, QuantTensor]:
        """The whole state dict quantized under ``plan`` (state-dict order)."""
        chosen: dict[str, QuantTensor] = {}
        for g, opt in plan.items():
            res, _ = self.results(g, opt)
            chosen.update({n: r.qt for n, r in res.items()})
        return {n: chosen[n] if n in chosen else self.q.tensor(n).qt for n in self.state_dict}

    def dequantized(self, tensors: Mapping[str, QuantTensor]) -> dict[str, Tensor]:
        return {n: dequantize_tensor(qt) for n, qt in tensors.items()}

    def fixed_bytes(self) -> int:
        """Compressed bytes of the fixed tensors' streams (packed alone: the same streams as in the artifact)."""
        if not hasattr(self, "_fixed_bytes"):
            tensors = {n: self.q.tensor(n).qt for n in self.fixed}
            self._fixed_bytes = self.settings.pack(tensors, self.grouping, verify=False)[1].compressed_bytes if tensors else 0
        return self._fixed_bytes


def _screen(items: list[tuple[float, float, Option]], max_options: int) -> list[Option]:
    """Options worth measuring, from (estimated bytes, error, option): the Pareto frontier, plus options
    within :data:`SCREEN_SLACK` of it in bytes (the estimate is not exact), at most ``max_options``:
    frontier points first (spread evenly in log-bytes when too many), then the nearest others."""
    items = sorted(items, key=lambda x: (x[0], x[1]))
    front, near = [], []
    for est, err, opt in items:
        if any(e2 <= est and r2 <= err and (e2, r2) != (est, err) for e2, r2, _ in items):
            # dominated by the estimate; kept only if every dominating option is within the slack
            gap = min((est - e2) / max(est, 1.0) for e2, r2, _ in items if e2 <= est and r2 <= err and (e2, r2) != (est, err))
            if gap < SCREEN_SLACK:
                near.append((gap, est, err, opt))
        elif not any((e2, r2) == (est, err) for e2, r2, o in front):
            front.append((est, err, opt))
    if len(front) > max_options:  # spread evenly in log-bytes, both ends kept
        logs = np.log([max(f[0], 1.0) for f in front])
        idx = sorted({int(np.abs(logs - t).argmin()) for t in np.linspace(logs[0], logs[-1], max_options)})
        front = [front[i] for i in idx]
    near.sort(key=lambda x: (x[0], x[1], x[2]))
    return [f[2] for f in front] + [n[3] for n in near[: max(0, max_options - len(front))]]


def _dedupe(ms: list[Measured]) -> list[Measured]:
    """Drop options that are strictly dominated by measured bytes and error (they can never be chosen)."""
    out = []
    for m in ms:
        if not any((o.bytes <= m.bytes and o.herr < m.herr) or (o.bytes < m.bytes and o.herr <= m.herr) for o in ms):
            out.append(m)
    return sorted(out, key=lambda m: (m.bytes, m.herr))
