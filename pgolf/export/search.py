"""Byte-budget search: per tensor group the grid (bits, clip, GPTQ) and LQER correction that minimize
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
3. Select: multiple-choice knapsack by dynamic programming over bytes, each option's bytes rounded
   *up* to a resolution of budget/20,000 (so the chosen sum never exceeds the budget).
4. Pack the plan. While the real file is over budget: selective ±1 pruning
   (:mod:`pgolf.quant.selective_prune`) of the fewest cheapest entries when the overshoot is small,
   else the group whose next-cheaper option loses the least weighted error per byte moves down.
   The returned artifact's real size is asserted ≤ budget; an unreachable budget is a BudgetError.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pgolf.artifact import streams
from pgolf.errors import BudgetError, ConfigError
from pgolf.quant import intgrid
from pgolf.quant.gptq import ModelQuantizer, TensorResult, TensorSpec
from pgolf.quant.grid import QuantTensor, dequantize_tensor, float_policy
from pgolf.quant.intgrid import QuantSpec
from pgolf.quant.lqer import LqerSpec
from pgolf.quant.selective_prune import PruneOrder, apply_pruning, prune_order, pruned_cost
from pgolf.roles import QUANT_GROUPS, Role, RoleMap, check_roles

NEEDED_WHEN = "scheme.codec == 'streams'"

GROUP_ORDER: tuple[str, ...] = QUANT_GROUPS
"""One group per quantized role, in :class:`pgolf.roles.Role` order."""
DP_STATES = 20_000
"""Byte resolution of the knapsack: budget / DP_STATES (rounded up)."""
SCREEN_SLACK = 0.02
"""An option survives the screen unless another has ≤ (1 − slack) × its estimated bytes and less error."""
PRUNE_MAX_FRACTION = 0.01
"""Selective pruning is tried when the overshoot is at most this fraction of the model bytes."""

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
    lqer_tensors: tuple[str, ...] = ()


@dataclass(frozen=True)
class Choice:
    """A row of the choices table."""

    group: str
    tensors: int
    option: Option
    bytes: int
    herr: float
    weight: float

    @property
    def weighted(self) -> float:
        return self.weight * self.herr


@dataclass
class SearchResult:
    blob: bytes
    """The artifact file (≤ ``budget`` bytes)."""
    tensors: dict[str, QuantTensor]
    choices: list[Choice]
    report: streams.PackReport
    budget: int
    fixed_bytes: int
    header_bytes: int
    pruned: int
    """±1 entries zeroed by selective pruning."""
    weights: dict[str, float]
    weights_source: str
    candidates: list[dict[str, Any]] = field(default_factory=list)
    """The verified plans: ``{"plan": {group: label}, "loss": float | None, "objective": str, "bytes": int}``."""
    measured: dict[str, list[Measured]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def model_bytes(self) -> int:
        return len(self.blob)

    def plan_json(self) -> dict[str, Any]:
        return {c.group: {**c.option.to_json(), "bytes": c.bytes, "herr": c.herr, "weight": c.weight} for c in self.choices}


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
        res, lq = self.results(group, opt)
        _, rep = self.settings.pack({n: r.qt for n, r in res.items()}, self.grouping, verify=False)
        return Measured(group, opt, rep.compressed_bytes, sum(map(_err, res.values())), sum(map(_sq, res.values())), lq)

    # ---------------------------------------------------------------- screen + measure

    def solve(self, budget: int, *, loss_fn: LossFn | None = None, weights: str = "loss", verify: int = 0,
              meta: Mapping[str, Any] | None = None, scheme: str = "budget") -> SearchResult:
        """Steps 3–4 for ``budget`` model bytes (measurements are made once and reused)."""
        return _solve(self, budget, loss_fn=loss_fn, weights=weights, verify=verify, meta=meta, scheme=scheme)

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


# --------------------------------------------------------------------------- selection


def choose(
    measured: Mapping[str, Sequence[Measured]],
    budget: int,
    weights: Mapping[str, float] | None = None,
    *,
    key: Callable[[Measured], float] = lambda m: m.herr,
    states: int = DP_STATES,
) -> dict[str, Measured] | None:
    """Multiple-choice knapsack: one option per group minimizing Σ w_g·key(m) with Σ bytes ≤ budget,
    bytes rounded up to ⌈budget/states⌉ (so the true sum is ≤ budget). None if nothing fits."""
    if budget < 0:
        return None
    groups = list(measured)
    if not groups:
        return {}
    res = max(1, math.ceil(budget / states))
    n = budget // res + 1
    inf = float("inf")
    dp = np.full(n, inf)
    dp[0] = 0.0
    back: list[np.ndarray] = []
    for g in groups:
        w = 1.0 if weights is None else float(weights.get(g, 1.0))
        new = np.full(n, inf)
        arg = np.full(n, -1, dtype=np.int64)
        for i, m in enumerate(measured[g]):
            c = -(-m.bytes // res)
            if c >= n:
                continue
            cand = dp[: n - c] + w * key(m)
            better = cand < new[c:]
            new[c:][better] = cand[better]
            arg[c:][better] = i
        dp = new
        back.append(arg)
    if not np.isfinite(dp).any():
        return None
    s = int(np.argmin(dp))  # ties: the fewest bytes
    plan: dict[str, Measured] = {}
    for g, arg in zip(reversed(groups), reversed(back), strict=True):
        m = measured[g][int(arg[s])]
        plan[g] = m
        s -= -(-m.bytes // res)
    return {g: plan[g] for g in groups}


# --------------------------------------------------------------------------- driver


def _log_or_none(log: Callable[[str], None] | None) -> Callable[[str], None]:
    return log or (lambda s: None)


def loss_weights(search: Search, loss_fn: LossFn, log: Callable[[str], None]) -> dict[str, float]:
    """w_g = Δloss_g / err_g(p_g) (module docstring), with p_g the measured grid option of median error.
    A group whose loss does not rise even at its coarsest option gets w_g = 0."""
    base_sd = search.state_dict
    base = loss_fn(base_sd)
    out: dict[str, float] = {}
    for g, ms in search.measured.items():
        graded = sorted((m for m in ms if isinstance(m.option.spec, QuantSpec) and m.herr > 0), key=lambda m: m.herr)
        if not graded:
            out[g] = 1.0
            continue
        probes = [graded[len(graded) // 2], graded[-1]]
        w = 0.0
        for m in probes:
            res, _ = search.results(g, m.option)
            sd = dict(base_sd)
            sd.update({n: dequantize_tensor(r.qt) for n, r in res.items()})
            d = loss_fn(sd) - base
            log(f"search: loss probe {g} {m.option.label}: Δloss {d:+.6f} nats, herr {m.herr:.4g}")
            if d > 0:
                w = d / m.herr
                break
        out[g] = w
    return out


def search_budget(
    state_dict: Mapping[str, Tensor],
    roles: RoleMap,
    hessians: Mapping[str, Tensor] | None,
    budget: int,
    *,
    space: SearchSpace = SearchSpace(),
    settings: PackSettings = PackSettings(),
    loss_fn: LossFn | None = None,
    weights: str = "loss",
    verify: int = 0,
    meta: Mapping[str, Any] | None = None,
    scheme: str = "budget",
    log: Callable[[str], None] | None = None,
) -> SearchResult:
    """The artifact of the lowest estimated loss whose file is at most ``budget`` bytes (module
    docstring). ``weights="loss"`` and ``verify`` > 0 need ``loss_fn``; without it the weights are the
    Hessian ones and no plan is evaluated. BudgetError (one line) when no plan can fit."""
    s = Search(state_dict, roles, hessians, space=space, settings=settings, log=log)
    return s.solve(budget, loss_fn=loss_fn, weights=weights, verify=verify, meta=meta, scheme=scheme)


def _solve(
    s: Search, budget: int, *, loss_fn: LossFn | None, weights: str, verify: int,
    meta: Mapping[str, Any] | None, scheme: str,
) -> SearchResult:
    t_start = time.perf_counter()
    log = s.log
    if weights not in ("hessian", "loss"):
        raise ConfigError(f"search weights must be 'hessian' or 'loss', got {weights!r}")
    s.run_measurements()
    fixed = s.fixed_bytes()
    cheapest = {g: ms[0] for g, ms in s.measured.items()}
    blob0, rep0 = s.settings.pack(s.tensors_for({g: m.option for g, m in cheapest.items()}), s.grouping,
                                  meta=meta, scheme=scheme, verify=False)
    header = rep0.total_bytes - rep0.compressed_bytes
    if len(blob0) > budget:  # only pruning the smallest plan can still fit
        fitted = None
        if len(blob0) - budget <= PRUNE_MAX_FRACTION * len(blob0):
            fitted = _prune_to_fit(s, s.tensors_for({g: m.option for g, m in cheapest.items()}), budget, meta, scheme, log)
        if fitted is None:
            raise BudgetError(
                f"budget of {budget:,} model bytes is unreachable: the smallest plan needs {len(blob0):,} "
                f"(groups {rep0.compressed_bytes - fixed:,} + fixed tensors {fixed:,} + header {header:,})"
            )
        return _result(s, cheapest, fitted, {g: 1.0 for g in s.measured}, "hessian", [], budget, fixed, t_start)
    margin = 16 + header // 50  # header drift between plans
    avail = max(budget - fixed - header - margin, 0)

    w_source = "hessian"
    w: dict[str, float] = {g: 1.0 for g in s.measured}
    if weights == "loss" and loss_fn is not None:
        w = loss_weights(s, loss_fn, log)
        if any(v > 0 for v in w.values()):
            w_source = "loss"
        else:
            w = {g: 1.0 for g in s.measured}
    ones = {g: 1.0 for g in s.measured}
    objectives: list[tuple[str, Mapping[str, float], Callable[[Measured], float]]] = [(w_source, w, lambda m: m.herr)]
    if verify and loss_fn is not None:
        if w_source != "hessian":
            objectives.append(("hessian", ones, lambda m: m.herr))
        objectives.append(("frobenius", ones, lambda m: m.sq_err))

    plans: list[tuple[str, dict[str, Measured]]] = []
    for name, ww, key in objectives:
        p = choose(s.measured, avail, ww, key=key) or dict(cheapest)
        if all(p != q for _, q in plans):
            plans.append((name, p))
    if verify and loss_fn is not None:
        for variant in _neighbours(plans[0][1], s.measured, w, avail):
            if len(plans) >= verify:
                break
            if all(variant != q for _, q in plans):
                plans.append(("neighbour", variant))
    plans = plans[: max(verify, 1)]

    candidates: list[dict[str, Any]] = []
    losses: list[float | None] = []
    for name, p in plans:
        loss = None
        if verify and loss_fn is not None and len(plans) > 1:
            loss = loss_fn(s.dequantized(s.tensors_for({g: m.option for g, m in p.items()})))
            log(f"search: plan [{name}] loss {loss:.6f} nats, group bytes {sum(m.bytes for m in p.values()):,}")
        losses.append(loss)
        candidates.append({"objective": name, "loss": loss, "bytes": sum(m.bytes for m in p.values()),
                           "plan": {g: m.option.label for g, m in p.items()}})
    best = int(np.argmin([x if x is not None else np.inf for x in losses])) if losses[0] is not None else 0
    plan = dict(plans[best][1])
    fitted = _fit(s, plan, w, budget, meta, scheme, log)
    return _result(s, plan, fitted, w, w_source, candidates, budget, fixed, t_start)


def _result(
    s: Search, plan: Mapping[str, Measured], fitted: tuple[bytes, streams.PackReport, dict[str, QuantTensor], int],
    w: Mapping[str, float], w_source: str, candidates: list[dict[str, Any]], budget: int, fixed: int, t_start: float,
) -> SearchResult:
    blob, rep, tensors, pruned = fitted
    if len(blob) > budget:  # the contract: never return an artifact over budget
        raise BudgetError(f"internal: packed artifact of {len(blob):,} bytes exceeds the {budget:,}-byte budget")
    choices = [Choice(g, len(s.groups[g]), m.option, _group_bytes(rep, g), m.herr, w.get(g, 1.0)) for g, m in plan.items()]
    return SearchResult(
        blob=blob, tensors=tensors, choices=choices, report=rep, budget=budget, fixed_bytes=fixed,
        header_bytes=rep.total_bytes - rep.compressed_bytes, pruned=pruned, weights=dict(w), weights_source=w_source,
        candidates=candidates, measured=s.measured, seconds=time.perf_counter() - t_start,
    )


def _group_bytes(rep: streams.PackReport, g: str) -> int:
    return sum(st.compressed_bytes for st in rep.streams if st.group in (g, f"{g}:fp16"))


def _neighbours(plan: Mapping[str, Measured], measured: Mapping[str, Sequence[Measured]],
                w: Mapping[str, float], avail: int) -> list[dict[str, Measured]]:
    """Plans one trade away from ``plan`` that still fit: one group one option up, paid for by another
    group one option down, in order of the smallest change in the weighted objective."""
    out = []
    groups = list(plan)
    idx = {g: measured[g].index(plan[g]) for g in groups}
    used = sum(m.bytes for m in plan.values())
    for up in groups:
        if idx[up] + 1 >= len(measured[up]):
            continue
        mu = measured[up][idx[up] + 1]
        for down in groups:
            if down == up or idx[down] == 0:
                continue
            md = measured[down][idx[down] - 1]
            b = used + mu.bytes - plan[up].bytes + md.bytes - plan[down].bytes
            if b > avail:
                continue
            delta = w.get(up, 1) * (mu.herr - plan[up].herr) + w.get(down, 1) * (md.herr - plan[down].herr)
            out.append((delta, up, down, {**plan, up: mu, down: md}))
    out.sort(key=lambda x: (x[0], x[1], x[2]))
    return [o[3] for o in out]


def _fit(
    s: Search, plan: dict[str, Measured], w: Mapping[str, float], budget: int,
    meta: Mapping[str, Any] | None, scheme: str, log: Callable[[str], None],
) -> tuple[bytes, streams.PackReport, dict[str, QuantTensor], int]:
    """Step 4: pack ``plan`` (updated in place) and tighten until the file fits."""
    while True:
        tensors = s.tensors_for({g: m.option for g, m in plan.items()})
        blob, rep = s.settings.pack(tensors, s.grouping, meta=meta, scheme=scheme)
        over = len(blob) - budget
        if over <= 0:
            return blob, rep, tensors, 0
        log(f"search: packed {len(blob):,} bytes, {over:,} over the budget")
        if over <= max(64, PRUNE_MAX_FRACTION * len(blob)):
            fitted = _prune_to_fit(s, tensors, budget, meta, scheme, log)
            if fitted is not None:
                return fitted
        move = _cheapest_move(plan, s.measured, w, over)
        if move is None:
            raise BudgetError(f"cannot fit the budget of {budget:,} model bytes: every group is at its smallest option "
                              f"and the artifact is still {over:,} bytes over")
        g, m = move
        log(f"search: {g} {plan[g].option.label} → {m.option.label} ({plan[g].bytes - m.bytes:,} bytes less)")
        plan[g] = m


def _cheapest_move(plan: Mapping[str, Measured], measured: Mapping[str, Sequence[Measured]],
                   w: Mapping[str, float], over: int) -> tuple[str, Measured] | None:
    """The single-group downgrade with the least weighted error increase among those freeing ≥ ``over``
    bytes; if none frees that much, the one with the least increase per byte freed."""
    moves = []
    for g, cur in plan.items():
        for m in measured[g]:
            freed = cur.bytes - m.bytes
            if freed > 0:
                moves.append((w.get(g, 1.0) * (m.herr - cur.herr), freed, g, m))
    if not moves:
        return None
    big = [mv for mv in moves if mv[1] >= over]
    if big:
        d, _, g, m = min(big, key=lambda mv: (mv[0], -mv[1], mv[2]))
    else:
        d, _, g, m = min(moves, key=lambda mv: (mv[0] / mv[1], mv[2]))
    return g, m


def _prune_to_fit(
    s: Search, tensors: dict[str, QuantTensor], budget: int, meta: Mapping[str, Any] | None, scheme: str,
    log: Callable[[str], None],
) -> tuple[bytes, streams.PackReport, dict[str, QuantTensor], int] | None:
    """Selective ±1 pruning: the fewest cheapest entries (found by doubling, then bisection on the
    packed size) that make the file fit; None if pruning every candidate is not enough."""
    order = prune_order(s.state_dict, tensors, s.hessians, [n for ns in s.groups.values() for n in ns])
    if len(order) == 0:
        return None

    def size(n: int) -> tuple[bytes, streams.PackReport, dict[str, QuantTensor]]:
        t = apply_pruning(tensors, order, n)
        blob, rep = s.settings.pack(t, s.grouping, meta=meta, scheme=scheme, verify=False)
        return blob, rep, t

    lo, hi = 0, 0
    n = max(1, min(len(order), 8 * (len(size(0)[0]) - budget)))
    while True:  # doubling: first n that fits
        blob, _, _ = size(n)
        if len(blob) <= budget:
            hi = n
            break
        lo = n
        if n >= len(order):
            return None
        n = min(len(order), 2 * n)
    while hi - lo > max(1, hi // 64):  # bisection to within 1.6 % of the count
        mid = (lo + hi) // 2
        if len(size(mid)[0]) <= budget:
            hi = mid
        else:
            lo = mid
    t = apply_pruning(tensors, order, hi)
    blob, rep = s.settings.pack(t, s.grouping, meta=meta, scheme=scheme)
    if len(blob) > budget:
        return None
    log(f"search: selective ±1 pruning of {hi:,} entries (Σ δ·H_jj {pruned_cost(order, hi):.4g}) → {len(blob):,} bytes")
    return blob, rep, t, hi


# --------------------------------------------------------------------------- report


def format_choices(result: SearchResult) -> str:
    """The table of choices: group, tensors, bits, clip, GPTQ, LQER, bytes, error (and its weight)."""
    head = ("group", "tensors", "bits", "clip", "GPTQ", "LQER", "bytes", "herr", "weight", "w·herr")
    rows = [
        (c.group, str(c.tensors), c.option.bits, c.option.clip, c.option.gptq, c.option.lqer, f"{c.bytes:,}",
         f"{c.herr:.4g}", f"{c.weight:.3g}", f"{c.weighted:.4g}")
        for c in result.choices
    ]
    total = ("total", str(sum(c.tensors for c in result.choices)), "", "", "", "",
             f"{sum(c.bytes for c in result.choices):,}", f"{sum(c.herr for c in result.choices):.4g}", "",
             f"{sum(c.weighted for c in result.choices):.4g}")
    table = [head, *rows, total]
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]

    def line(r: tuple[str, ...]) -> str:
        return "  ".join(r[i].rjust(widths[i]) if i in (1, 6, 7, 8, 9) else r[i].ljust(widths[i]) for i in range(len(r))).rstrip()

    rule = "-" * len(line(head))
    out = [line(head), rule, *map(line, rows), rule, line(total)]
    out.append(
        f"fixed tensors {result.fixed_bytes:,} + header {result.header_bytes:,} → model {result.model_bytes:,} "
        f"of {result.budget:,} bytes; weights: {result.weights_source}"
        + (f"; selective ±1 pruning: {result.pruned:,} entries" if result.pruned else "")
    )
    return "\n".join(out)


__all__ = [
    "FAST_PACK",
    "GROUP_ORDER",
    "Choice",
    "LossFn",
    "Measured",
    "Option",
    "PackSettings",
    "PruneOrder",
    "Search",
    "SearchResult",
    "SearchSpace",
    "choose",
    "fixed_scheme",
    "format_choices",
    "loss_weights",
    "search_budget",
    "make_grouping",
    "search_group",
]
