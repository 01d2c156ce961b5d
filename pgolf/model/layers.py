"""Building blocks shared by the model's modules: parameter-free RMSNorm, the casting linear layer and
:func:`declare`, the one way a module states its parameters' roles (:mod:`pgolf.roles`)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from pgolf.roles import Role


def rms_norm(x: Tensor) -> Tensor:
    """RMS-normalise the last dim (no learned gain; eps = finfo(dtype).eps, as F.rms_norm)."""
    return F.rms_norm(x, (x.size(-1),))


class RMSNorm(nn.Module):
    """:func:`rms_norm` as a parameter-free module: a named hook point (e.g. ``GPT.final_norm``, whose
    output is the LM-head input GPTQ calibrates the tied embedding on); numerics identical."""

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x)


def declare(module: nn.Module, **roles: Role) -> nn.Module:
    """Declare the roles of ``module``'s own parameters (``declare(block, attn_scale=Role.CONTROL)``)."""
    existing = dict(getattr(module, "param_roles", {}))
    existing.update(roles)
    module.param_roles = existing
    return module


class CastedLinear(nn.Linear):
    """``nn.Linear`` with fp32 weights cast to the input dtype at matmul time (bf16 compute).

    ``role`` is the weight's :class:`~pgolf.roles.Role` (a bias, if any, is a control tensor).
    ``zero_init=True`` starts the weight at zero and marks it (``_zero_init``) so that later
    re-initialisations (e.g. orthogonal init) can leave it alone, as the records do.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False, zero_init: bool = False,
                 *, role: Role):
        super().__init__(in_features, out_features, bias=bias)
        declare(self, weight=role, **({"bias": Role.CONTROL} if bias else {}))
        self._zero_init = zero_init
        self.weight_fn: nn.Module | None = None
        """A transform of the weight used in the forward pass (QAT's fake quantization,
        :mod:`pgolf.quant.qat`), swapped in from outside the model; None = the weight as it is."""
        if zero_init:
            nn.init.zeros_(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        w = self.weight if self.weight_fn is None else self.weight_fn(self.weight)
        return F.linear(x, w.to(x.dtype), bias)
