"""``torch.compile`` as pgolf uses it: static shapes, and a recompile limit that a run never hits.

Why: dynamo keeps at most ``recompile_limit`` (8 in torch 2.13) compiled graphs per code object and
then *silently* runs that code eagerly. ``GPT.forward`` gets a graph per model instance, train/eval
mode, recurrence plan, QAT state and final short batch; a sweep or a bench that builds many models in
one process passes 8 quickly, and its later runs are 25–35 % slower for no visible reason (found by
``bench/ablations.py``, docs/benchmarks.md). :func:`compile_model` raises the limits before compiling.

:func:`resolve` decides ``train.compile=auto``: on for CUDA, off on a CPU. ``PGOLF_COMPILE_BACKEND`` names
another dynamo backend (the tests use ``aot_eager``: the same graphs and guards, no inductor codegen).
"""

from __future__ import annotations

import os

import torch
from torch import nn

RECOMPILE_LIMIT = 64


def resolve(setting: bool | str, device: torch.device | str) -> tuple[bool, str]:
    """(compile?, why) for ``train.compile`` = ``setting`` on ``device``."""
    if setting == "auto":
        on = torch.device(device).type == "cuda"
        return on, f"auto: {'CUDA' if on else 'eager on ' + torch.device(device).type + ' (inductor warm-up does not pay)'}"
    return bool(setting), "set explicitly"


def compile_model(module: nn.Module, *, fullgraph: bool = False) -> nn.Module:
    """``torch.compile(module, dynamic=False, fullgraph=fullgraph)`` with dynamo's per-code recompile limit
    raised to :data:`RECOMPILE_LIMIT` (never lowered), on ``PGOLF_COMPILE_BACKEND`` (default inductor)."""
    import torch._dynamo as dynamo

    cfg = dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, name):
            setattr(cfg, name, max(int(getattr(cfg, name)), RECOMPILE_LIMIT))
    backend = os.environ.get("PGOLF_COMPILE_BACKEND") or "inductor"
    return torch.compile(module, dynamic=False, fullgraph=fullgraph, backend=backend)
