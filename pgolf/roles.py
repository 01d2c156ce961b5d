"""Parameter roles: what each tensor of the model *is*, declared once by the module that owns it.

Every consumer that treats tensors differently reads the role, never the state-dict name:

======================  =============  ==========  ==========  =================  ======
role                    optimizer      family      quantized   Hessian (GPTQ)     hot
======================  =============  ==========  ==========  =================  ======
``embed``               embed (Adam)   embed       yes         head input (tied)  yes
``head``                head (Adam)    embed       yes         head input         no
``attn_q/k/v``          matrix (Muon)  attn        yes         layer input        q only
``attn_o``              matrix (Muon)  attn        yes         layer input        no
``mlp_up``              matrix (Muon)  mlp         yes         layer input        yes
``mlp_down``            matrix (Muon)  mlp         yes         layer input        no
``proj``                matrix (Muon)  other       yes         layer input        no
``ssm_in``/``ssm_out``  matrix (Muon)  attn        yes         layer input        no
``hash``                embed (Adam)   embed       yes         —                  no
``value_embed``         embed (Adam)   embed       yes         —                  no
``gate``                scalar (Adam)  other       yes         —                  no
``control``             scalar (Adam)  control     no (fp32)   —                  no
======================  =============  ==========  ==========  =================  ======

- *optimizer*: the group of :func:`pgolf.optim.build_optimizers` (``matrix`` roles go to Muon and must
  be 2-D; ``embed`` roles use the embedding LR; ``scalar`` the scalar LR).
- *quantized*: the export may quantize it (one tensor group per role in the byte-budget search);
  ``control`` tensors (scales, mixes, gains, skip weights, lambdas) stay float (fp32) as in every record.
- *Hessian*: where GPTQ's input Hessian comes from — the input of the linear that owns the weight,
  or the head input (the final norm's output) for the LM head (the tied embedding when there is no
  untied head, [04-05]).
- *hot*: the row-reordered streams of [04-27a]'s per-group compressor (tok_emb, c_q, mlp.fc).
- SwiGLU's gate (``mlp.gate``, ``model.mlp_act=swiglu``) is an ``mlp_up`` matrix: the up projection's input,
  shape and treatment (Muon, the MLP quantization group and stream, QAT and low-bit weights).
- *family*: the coarse class the planner's fitted statistics are kept for. The SSM mixer's projections
  (:mod:`pgolf.model.ssm`, the sequence mixer that takes attention's place) are of the ``attn`` family, so
  every export scheme treats them as it treats attention matrices (the Mamba-3 hybrid's GPTQ int6 did).

Declaring: a module lists its own parameters in ``param_roles`` (``{local name: Role}``), e.g.
``CastedLinear(d, d, role=Role.ATTN_Q)``; :func:`pgolf.model.gpt.parameter_roles` collects them and
checks that every parameter has exactly one. A technique that adds a tensor declares its role where it
creates it, and lands in the right optimizer group, quantization group, stream and calibration without
touching those modules (nanochat ``setup_optimizer`` lists its parameters the same way, by module).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

from pgolf.errors import ConfigError


class Role(str, Enum):
    EMBED = "embed"
    """The token embedding (also the LM head when tied)."""
    HEAD = "head"
    """An untied output head."""
    ATTN_Q = "attn_q"
    ATTN_K = "attn_k"
    ATTN_V = "attn_v"
    ATTN_O = "attn_o"
    MLP_UP = "mlp_up"
    MLP_DOWN = "mlp_down"
    PROJ = "proj"
    """Other learned 2-D projections (e.g. BigramHash's table → model width)."""
    SSM_IN = "ssm_in"
    """The SSM mixer's input projection (z, u, B, C, Δ of :mod:`pgolf.model.ssm`)."""
    SSM_OUT = "ssm_out"
    """The SSM mixer's output projection."""
    HASH = "hash"
    """Hashed n-gram embedding tables (BigramHash)."""
    VALUE_EMBED = "value_embed"
    """Value-embedding tables added to attention values."""
    GATE = "gate"
    """Small learned gate weights (attention output gates, SmearGate)."""
    CONTROL = "control"
    """Scales, residual mixes, query gains, skip weights, lane lambdas."""

    @property
    def optimizer(self) -> str:
        """``embed``, ``head``, ``matrix`` (Muon) or ``scalar``."""
        return _OPTIMIZER[self]

    @property
    def family(self) -> str:
        """``embed``, ``attn``, ``mlp``, ``other`` or ``control``."""
        return _FAMILY[self]

    @property
    def quantized(self) -> bool:
        return self is not Role.CONTROL

    @property
    def hessian(self) -> str | None:
        """``"input"`` (the owning linear's input), ``"head"`` (the head input) or None."""
        return _HESSIAN.get(self)

    @property
    def hot(self) -> bool:
        return self in (Role.EMBED, Role.ATTN_Q, Role.MLP_UP)


_OPTIMIZER = {
    Role.EMBED: "embed", Role.HEAD: "head", Role.HASH: "embed", Role.VALUE_EMBED: "embed",
    Role.ATTN_Q: "matrix", Role.ATTN_K: "matrix", Role.ATTN_V: "matrix", Role.ATTN_O: "matrix",
    Role.MLP_UP: "matrix", Role.MLP_DOWN: "matrix", Role.PROJ: "matrix",
    Role.SSM_IN: "matrix", Role.SSM_OUT: "matrix",
    Role.GATE: "scalar", Role.CONTROL: "scalar",
}
_FAMILY = {
    Role.EMBED: "embed", Role.HEAD: "embed", Role.HASH: "embed", Role.VALUE_EMBED: "embed",
    Role.ATTN_Q: "attn", Role.ATTN_K: "attn", Role.ATTN_V: "attn", Role.ATTN_O: "attn",
    Role.MLP_UP: "mlp", Role.MLP_DOWN: "mlp", Role.PROJ: "other", Role.SSM_IN: "attn", Role.SSM_OUT: "attn", Role.GATE: "other", Role.CONTROL: "control",
}
_HESSIAN = {
    Role.EMBED: "head", Role.HEAD: "head",
    Role.ATTN_Q: "input", Role.ATTN_K: "input", Role.ATTN_V: "input", Role.ATTN_O: "input",
    Role.MLP_UP: "input", Role.MLP_DOWN: "input", Role.PROJ: "input",
    Role.SSM_IN: "input", Role.SSM_OUT: "input",
}

QUANT_GROUPS: tuple[str, ...] = tuple(r.value for r in Role if r.quantized)
"""Quantization groups of the byte-budget search, in the order it reports them."""
HOT_GROUPS: tuple[str, ...] = tuple(r.value for r in Role if r.hot)
"""Streams whose rows are reordered ([04-27a]): the role names of the hot roles."""

RoleMap = Mapping[str, Role]
"""State-dict name → role (from :func:`pgolf.model.gpt.parameter_roles` / ``model_roles``)."""


def role_of(roles: RoleMap, name: str) -> Role:
    """``roles[name]``, or one clear error naming the tensor (a tensor the model did not declare)."""
    try:
        return roles[name]
    except KeyError:
        raise ConfigError(f"tensor {name!r} has no declared role (not a parameter of this model config)") from None


def check_roles(roles: RoleMap, names) -> None:
    """Every name in ``names`` has a role and every role names a tensor in ``names``."""
    names = set(names)
    missing = sorted(names - set(roles))
    if missing:
        raise ConfigError(f"tensor {missing[0]!r} has no declared role ({len(missing)} without one)")
    extra = sorted(set(roles) - names)
    if extra:
        raise ConfigError(f"role declared for {extra[0]!r}, which is not in the state dict")
