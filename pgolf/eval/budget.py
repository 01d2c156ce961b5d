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
"""

from __future__ import annotations

import time
from contextlib import contextmanager

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
        """BudgetError unless ``seconds`` more (the least the method must do) fit the budget."""
        if self.budget > 0 and self.elapsed() + seconds > self.budget:
            raise BudgetError(
                f"eval budget of {self.budget:.0f} s is too small: {what} needs ≈{seconds:.0f} s more after "
                f"{self.elapsed():.0f} s (raise eval.budget_seconds, or choose a cheaper method or setting)")

    def act(self, message: str) -> None:
        self.actions.append(f"{self.elapsed():.1f}s: {message}")

    def report(self) -> dict:
        total = self.elapsed()
        return {"budget_seconds": self.budget, "total_seconds": total, "phases": dict(self.phases),
                "actions": list(self.actions), "within_budget": self.budget <= 0 or total <= self.budget}
