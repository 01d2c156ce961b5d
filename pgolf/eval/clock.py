"""The evaluation's own clock: seconds per phase, projections, and the decision to degrade.

RULES.md: evaluation ≤ 600 s, compile warm-up included to be safe. The clock starts when the artifact
is opened (the runner passes that instant), so load, dequantization, compile warm-up, any precompute,
scoring and adaptation all count. A method measures its throughput early (on random tokens during the
warm-up, then on its own batches), projects what is left, and

1. refuses to start when even scoring without adaptation cannot finish inside the budget
   (:meth:`EvalClock.require`: a :class:`~pgolf.errors.BudgetError`, nothing written);
2. degrades otherwise: skips the remaining global TTT phases, then stops adapting for the rest of
   the stream (scoring only), whenever the projection with the adaptation would overrun
   (:meth:`EvalClock.affords`). Each decision is an entry of :attr:`EvalClock.actions`.

A margin of ``reserve`` (default 3 % of the budget) is kept for the final bookkeeping.

Under torchrun there is one clock for all ranks: :meth:`EvalClock.agree_start` sets every rank's
start to the earliest (the largest elapsed, one MAX all-reduce), :meth:`require` refuses on every rank
when one rank's projection is over (MAX of elapsed + need), and :meth:`agree` makes a decision taken
where every rank is (a phase boundary, a chunk of the ``sgd`` mode) unanimous: adapt only while every
rank affords it (MIN). Decisions taken where the ranks are not in step (inside the LoRA document
stream) are sticky flags on the shared :class:`~pgolf.eval.work.Board`: the first rank whose projection
overruns raises the flag and every rank applies it at its next step.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch

from pgolf import dist
from pgolf.errors import BudgetError


class Rate:
    """Seconds per unit (token, window, step), measured by accumulation."""

    def __init__(self, seconds: float = 0.0, units: float = 0.0) -> None:
        self.seconds, self.units = seconds, units

    def add(self, seconds: float, units: float) -> None:
        self.seconds += seconds
        self.units += units

    def per_unit(self, fallback: float = 0.0) -> float:
        return self.seconds / self.units if self.units > 0 else fallback


class EvalClock:
    """Wallclock since ``start`` against ``budget`` seconds (0 = unlimited)."""

    def __init__(self, budget: float, start: float | None = None, reserve: float = 0.03) -> None:
        self.budget = float(budget)
        self.start = time.perf_counter() if start is None else start
        self.reserve = reserve * self.budget
        self.phases: dict[str, float] = {}
        self.actions: list[str] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @contextmanager
    def phase(self, name: str):
        """Add the wallclock of the block to ``phases[name]``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - t0

    def add_phase(self, name: str, seconds: float) -> None:
        self.phases[name] = self.phases.get(name, 0.0) + seconds

    def affords(self, seconds: float, what: str = "") -> bool:
        """Whether ``seconds`` more work still ends inside the budget (minus the reserve). ``what`` names
        the decision (``adapt``: keep adapting; ``global``: run pending global phases)."""
        return self.budget <= 0 or self.elapsed() + seconds <= self.budget - self.reserve

    def require(self, seconds: float, what: str) -> None:
        """BudgetError unless ``seconds`` more (the least the method must do) fit the budget. Under torchrun
        a collective: the largest elapsed + ``seconds`` of any rank decides for all."""
        if self.budget <= 0:
            return
        now = self.elapsed()
        need = torch.tensor([now + seconds, now], dtype=torch.float64, device=dist.collective_device())
        if dist.world_size() > 1:
            dist.all_reduce_(need, "max")
        if need[0].item() > self.budget:
            raise BudgetError(
                f"eval budget of {self.budget:.0f} s is too small: {what} needs ≈{need[0].item() - need[1].item():.0f} s "
                f"more after {need[1].item():.0f} s (raise eval.budget_seconds, or choose a cheaper method or setting)")

    def agree_start(self) -> None:
        """Every rank's start := the earliest start of any rank (collective under torchrun; no-op alone)."""
        if dist.world_size() > 1:
            e = torch.tensor([self.elapsed()], dtype=torch.float64, device=dist.collective_device())
            dist.all_reduce_(e, "max")
            self.start = time.perf_counter() - e.item()

    def agree(self, ok: bool) -> bool:
        """True only if ``ok`` on every rank (collective under torchrun: a MIN all-reduce)."""
        if dist.world_size() == 1:
            return ok
        t = torch.tensor([1.0 if ok else 0.0], dtype=torch.float64, device=dist.collective_device())
        dist.all_reduce_(t, "min")
        return t.item() > 0

    def act(self, message: str) -> None:
        self.actions.append(f"{self.elapsed():.1f}s: {message}")

    def report(self) -> dict:
        total = self.elapsed()
        return {"budget_seconds": self.budget, "total_seconds": total, "phases": dict(self.phases),
                "actions": list(self.actions), "within_budget": self.budget <= 0 or total <= self.budget}
