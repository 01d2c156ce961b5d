"""Quantization-aware training as a model transform: the linears' weight function is swapped.

Sources (CATALOGUE §2.5 "QAT with STE"): STE fake quantization [03-19c], [03-19h]; *late* QAT, switched
on when the LR multiplier falls below a threshold, [03-21] (PR #315, 0.1) and [03-22] (PR #414, 0.15,
credited to PR #286); soft-round QAT [03-31] (PR #1204).

Maths, per row i of a weight W [rows, cols], b bits, qmax = 2^(b−1) − 1 — the grid of
``QuantSpec(bits=b, clip="max")`` (:func:`pgolf.quant.intgrid.quantize_rtn`):

    s_i = fp16(max_j |W_ij| / qmax)  (floored at 2^−24),   Q(W)_ij = clamp(round(W_ij / s_i), −qmax, qmax) · s_i
    ste:         W' = W + a · stopgrad(Q(W) − W)                       (forward Q(W), gradient of the identity)
    soft_round:  z = W/s, W' = W + a · (clamp(⌊z⌋ + σ(α(z − ⌊z⌋ − ½)), −qmax, qmax) · s − W)

with a ∈ {0, 1} the on switch. (The records floor s at 1/31, the step of their own export grid; pgolf's
grids use the fp16 floor, and QAT matches the grid pgolf exports with.)

Why a *tensor* switch: [03-21]'s late QAT never ran because ``torch.compile`` constant-folded the Python
class attribute that switched it on. Here ``a`` and α are buffers of the weight function, read by the
compiled graph like any input, so flipping them with ``fill_`` takes effect at once, compiled or not,
without a recompile (tested compiled). The cost is computing Q(W) every step while a = 0 — O(weights),
small next to the O(weights × tokens) matmuls. Fake quantization applies only in training mode.

Which linears: every :class:`~pgolf.model.layers.CastedLinear` whose weight role goes to Muon
(attention q/k/v/o, MLP up/down, other projections), the tensors the export quantizes to low bits.

Low-bit weights (``kind`` ``ternary`` / ``binary``, :mod:`pgolf.quant.lowbit`; the ternary record [03-24]
PR #640 and the binary non-record folder of the same day): the attention and MLP linears get a
:class:`~pgolf.quant.lowbit.LowBitWeight` (absmean groups of ``group_size``), on from the first step as the
records trained, in evaluation mode too (the model *is* low-bit). They stay attached when training ends
(:meth:`Qat.detach` keeps them; ``force=True`` removes them): the state dict holds the float master weights,
which the low-bit export packs, and the model evaluated before export computes what the artifact computes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from pgolf.config import QatConfig
from pgolf.model.layers import CastedLinear
from pgolf.quant.intgrid import clip_to_scale
from pgolf.quant.intgrid import qmax as grid_qmax

NEEDED_WHEN = "train.qat.kind != 'off'"


class FakeQuant(nn.Module):
    """The weight function W → W' of the module docstring; buffers ``active`` and ``alpha`` (not saved)."""

    def __init__(self, bits: int, kind: str):
        super().__init__()
        if kind not in ("ste", "soft_round"):
            raise ValueError(f"unknown QAT kind {kind!r}")
        self.bits, self.qmax, self.kind = bits, grid_qmax(bits), kind
        self.register_buffer("active", torch.zeros((), dtype=torch.float32), persistent=False)
        self.register_buffer("alpha", torch.ones((), dtype=torch.float32), persistent=False)

    def scale(self, w: Tensor) -> Tensor:
        """[rows, 1]: the step the grid stores (``clip_to_scale`` of the row max)."""
        return clip_to_scale(w.detach().float().abs().amax(dim=1), self.bits).float()[:, None]

    def forward(self, w: Tensor) -> Tensor:
        if not self.training:
            return w
        s = self.scale(w)
        w32 = w.float()
        if self.kind == "ste":
            q = torch.clamp(torch.round(w32 / s), -self.qmax, self.qmax) * s
            return (w32 + self.active * (q - w32).detach()).to(w.dtype)
        z = w32 / s
        fl = torch.floor(z)
        q = torch.clamp(fl + torch.sigmoid(self.alpha * (z - fl - 0.5)), -self.qmax, self.qmax) * s
        return (w32 + self.active * (q - w32)).to(w.dtype)


@dataclass
class Qat:
    """The attached transform: its weight functions and the switch schedule."""

    cfg: QatConfig
    owners: list[CastedLinear] = field(default_factory=list)
    """The linears whose ``weight_fn`` is a :class:`FakeQuant`."""
    on: bool = False
    started_at: float | None = None

    @property
    def fns(self) -> list[nn.Module]:
        return [m.weight_fn for m in self.owners]  # type: ignore[misc]

    def set(self, active: bool, alpha: float | None = None) -> None:
        for f in self.fns:
            f.active.fill_(1.0 if active else 0.0)
            if alpha is not None and isinstance(f, FakeQuant):
                f.alpha.fill_(alpha)
        self.on = active

    def reset(self) -> None:
        """Off again, as before the first :meth:`update` (after the trainer's rolled-back priming steps)."""
        self.set(False)
        self.started_at = None

    def update(self, progress: float, lr_mult: float) -> bool:
        """Apply the schedule before a step at run ``progress`` with LR multiplier ``lr_mult``; True when
        QAT switches on at this call."""
        c = self.cfg
        switch = c.started(progress, lr_mult)
        turned_on = switch and not self.on
        if turned_on:
            self.started_at = progress
        alpha = None
        if c.kind == "soft_round" and (switch or self.on):
            start = progress if self.started_at is None else self.started_at
            t = 1.0 if c.soft_ramp_frac == 0 else min(1.0, (progress - start) / c.soft_ramp_frac)
            alpha = c.soft_alpha_start + (c.soft_alpha_end - c.soft_alpha_start) * t
        if switch or self.on:
            self.set(True, alpha)
        return turned_on

    def detach(self, force: bool = False) -> None:
        """Remove the weight functions (the model is plain again). Low-bit weights stay unless ``force``:
        the trained model is the low-bit one (module docstring)."""
        if self.cfg.lowbit and not force:
            return
        for m in self.owners:
            m.weight_fn = None
        self.owners.clear()


def attach_qat(model: nn.Module, cfg: QatConfig) -> Qat | None:
    """Give every Muon-role CastedLinear of ``model`` a :class:`FakeQuant` weight function (inactive until
    :meth:`Qat.update` switches it on), or for ``ternary`` / ``binary`` every attention/MLP CastedLinear a
    :class:`~pgolf.quant.lowbit.LowBitWeight`; None when ``cfg.kind`` is ``off``."""
    if cfg.kind == "off":
        return None
    q = Qat(cfg)
    if cfg.lowbit:  # ternary / binary: the attention and MLP linears only (pgolf.quant.lowbit)
        from pgolf.quant.lowbit import LowBitWeight, is_lowbit_role

        for mod in model.modules():
            if isinstance(mod, CastedLinear) and is_lowbit_role(mod.param_roles["weight"]):
                mod.weight_fn = LowBitWeight(cfg.kind, cfg.group_size, cfg.shrink).to(mod.weight.device)
                q.owners.append(mod)
        return q
    for mod in model.modules():
        if isinstance(mod, CastedLinear) and mod.param_roles["weight"].optimizer == "matrix":
            mod.weight_fn = FakeQuant(cfg.bits, cfg.kind).to(mod.weight.device)
            q.owners.append(mod)
    return q
