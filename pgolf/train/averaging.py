"""Weight averaging during training: EMA or SWA, and the average is what the run exports.

Sources (CATALOGUE §2.4): EMA [03-20d] (PR #287): θ̄ ← d·θ̄ + (1 − d)·θ after every step, d = 0.997
(0.9965 from [04-09b]), kept in fp32, initialised to the starting weights; [03-22] credits it −0.0006 vs
SWA. SWA [03-20a] (PR #162): the uniform mean of snapshots every 50 steps while the LR multiplier is
below 0.5 ([03-20b] 0.4, [03-20c] every 120). In [03-22]/[03-23] the SWA sum was accumulated and never
applied (CATALOGUE §5.2); here an enabled average is always the exported one, and EMA and SWA are
exclusive (config check).

EMA by fraction (``train.ema.horizon_frac`` = f): d_t = 1 − 1/max(1, f·N̂_t) with N̂_t = (step + 1)/p_t the
projected step count of the whole run at progress p_t (the iteration budget without a wallclock one), so
the horizon is the same share of the run on any hardware.

Every floating tensor of the model's state dict is averaged, in fp32 on the model's device.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from pgolf.config import TrainConfig
from pgolf.optim.schedule import ema_decay, swa_snapshot


class WeightAverager:
    def __init__(self, model: nn.Module, cfg: TrainConfig):
        self.cfg = cfg
        self.kind = "ema" if cfg.ema.enabled else "swa" if cfg.swa.enabled else "none"
        self.avg: dict[str, Tensor] = {}
        self.count = 0
        self.last_decay = 0.0
        if self.kind == "ema":
            self.avg = {k: v.detach().float().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @property
    def enabled(self) -> bool:
        return self.kind != "none"

    def ema_decay(self, step: int, progress: float) -> float:
        """d for the update after optimizer step number ``step`` (1-based) at run ``progress``
        (:func:`pgolf.optim.schedule.ema_decay`)."""
        return ema_decay(step, progress, self.cfg)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int, progress: float, lr_mult: float) -> None:
        """After optimizer step ``step`` (1-based), at ``progress`` with LR multiplier ``lr_mult``."""
        if self.kind == "ema":
            d = self.last_decay = self.ema_decay(step, progress)
            for k, v in model.state_dict().items():
                if k in self.avg:
                    self.avg[k].mul_(d).add_(v.detach().float(), alpha=1.0 - d)
            self.count += 1
        elif self.kind == "swa":
            if swa_snapshot(step, progress, lr_mult, self.cfg):
                if not self.avg:
                    self.avg = {k: v.detach().float().clone() for k, v in model.state_dict().items()
                                if v.is_floating_point()}
                else:
                    for k, v in model.state_dict().items():
                        if k in self.avg:
                            self.avg[k].add_(v.detach().float())
                self.count += 1

    def averaged_state(self, model: nn.Module) -> dict[str, Tensor] | None:
        """The state dict to export (model dtypes), or None (off, or SWA with no snapshot yet)."""
        if not self.enabled or not self.avg or (self.kind == "swa" and self.count == 0):
            return None
        div = float(self.count) if self.kind == "swa" else 1.0
        out = {}
        for k, v in model.state_dict().items():
            out[k] = (self.avg[k] / div).to(v.dtype) if k in self.avg else v.detach().clone()
        return out

    def state_dict(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        return ({f"{self.kind}.{k}": v for k, v in self.avg.items()},
                {"kind": self.kind, "count": self.count, "last_decay": self.last_decay})

    def load_state_dict(self, tensors: dict[str, Tensor], info: dict[str, Any]) -> None:
        if info.get("kind", self.kind) != self.kind:
            raise ValueError(f"checkpoint averages are {info.get('kind')}, config asks for {self.kind}")
        pre = f"{self.kind}."
        self.avg = {k[len(pre):]: v.clone() for k, v in tensors.items() if k.startswith(pre)}
        self.count = int(info.get("count", 0))
        self.last_decay = float(info.get("last_decay", 0.0))
