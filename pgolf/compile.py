"""``torch.compile`` as pgolf uses it: static shapes, and a recompile limit that a run never hits.

Why: dynamo keeps at most ``recompile_limit`` (8 in torch 2.13) compiled graphs per code object and
then *silently* runs that code eagerly. ``GPT.forward`` gets a graph per model instance, train/eval
mode, recurrence plan, QAT state and final short batch; a sweep or a bench that builds many models in
one process passes 8 quickly, and its later runs are 25–35 % slower for no visible reason (found by
``bench/ablations.py``, docs/benchmarks.md). :func:`compile_model` raises the limits before compiling.
"""

from __future__ import annotations

import torch
from torch import nn

RECOMPILE_LIMIT = 64


def compile_model(module: nn.Module) -> nn.Module:
    """``torch.compile(module, dynamic=False)`` with dynamo's per-code recompile limit raised to
    :data:`RECOMPILE_LIMIT` (never lowered)."""
    import torch._dynamo as dynamo

    cfg = dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, name):
            setattr(cfg, name, max(int(getattr(cfg, name)), RECOMPILE_LIMIT))
    return torch.compile(module, dynamic=False)
