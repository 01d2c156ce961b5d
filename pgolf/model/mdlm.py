"""Masked diffusion language modelling (``model.objective=mdlm``): the training objective.

Sources: MDLM, Sahoo et al. 2024, "Simple and Effective Masked Diffusion Language Models" (arXiv:2406.07524),
§3 (absorbing-state diffusion, the SUBS parameterization, the continuous-time ELBO); LLaDA, Nie et al. 2025
(no time conditioning); the non-record ``2026-03-29_LLaDA_MDLM_Diffusion`` of openai/parameter-golf
(``train_mdlm.py``: bidirectional attention, frozen visible tokens, antithetic times).

The model. x = (x_1..x_L) a clean sequence, m the absorbing [MASK] id (``model.mdlm_mask_id``, an id the data
never holds). The forward process masks each token independently: z_t keeps x_i with probability α_t = 1 − t
(the linear schedule) and is m otherwise, t ∈ [0, 1]. The network sees z (bidirectional attention, no time
input: with absorbing masks the posterior depends on t only through which tokens are masked, MDLM §3.2 and
LLaDA) and predicts p_θ(x_i | z) at every masked position i, a distribution over the vocabulary without m
(m's logit is removed). Visible tokens are copied (SUBS: "carry-over unmasking"), so they cost nothing.

The objective. MDLM's continuous-time negative ELBO for this schedule, per sequence (nats):

    NELBO(x) = ∫₀¹ (−α'_t / (1 − α_t)) E_{z ~ q_t(·|x)} [ Σ_{i: z_i = m} −log p_θ(x_i | z) ] dt
             = ∫₀¹ (1/t) E_{z ~ q_t(·|x)} [ Σ_{i masked} −log p_θ(x_i | z) ] dt                    (α_t = 1 − t)

:func:`diffusion_loss` is its one-sample Monte Carlo estimate: per training sequence b one time
t_b = eps + (1 − eps)·u_b with the low-discrepancy draw u_b = (u + b/B) mod 1 (MDLM's antithetic sampler; B the
sequences of the batch), one mask with P(masked) = t_b per token, and

    loss = Σ_b (1/t_b) Σ_{i masked} −log p_θ(x_{b,i} | z_b) / (B·L)                 (nats per token)

Its expectation is NELBO / L per token, less the sliver t < eps left out (``model.mdlm_eps``). (The LLaDA
folder weighted its loss by dσ = (1 − eps)/α_t instead of MDLM's dσ/expm1(σ) = 1/t; this is MDLM's.)

The bound is not the model's likelihood. With a time-independent p_θ, MDLM's generative process unmasks the
positions one at a time in a uniformly random order, each drawn from p_θ(· | what is visible): its likelihood
is p(x) = E_σ Π_l p_θ(x_{σ(l)} | x_{σ(<l)}), and NELBO(x) = E_σ Σ_l −log p_θ(x_{σ(l)} | x_{σ(<l)}) ≥ −log p(x) by
Jensen (``tests/test_mdlm.py`` enumerates both on a tiny vocabulary). So such a model is scored by the bound, as
``val_var_bpb`` (:mod:`pgolf.eval.variational`), never as val_bpb.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pgolf.errors import ConfigError

NEEDED_WHEN = "model.objective == 'mdlm'"


def masked_logprobs(model: nn.Module, z: Tensor) -> Tensor:
    """log p_θ(· | z) [B,L,V] (fp32 or wider) at every position of the partly masked z [B,L]: the model's
    logits with the [MASK] id removed (−inf), log-softmaxed over the rest of the vocabulary."""
    logits = model(z)  # [B,L,V], softcapped, fp32 (fp64 for a float64 model)
    mask_id = model.cfg.mdlm_mask_id
    logits = logits.index_fill(-1, torch.tensor([mask_id], device=logits.device), float("-inf"))
    return torch.log_softmax(logits, dim=-1)


def masked_nll(model: nn.Module, clean: Tensor, masked: Tensor) -> Tensor:
    """−log p_θ(x_i | z) [B,L] in nats at the masked positions of ``clean`` x [B,L] (``masked`` [B,L] bool,
    z = x with those positions set to [MASK]), 0 at the visible ones (SUBS: a visible token is copied)."""
    z = torch.where(masked, torch.full_like(clean, model.cfg.mdlm_mask_id), clean)
    logp = masked_logprobs(model, z)
    nll = -logp.gather(-1, clean.unsqueeze(-1)).squeeze(-1)  # [B,L]
    return torch.where(masked, nll, torch.zeros_like(nll))


def diffusion_loss(model: nn.Module, clean: Tensor, reduction: str = "mean") -> Tensor:
    """The MDLM training loss of the clean sequences ``clean`` [B,L] (module docstring): one time and one mask
    per sequence, weight 1/t. ``reduction``: ``mean`` (nats per token) or ``sum``; ``none`` is refused — the
    model has no per-token likelihood (its bound per sequence is :mod:`pgolf.eval.variational`'s)."""
    if reduction not in ("mean", "sum"):
        raise ConfigError("a masked diffusion LM (model.objective=mdlm) has no exact per-token loss; its score is "
                          "the variational bound val_var_bpb (pgolf.eval.variational)")
    B, L = clean.shape
    eps = model.cfg.mdlm_eps
    u = (torch.rand((), device=clean.device) + torch.arange(B, device=clean.device) / B) % 1.0  # [B]
    t = eps + (1.0 - eps) * u  # [B], in [eps, 1)
    masked = torch.rand(B, L, device=clean.device) < t[:, None]  # [B,L]
    nll = masked_nll(model, clean, masked)  # [B,L]
    per_seq = (nll / t[:, None].to(nll.dtype)).sum(dim=1)  # [B]: the NELBO estimate of each sequence, nats
    total = per_seq.sum()
    return total / (B * L) if reduction == "mean" else total
