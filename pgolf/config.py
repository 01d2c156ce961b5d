"""Typed configuration for every stage of pgolf.

A run is described by one :class:`RunConfig` made of sections (``data``, ``model``, ``optim``,
``train``, ``export``, ``eval``). Named recipes live in :mod:`pgolf.presets` as functions that
return a ``RunConfig``; any field can be overridden from the command line with
``--set section.key=value`` (see :func:`apply_overrides`). Unknown keys and values that do not
parse are a :class:`~pgolf.errors.ConfigError`.

Defaults are the challenge's naive baseline (``train_gpt.py`` at the root of
openai/parameter-golf, CATALOGUE §1.3–§1.7). Every technique added later is one field, off by
default, documented with its source record.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from pgolf.errors import ConfigError


@dataclass
class DataConfig:
    path: str = ""
    """Directory with ``fineweb_{train,val}_*.bin`` shards (+ ``manifest.json``, byte sidecar).
    Empty: the embedded default corpus, built once into the user cache (see ``pgolf.data.embedded``)."""
    tokenizer: str = ""
    """SentencePiece ``.model``. Empty: ``tokenizer.model`` inside ``path`` (``pgolf data build`` writes it)."""
    val_max_tokens: int = 0
    """Evaluate on at most this many validation tokens (0 = all). Scored runs keep 0."""
    overlap_check: bool = True
    """Refuse train shards that hold a validation document (:mod:`pgolf.data.provenance`; ≈1 s per
    100 M-token shard on one CPU core, docs/benchmarks.md). Off = trust the data (the official export
    fetched by ``pgolf data fetch`` is never second-guessed)."""
    overlap_prescan: bool = True
    """With ``overlap_check``: check every train shard before the training clock starts, the shards split
    across the ranks (8 ranks share the challenge's 80 shards: ≈10 s each, once). Off: each shard is
    checked when the loader first reads it, inside the clock — and on every rank that reads it."""

    def __post_init__(self) -> None:
        _check(self.val_max_tokens >= 0, "data.val_max_tokens must be >= 0")


@dataclass
class AttnConfig:
    """Attention options (``--set model.attn.KEY=VALUE``)."""

    xsa_layers: tuple[int, ...] = ()
    """Exclusive Self Attention on these (physical) layers, e.g. ``7,8,9,10``: each head's output
    loses its component along the token's own value direction, y ← y − (y·v̂)v̂ (arXiv:2603.09078;
    [03-20c] last 3 of 11, [03-20d] PR #287 last 4, [03-25] PR #1019 all layers). GQA-aware, no K/V copy.
    A negative index counts from the end, as in Python (``-4,-3,-2,-1`` = the last 4 at any depth), so the
    list follows the depth ``train.autosize`` picks (:meth:`ModelConfig.layers`)."""

    rope_dims: int = 0
    """Partial RoPE ([03-21] PR #315): rotate only the first ``rope_dims`` dims of each head (records: 16
    of 64); the rest carry no position. 0 = the whole head (the baseline)."""
    rope_train_len: int = 0
    """NTK-style RoPE base scaling for sequences longer than this: base' = base·(T/L)^(r/(r−2)) with r the
    rotated dims (the records' "yarn"; [03-21]–[03-22] build it with L = 1024, so their 2048-token
    training already runs scaled). 0 = never scale."""
    ve_layers: tuple[int, ...] = ()
    """Value embeddings ([03-22], credited to PR #374): one shared table (vocab × ``ve_dim``, N(0, 0.01))
    projected to the K/V width with a learned scale (init 0.1) is added to the attention values of these
    layers, each with its own learned scale (init 1). Records: layers 9, 10 of 11; removed in [04-05].
    Negative indices count from the end, as for ``xsa_layers``."""
    ve_dim: int = 128
    gate: Literal["off", "out", "dense", "sparse"] = "off"
    """A per-head gate on the attention output, before the output projection: ``out`` AttnOutGate
    ([04-16] PR #1667: y_h ← 2σ(w_h·x[:w])·y_h, zero-init, the identity at init); ``dense`` GatedAttn
    ([04-19] PR #1736, arXiv:2505.06708: y_h ← σ(W_g x)_h·y_h, W_g [H, d] ~ N(0, gate_init_std));
    ``sparse`` SparseAttnGate ([04-23] PR #1787: y_h ← σ(s·W_g x[:w])_h·y_h, W_g [H, w])."""
    gate_window: int = 12
    """Input dims w the ``out`` and ``sparse`` gates read (records: 12)."""
    gate_scale: float = 1.0
    """s of the sparse gate ([04-27a]: 0.5)."""
    gate_init_std: float = 0.0
    """Init std of the ``dense``/``sparse`` gate weights (0 = zeros; [04-19] dense: 0.005)."""
    doc_mask: bool = False
    """Document-aware attention ([04-10] PR #1530 uses FlashAttention varlen): no position attends across
    a BOS, so documents packed in one sequence never see each other. ``doc_kernel`` says how."""
    doc_kernel: Literal["auto", "mask", "varlen"] = "auto"
    """How ``doc_mask`` attends (:mod:`pgolf.model.varlen`): ``mask``, an SDPA boolean mask (the portable
    reference; O(T²) memory per sequence); ``varlen``, the documents packed end to end through torch's
    FlashAttention varlen kernel (CUDA, bf16/fp16, torch ≥ 2.9; an error elsewhere); ``auto``, varlen where
    it runs, the mask elsewhere. Same function either way (tested against a per-segment reference)."""
    window: int = 0
    """Sliding-window attention: position t attends to the ``window`` positions t−window+1..t only (as
    Olmo 3's local layers, which the hybrid of ``2026-04-04_GDN_Hybrid_LongContext`` replaced by Gated
    DeltaNet; Mistral/Longformer's band mask), through SDPA's boolean mask (ANDed with the document mask
    under ``doc_mask``). 0 = full causal attention (the baseline)."""
    window_layers: tuple[int, ...] = ()
    """The (physical) layers that use ``window``; empty = every attention layer. Negative indices count
    from the end, as for ``xsa_layers``."""

    def __post_init__(self) -> None:
        _check(self.window >= 0, "model.attn.window must be >= 0 (0 = full attention)")
        _check(self.gate_window >= 1 and self.gate_init_std >= 0, "model.attn.gate_window >= 1, gate_init_std >= 0")
        _check(self.rope_dims >= 0 and self.rope_dims % 2 == 0, "model.attn.rope_dims must be even and >= 0")
        _check(self.rope_train_len >= 0, "model.attn.rope_train_len must be >= 0")
        _check(self.ve_dim >= 1, "model.attn.ve_dim must be >= 1")


@dataclass
class EmbedConfig:
    """Input-side options (``--set model.embed.KEY=VALUE``)."""

    bigram_buckets: int = 0
    """BigramHash ([03-19h] PR #65; hash of [03-20a] PR #162): a table of this many buckets × ``bigram_dim``
    indexed by a hash of (previous, current) token, projected to the model width and added to the token
    embedding. 0 = off. Records: 4096 [03-20a], 2048 [03-20d]–[03-22], 3072 [03-25]."""
    bigram_dim: int = 128
    """Width of the BigramHash table (records: 128, 112 from [03-25])."""
    bigram_scale_init: float = 0.05
    """Initial value of BigramHash's learned output scale ([03-20a])."""
    smear: Literal["off", "v1", "v2", "v3"] = "off"
    """SmearGate, a learned blend with the previous token's embedding (``pgolf.model.smear``): ``v1``
    [03-19h] PR #65 (x' = σ(γ)x + (1−σ(γ))x_{t−1}, γ per dim init 3, before the RMSNorm); ``v2`` [03-20a]
    PR #162 … [03-23] (x' = (1−σ(γ))x + σ(γ)x_{t−1}, γ init 0, after the RMSNorm); ``v3`` [04-16] PR #1667
    (x ← x + λ·σ(W·x[:12])·x_{t−1}, W and λ zero-initialised, before the RMSNorm)."""
    smear_bos_fix: bool = False
    """The BOS fix of [04-27a]/[04-27b] (PR #1855/#1851; leak found on #1797): no blend into a BOS
    position, so the last token of one document never reaches the next. Off reproduces the earlier records."""
    bos_id: int = 1
    """The document delimiter (the challenge's BOS id)."""
    bigram_bos_reset: bool = False
    """BigramHash at a BOS uses the "no previous token" bucket, as at a sequence start, so no bigram
    spans two documents (off: the records' hash, which pairs the last token of one document with BOS)."""
    factor_dim: int = 0
    """Factored tied embedding ([03-24] PR #640, ``EMBED_DIM=254``; :mod:`pgolf.model.factored`): the table is
    V × factor_dim, projected to the model width on input and back before the tied head. 0 = off."""
    vocab_bias: bool = False
    """A learned per-token bias added to the logits before the softcap ([03-24]'s ``vocab_bias``, zero-init)."""
    count_frozen_head: bool = False
    """Count a [V, d] head in the parameter count without allocating it: the ternary record's tied model
    holds a frozen, unused ``lm_head`` that its logged ``params:`` includes (record-0324's 73,685,840)."""

    def __post_init__(self) -> None:
        _check(self.factor_dim >= 0, "model.embed.factor_dim must be >= 0 (0 = off)")
        _check(self.bigram_buckets == 0 or self.bigram_buckets >= 2, "model.embed.bigram_buckets must be 0 or >= 2")
        _check(self.bigram_dim >= 1, "model.embed.bigram_dim must be >= 1")
        _check(self.bos_id >= 0, "model.embed.bos_id must be >= 0")


@dataclass
class SsmConfig:
    """The Mamba-2 SSD mixer of ``model.ssm_layers`` (``--set model.ssm.KEY=VALUE``; :mod:`pgolf.model.ssm`).
    Sources (non-record track): ``2026-04-15_Mamba3Hybrid_SP8192_GPTQ_TTT`` (its log: d_state 64, expand 2,
    headdim 64, ngroups 1, chunk 64), ``2026-03-26_37M_LeWM_Jepa_Mamba2_10L_UNet_INT4FP8QAT_Brotli`` (Mamba-2,
    d_state 64, d_conv 4, expand 2), ``2026-04-04_GDN_Hybrid_LongContext`` (the hybrid pattern with Gated
    DeltaNet, conv 4); the SSD algorithm of Mamba-2 (arXiv:2405.21060)."""

    state: int = 64
    """N, the state size per head (Mamba's d_state)."""
    headdim: int = 64
    """P, the width of each SSM head; heads = expand·model_dim / headdim."""
    expand: int = 2
    """Inner width D_i = expand·model_dim."""
    groups: int = 1
    """G, groups of heads that share B and C (Mamba-2's ngroups; must divide the heads)."""
    chunk: int = 64
    """Q, tokens per chunk of the chunked SSD (the same function for every Q; a speed knob)."""
    conv: int = 4
    """K, taps of the causal depthwise convolution before the SSD (Mamba's d_conv)."""

    def __post_init__(self) -> None:
        _check(min(self.state, self.headdim, self.expand, self.groups, self.chunk, self.conv) >= 1,
               "model.ssm: state, headdim, expand, groups, chunk and conv must be >= 1")


@dataclass
class RecurConfig:
    """Depth recurrence (``--set model.recur.KEY=VALUE``): the physical layers ``start..end`` run
    ``loops`` extra times (1 + loops passes in a row), from ``start_frac`` of the run on. Sources:
    [03-31] PR #1204 (layers 4–5 twice, from step 3000, repeated MLPs untied); [04-03] PR #1285 (4–5, fully
    shared); [04-05] PR #1394 (4–5 three times from 50 %); [04-09b] PR #1493 and later: 3–5 three times
    from 35 % (11 physical → 17 virtual layers). The U-Net skips follow the virtual encoder/decoder halves."""

    loops: int = 0
    """Extra passes over the segment (0 = off; records: 1 or 2)."""
    start: int = 0
    end: int = 0
    """First and last physical layer of the looped segment (inclusive)."""
    start_frac: float = 0.0
    """Run the plain stack until this fraction of the run, then the looped one (0 = always looped)."""
    untie_mlp: bool = False
    """Repeated passes get MLPs of their own ([03-31]); attention stays shared. Off = fully tied (no
    extra parameters)."""
    progressive_frac: float = 0.0
    """Progressive recurrence ([04-06a] ``2026-04-06_SP8192_HessianSDClip_ProgressiveRecurrence``, PR #1412,
    ``LOOP_PHASE2_AT=0.65`` with the loop on at 0.5): from ``start_frac`` the segment runs one extra pass only,
    from this fraction of the run all ``loops`` (its README: "enabling both loops at once causes a sharper loss
    spike"). The U-Net skips follow each phase's virtual halves; evaluation runs every pass. 0 = off (every pass
    from ``start_frac``). Rule: :func:`pgolf.optim.schedule.loop_passes`."""

    def __post_init__(self) -> None:
        _check(self.loops >= 0 and 0 <= self.start <= self.end and 0 <= self.start_frac <= 1,
               "model.recur: loops >= 0, 0 <= start <= end, start_frac in [0, 1]")
        _check(self.progressive_frac == 0 or (self.loops >= 2 and self.start_frac < self.progressive_frac <= 1),
               "model.recur.progressive_frac needs recur.loops >= 2 and start_frac < progressive_frac <= 1 (0 = off)")


@dataclass
class ModelConfig:
    """Shape of the GPT; the defaults are the challenge baseline (17,059,912 parameters)."""

    vocab_size: int = 1024
    """Vocabulary size; must equal the tokenizer's and exceed every shard id."""
    num_layers: int = 9
    model_dim: int = 512
    num_heads: int = 8
    num_kv_heads: int = 4
    """Grouped-query attention: key/value heads, dividing ``num_heads``."""
    mlp_mult: int = 2
    """MLP hidden width = mlp_mult × model_dim (ReLU²)."""
    mlp_hidden: int = 0
    """MLP hidden width in units, when it need not be a multiple of ``model_dim`` (0 = ``mlp_mult × model_dim``,
    :attr:`mlp_width`). The non-record ``2026-03-19_SwiGLU_WarmdownFix_QuarterBatch_1x5090`` trained
    ``MLP_HIDDEN=640`` at d = 512 (1.25×) with SwiGLU to fit 16 MB: 16,470,088 params. It stays this width
    whatever depth and width ``train.autosize`` picks."""
    tie_embeddings: bool = True
    rope_base: float = 10000.0
    logit_softcap: float = 30.0
    """logits ← c·tanh(z/c); 0 disables."""
    qk_gain_init: float = 1.5
    """Initial per-head multiplier on the (normalized) queries."""
    tied_embed_init_std: float = 0.005
    embed_init: Literal["normal", "overtone"] = "normal"
    """``overtone`` ([03-19f]): after the N(0, std) draw, the embedding's singular values are replaced by a
    power law, E = U S Vᵀ → U diag(S₁·k^(−1/2)) Vᵀ (k = 1, 2, …)."""
    resid_mix_init: Literal["identity", "schedule"] = "identity"
    """``identity``: resid_mix (m0, m1) = (1, 0), the baseline; ``schedule`` ([03-19f] "phase-transition"):
    m0 = σ(3·(i/(L−1) − ½)), m1 = 1 − m0 for block i."""
    ce_chunk_tokens: int = 0
    """Cross-entropy over chunks of this many tokens, each recomputed in the backward pass
    (activation checkpointing), so the full [tokens, V] logits never exist at once — the memory the
    records' fused CE ([04-23] PR #1787) saves, done portably. 0 = one pass (the baseline)."""
    mlp_act: Literal["relu2", "leaky_relu2", "swiglu"] = "relu2"
    """MLP activation: ReLU² (the baseline) or LeakyReLU(``leaky_slope``)² ([03-23] PR #493/#518; −0.0021), or
    ``swiglu``: W_down·(silu(W_gate x) ⊙ W_up x) (Shazeer 2020, arXiv:2002.05202; the non-record
    ``2026-03-19_SwiGLU_WarmdownFix_QuarterBatch_1x5090``, −0.0041 against ReLU² in its README, exp 002): a third matrix,
    ``mlp.gate`` [hidden, d], of role ``mlp_up`` (Muon, the MLP's quantization group and streams). The fused
    MLP kernel is LeakyReLU²'s, so a SwiGLU MLP always runs unfused (``fused_kernels`` still fuses the CE)."""
    leaky_slope: float = 0.5
    fused_kernels: Literal["off", "auto", "on"] = "off"
    """Fused Triton kernels (:mod:`pgolf.model.fused`), an optional CUDA accelerator: the softcapped CE of
    [04-23] PR #1787 (training only) and the up-projection + LeakyReLU² of [04-10] PR #1530. ``auto``: on CUDA
    where triton imports, the PyTorch path elsewhere; ``on``: required (an error on the CPU unless
    ``TRITON_INTERPRET=1``); ``off``: the PyTorch path (the reference the kernels are tested against)."""
    ln_scale: bool = False
    """LN scale ([03-21] PR #315): the RMSNorm outputs feeding attention and MLP of physical layer i are
    multiplied by 1/√(i+1). No parameters."""
    init: Literal["default", "orthogonal", "orthogonal_records"] = "default"
    """``orthogonal`` ([03-19h] PR #65, [03-20a] PR #162): every 2-D linear with both sides ≥ 64 that is not
    zero-initialised gets orthogonal_(gain 1); output-side projections (attention/MLP out, other
    projections) are then scaled by 1/√(2L). ``orthogonal_records`` does what the records' code did
    (CATALOGUE §5.4): the same, but overriding the zero init of the other projections (value-embedding
    projection) too. ``default``: nn.Linear's Kaiming-uniform, as the baseline."""
    skips: Literal["unet", "gated", "none"] = "unet"
    """``unet``: the baseline's U-Net skips (the first half of the layers push, the later ones pop, LIFO,
    x ← x + w⊙skip; [03-17b]); ``gated``: sigmoid-gated skips ([04-01] PR #1218, from PR #1089:
    x ← σ(g)⊙x + (1−σ(g))⊙(w⊙skip), g init 0); ``none``: a plain stack."""
    parallel_start: int = 0
    """Parallel residual lanes ([03-31] PR #1204 from layer 7; [04-10]+ from layer 8): from the first
    decoder layer whose physical index is ≥ this, two lanes; attention reads lane 0 (with the x0 mix),
    the MLP lane 1, both as they were before the block; each writes to both through learned 2×2 post
    lambdas (init 1) and each lane is scaled by a residual lambda (init ``parallel_resid_init``).
    0 = off; a negative value counts from the end, as a Python index (−1 = the last layer only), so the
    lanes follow the depth when ``train.autosize`` picks it."""
    parallel_resid_init: float = 1.1

    @property
    def parallel_from(self) -> int | None:
        """The physical layer the parallel lanes start from (``parallel_start`` resolved), None when off."""
        if self.parallel_start == 0:
            return None
        return self.parallel_start % self.num_layers
    parallel_final: Literal["mean", "attn", "mlp"] = "mean"
    """What leaves the last layer: the mean of the lanes (records) or one lane."""
    ssm_layers: tuple[int, ...] = ()
    """Physical layers whose sequence mixer is the Mamba-2 SSD layer (``model.ssm``, :mod:`pgolf.model.ssm`)
    instead of attention; the block keeps its MLP, residual mix and scales. Empty = off. The hybrids of the
    non-record track: ``2026-04-15_Mamba3Hybrid_SP8192_GPTQ_TTT`` (7 layers, attention only at 2 and 5),
    ``2026-04-04_GDN_Hybrid_LongContext`` (9 layers, attention at 3 and 7). Negative indices count from the
    end, as for ``model.attn.xsa_layers``."""
    z_loss: float = 0.0
    """Weight λ of the z-loss λ·(log Σ_v exp z_v)² added to the training cross-entropy per position (z: the
    softcapped logits): [03-24] PR #640 trained with 1e-4 (after PaLM). 0 = off. Training only (the model in
    train mode with gradients on): every score stays the plain cross-entropy. Needs the plain loss path
    (``fused_kernels`` off, ``ce_chunk_tokens`` 0)."""
    gptj_layers: tuple[int, ...] = ()
    """Physical layers run as GPT-J single-stream parallel blocks, x ← x + attn(n(x)) + mlp(n(x)): attention
    and the MLP read the same normalized input and both write the one residual (GPT-J; [04-06a] "GPT-J form"
    from layer 7, main effect a smaller quantization gap; [04-08], [04-09b] PR #1493; CATALOGUE "Parallel
    residuals"). The two-lane form of the later records is ``parallel_start``; a layer is one or the other.
    Empty = off; negative indices count from the end."""
    objective: Literal["ar", "mdlm"] = "ar"
    """Training objective. ``ar``: next-token cross-entropy, causal attention (the challenge; every record).
    ``mdlm``: a masked diffusion LM (MDLM, Sahoo et al. 2024, arXiv:2406.07524; the non-record
    ``2026-03-29_LLaDA_MDLM_Diffusion``, :mod:`pgolf.model.mdlm`): bidirectional attention, each token replaced
    by the absorbing ``mdlm_mask_id`` with probability t ~ U(mdlm_eps, 1), loss (1/t)·Σ_masked CE — the
    continuous-time ELBO of the linear schedule α_t = 1 − t. It has no exact likelihood, so it is scored by a
    variational upper bound under its own name, ``val_var_bpb`` (:mod:`pgolf.eval.variational`), never val_bpb."""
    mdlm_mask_id: int = 0
    """``mdlm``: the [MASK] id, one the data never holds (0 = pad of the SentencePiece and byte260
    vocabularies); it is never predicted (its logit is removed), so predictions are normalized over the rest."""
    mdlm_eps: float = 1e-3
    """``mdlm``: the lowest masking rate of a training sequence (t ~ U(eps, 1); MDLM's sampling eps and the
    LLaDA folder's ``NOISE_EPS`` 1e-3). The scorer integrates the whole bound, t in (0, 1]."""
    attn: AttnConfig = field(default_factory=AttnConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    recur: RecurConfig = field(default_factory=RecurConfig)
    ssm: SsmConfig = field(default_factory=SsmConfig)

    def __post_init__(self) -> None:
        _check(0 < self.vocab_size <= 65536, "model.vocab_size must be in 1..65536 (uint16 shards)")
        _check(self.num_layers >= 1, "model.num_layers must be >= 1")
        _check(self.num_heads >= 1 and self.num_kv_heads >= 1, "model heads must be >= 1")
        _check(self.model_dim % self.num_heads == 0, "model.model_dim must be divisible by model.num_heads")
        _check(self.num_heads % self.num_kv_heads == 0, "model.num_heads must be divisible by model.num_kv_heads")
        _check((self.model_dim // self.num_heads) % 2 == 0, "head_dim (model_dim/num_heads) must be even for RoPE")
        _check(self.mlp_mult >= 1, "model.mlp_mult must be >= 1")
        _check(self.mlp_hidden >= 0, "model.mlp_hidden must be >= 0")
        _check(self.logit_softcap >= 0, "model.logit_softcap must be >= 0")
        _check(self.ce_chunk_tokens >= 0, "model.ce_chunk_tokens must be >= 0")
        _check(self.z_loss >= 0 and (self.z_loss == 0 or (self.fused_kernels == "off" and self.ce_chunk_tokens == 0)),
               "model.z_loss must be >= 0, and with model.fused_kernels=off and model.ce_chunk_tokens=0")
        _check(self.attn.rope_dims <= self.head_dim, "model.attn.rope_dims must be <= head_dim")
        _check(0 <= self.embed.bos_id < self.vocab_size, "model.embed.bos_id must be a token id")
        if self.objective == "mdlm":
            _check(0 <= self.mdlm_mask_id < self.vocab_size and self.mdlm_mask_id != self.embed.bos_id,
                   "model.mdlm_mask_id must be a token id other than BOS (model.embed.bos_id)")
            _check(0 <= self.mdlm_eps < 1, "model.mdlm_eps must be in [0, 1)")
            _check(not self.attn.doc_mask and not getattr(self.attn, "window", 0),
                   "model.objective=mdlm attends both ways over the whole sequence: model.attn.doc_mask and "
                   "model.attn.window (causal masks) are not written for it")
            _check(self.ce_chunk_tokens == 0, "model.objective=mdlm computes its own loss: model.ce_chunk_tokens must be 0")
        for name in ("xsa_layers", "ve_layers", "window_layers", "ssm_layers", "gptj_layers"):
            self.layers(name)  # every index a layer of this depth, none twice: one line otherwise
        if self.ssm_layers:
            ssm = set(self.layers("ssm_layers"))
            for name in ("xsa_layers", "ve_layers", "window_layers"):
                both = sorted(ssm & set(self.layers(name)))
                _check(not both, f"model.attn.{name}: layer {both[0] if both else 0} is an SSM layer (model.ssm_layers)")
            inner = self.ssm.expand * self.model_dim
            _check(inner % self.ssm.headdim == 0,
                   f"model.ssm.headdim must divide expand·model_dim ({inner})")
            _check((inner // self.ssm.headdim) % self.ssm.groups == 0,
                   f"model.ssm.groups must divide the SSM heads ({inner // self.ssm.headdim})")
        _check(self.recur.loops == 0 or self.recur.end < self.num_layers,
               f"model.recur.end must be a layer (< {self.num_layers})")
        # out of range, no layer gets lanes: a switch that does nothing
        _check(-self.num_layers < self.parallel_start < self.num_layers,
               f"model.parallel_start must be a layer: 1..{self.num_layers - 1}, or -1..-{self.num_layers - 1} "
               f"from the end ({self.num_layers} layers; 0 = off)")
        _check(self.attn.gate not in ("out", "sparse") or self.attn.gate_window <= self.model_dim,
               "model.attn.gate_window must be <= model_dim")

    def layers(self, name: str) -> tuple[int, ...]:
        """The physical layers ``model.attn.<name>`` (``xsa_layers``, ``ve_layers``, ``window_layers``) or
        ``model.<name>`` (``ssm_layers``, ``gptj_layers``) names at this depth, sorted; negative indices count from the end.
        ConfigError (one line) when one is not a layer or repeats one."""
        where = "model.attn" if hasattr(self.attn, name) else "model"
        raw = getattr(self.attn if where == "model.attn" else self, name)
        n = self.num_layers
        bad = [i for i in raw if not -n <= i < n]
        _check(not bad, f"{where}.{name}: layer {bad[0] if bad else 0} does not exist ({n} layers: 0..{n - 1}, "
                        f"or -1..-{n} from the end)")
        out = sorted(i % n for i in raw)
        _check(len(set(out)) == len(out), f"{where}.{name} lists a layer twice at {n} layers ({raw})")
        return tuple(out)

    @property
    def num_virtual_layers(self) -> int:
        """Layers the forward pass runs once recurrence is on."""
        r = self.recur
        return self.num_layers + (r.loops * (r.end - r.start + 1) if r.loops else 0)

    @property
    def head_dim(self) -> int:
        return self.model_dim // self.num_heads

    @property
    def mlp_width(self) -> int:
        """The MLP's hidden width: ``mlp_hidden``, else ``mlp_mult × model_dim``."""
        return self.mlp_hidden or self.mlp_mult * self.model_dim


@dataclass
class OptimConfig:
    """Muon on 2-D block matrices, Adam on embeddings and scalars (CATALOGUE §1.4)."""

    matrix_lr: float = 0.04
    """Muon learning rate for 2-D block matrices."""
    scalar_lr: float = 0.04
    """Adam learning rate for vectors, scalars, control tensors and skip weights."""
    tied_embed_lr: float = 0.05
    """Adam learning rate for the tied embedding."""
    embed_lr: float = 0.6
    """Adam learning rate for the input embedding when untied."""
    head_lr: float = 0.008
    """Adam learning rate for the output head when untied."""
    muon_momentum: float = 0.95
    muon_momentum_warmup_start: float = 0.85
    muon_momentum_warmup_steps: int = 500
    """Muon momentum rises linearly from ``muon_momentum_warmup_start`` over this many steps."""
    muon_momentum_warmup_frac: float = 0.0
    """If > 0: the warm-up spans this fraction of the run instead of a step count (so a record's
    1,500 of ~4,900 steps ≈ 0.3 transfers to a 600-step CPU run). 0 = ``muon_momentum_warmup_steps``."""
    muon_backend_steps: int = 5
    """Newton–Schulz iterations."""
    muon_nesterov: bool = True
    beta1: float = 0.9
    beta2: float = 0.95
    adam_eps: float = 1e-8
    embed_betas: tuple[float, ...] | None = None
    """Adam (β1, β2) of the embedding group alone (None = ``(beta1, beta2)``). The records share one pair
    across groups ([04-27a]: β2 0.99 everywhere); modded-nanogpt gives its embeddings their own."""
    head_betas: tuple[float, ...] | None = None
    """Adam (β1, β2) of the untied head alone (None = ``(beta1, beta2)``)."""
    scalar_betas: tuple[float, ...] | None = None
    """Adam (β1, β2) of the scalar/control group alone (None = ``(beta1, beta2)``)."""
    grad_clip_norm: float = 0.0
    """Clip the global gradient norm to this value (0 = off, the baseline; 0.3 from [03-19d])."""
    muon_wd: float = 0.0
    """Muon decoupled weight decay λ: p ← p·(1 − lr·λ) each step ([03-19f] 0.02, [03-20a] PR #162 0.04,
    [04-01] PR #1218 0.085, [04-03] PR #1285 0.090, [04-09b] PR #1493 0.095)."""
    adam_wd: float = 0.0
    """AdamW decoupled weight decay on the embedding and scalar groups ([03-19b], [03-20a]–[03-29]: 0.04;
    0.02 from [04-01]). The untied head keeps plain Adam, as the records."""
    embed_wd: float | None = None
    """Weight decay of the embedding group alone (None = ``adam_wd``; [04-01]+: 0.085)."""
    wd_taper_start_frac: float = 1.0
    """WD taper ([04-18] PR #1729): the weight-decay multiplier is 1 until this fraction of the budget,
    then linear to ``wd_taper_final_mult`` at the end (records: 0.70 → 0.5). 1 = no taper."""
    wd_taper_final_mult: float = 1.0
    muon_row_normalize: bool = False
    """MuonEq-R ([04-03] PR #1285): unit-ℓ2 rows of the momentum-corrected gradient before Newton–Schulz."""
    parallel_muon: bool = False
    """Parallel Muon ([03-23] PR #549): same-shape matrices form banks whose gradients are reduce-scattered
    instead of all-reduced by DDP; each rank orthogonalizes its slice (batched) and the updates are
    all-gathered (:mod:`pgolf.optim.parallel_muon`). The same update as Muon; a systems option."""
    muon_ns: Literal["quintic", "polar_express"] = "quintic"
    """Newton–Schulz coefficients: the baseline's fixed quintic, or Polar Express's per-iteration
    minimax triples ([04-23] PR #1787, from PR #1344; needs muon_backend_steps=5)."""

    def __post_init__(self) -> None:
        _check(0 <= self.muon_momentum_warmup_frac <= 1, "optim.muon_momentum_warmup_frac must be in [0, 1]")
        _check(self.muon_wd >= 0 and self.adam_wd >= 0 and (self.embed_wd is None or self.embed_wd >= 0),
               "optim weight decays must be >= 0")
        _check(0 <= self.wd_taper_start_frac <= 1 and self.wd_taper_final_mult >= 0,
               "optim.wd_taper_start_frac must be in [0, 1], optim.wd_taper_final_mult >= 0")
        _check(self.muon_ns != "polar_express" or self.muon_backend_steps == 5,
               "optim.muon_ns=polar_express has 5 iterations: set optim.muon_backend_steps=5")
        for name in ("matrix_lr", "scalar_lr", "tied_embed_lr", "embed_lr", "head_lr"):
            _check(getattr(self, name) >= 0, f"optim.{name} must be >= 0")
        _check(0 <= self.muon_momentum < 1, "optim.muon_momentum must be in [0, 1)")
        _check(self.muon_backend_steps >= 1, "optim.muon_backend_steps must be >= 1")
        _check(self.grad_clip_norm >= 0, "optim.grad_clip_norm must be >= 0")
        for name in ("embed_betas", "head_betas", "scalar_betas"):
            b = getattr(self, name)
            _check(b is None or (len(b) == 2 and all(0 <= x < 1 for x in b)),
                   f"optim.{name} must be two numbers in [0, 1) (beta1,beta2), got {b}")


@dataclass
class EmaConfig:
    """Exponential moving average of the weights (``--set train.ema.KEY=VALUE``); the average is what
    gets exported. [03-20d] PR #287: θ̄ ← 0.997·θ̄ + 0.003·θ every step (fp32); 0.9965 from [04-09b]."""

    decay: float = 0.0
    """A fixed per-step decay d (records: 0.997, 0.9965). 0 = off. Tied to the step count: 0.997 is a
    333-step horizon, 7 % of an 8×H100 run but half of a 600-step CPU run (it cost +0.118 bpb there)."""
    horizon_frac: float = 0.0
    """The same as a fraction of the run: d_t = 1 − 1/max(1, f·N̂) with N̂ = step/progress the projected
    steps of the whole run (0.068 ≈ 0.997 over 4,900 steps). 0 = off. Set at most one of the two."""

    def __post_init__(self) -> None:
        _check(0 <= self.decay < 1 and 0 <= self.horizon_frac <= 1, "train.ema: decay in [0, 1), horizon_frac in [0, 1]")
        _check(not (self.decay and self.horizon_frac), "train.ema: set decay or horizon_frac, not both")

    @property
    def enabled(self) -> bool:
        return self.decay > 0 or self.horizon_frac > 0


def window_open(start_frac: float, start_lr_mult: float, progress: float, lr_mult: float) -> bool:
    """A schedule that starts at ``start_frac`` of the run, or (the records' rule, when
    ``start_lr_mult`` > 0) once the LR multiplier falls below ``start_lr_mult``."""
    return lr_mult < start_lr_mult if start_lr_mult > 0 else progress >= start_frac


@dataclass
class SwaConfig:
    """Stochastic weight averaging: the uniform mean of snapshots taken every ``every`` steps once the
    window opens, *applied* to the exported weights ([03-20a] PR #162: every 50 steps while the LR
    multiplier < 0.5; [03-20b] < 0.4; [03-22]/[03-23] accumulated "tight SWA" (< 0.2) and never used it,
    CATALOGUE §5.2)."""

    every: int = 0
    """Snapshot interval in steps (0 = off)."""
    start_frac: float = 0.0
    """Open the window at this fraction of the run."""
    start_lr_mult: float = 0.0
    """Or (the records' rule) once the LR multiplier falls below this."""

    def __post_init__(self) -> None:
        _check(self.every >= 0 and 0 <= self.start_frac <= 1 and 0 <= self.start_lr_mult <= 1,
               "train.swa: every >= 0, start_frac and start_lr_mult in [0, 1]")
        _check(not (self.start_frac and self.start_lr_mult), "train.swa: set start_frac or start_lr_mult, not both")

    @property
    def enabled(self) -> bool:
        return self.every > 0

    def started(self, progress: float, lr_mult: float) -> bool:
        return window_open(self.start_frac, self.start_lr_mult, progress, lr_mult)


@dataclass
class QatConfig:
    """Quantization-aware training, a model transform (:mod:`pgolf.quant.qat`): the 2-D weights of the
    attention, MLP and projection linears are fake-quantized per row (clip at the row max, the grid of
    ``QuantSpec(bits, clip="max")``) in the forward pass once QAT is on. Sources: STE [03-19c]/[03-19h];
    late QAT [03-21] PR #315 (lr_mul < 0.1; constant-folded away by torch.compile there), [03-22] PR #414
    (< 0.15); soft-round [03-31] PR #1204 (α ramped 1 → 16 over 500 steps).

    Low-bit weights (:mod:`pgolf.quant.lowbit`): ``ternary`` — BitNet b1.58 absmean, q ∈ {−1, 0, 1} times the
    fp16 mean |w| of each group of ``group_size`` columns, trained straight-through from the first step, as
    the ternary record [03-24] ``2026-03-24_74M_Ternary_UNet_FP8_10L_8192BPE_YaRN_NeoMuon`` (PR #640; groups
    of 128); ``binary`` — q = sign(w) ∈ {−1, +1} times the same scale, as the non-record
    ``2026-03-24_106M_Binary_Asymmetric_UNet_FP8_15L_8192BPE_YaRN_NeoMuon_Smear`` (1.1239 after 2.15 h; within
    10 minutes binary lost to ternary by 0.025, its README). Only the attention and MLP linears are low-bit
    (the records' ``TernaryLinear``); the run exports with the matching ``export.scheme``
    (``ternary_g128``, ``binary_g128``, ``…+fp8``: :func:`pgolf.quant.lowbit.export_scheme_name`), which
    packs 5 trits per byte / 8 bits per byte, and the trained forward equals the artifact's bit for bit.
    Not here: ``2026-04-05_118M_XNOR-Net_FP8_1024D_10L`` binarizes activations too; its README reports the
    full XNOR network plateaus near 2.0 bpb because the MLP down projection reads all-positive activations,
    whose sign is always +1."""

    kind: Literal["off", "ste", "soft_round", "ternary", "binary"] = "off"
    """``ste``: w + stopgrad(Q(w) − w); ``soft_round``: ⌊w/s⌋ + σ(α(frac − ½)), differentiable; ``ternary`` /
    ``binary``: low-bit weights (above; ``bits`` is unused)."""
    bits: int = 6
    start_frac: float = 0.0
    """Switch on at this fraction of the run (0 with start_lr_mult 0: from the first step)."""
    start_lr_mult: float = 0.0
    """Or (the records' rule) once the LR multiplier falls below this (records: 0.15)."""
    soft_alpha_start: float = 1.0
    soft_alpha_end: float = 16.0
    soft_ramp_frac: float = 0.05
    """``soft_round``: α rises linearly from start to end over this fraction of the run."""
    group_size: int = 128
    """``ternary`` / ``binary``: columns per absmean scale (0 = one per row); the records' ``BITNET_GROUP_SIZE``
    128 ("128 wins on both quality and compression" over 32, 64, 256 in the ternary record's sweep)."""
    shrink: bool = False
    """``ternary``: scale each group by 1/mean|q| (the record's "shrinkage fix"; it applied it at
    dequantization only, here training and export use it alike)."""

    def __post_init__(self) -> None:
        _check(2 <= self.bits <= 8, "train.qat.bits must be in 2..8")
        _check(self.group_size >= 0, "train.qat.group_size must be >= 0 (0 = one scale per row)")
        _check(not self.shrink or self.kind == "ternary", "train.qat.shrink is a ternary option (train.qat.kind=ternary)")
        _check(0 <= self.start_frac <= 1 and 0 <= self.start_lr_mult <= 1, "train.qat: start_* in [0, 1]")
        _check(not (self.start_frac and self.start_lr_mult), "train.qat: set start_frac or start_lr_mult, not both")
        _check(self.soft_alpha_start > 0 and self.soft_alpha_end > 0 and 0 <= self.soft_ramp_frac <= 1,
               "train.qat: soft_alpha_* > 0, soft_ramp_frac in [0, 1]")

    def started(self, progress: float, lr_mult: float) -> bool:
        return window_open(self.start_frac, self.start_lr_mult, progress, lr_mult)

    @property
    def lowbit(self) -> bool:
        """Ternary or binary weights (:mod:`pgolf.quant.lowbit`)."""
        return self.kind in ("ternary", "binary")


@dataclass
class TrainConfig:
    """The budgeted training loop (CATALOGUE §1.5, §1.6)."""

    seed: int = 1337
    iterations: int = 20000
    """Upper bound on optimizer steps; the wallclock budget usually stops first."""
    max_wallclock_seconds: float = 600.0
    """Training-time budget (the challenge's stop rule); 0 = iterations only."""
    warmup_steps: int = 20
    """Priming steps (compile/autotune) whose effect is rolled back — not an LR warmup (§1.5)."""
    warmdown_frac: float = 0.0
    """If > 0: the LR multiplier decays linearly to 0 over the last ``warmdown_frac`` of the
    training budget (of wallclock when a budget is set, else of ``iterations``). Right on any hardware."""
    min_lr_mult: float = 0.0
    """MIN_LR ([04-23] PR #1787): the LR multiplier never falls below this floor during the warmdown
    (records: 0.10). 0 = decay to 0 (the baseline)."""
    warmdown_iters: int = 1200
    """Used when ``warmdown_frac`` = 0: the baseline's rule, window = warmdown_iters × mean step
    time (§1.5). On slow hardware this window exceeds the run; prefer ``warmdown_frac``."""
    batch_tokens: int = 524288
    """Global tokens per optimizer step (all ranks, all micro-steps)."""
    seq_len: int = 1024
    seq_len_stages: tuple[int, ...] = ()
    """Progressive sequence length (PR #2014: context 1k → 2k → 3k during training): train with these
    lengths in turn, the batch staying ``batch_tokens``; the last must be ``seq_len`` (what evaluation
    uses). Empty = ``seq_len`` throughout."""
    seq_len_stage_fracs: tuple[float, ...] = ()
    """Where each stage starts, as fractions of the run (0 first, increasing)."""
    grad_accum: int = 0
    """Micro-steps per optimizer step on each rank; 0 = 8 // world_size, the baseline's rule."""
    loader: Literal["stream", "coprime", "shuffled"] = "stream"
    """How training sequences are drawn from the train shards. ``stream``: the baseline's one wrapping token
    stream, shard after shard (:class:`pgolf.data.loader.DistributedTokenLoader`). ``coprime``: windows of every
    shard, each shard walked with a random stride coprime to its window count, shards interleaved at random
    ([03-29] PR #1060, from PR #726); ``shuffled``: the shards split across the ranks, each shard's sequence
    starts permuted behind a random phase ([04-05] PR #1394's ``ShuffledSequenceLoader``, every later record).
    Both visit every window once per epoch, drawn from ``seed`` (:mod:`pgolf.data.sampled`)."""
    val_every: int = 1000
    """Validate every N steps (0 = only at the end)."""
    val_tokens_during_training: int = 0
    """Periodic validations use at most this many val tokens (0 = all). The final eval uses all."""
    log_every: int = 200
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """"auto" (cuda if available), "cpu" or "cuda"."""
    amp_dtype: Literal["auto", "bf16", "fp32"] = "auto"
    """Autocast dtype for matmuls: "bf16" (the challenge's), "fp32" (no autocast) or "auto": bf16 only
    where the device runs it natively and faster than fp32 (CUDA with bf16 support; a CPU with AMX or
    AVX512-BF16 whose measured bf16 matmul beats fp32), else fp32 (:mod:`pgolf.precision`); the log
    states the choice and why."""
    compile: bool | Literal["auto"] = "auto"
    """Wrap the model in ``torch.compile`` (static shapes), as every record and the official baseline do:
    ``auto`` compiles on CUDA and stays eager on a CPU (inductor's warm-up there costs tens of seconds per
    graph; the ``cpu`` and ``demo`` presets turn it on where it was measured to pay), ``true``/``false``
    force it (:func:`pgolf.compile.resolve`). A compiled run primes every graph it will need before the
    training clock (at least one rolled-back step, whatever ``warmup_steps`` says)."""
    compile_fullgraph: bool = False
    """``torch.compile(..., fullgraph=True)``: a graph break is an error instead of a silent slowdown (the
    records' ``torch.compile(model, dynamic=False, fullgraph=True)``, [03-17b] onward)."""
    threads: int = 0
    """torch intra-op threads on CPU (0 = torch's default)."""
    checkpoint_every_seconds: float = 60.0
    """Write a resumable checkpoint at most this often (0 = only at the end)."""
    ema: EmaConfig = field(default_factory=EmaConfig)
    swa: SwaConfig = field(default_factory=SwaConfig)
    qat: QatConfig = field(default_factory=QatConfig)
    autosize: bool = False
    """Choose depth, width and batch for this machine before training (:mod:`pgolf.autosize`: a short
    throughput probe, a FLOP time model and the Chinchilla loss law under the model-byte cap); the
    resolved shape is what ``config.json`` records. Single-process CPU runs; the ``cpu`` preset turns it on."""
    autosize_model_bytes: int = 1_000_000
    """Autosize: the largest compressed model (the CPU track's 1,000,000-byte cap)."""
    autosize_bytes_margin: float = 0.2
    """Autosize: a candidate fits when its planner estimate × (1 + this) ≤ ``autosize_model_bytes``. The
    planner estimates before training, and training makes weights less compressible: on an AMX Xeon the
    trained int8 + zlib model came out 12 % over the estimate (2L×256, 902 steps: 1,074,498 vs 956,713
    bytes, over the cap) and 16 % over it (3L×192, 2,005 steps: 918,783 vs ≈790,190; docs/benchmarks.md)."""
    autosize_min_steps: int = 400
    """Autosize: the fewest optimizer steps a candidate may get within the budget."""
    autosize_cache: bool = True
    """Autosize: reuse the shape chosen before for this machine (CPU model and flags, cores, threads, torch)
    and this configuration (all but seed and data paths), kept in the user cache (``autosize.json`` under
    ``$PGOLF_CACHE`` or ``~/.cache/pgolf``), so seeds and repeated runs train the same shape and compare;
    False probes again (and records the new choice)."""
    calib_reserve_seconds: float = 0.0
    """GPTQ calibration on training tokens inside the training budget (CATALOGUE §2.5 "Calibration
    data": [03-29] reserves 14 s, [04-14] 4 s, [04-23]+ 0.5 s): when > 0 the loop trains until
    ``max_wallclock_seconds`` − reserve, then collects input Hessians from the same training loader
    within the reserve and saves them to ``hessians.safetensors`` in the run directory. 0 = off."""
    calib_batches: int = 0
    """At most this many training batches for that calibration (0 = as many as fit the reserve). The
    records' ``GPTQ_CALIBRATION_BATCHES`` = 16 ([04-14]+, ``gptq_calibration_batches``)."""

    def __post_init__(self) -> None:
        _check(self.iterations >= 1, "train.iterations must be >= 1")
        _check(self.max_wallclock_seconds >= 0, "train.max_wallclock_seconds must be >= 0")
        _check(0 <= self.warmdown_frac <= 1, "train.warmdown_frac must be in [0, 1]")
        _check(0 <= self.min_lr_mult <= 1, "train.min_lr_mult must be in [0, 1]")
        _check(self.warmup_steps >= 0 and self.warmdown_iters >= 0, "train warmup/warmdown must be >= 0")
        _check(self.seq_len >= 1 and self.batch_tokens >= self.seq_len, "train.batch_tokens must be >= train.seq_len")
        if self.seq_len_stages or self.seq_len_stage_fracs:
            st, fr = self.seq_len_stages, self.seq_len_stage_fracs
            _check(len(st) == len(fr) and len(st) >= 1, "train.seq_len_stages and seq_len_stage_fracs must pair up")
            _check(st[-1] == self.seq_len, "train.seq_len_stages must end with train.seq_len")
            _check(fr[0] == 0 and all(a < b for a, b in zip(fr, fr[1:], strict=False)) and fr[-1] < 1,
                   "train.seq_len_stage_fracs must start at 0 and increase below 1")
            _check(all(s_ >= 1 and self.batch_tokens % s_ == 0 for s_ in st),
                   "every train.seq_len_stages length must divide train.batch_tokens")
        _check(self.grad_accum >= 0, "train.grad_accum must be >= 0")
        _check(self.calib_reserve_seconds >= 0, "train.calib_reserve_seconds must be >= 0")
        _check(self.calib_batches >= 0, "train.calib_batches must be >= 0")
        _check(self.autosize_bytes_margin >= 0, "train.autosize_bytes_margin must be >= 0")
        _check(not (self.ema.enabled and self.swa.enabled), "train.ema and train.swa: enable one average, not both")
        _check(
            self.max_wallclock_seconds == 0 or self.calib_reserve_seconds < self.max_wallclock_seconds,
            "train.calib_reserve_seconds must be smaller than train.max_wallclock_seconds",
        )

    def seq_len_shares(self) -> list[tuple[int, float]]:
        """(sequence length, share of the run) of each progressive stage (``seq_len_at`` in
        :mod:`pgolf.optim.schedule` picks the stage): a stage runs from its start fraction to the next
        one's (checked above to start at 0 and increase), the last to 1; ``[(seq_len, 1.0)]`` without
        stages."""
        if not self.seq_len_stages:
            return [(self.seq_len, 1.0)]
        fr = self.seq_len_stage_fracs
        return [(n, end - start) for n, start, end in zip(self.seq_len_stages, fr, (*fr[1:], 1.0), strict=True)]


@dataclass
class ExportConfig:
    """How the trained weights become the artifact (CATALOGUE §1.7, §2.5)."""

    scheme: str = "int8_zlib"
    """Export scheme (``pgolf.export.driver.EXPORT_SCHEMES``): ``int8_zlib`` the baseline's per-row
    int8 + zlib-9; ``int6_gptqlite_zstd`` [03-22]; ``gptq6_emb7_brotli`` [04-14]; ``budget`` the
    byte-budget search (``pgolf.export.search``) filling ``budget_bytes``."""
    budget_bytes: int = 16_000_000
    """Artifact cap (code + model bytes), decimal bytes."""
    fit: Literal["prune", "off"] = "prune"
    """A one-payload scheme's artifact over the cap (model + code bytes > ``budget_bytes``): ``prune`` zeroes
    its cheapest quantized ±1 entries until it fits (selective ±1 pruning, [03-25] PR #1019; a record's own
    recipe whose code was smaller than pgolf's bundle, say), ``off`` leaves it over (the run reports it).
    Under the cap nothing changes. (:func:`pgolf.export.driver.fit_to_cap`)"""
    code_form: Literal["compact", "readable"] = "compact"
    """Which form of the single-file ``train_gpt.py`` (``pgolf bundle``) is shipped and charged as the code
    bytes: ``compact`` (minified, compressed, self-extracting, as records 04-03…04-09 shipped theirs) or
    ``readable`` (every module's source under a banner). See :mod:`pgolf.bundler`."""
    keep_float_max_numel: int = 65536
    """``int8_zlib``: float tensors with at most this many elements are stored as fp16/fp32, not
    quantized (the baseline's 65,536; lower it for narrow models whose matrices are that small)."""
    calib_source: Literal["auto", "train", "generated"] = "auto"
    """Where GPTQ Hessians come from: ``auto`` (the run's ``hessians.safetensors``, collected on
    training tokens inside the training budget, see ``train.calib_reserve_seconds``; else
    self-generated), ``train`` (require the saved ones) or ``generated`` ([03-25]). Never validation."""
    calib_seqs: int = 64
    """Self-generated calibration sequences ([03-25]: 64 × 2048, temperature 0.8)."""
    calib_seq_len: int = 0
    """Tokens per generated sequence (0 = ``train.seq_len``)."""
    calib_temperature: float = 0.8
    calib_seed: int = 1337
    search_bits: tuple[int, ...] = (4, 5, 6, 7, 8)
    """``budget``: grid bits tried per tensor group (``--set export.search_bits=5,6``)."""
    search_k: tuple[float, ...] = (6.0, 8.0, 10.0, 12.0, 13.0, 15.0, 17.0, 20.0, 24.0)
    """``budget``: SDClip multipliers k tried (clip = k·std(row)), in addition to GPTQ-lite's search
    (12, 13, 15 are [04-14]'s, so its recipe is one of the plans searched)."""
    search_gptq: bool = True
    """``budget``: also try full GPTQ for every grid (needs Hessians)."""
    search_lqer_rank: int = 4
    """``budget``: LQER rank tried on top of the best grids ([04-27a]: 4); 0 = no LQER options."""
    search_lqer_top: int = 1
    """``budget``: LQER corrects this many tensors of a group (largest error first)."""
    search_max_options: int = 10
    """``budget``: grids per group whose compressed bytes are measured exactly (after a screen by
    entropy; the rest are dominated)."""
    search_weights: Literal["hessian", "loss"] = "loss"
    """``budget``: how errors of different groups are compared: ``hessian`` (Σ tr(E H Eᵀ) as is) or
    ``loss`` (each group's tr(E H Eᵀ) rescaled by its measured loss increase on self-generated text)."""
    verify_plans: int = 4
    """``budget``: evaluate this many candidate plans on self-generated text and keep the best (0 = off)."""
    verify_seqs: int = 16
    """Self-generated sequences for the loss checks (a different seed from the calibration ones)."""

    def __post_init__(self) -> None:
        _check(self.budget_bytes > 0, "export.budget_bytes must be > 0")
        _check(self.keep_float_max_numel >= 0, "export.keep_float_max_numel must be >= 0")
        _check(self.calib_seqs >= 1 and self.calib_seq_len >= 0, "export.calib_seqs must be >= 1, calib_seq_len >= 0")
        _check(self.calib_temperature >= 0, "export.calib_temperature must be >= 0")
        _check(self.search_lqer_rank >= 0 and self.search_lqer_top >= 0, "export.search_lqer_* must be >= 0")
        _check(self.search_max_options >= 1, "export.search_max_options must be >= 1")
        _check(self.verify_plans >= 0 and self.verify_seqs >= 1, "export.verify_plans >= 0, verify_seqs >= 1")
        _check(bool(self.search_bits) and all(2 <= b <= 8 for b in self.search_bits),
               "export.search_bits must list integers in 2..8")
        _check(bool(self.search_k) and all(k > 0 for k in self.search_k), "export.search_k must list values > 0")


@dataclass
class SlidingConfig:
    """Sliding-window evaluation (``--set eval.sliding.KEY=VALUE``; :mod:`pgolf.eval.sliding`). [03-19e]:
    windows of ``eval.seq_len`` tokens advance by ``stride``; each scores only the targets the previous
    window did not, so every target has at least seq_len − stride + 1 tokens of context."""

    stride: int = 64
    """Targets scored per window after the first (records: 64; 16 in [03-24])."""
    doc_aware: bool = False
    """Windows never reach back past the BOS that starts the target's document (each document is
    windowed on its own); off = one window grid over the whole stream, as the records."""

    def __post_init__(self) -> None:
        _check(self.stride >= 1, "eval.sliding.stride must be >= 1")


@dataclass
class TttConfig:
    """Score-first test-time training (``--set eval.ttt.KEY=VALUE``; :mod:`pgolf.eval.ttt`). Every chunk is
    scored under no-grad before any update that uses it. ``mode``: ``lora`` per-document batched LoRA
    ([03-17a]; [04-10] PR #1530), ``sgd`` chunked full-model SGD over the stream ([03-23] PR #549),
    ``phased`` LoRA with global SGD on the already-scored document prefix ([04-13] PR #1610, [04-14] PR #1626)."""

    mode: Literal["lora", "sgd", "phased"] = "lora"
    lora_rank: int = 16
    """LoRA rank r ([03-17a]: 8; [04-10]: 96; [04-27a]: 80). The defaults of rank, lr, targets and chunk
    were the best tried on the first 60k enwiki validation tokens with the ``cpu`` model (docs/benchmarks.md)."""
    lora_alpha: float = 0.0
    """LoRA output scale α/r (PR #1767: α = 144); 0 = α = r (scale 1)."""
    lora_slots: Literal["block", "virtual"] = "block"
    """With depth recurrence: ``block``, one adapter per physical block, used on every pass; ``virtual``,
    one per pass of the per-layer plan, as the records ([04-14]+ ``BatchedTTTLoRA``: ``num_slots =
    len(encoder_indices) + len(decoder_indices)`` when looping). The same without recurrence."""
    lora_targets: tuple[str, ...] = ("q", "k", "v", "o", "mlp", "head")
    """Adapted layers, from q, k, v, o (attention), mlp (a d→d LoRA beside each MLP) and head (beside the
    LM head). [03-17a]: q, v, head; [04-10]+: all six."""
    chunk: int = 0
    """Targets per chunk: each is scored, then trained on ([03-17a]: 256; [04-10]: 32; [04-14]+: 48). A
    chunk's window is the ``eval.seq_len`` tokens before its end, inside its document, so the cost per
    target is ∝ seq_len / chunk. 0 = min(128, the context), so the default fits every run; a chunk set
    longer than the context is an error."""
    batch_docs: int = 16
    """Documents adapted side by side on each rank, one LoRA slot each (records: 64). Slots take the
    documents from the queue (``order``) and refill as soon as their document is done."""
    order: Literal["length", "stream"] = "length"
    """``lora``/``phased``: the order documents are claimed in, inside each phase's group of documents
    (:mod:`pgolf.eval.ttt`, "Ranks"): ``length`` longest first, as the records' global queue ([04-27a]),
    so the ranks finish together; ``stream`` stream order. Without a budget cut a document's losses do not
    depend on the order. When the clock stops adaptation, which documents were adapted does: under
    ``length`` also on the lengths of later documents, so strict stream-order causality under a binding
    budget needs ``stream``. ``warm_start_a`` always claims in stream order."""
    lora_lr: float = 0.01
    lora_optimizer: Literal["adam", "sgd"] = "adam"
    lora_beta1: float = 0.9
    lora_beta2: float = 0.999
    lora_weight_decay: float = 0.0
    lora_steps: int = 1
    """Optimizer steps per chunk (records: 1)."""
    warm_start_a: bool = False
    """PR #1767: at each document reset only B is zeroed; A keeps what it learned in its slot."""
    sgd_chunk_tokens: int = 32768
    """``sgd``: the stream is cut into chunks of this many targets ([03-23]: 32,768)."""
    sgd_lr: float = 0.002
    """``sgd``: peak SGD learning rate, cosine to 0 across the chunks ([03-23]: 0.002; later 0.005)."""
    sgd_momentum: float = 0.9
    sgd_epochs: int = 3
    sgd_batch_seqs: int = 32
    sgd_clip: float = 1.0
    """Gradient-norm clip of the full-model SGD steps (0 = off)."""
    phases: int = 3
    """``phased``: global SGD phases over the prefix ([04-13]: 1; [04-14]: 3)."""
    prefix_docs: int = 2000
    """``phased``: documents (in stream order) whose scoring is interleaved with global SGD; phase i ends
    after ⌈prefix_docs·i/phases⌉ of them ([04-14]: 2,000; [04-27a]: 2,500)."""
    global_lr: float = 0.001
    """``phased``: global SGD learning rate, cosine over each phase's steps ([04-14]: 0.001)."""
    global_epochs: int = 1

    def __post_init__(self) -> None:
        bad = sorted(set(self.lora_targets) - {"q", "k", "v", "o", "mlp", "head"})
        _check(not bad, f"eval.ttt.lora_targets: unknown target {bad[0] if bad else ''!r} (q, k, v, o, mlp, head)")
        _check(self.lora_rank >= 1 and self.lora_alpha >= 0, "eval.ttt.lora_rank must be >= 1, lora_alpha >= 0")
        _check(self.chunk >= 0 and self.batch_docs >= 1 and self.lora_steps >= 0, "eval.ttt: chunk >= 0, batch_docs >= 1, lora_steps >= 0")
        _check(self.lora_lr >= 0 and self.sgd_lr >= 0 and self.global_lr >= 0, "eval.ttt: learning rates must be >= 0")
        _check(0 <= self.lora_beta1 < 1 and 0 <= self.lora_beta2 < 1 and 0 <= self.sgd_momentum < 1,
               "eval.ttt: betas and momentum in [0, 1)")
        _check(self.lora_weight_decay >= 0 and self.sgd_clip >= 0, "eval.ttt: weight decay and clip >= 0")
        _check(self.sgd_chunk_tokens >= 1 and self.sgd_epochs >= 0 and self.sgd_batch_seqs >= 1,
               "eval.ttt: sgd_chunk_tokens, sgd_batch_seqs >= 1, sgd_epochs >= 0")
        _check(self.phases >= 0 and self.prefix_docs >= 0 and self.global_epochs >= 0, "eval.ttt: phases, prefix_docs, global_epochs >= 0")


@dataclass
class MixConfig:
    """Causal online mixing (``--set eval.mix.KEY=VALUE``; :mod:`pgolf.eval.mix`): an interpolated n-gram
    model over the tokens scored so far (absolute discounting, PPM-style escapes), mixed with the LM.
    ``linear``: p = w·p_LM + (1 − w)·p_ngram; ``tilt``: the token-only tilt of [04-09a] (PR #1420 kernel,
    #2135), p'(t) = p_LM(t)·e^{β·[t = hint]} / (1 + p_LM(hint)(e^β − 1)), hint = what followed the last
    occurrence of the longest matching context."""

    mode: Literal["linear", "tilt", "cm"] = "linear"
    """``cm``: context mixing over each token's bits (:mod:`pgolf.eval.cm`): order-0..6, word, document,
    match and LM-top-choice models and the LM's path probabilities mixed in the logistic domain by weights
    learned online (paq8/lpaq/zpaq/cmix); ``max_order``/``discount``/``learn`` are the n-gram modes' own."""
    max_order: int = 6
    """Longest context (tokens) of the n-gram model; orders 0..max_order are interpolated."""
    discount: float = 0.7
    """Absolute discount D in (0, 1] of every order (0.5 is PPM-D's escape). 6 / 0.7 were the best of
    orders 4, 6, 8 × D 0.3, 0.5, 0.7 for the ``cpu`` model on enwiki (docs/benchmarks.md)."""
    learn: bool = True
    """Learn the weight online: for each context bucket (longest matching order, its count), the grid
    value with the best log-likelihood on the targets scored before the current ``update_every``
    block. Off: the fixed ``lm_weight`` / ``tilt_beta``."""
    lm_weight: float = 0.8
    """``linear``: weight of the LM (fixed, or before a bucket has data)."""
    tilt_beta: float = 2.0
    """``tilt``: β (fixed, or before a bucket has data) ([04-09a]: 2.0)."""
    tilt_min_order: int = 2
    """``tilt``: a hint needs a matching context of at least this many tokens."""
    update_every: int = 2048
    """Learned weights are refit after every block of this many targets."""
    cm_lr: float = 0.02
    """``cm``: the mixers' learning rate (online gradient descent on the code length, in nats per st unit)."""
    cm_chunk: int = 64
    """``cm``: targets per chunk; the learned state is updated after each chunk (exactly causal)."""
    cm_components: str = "orders,words,doc,lmtop,match,mixer2,tree"
    """``cm``: ``all`` or a comma list of orders, words, sparse, doc, lmtop, match, apm, mixer2, tree
    (:data:`pgolf.eval.cm.mixer.COMPONENTS`); the default leaves out the sparse models and the APM, which
    did not pay on enwiki (docs/benchmarks.md, the ablation)."""

    def __post_init__(self) -> None:
        _check(self.max_order >= 0 and 0 < self.discount <= 1, "eval.mix: max_order >= 0, discount in (0, 1]")
        _check(self.cm_lr >= 0 and self.cm_chunk >= 1, "eval.mix: cm_lr >= 0, cm_chunk >= 1")
        _comps = {c.strip() for c in self.cm_components.split(",") if c.strip()}
        _known = {"orders", "words", "sparse", "doc", "lmtop", "match", "apm", "mixer2", "tree"}
        _check(_comps == {"all"} or _comps <= _known,
               "eval.mix.cm_components: 'all' or a comma list of orders, words, sparse, doc, lmtop, match, apm, mixer2, "
               "tree")
        _check(0 <= self.lm_weight <= 1 and self.tilt_beta >= 0, "eval.mix: lm_weight in [0, 1], tilt_beta >= 0")
        _check(self.tilt_min_order >= 1 and self.update_every >= 1, "eval.mix: tilt_min_order, update_every >= 1")


EVAL_BASES = ("plain", "sliding", "ttt")
EVAL_METHODS = ("plain", "sliding", "ttt", "mix", "sliding+mix", "ttt+mix")
"""``EvalConfig.method`` / ``pgolf eval --method`` names (:mod:`pgolf.eval.methods`)."""


def ttt_ssm_message(mode: str) -> str:
    """Why LoRA test-time training refuses a model with SSM layers (one line; :mod:`pgolf.eval.ttt` says it too)."""
    return f"eval.ttt.mode={mode} (LoRA) adapts attention, which SSM layers (model.ssm_layers) lack: use eval.ttt.mode=sgd"


def parse_eval_method(name: str) -> tuple[str, bool]:
    """(base, mixed) of an evaluation method name; ConfigError for anything else."""
    n = name.strip().lower()
    if n in ("mix", "plain+mix"):
        return "plain", True
    base, _, extra = n.partition("+")
    if base in EVAL_BASES and extra in ("", "mix"):
        return base, extra == "mix"
    raise ConfigError(f"unknown eval method {name!r} (one of {', '.join(EVAL_METHODS)})")


@dataclass
class EvalConfig:
    """Evaluation of the reloaded artifact (CATALOGUE §1.2, §2.6)."""

    seq_len: int = 0
    """Context per scored sequence (0 = train.seq_len)."""
    batch_tokens: int = 524288
    """Global validation tokens per forward batch (``VAL_BATCH_SIZE``)."""
    compile: bool | Literal["auto"] = "auto"
    """Wrap the evaluated model in ``torch.compile`` (one compile per evaluation, plus one for a short last
    batch): ``auto`` on CUDA, eager on a CPU, as ``train.compile`` (:func:`pgolf.compile.resolve`). The
    ``cpu`` and ``demo`` presets turn it on, having measured that it pays on a CPU (docs/benchmarks.md)."""
    budget_seconds: float = 600.0
    """Wallclock of one ``pgolf eval`` method, from opening the artifact to the last token (load,
    dequantize, compile warm-up, precompute, scoring, adaptation); adaptation degrades to stay inside it
    (:mod:`pgolf.eval.clock`). 0 = no budget."""
    method: Literal["plain", "sliding", "ttt", "mix", "sliding+mix", "ttt+mix"] = "plain"
    """The evaluation that scores ``pgolf run`` (and its bundle, as a record's ``train_gpt.py`` scores
    itself): after the plain round-trip line, any other method runs as ``pgolf eval --method`` does
    (``eval.sliding`` / ``eval.ttt`` / ``eval.mix``, on its own ``budget_seconds`` clock started when the
    artifact is opened) and its ``final_<scheme>_<method>_exact`` line and metrics are the run's score."""
    sliding: SlidingConfig = field(default_factory=SlidingConfig)
    ttt: TttConfig = field(default_factory=TttConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    var_samples: int = 4
    """``model.objective=mdlm``: masking samples per validation sequence of the variational bound
    (:mod:`pgolf.eval.variational`); the standard error of ``val_var_bpb`` is estimated from them (≥ 2) and
    falls as 1/√samples; the cost is ``var_samples`` plain evaluations."""
    var_seed: int = 0
    """Seed of the bound's masks (each depends only on this seed, the sequence and the sample)."""

    def __post_init__(self) -> None:
        _check(self.seq_len >= 0, "eval.seq_len must be >= 0")
        _check(self.batch_tokens >= 1, "eval.batch_tokens must be >= 1")
        _check(self.budget_seconds >= 0, "eval.budget_seconds must be >= 0")
        _check(self.var_samples >= 2, "eval.var_samples must be >= 2 (the bound's standard error needs two samples)")


NOT_RESULT_CHANGING = frozenset({
    "name", "data.path", "data.tokenizer", "data.overlap_check", "data.overlap_prescan",
    "train.seed", "train.device", "train.threads", "train.log_every", "train.val_every",
    "train.val_tokens_during_training", "train.checkpoint_every_seconds", "train.autosize_cache", "track",
})
"""Flat config keys that do not change a run's result: the seed (runs are grouped across seeds), the name
(a label), where the data and tokenizer live (the data enters an identity by its content), and what only
changes how a run reports or where it runs. Every other field is result-changing: it is part of the
identity of an experiment (:mod:`pgolf.identity`) and is embedded in its ``train_gpt.py`` bundle; these
reach a bundle as the challenge's environment variables (SEED, DATA_PATH, TRAIN_LOG_EVERY, …)."""


@dataclass
class RunConfig:
    name: str = "run"
    """Recipe name (the preset it came from)."""
    track: Literal["10min_16mb", "non_record_16mb"] = "10min_16mb"
    """The challenge track the run is judged on (:mod:`pgolf.tracks`, openai/parameter-golf README): ``10min_16mb``
    (``records/track_10min_16mb/``: training ≤ 600 s and evaluation ≤ 600 s on 8×H100, a significant win) or
    ``non_record_16mb`` (``records/track_non_record_16mb/``: no training-time limit, no significance claim, e.g. the
    4-hour baseline ``2026-03-18_Quasi10Bfrom50B_SP1024_9x512_KV4_4h_pgut3``). Both cap the artifact at 16,000,000
    bytes. Read by ``pgolf info --hardware``, ``pgolf submit`` and ``pgolf review``; changes no result."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if self.model.objective == "mdlm":  # an MDLM run is scored by its bound, not by an exact method
            _check(self.eval.method == "plain", "model.objective=mdlm is scored by its variational bound "
                   f"(val_var_bpb), not by eval.method={self.eval.method}: set eval.method=plain")
        if self.model.ssm_layers and parse_eval_method(self.eval.method)[0] == "ttt":
            _check(self.eval.ttt.mode == "sgd", ttt_ssm_message(self.eval.ttt.mode))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """Rebuild from :meth:`to_dict` output (JSON lists become tuples); unknown keys are an error
        (a config from a newer pgolf), values are coerced to the field types and checked."""
        return _build(cls, d, "")


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise ConfigError(msg)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_NONE = {"none", "null"}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls: type, d: Any, prefix: str) -> Any:
    """``cls(**d)`` for a config dataclass, recursively, every value coerced to its field's type."""
    where = prefix.rstrip(".") or "config"
    if not isinstance(d, dict):
        raise ConfigError(f"config section {where!r} must be an object" if prefix else "config must be a JSON object")
    hints = _hints(cls)
    unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        kind = "section" if not prefix else "key"
        raise ConfigError(f"unknown config {kind} {prefix}{unknown[0]}" + _close(unknown[0], list(hints)))
    kwargs = {k: _coerce(f"{prefix}{k}", v, hints[k]) for k, v in d.items()}
    return cls(**kwargs)


def type_name(typ: Any) -> str:
    """A readable name of a field type: ``int``, ``tuple of int``, ``one of a, b``, ``float or none``."""
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin is typing.Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return " or ".join(type_name(a) for a in rest) + (" or none" if len(rest) < len(args) else "")
    if origin is tuple:
        return f"tuple of {type_name(args[0])}"
    return getattr(typ, "__name__", str(typ))


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Convert ``value`` (a string from ``--set``, a JSON value, or a Python value in a preset) to the
    field type ``typ``: bool, int, float, str, ``Literal[...]``, ``tuple[X, ...]`` (from a list, a tuple
    or a comma-separated string; ``""`` is the empty tuple), ``X | None`` (``none``/``null``), or a
    nested config dataclass (from an object). Anything else is one ConfigError naming the key."""
    if dataclasses.is_dataclass(typ):
        if dataclasses.is_dataclass(value) and type(value) is typ:
            return value
        return _build(typ, value, f"{key}.")
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) < len(args) and (value is None or (isinstance(value, str) and value.strip().lower() in _NONE)):
            return None
        for a in rest:  # the first member that parses
            try:
                return _coerce(key, value, a)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: cannot parse {value!r} as {type_name(typ)}")
    if origin is typing.Literal:
        for a in args:
            if value == a or (isinstance(value, str) and not isinstance(a, str) and value.strip() == str(a)):
                return a
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(repr(a) for a in args)}")
    if origin is tuple:
        if len(args) != 2 or args[1] is not Ellipsis:
            raise ConfigError(f"{key}: unsupported field type {typ} (use tuple[X, ...])")
        if isinstance(value, str):
            items = [v.strip() for v in value.replace(";", ",").split(",")]
            items = [] if items == [""] else items
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise ConfigError(f"{key}: cannot parse {value!r} as {type_name(typ)}")
        return tuple(_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(items))
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            s = str(value).strip().lower()
            if s in _TRUE:
                return True
            if s in _FALSE:
                return False
            raise ValueError
        if typ is int:
            if isinstance(value, bool) or isinstance(value, (list, tuple, dict)) or value is None:
                raise ValueError
            if isinstance(value, int):
                return value
            f = float(str(value).strip().replace("_", ""))
            if not f.is_integer():
                raise ValueError
            return int(f)
        if typ is float:
            if isinstance(value, bool) or isinstance(value, (list, tuple, dict)) or value is None:
                raise ValueError
            return float(str(value).strip().replace("_", "")) if isinstance(value, str) else float(value)
        if typ is str:
            if isinstance(value, (list, tuple, dict)) or value is None:
                raise ValueError
            return str(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{key}: cannot parse {value!r} as {type_name(typ)}") from None
    raise ConfigError(f"{key}: unsupported field type {typ!r}")


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """``{"model.attn.xsa_layers": (7, 8), ...}``: every leaf field of a config dataclass by dotted path."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            out.update(flatten(v, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = v
    return out


def field_docs(cls: type = None, prefix: str = "") -> dict[str, str]:  # type: ignore[assignment]
    """Dotted path → the field's docstring (the string literal under it in the source), for ``pgolf info``."""
    import ast
    import inspect
    import textwrap

    cls = cls or RunConfig
    out: dict[str, str] = {}
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        tree = None
    docs: dict[str, str] = {}
    if tree is not None:
        body = tree.body[0].body  # type: ignore[attr-defined]
        for a, b in zip(body, body[1:], strict=False):
            if isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name) and isinstance(b, ast.Expr) \
                    and isinstance(b.value, ast.Constant) and isinstance(b.value.value, str):
                docs[a.target.id] = " ".join(b.value.value.split())
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(field_docs(hints[f.name], f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = docs.get(f.name, "")
    return out


def field_types(cls: type = None, prefix: str = "") -> dict[str, Any]:  # type: ignore[assignment]
    """Dotted path → field type, for every leaf field."""
    cls = cls or RunConfig
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        t = _hints(cls)[f.name]
        if dataclasses.is_dataclass(t):
            out.update(field_types(t, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = t
    return out


def set_path(d: dict[str, Any], path: str, value: Any, *, item: str | None = None) -> None:
    """Set a dotted ``path`` in the nested dict ``d`` (from :meth:`RunConfig.to_dict`); unknown paths and
    paths that name a whole section are one ConfigError."""
    shown = item if item is not None else f"{path}={value}"
    parts = [p.strip() for p in path.strip().split(".")]
    if not all(parts):
        raise ConfigError(f"--set expects section.key=value, got {shown!r}")
    node: Any = d
    for i, p in enumerate(parts[:-1]):
        if not isinstance(node, dict) or p not in node:
            what = "section" if i == 0 else "key"
            raise ConfigError(f"unknown config {what} {'.'.join(parts[: i + 1])!r} in --set {shown}")
        node = node[p]
    leaf = parts[-1]
    if not isinstance(node, dict):
        raise ConfigError(f"{'.'.join(parts[:-1])} is not a section, in --set {shown}")
    if leaf not in node:
        if len(parts) == 1:
            raise ConfigError(f"--set expects section.key=value, got {shown!r}")
        near = _close(leaf, list(node))
        raise ConfigError(f"unknown config key {path.strip()}{near}")
    if isinstance(node[leaf], dict):
        raise ConfigError(f"{path.strip()} is a section; set one of its keys ({', '.join(node[leaf])})")
    node[leaf] = value


def _close(key: str, options: list[str]) -> str:
    """`` (did you mean X?)`` for the closest of ``options``, or ""."""
    import difflib

    near = difflib.get_close_matches(key, options, n=1)
    return f" (did you mean {near[0]}?)" if near else ""


def parse_override(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ConfigError(f"--set expects section.key=value, got {item!r}")
    path, value = item.split("=", 1)
    return path.strip(), value


def apply_overrides(cfg: RunConfig, overrides: list[str] | tuple[str, ...]) -> RunConfig:
    """A copy of ``cfg`` with ``section.key=value`` (or ``section.sub.key=value``) overrides applied;
    values are coerced to the field types and every check runs again."""
    return apply_changes(cfg, [parse_override(item) for item in overrides], items=list(overrides))


def apply_changes(cfg: RunConfig, changes, *, items: list[str] | None = None) -> RunConfig:
    """A copy of ``cfg`` with ``(dotted path, value)`` changes applied (values: strings as from ``--set``
    or Python values); coerced and checked by :meth:`RunConfig.from_dict`."""
    d = cfg.to_dict()
    for i, (path, value) in enumerate(changes):
        set_path(d, path, value, item=items[i] if items else None)
    return RunConfig.from_dict(d)


def load_config(path: str) -> RunConfig:
    """Read a ``config.json`` written by a run."""
    from pathlib import Path

    p = Path(path)
    try:
        d = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not a readable JSON config ({e})") from None
    return RunConfig.from_dict(d)
