"""``model``: the GPT's shape and options, with its sub-sections ``model.attn``, ``model.embed``,
``model.recur`` and ``model.ssm``; :meth:`ModelConfig.layers` resolves the per-layer lists at a depth."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pgolf.config.overrides import _check


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
