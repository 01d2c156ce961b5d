"""Factored tied embedding and the vocabulary bias of the ternary record [03-24]
(``2026-03-24_74M_Ternary_UNet_FP8_10L_8192BPE_YaRN_NeoMuon``, PR #640; code written here).

Maths (E the token table [V, e], e = ``model.embed.factor_dim`` < d):

    x0 = rms(P_in E[idx])                   P_in  [d, e]  ("embed_proj": e → d)
    logits = (P_out h) Eᵀ + b               P_out [e, d]  ("embed_proj_rev": d → e), h the final-norm output,
                                            b [V] the vocabulary bias (``model.embed.vocab_bias``, zero-init)

The record's README: "8192×254 bottleneck with learned 254-to-768 and 768-to-254 projections … frees
~4MB for wider MLP". Its projections are trained by Muon (2-D, not excluded by name) and stored fp8;
here they are ``proj``-role linears (Muon; kept float by the low-bit export: the records' ternary set is
attention and MLP only). The bias is a ``control`` tensor (the record lists ``vocab_bias`` among its
scalar parameters). The record's tied model also allocates an untrained, frozen ``lm_head`` [V, d] that
its forward never reads and its export drops; its ``params:`` line counts it — ``model.embed.count_frozen_head``
counts it too (:meth:`pgolf.model.gpt.GPT.num_params`), allocating nothing.
"""

from __future__ import annotations

from torch import nn

from pgolf.config import ModelConfig
from pgolf.errors import ConfigError
from pgolf.model.layers import CastedLinear
from pgolf.roles import Role

NEEDED_WHEN = "model.embed.factor_dim > 0"


class FactoredEmbedding(nn.Module):
    """The two projections of a factored tied embedding (the table itself stays ``GPT.tok_emb``)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        e, d = cfg.embed.factor_dim, cfg.model_dim
        if not cfg.tie_embeddings:
            raise ConfigError("model.embed.factor_dim needs tied embeddings (model.tie_embeddings=true), as [03-24]")
        if cfg.fused_kernels != "off":
            raise ConfigError("model.embed.factor_dim: the fused CE kernel reads the table as a [V, d] head; "
                              "set model.fused_kernels=off")
        self.proj_in = CastedLinear(e, d, bias=False, role=Role.PROJ)  # [d, e]
        self.proj_out = CastedLinear(d, e, bias=False, role=Role.PROJ)  # [e, d]
