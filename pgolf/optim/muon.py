"""Muon: momentum SGD whose update for a matrix is orthogonalised by a Newton–Schulz iteration.

Source: modded-nanogpt (Keller Jordan), as used by the challenge's naive baseline — root
``train_gpt.py`` of openai/parameter-golf, record [03-17b] (no PR; CATALOGUE §1.4).

For a 2-D parameter p with gradient g, momentum μ and learning rate η:

    b  ← μ·b + g                                   (momentum buffer)
    g' = g + μ·b                                   (Nesterov; plain momentum: g' = b)
    X  = NS₅(g')                                   (in bf16, see :func:`newton_schulz`)
    p  ← p − η·√max(1, rows/cols)·X

NS₅ approximates the orthogonal polar factor U Vᵀ of g' = U S Vᵀ: X₀ = g'/‖g'‖_F (transposed
when rows > cols, so A below is the smaller Gram matrix), then five steps of the odd quintic

    A = X Xᵀ,   X ← a·X + (b·A + c·A²)·X,   (a, b, c) = (3.4445, −4.7750, 2.0315),

which maps every singular value σ ∈ (0, 1] towards a band around 1 (≈[0.7, 1.2]) rather than to
exactly 1 — fast and good enough for an update direction.

Options (each off by default):

- **decoupled weight decay** ``weight_decay`` = λ: p ← p·(1 − η·λ) before the update ([03-19f] 0.02,
  [03-20a] PR #162 0.04, [04-01] PR #1218 0.085, [04-09b] PR #1493 0.095). The trainer scales λ per
  step (WD taper, :func:`pgolf.optim.schedule.wd_multiplier`) by setting the group's ``weight_decay`` to
  ``base_wd × wd_mult`` (:func:`pgolf.optim.apply_step`).
- **MuonEq-R** ``row_normalize``: each row of the momentum-corrected gradient g' is scaled to unit ℓ2
  norm before Newton–Schulz, g'_i ← g'_i/‖g'_i‖ ([04-03] PR #1285, arXiv:2603.28254; "~0.001 BPB").
- **Polar Express** ``ns="polar_express"``: a different (a, b, c) for each of the five iterations
  (:data:`POLAR_EXPRESS_COEFFS`, [04-23] PR #1787, coefficients from PR #1344), which pushes the
  singular values closer to 1 in the same five steps.

Distribution (the optimizer owns its collectives; without a process group it is one process):
matrix i of a parameter group is processed on rank i mod world_size, which writes its update
into a flat bf16 buffer (zeros elsewhere); one all-reduce (SUM) gives every rank all updates.
Gradients must already be identical on all ranks (DDP or an explicit all-reduce). Consequence for
checkpoints: a matrix's momentum buffer exists only on the rank that owns it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from pgolf import dist

NS_COEFFS: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)
POLAR_EXPRESS_COEFFS: tuple[tuple[float, float, float], ...] = (
    (8.15655, -22.48329, 15.87877),
    (4.04293, -2.80892, 0.50002),
    (3.89167, -2.77248, 0.50606),
    (3.28575, -2.36813, 0.46449),
    (2.34654, -1.70978, 0.42324),
)
"""Per-iteration (a, b, c) of the Polar Express iteration ([04-23] PR #1787, CATALOGUE §2.1)."""


def newton_schulz(
    G: Tensor,
    steps: int = 5,
    coeffs: tuple[float, float, float] | tuple[tuple[float, float, float], ...] = NS_COEFFS,
    eps: float = 1e-7,
) -> Tensor:
    """Approximate orthogonalisation of G (shape [..., rows, cols]) in G's own dtype.

    ``coeffs`` is one (a, b, c) for every iteration, or one triple per iteration (Polar Express; its
    length must then be ``steps``). Muon calls it on bf16; tests call it on float64. Batched over
    leading dims.
    """
    if G.ndim < 2:
        raise ValueError(f"newton_schulz expects a matrix, got shape {tuple(G.shape)}")
    per_step = isinstance(coeffs[0], tuple)
    if per_step and len(coeffs) != steps:
        raise ValueError(f"{len(coeffs)} per-iteration coefficient triples for {steps} steps")
    X = G / (G.norm(dim=(-2, -1), keepdim=True) + eps)
    transposed = G.size(-2) > G.size(-1)
    if transposed:
        X = X.mT
    for i in range(steps):
        a, b, c = coeffs[i] if per_step else coeffs  # type: ignore[misc]
        A = X @ X.mT
        B = b * A + c * A @ A  # (c·A)@A, evaluated as the baseline does
        X = a * X + B @ X
    return X.mT if transposed else X


def muon_direction(g: Tensor, buf: Tensor, group: dict[str, Any]) -> Tensor:
    """The orthogonalized update of a gradient ``g`` ([rows, cols] or a bank [k, rows, cols]) with its
    momentum buffer ``buf`` (updated in place): b ← μb + g; g' = g + μb (Nesterov) or b; MuonEq-R rows
    when ``row_normalize``; Newton–Schulz in bf16 with the group's coefficients; × √max(1, rows/cols)."""
    mu = group["momentum"]
    buf.mul_(mu).add_(g)
    g = g.add(buf, alpha=mu) if group["nesterov"] else buf
    if group.get("row_normalize", False):  # MuonEq-R
        g = g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    coeffs = POLAR_EXPRESS_COEFFS if group.get("ns") == "polar_express" else NS_COEFFS
    x = newton_schulz(g.bfloat16(), steps=group["backend_steps"], coeffs=coeffs)
    return x * max(1.0, g.size(-2) / g.size(-1)) ** 0.5


def apply_update(p: Tensor, update: Tensor, group: dict[str, Any]) -> None:
    """p ← p·(1 − η·λ) (decoupled decay, before the update) − η·update."""
    decay = group["lr"] * group.get("weight_decay", 0.0)
    if decay > 0:
        p.mul_(1.0 - decay)
    p.add_(update.to(p.dtype), alpha=-group["lr"])


class Muon(torch.optim.Optimizer):
    """Muon for 2-D parameters. Per group: ``lr``, ``momentum`` (the trainer may set it every
    step, see :func:`pgolf.optim.schedule.muon_momentum`), ``backend_steps``, ``nesterov``,
    ``weight_decay`` (which the trainer may set every step), ``row_normalize``, ``ns``."""

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.02,
        momentum: float = 0.95,
        backend_steps: int = 5,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        row_normalize: bool = False,
        ns: str = "quintic",
    ):
        if lr < 0 or not 0 <= momentum < 1 or backend_steps < 1 or weight_decay < 0:
            raise ValueError(f"bad Muon hyperparameters lr={lr} momentum={momentum} backend_steps={backend_steps} "
                             f"weight_decay={weight_decay}")
        if ns not in ("quintic", "polar_express"):
            raise ValueError(f"Muon ns must be quintic or polar_express, got {ns!r}")
        if ns == "polar_express" and backend_steps != len(POLAR_EXPRESS_COEFFS):
            raise ValueError(f"Polar Express has {len(POLAR_EXPRESS_COEFFS)} iterations, not {backend_steps}")
        super().__init__(params, dict(lr=lr, momentum=momentum, backend_steps=backend_steps, nesterov=nesterov,
                                      weight_decay=weight_decay, row_normalize=row_normalize, ns=ns))
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(f"Muon takes 2-D parameters only, got shape {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        world, rank = dist.world_size(), dist.rank()
        for group in self.param_groups:
            params: list[Tensor] = group["params"]
            if not params:
                continue
            flat = torch.zeros(sum(p.numel() for p in params), device=params[0].device, dtype=torch.bfloat16)
            offset = 0
            for i, p in enumerate(params):
                n = p.numel()
                if i % world == rank and p.grad is not None:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(p.grad)
                    flat[offset : offset + n] = muon_direction(p.grad, state["momentum_buffer"], group).reshape(-1)
                offset += n
            # Every element is non-zero on at most one rank, so the SUM is exact in bf16.
            dist.all_reduce_(flat)
            offset = 0
            for p in params:
                n = p.numel()
                apply_update(p, flat[offset : offset + n].view_as(p), group)
                offset += n
        return loss
