"""Byte-budget search, steps 3–4 (the plan and its file): one option per tensor group from the
measurements of :class:`pgolf.export.search.Search` (steps 1–2; the problem, the exact bytes and the error
proxy are in that module's docstring), packed into an artifact of at most ``budget`` bytes.

Sources (CATALOGUE §2.5; code written here): mixed precision by tensor group [03-20b], Hessian-sensitivity
ranking [03-31]; selective ±1 pruning to close an overshoot [03-25] (PR #1019).

3. Select: multiple-choice knapsack by dynamic programming over bytes, each option's bytes rounded
   *up* to a resolution of budget/20,000 (so the chosen sum never exceeds the budget).
4. Pack the plan. While the real file is over budget: selective ±1 pruning
   (:mod:`pgolf.quant.selective_prune`) of the fewest cheapest entries when the overshoot is small,
   else the group whose next-cheaper option loses the least weighted error per byte moves down.
   The returned artifact's real size is asserted ≤ budget; an unreachable budget is a BudgetError.

The weights w_g of the objective Σ_g w_g · err_g: 1 (``weights="hessian"``), or the measured exchange rate
Δloss_g / err_g of :func:`loss_weights` (``weights="loss"``, the loss on self-generated text); with
``verify`` > 0 the plans optimal under each weighting (and their one-trade neighbours) are scored by that
loss and the best is kept.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor

from pgolf.artifact import streams
from pgolf.errors import BudgetError, ConfigError
from pgolf.export.search import LossFn, Measured, Option, PackSettings, Search, SearchSpace
from pgolf.quant.grid import QuantTensor, dequantize_tensor
from pgolf.quant.intgrid import QuantSpec
from pgolf.quant.selective_prune import apply_pruning, prune_order, pruned_cost
from pgolf.roles import RoleMap

NEEDED_WHEN = "scheme.name == 'budget'"

DP_STATES = 20_000
"""Byte resolution of the knapsack: budget / DP_STATES (rounded up)."""
PRUNE_MAX_FRACTION = 0.01
"""Selective pruning is tried when the overshoot is at most this fraction of the model bytes."""


@dataclass(frozen=True)
class GroupChoice:
    """A row of the choices table: the option the plan chose for one group, its bytes and errors."""

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
    choices: list[GroupChoice]
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


# --------------------------------------------------------------------------- the plan and its file


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
    return solve(s, budget, loss_fn=loss_fn, weights=weights, verify=verify, meta=meta, scheme=scheme)


def solve(
    s: Search, budget: int, *, loss_fn: LossFn | None = None, weights: str = "loss", verify: int = 0,
    meta: Mapping[str, Any] | None = None, scheme: str = "budget",
) -> SearchResult:
    """Steps 3–4 (module docstring) for ``budget`` model bytes on ``s``'s measurements (made once, on the
    first call, and reused by later ones)."""
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
    choices = [GroupChoice(g, len(s.groups[g]), m.option, _group_bytes(rep, g), m.herr, w.get(g, 1.0)) for g, m in plan.items()]
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
