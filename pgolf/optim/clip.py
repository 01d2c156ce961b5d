"""Gradient clipping by the global norm, also when parallel Muon holds the matrix gradients.

``optim.grad_clip_norm`` (``GRAD_CLIP_NORM`` of the root ``train_gpt.py``, off in the baseline [03-17b];
CATALOGUE §1.4) scales every gradient by c = min(1, max_norm / (‖g‖ + 1e-6)), where ‖g‖ is the L2 norm
over all parameters of the gradient the optimizers will use — :func:`torch.nn.utils.clip_grad_norm_`.

With :class:`~pgolf.optim.parallel_muon.ParallelMuon` (``reduces_gradients``) the matrices' gradients are still local when the
clip runs (DDP ignores them; the optimizer reduce-scatters them), so ‖g‖ is assembled from parts:

    ‖g‖² = Σ_other ‖ḡ_p‖²  +  Σ_ranks Σ_slices ‖ḡ_slice‖²

the first term over parameters DDP already averaged (the same on every rank), the second from
:meth:`ParallelMuon.reduce` (each rank's slices of the rank-mean matrix gradients, one scalar
all-reduce). The coefficient then scales the averaged gradients and the held slices, which is the clip
of plain Muon on the averaged gradient up to float summation order (tested on 2 gloo processes).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from pgolf import dist


def clip_gradients(params: Iterable[nn.Parameter], optimizers: Sequence[torch.optim.Optimizer], max_norm: float) -> float:
    """Clip the gradients of ``params`` to global norm ``max_norm``; return the norm before clipping."""
    params = list(params)
    banked = [o for o in optimizers if getattr(o, "reduces_gradients", False)]  # ParallelMuon (not imported: bundles)
    if not banked:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    sharded = {id(p) for o in banked for g in o.param_groups for p in g["params"]}
    others = [p for p in params if p.grad is not None and id(p) not in sharded]
    sq = torch.zeros((), dtype=torch.float64, device=params[0].device if params else "cpu")
    for o in banked:
        sq += o.reduce()
    dist.all_reduce_(sq)
    for p in others:
        sq += p.grad.double().square().sum()
    total = sq.sqrt()
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for p in others:
        p.grad.mul_(coef.to(p.grad.dtype))
    for o in banked:
        o.scale_reduced(coef.float())
    return float(total)
