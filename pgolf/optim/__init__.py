"""The optimizer split of the naive baseline [03-17b] (root ``train_gpt.py``, no PR; CATALOGUE §1.4),
read from the parameters' declared roles (:attr:`pgolf.roles.Role.optimizer`, via
:func:`pgolf.model.gpt.parameter_groups`), so a technique's new tensor lands in its group without a change here:

- token embedding (and hashed / value-embedding tables): Adam at ``tied_embed_lr`` (tied) or ``embed_lr`` (untied);
- untied output head: Adam at ``head_lr``;
- 2-D matrices (attention, MLP, projections): :class:`~pgolf.optim.muon.Muon` at ``matrix_lr``;
- vectors, scalars, control tensors (incl. the 2×d ``resid_mix``), ``skip_weights`` and gates: Adam at
  ``scalar_lr``.

Adam: betas (beta1, beta2) unless the group has its own (``embed_betas``, ``head_betas``, ``scalar_betas``), eps ``adam_eps``, ``fused`` on CUDA only; with ``adam_wd``/``embed_wd`` > 0
the embedding and scalar groups are AdamW (decoupled decay, [03-20a]); Muon takes ``muon_wd``,
``muon_row_normalize`` (MuonEq-R) and ``muon_ns``. Every param group carries ``base_lr`` and
``base_wd``; before each step the trainer calls :func:`apply_step` with the schedule's settings
(:class:`pgolf.optim.schedule.StepSettings`): ``lr = base_lr × lr_mult``, ``weight_decay = base_wd × wd_mult``
(WD taper) and, on groups that have a ``momentum`` key (Muon), ``momentum``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from pgolf.config import OptimConfig
from pgolf.model.gpt import parameter_groups
from pgolf.optim.muon import Muon, newton_schulz

if TYPE_CHECKING:
    from pgolf.optim.schedule import StepSettings

__all__ = ["Muon", "apply_step", "build_optimizers", "newton_schulz"]


def build_optimizers(model: nn.Module, cfg: OptimConfig) -> list[torch.optim.Optimizer]:
    """Optimizers in the baseline's order: [embed Adam, (head Adam), Muon, scalar Adam].

    Groups with no parameters get no optimizer. Every parameter of ``model`` is in exactly one group.
    """
    groups = parameter_groups(model)
    tied = not groups["head"]
    all_params = [p for lst in groups.values() for _, p in lst]
    fused = bool(all_params) and all(p.is_cuda for p in all_params)

    def adam(params: list[nn.Parameter], lr: float, wd: float = 0.0,
             betas: tuple[float, ...] | None = None) -> torch.optim.Optimizer:
        cls = torch.optim.AdamW if wd > 0 else torch.optim.Adam
        return cls(
            [{"params": params, "lr": lr, "base_lr": lr, "weight_decay": wd, "base_wd": wd}],
            betas=tuple(betas) if betas is not None else (cfg.beta1, cfg.beta2),
            eps=cfg.adam_eps,
            fused=fused or None,
        )

    def params_of(key: str) -> list[nn.Parameter]:
        return [p for _, p in groups[key]]

    opts: list[torch.optim.Optimizer] = []
    if groups["embed"]:
        embed_wd = cfg.adam_wd if cfg.embed_wd is None else cfg.embed_wd
        opts.append(adam(params_of("embed"), cfg.tied_embed_lr if tied else cfg.embed_lr, embed_wd, cfg.embed_betas))
    if groups["head"]:
        opts.append(adam(params_of("head"), cfg.head_lr, betas=cfg.head_betas))
    if groups["matrix"]:
        muon_cls: type[Muon] = Muon
        if cfg.parallel_muon:  # imported behind its switch: a bundle without it leaves the module out
            from pgolf.optim.parallel_muon import ParallelMuon

            muon_cls = ParallelMuon
        muon = muon_cls(
            params_of("matrix"),
            lr=cfg.matrix_lr,
            momentum=cfg.muon_momentum,
            backend_steps=cfg.muon_backend_steps,
            nesterov=cfg.muon_nesterov,
            weight_decay=cfg.muon_wd,
            row_normalize=cfg.muon_row_normalize,
            ns=cfg.muon_ns,
        )
        for g in muon.param_groups:
            g["base_lr"], g["base_wd"] = cfg.matrix_lr, cfg.muon_wd
        opts.append(muon)
    if groups["scalar"]:
        opts.append(adam(params_of("scalar"), cfg.scalar_lr, cfg.adam_wd, cfg.scalar_betas))
    return opts


def apply_step(optimizers: list[torch.optim.Optimizer], s: StepSettings) -> None:
    """Step settings ``s`` into every param group (the one place that writes them): ``lr = base_lr × s.lr_mult``;
    ``weight_decay = base_wd × s.wd_mult`` on groups that carry ``base_wd``; ``s.momentum`` on groups that have
    that key (Muon; Adam's are ``betas`` and stay)."""
    for opt in optimizers:
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * s.lr_mult
            if "base_wd" in g:
                g["weight_decay"] = g["base_wd"] * s.wd_mult
            if "momentum" in g:
                g["momentum"] = s.momentum
