"""Named recipes. A root preset is a function returning a :class:`~pgolf.config.RunConfig`; a derived
preset is its parent plus a list of changes (dotted path → value), as the records were built — each
record is the one before it plus a few switches (torchtitan ``config_registry``).

``pgolf info NAME`` / ``pgolf run NAME`` look them up in :data:`PRESETS`; ``--set section.key=value``
overrides any field afterwards. :func:`provenance` tells, for every field, which layer set it:
``default`` (the dataclass default), a preset's name, or ``--set``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pgolf.config import (
    DataConfig,
    EmaConfig,
    EvalConfig,
    ExportConfig,
    MixConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    apply_changes,
    flatten,
    parse_override,
)
from pgolf.errors import ConfigError


def baseline() -> RunConfig:
    """The official naive baseline [03-17b], unchanged: 9×512, sp1024, 524,288-token batches,
    600 s on 8×H100 (CATALOGUE §1.3–§1.7). Expects FineWeb sp1024 shards (``pgolf data fetch``)."""
    return RunConfig(name="baseline", data=DataConfig(path="data/datasets/fineweb10B_sp1024"),
                     train=TrainConfig(compile_fullgraph=True))  # torch.compile(..., fullgraph=True) on CUDA (auto)


def demo() -> RunConfig:
    """The main job on a fresh machine: the embedded corpus (Python's own documentation), a tiny
    model, 150 s of training; whole run ≤ 5 minutes on 2 CPU cores."""
    return RunConfig(
        name="demo",
        data=DataConfig(path=""),
        model=ModelConfig(vocab_size=1024, num_layers=4, model_dim=128, num_heads=4, num_kv_heads=2, mlp_mult=2),
        optim=OptimConfig(matrix_lr=0.04, scalar_lr=0.04, tied_embed_lr=0.05, muon_momentum_warmup_steps=100),
        train=TrainConfig(
            max_wallclock_seconds=150,
            warmup_steps=1,
            compile=True,
            warmdown_frac=0.3,
            batch_tokens=16384,
            seq_len=256,
            grad_accum=1,
            val_every=0,
            log_every=25,
            checkpoint_every_seconds=60,
        ),
        eval=EvalConfig(batch_tokens=65536, compile=True),
    )


def cpu() -> RunConfig:
    """The 2-core-CPU recipe under a 600 s training budget with model bytes ≤ 1,000,000 (int8 + zlib),
    sized to the machine it runs on: ``train.autosize`` picks depth, width and batch from a throughput
    probe before the clock (:mod:`pgolf.autosize`); the shape below (3L×192, 8K-token batch, tuned on
    an AMX Xeon) is the probe's reference and what ``cpu-fixed`` trains. On it, the three switches that
    won the equal-step ablations on 2 seeds (docs/benchmarks.md "Technique ablations at equal steps";
    together −0.019 / −0.026 bpb at 539 steps):

    ==========================  =====================================================  =============
    setting                     source                                                 alone (bpb)
    ==========================  =====================================================  =============
    ``model.mlp_act``           LeakyReLU(0.5)² [03-23] PR #493/#518, later records    −0.011
    ``model.parallel_start=-1`` parallel residual lanes [03-31] PR #1204, on the last    −0.011
                                layer only (the records start at 7–8 of 11)
    ``train.ema.horizon_frac``  EMA [03-20d] PR #287 as a fraction of the run: 0.07     −0.004
                                ≈ the records' 0.997 over their ~4,900 steps
    ==========================  =====================================================  =============

    They pay on short runs (slow machines); at 2,236 steps of 3L×192 (600 s on the AMX Xeon) they were
    neutral (−0.0005) and cost 3.6 % step time. The records' depth and long-context techniques (XSA,
    LN scale, partial RoPE, Polar Express, orthogonal init) hurt at 2–3 layers and 256 tokens and are
    left off.

    The run scores itself as the records did, with an evaluation that learns from the text already scored
    (``eval.method=mix``, on the 600 s evaluation clock; the plain round trip is logged first and kept in
    metrics.json): token context mixing (``eval.mix.mode=cm``, :mod:`pgolf.eval.cm`: paq/zpaq-style
    logistic mixing of the LM's bit probabilities with order-0..6, word, document, match and LM-top-choice
    models over the tokens scored so far; docs/benchmarks.md "Token context mixing against zpaq"). Before
    it, the n-gram mixer (``eval.mix.mode=linear``, :mod:`pgolf.eval.mix`; interpolated orders 0–6 mixed
    with the LM by weights learned online; the records' token-only form is the n-gram tilt of [04-09a]
    PR #1420, #2135). A model trained on a few million tokens misses the
    repetition inside a long document that the counts catch: on the AMX Xeon it lowered the 600 s
    models' bpb by 0.18 on enwiki and 0.38 on Python source in under 30 s (docs/benchmarks.md "`cpu`
    scores itself with the causal mixer"). LoRA test-time training before the mixer (``ttt+mix``) gains
    0.05 more on enwiki at 600 s but takes 5–10 minutes of the evaluation clock where the mixer takes
    under 30 s, so it is one ``--set`` away rather than the default. The mixer keeps one table over the
    stream, so under torchrun set ``eval.method=plain`` (the run says so before training).

    ``cpu-v1`` is the recipe before these switches (plain evaluation), the reference the upgrade is
    measured against (docs/benchmarks.md "The upgraded `cpu` … side by side on the AMX Xeon")."""
    return RunConfig(
        name="cpu",
        data=DataConfig(path=""),
        model=ModelConfig(vocab_size=1024, num_layers=3, model_dim=192, num_heads=4, num_kv_heads=2, mlp_mult=2,
                          mlp_act="leaky_relu2", parallel_start=-1),
        optim=OptimConfig(muon_momentum_warmup_steps=200),
        train=TrainConfig(
            max_wallclock_seconds=600,
            ema=EmaConfig(horizon_frac=0.07),
            warmup_steps=2,
            compile=True,
            warmdown_frac=0.4,
            batch_tokens=8192,
            seq_len=256,
            grad_accum=1,
            val_every=500,
            val_tokens_during_training=65536,
            log_every=50,
            autosize=True,
        ),
        # compiled plain: 11.6 s vs 35.8 s eager; the mixer: token context mixing (docs/benchmarks.md "cm")
        eval=EvalConfig(batch_tokens=65536, compile=True, method="mix", mix=MixConfig(mode="cm")),
        export=ExportConfig(keep_float_max_numel=4096),
    )


def tiny() -> RunConfig:
    """For tests and CI: a model of a few thousand parameters that trains in seconds."""
    return RunConfig(
        name="tiny",
        data=DataConfig(path=""),
        model=ModelConfig(vocab_size=1024, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1, mlp_mult=2),
        optim=OptimConfig(muon_momentum_warmup_steps=10),
        train=TrainConfig(
            iterations=20,
            max_wallclock_seconds=0,
            warmup_steps=0,
            warmdown_frac=0.2,
            batch_tokens=2048,
            seq_len=64,
            grad_accum=1,
            val_every=0,
            log_every=5,
            checkpoint_every_seconds=0,
            amp_dtype="fp32",
        ),
        eval=EvalConfig(batch_tokens=4096),
    )


@dataclass(frozen=True)
class Preset:
    """A named recipe: a root (``build``) or a child of ``parent`` with ``changes`` applied in order."""

    name: str
    build: Callable[[], RunConfig] | None = None
    parent: str | None = None
    changes: tuple[tuple[str, Any], ...] = ()
    """``(dotted path, value)``: values are Python values (tuples, floats) or strings as from ``--set``."""
    doc: str = ""

    def __post_init__(self) -> None:
        if (self.build is None) == (self.parent is None):
            raise ValueError(f"preset {self.name}: give exactly one of build or parent")


PRESETS: dict[str, Preset] = {}


def register(preset: Preset) -> Preset:
    """Add a preset (its parent must already be registered)."""
    if preset.parent is not None and preset.parent not in PRESETS:
        raise ValueError(f"preset {preset.name}: unknown parent {preset.parent!r}")
    PRESETS[preset.name] = preset
    return preset


def derive(name: str, parent: str, changes: Mapping[str, Any] | list[tuple[str, Any]], doc: str = "") -> Preset:
    """Register ``name`` = ``parent`` + ``changes`` (``name`` is set too)."""
    items = tuple(changes.items()) if isinstance(changes, Mapping) else tuple(changes)
    return register(Preset(name, parent=parent, changes=items, doc=doc))


for _fn in (demo, cpu, baseline, tiny):
    register(Preset(_fn.__name__, build=_fn, doc=(_fn.__doc__ or "").strip()))


RECORD_0322 = {
    # compiled as the record ran (train_gpt.py: torch.compile(base_model, dynamic=False, fullgraph=True)),
    # its evaluation too (torch.compile(eval_model, …)), also off CUDA
    "train.compile": True,
    "eval.compile": True,
    # model: 11L × 512, MLP 3×, the [03-22] stack
    "model.num_layers": 11,                 # [03-20b]/[03-20c]: 10 → 11 layers
    "model.mlp_mult": 3,                    # [03-19b/c]: MLP 3×, "the largest single gain"
    "model.embed.bigram_buckets": 2048,     # BigramHash 2048×128 [03-20d]–[03-22] (hash of PR #162)
    "model.embed.bigram_dim": 128,
    "model.embed.smear": "v2",              # SmearGate v2 [03-20a] PR #162 (no BOS fix yet)
    "model.attn.xsa_layers": (7, 8, 9, 10), # XSA on the last 4 [03-20d] PR #287
    "model.attn.rope_dims": 16,             # partial RoPE 16/64 [03-21] PR #315
    "model.attn.rope_train_len": 1024,      # the record's Rotary(train_seq_len=1024): NTK-scaled at 2048
    "model.ln_scale": True,                 # LN scale [03-21] PR #315
    "model.attn.ve_layers": (9, 10),        # value embeddings 128 on layers 9, 10 [03-22] (PR #374)
    "model.attn.ve_dim": 128,
    "model.init": "orthogonal_records",     # orthogonal init + 1/√(2L) on .proj [03-19h]/[03-20a], as coded
    # optimizer
    "optim.tied_embed_lr": 0.035,
    "optim.matrix_lr": 0.025,               # 0.02 [03-18c] → 0.025
    "optim.scalar_lr": 0.025,
    "optim.muon_momentum": 0.99,            # 0.99 warmed from 0.92 over 1,500 steps [03-19g], [03-19c]
    "optim.muon_momentum_warmup_start": 0.92,
    "optim.muon_momentum_warmup_steps": 1500,
    "optim.grad_clip_norm": 0.3,            # [03-19d]
    "optim.muon_wd": 0.04,                  # Muon WD 0.04 [03-20a] PR #162
    "optim.adam_wd": 0.04,                  # AdamW 0.04 on embeddings and scalars (03-20 … 03-29 stacks)
    # training
    "train.batch_tokens": 786_432,          # [03-20a] on
    "train.seq_len": 2048,                  # [03-18b] on
    "train.warmdown_iters": 3500,           # [03-22]: warmdown 3500 (−0.0002)
    "train.val_every": 4000,
    "train.log_every": 500,
    "train.ema.decay": 0.997,               # EMA [03-20d] PR #287, the exported weights
    "train.qat.kind": "ste",                # late QAT int6 below lr_mul 0.15 [03-22] (PR #286)
    "train.qat.bits": 6,
    "train.qat.start_lr_mult": 0.15,
    "eval.seq_len": 2048,
    "eval.method": "sliding",               # the record's score: sliding window, stride 64 ([03-19e], CATALOGUE §2.6)
    "eval.sliding.stride": 64,
    "export.scheme": "record_0322",         # its own export: int6 GPTQ-lite (1/31 floor) + zstd-22 (--scheme budget: the search)
}
"""[03-22] ``2026-03-22_11L_EMA_GPTQ-lite_warmdown3500_QAT015_1.1233`` (PR #414; 1.1228 best seed,
1.1233 mean): every setting that differs from the baseline, with its source. 26,993,756 parameters, as
``train_seed1337.log``'s ``model_params``. It exports with its own recipe (scheme ``record_0322``: int6
GPTQ-lite with the 1/31 step floor, fp16 small tensors incl. ``bigram.proj``, zstd-22; ``--scheme budget``
searches instead). Not reproduced: the record's "tight SWA" (accumulated, never applied, CATALOGUE §5.2).
Its score is the sliding-window stride-64 evaluation
(``eval.method``), after the plain round-trip line, as in its log. Needs FineWeb sp1024 shards and 8×H100 for its 600 s."""

derive("record-0322", "baseline", RECORD_0322,
       doc="[03-22] PR #414, 1.1228: 11L×512 MLP3×, BigramHash 2048, SmearGate, XSA-4, partial RoPE, LN scale, "
           "VE 9–10, EMA 0.997, late QAT 0.15, Muon/Adam WD 0.04 (26,993,756 params)")


def _lookup(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})") from None


def preset_layers(name: str) -> list[tuple[str, RunConfig]]:
    """``[("default", RunConfig()), (root, cfg), …, (name, cfg)]``: the config after each layer."""
    chain: list[Preset] = []
    p: Preset | None = _lookup(name)
    while p is not None:
        chain.append(p)
        p = _lookup(p.parent) if p.parent else None
    layers: list[tuple[str, RunConfig]] = [("default", RunConfig())]
    for p in reversed(chain):
        if p.build is not None:
            cfg = p.build()
        else:
            cfg = apply_changes(layers[-1][1], [*p.changes, ("name", p.name)])
        layers.append((p.name, cfg))
    return layers


def get_preset(name: str) -> RunConfig:
    return preset_layers(name)[-1][1]


def provenance(name: str, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, tuple[Any, str]]:
    """Every leaf field of ``name`` + ``overrides``: ``{path: (value, source)}``, the source being the
    last layer that changed it (``default``, a preset name, or ``--set``)."""
    layers = preset_layers(name)
    if overrides:
        layers.append(("--set", apply_changes(layers[-1][1], [parse_override(o) for o in overrides], items=list(overrides))))
    flat = [(src, flatten(cfg)) for src, cfg in layers]
    out: dict[str, tuple[Any, str]] = {}
    for path in flat[-1][1]:
        source = "default"
        for (_, prev), (src, cur) in zip(flat, flat[1:], strict=False):
            if cur[path] != prev[path]:
                source = src
        out[path] = (flat[-1][1][path], source)
    return out


RECORD_0414 = {
    "train.compile": True,                  # torch.compile(base_model, dynamic=False, fullgraph=True) (l. 2576)
    "eval.compile": True,                   # and its eval model (l. 2815)
    # data: SP8192 [04-05] PR #1394 (no CaseOps yet)
    "data.path": "data/datasets/fineweb10B_sp8192",
    # model: stack "A" of CATALOGUE §3
    "model.vocab_size": 8192,               # SP8192 [04-05] PR #1394
    "model.num_layers": 11,
    "model.mlp_mult": 4,                    # MLP 4× [04-01] PR #1218
    "model.mlp_act": "leaky_relu2",         # LeakyReLU(0.5)² [03-23] PR #493/#518
    "model.qk_gain_init": 5.0,              # QK gain 5 [04-04], [04-06b]
    "model.ln_scale": True,                 # [03-21] PR #315
    "model.attn.rope_dims": 16,             # partial RoPE [03-21] (rope_yarn off: no NTK scaling)
    "model.attn.xsa_layers": tuple(range(11)),  # XSA on all layers [03-25] PR #1019
    "model.recur.loops": 2,                 # layers 3–5 three times from 35 % [04-09b] PR #1493
    "model.recur.start": 3,
    "model.recur.end": 5,
    "model.recur.start_frac": 0.35,
    "model.parallel_start": 8,              # parallel lanes from layer 8 [04-10] PR #1530, mean of lanes
    "model.skips": "gated",                 # sigmoid-gated U-Net skips [04-01] PR #1218 (from PR #1089)
    "model.init": "orthogonal",             # the banks' init: orthogonal q/k/v/up, zero o/down
    "model.attn.doc_mask": True,            # document-aware attention [04-10] PR #1530 (varlen on CUDA)
    # optimizer
    "optim.tied_embed_lr": 0.03,
    "optim.matrix_lr": 0.026,               # [04-14] PR #1626 ("sharp optimum")
    "optim.scalar_lr": 0.02,
    "optim.muon_momentum": 0.97,            # [04-09a] PR #1514
    "optim.muon_momentum_warmup_start": 0.92,
    "optim.muon_momentum_warmup_steps": 1500,
    "optim.muon_row_normalize": True,       # MuonEq-R [04-03] PR #1285
    "optim.muon_wd": 0.095,                 # [04-09b] on
    "optim.embed_wd": 0.085,
    "optim.adam_wd": 0.02,
    "optim.grad_clip_norm": 0.3,
    # training
    "train.batch_tokens": 786_432,
    "train.seq_len": 2048,
    "train.warmdown_frac": 0.75,            # [04-14]
    "train.ema.decay": 0.9965,              # [04-09b] on
    "train.calib_reserve_seconds": 4.0,     # GPTQ Hessians from 16 training batches in the last 4 s [04-14]
    "train.calib_batches": 16,              # gptq_calibration_batches 16 (GPTQ_CALIBRATION_BATCHES, l. 91)
    "train.val_every": 0,
    "train.log_every": 500,
    "eval.seq_len": 2048,
    # evaluation: phased score-first TTT [04-13] PR #1610, [04-14] PR #1626 (CATALOGUE §2.7): batched LoRA on
    # q, k, v, o, mlp and the head, per document, with 3 phases of global SGD over the first 2,000 documents
    "eval.method": "ttt",
    "eval.ttt.mode": "phased",
    "eval.ttt.lora_rank": 96,
    "eval.ttt.lora_lr": 0.0001,
    "eval.ttt.lora_optimizer": "adam",
    "eval.ttt.lora_beta1": 0.0,
    "eval.ttt.lora_beta2": 0.999,
    "eval.ttt.lora_weight_decay": 0.5,
    "eval.ttt.chunk": 48,
    "eval.ttt.batch_docs": 64,
    "eval.ttt.phases": 3,
    "eval.ttt.prefix_docs": 2000,
    "eval.ttt.global_lr": 0.001,            # global SGD: momentum 0.9, clip 1.0, 32 × 2048-token rows, 1 epoch
    "eval.ttt.sgd_momentum": 0.9,
    "eval.ttt.sgd_clip": 1.0,
    "eval.ttt.sgd_batch_seqs": 32,
    "eval.ttt.global_epochs": 1,
    "eval.ttt.lora_slots": "virtual",       # BatchedTTTLoRA: one slot per virtual layer when looping (l. 1161)
    "export.scheme": "record_0414",         # its own export: GPTQ int6/int7 emb + shuffle2+brotli-11 (--scheme budget: the search)
}
"""[04-14] ``2026-04-14_MultiPhaseGlobalSGD_PhasedTTT`` (PR #1626; 1.07193 over 3 seeds): stack "A" of
CATALOGUE §3 on SP8192, every setting that differs from the baseline with its source. 35,944,602
parameters, as ``train_seed42.log``'s ``model_params``. Its evaluation is the record's phased TTT (the
settings of its log). Not reproduced: the exact chunking of its global SGD (32,768-token chunks; here the
scored documents in 2,048-token rows), its export (GPTQ int6 matrices, int7 embedding, MLP k 12 /
attention k 13 / embedding k 15, brotli: the budget search is used); document-aware attention runs as an
SDPA mask."""

derive("record-0414", "baseline", RECORD_0414,
       doc="[04-14] PR #1626, 1.0719: stack A — SP8192, 11L×512 MLP4×, loop 3–5 ×3 from 35 %, parallel lanes from "
           "8, XSA-all, gated skips, MuonEq-R, EMA 0.9965, warmdown 0.75 (35,944,602 params)")

RECORD_0419 = {
    "data.path": "data/datasets/fineweb10B_sp8192_caseops",  # CaseOps [04-18] PR #1729
    "model.attn.gate": "dense",             # GatedAttn [04-19] PR #1736: σ(W_g x) per head, W_g [8, 512]
    "model.attn.gate_init_std": 0.005,      # gated_attn_init_std 0.005 (int8 gate rows at export)
}
"""[04-19] ``2026-04-19_SP8192_CaseOps_GatedAttn_QuantGate_Loop45_PhasedTTT`` (PR #1736; 1.06549 over 3
seeds) = [04-14] + CaseOps data + dense GatedAttn on every layer (+45,056 = 11 × 8 × 512 parameters:
35,989,658 as ``train_seed42.log``); its other hyperparameters, TTT included, equal [04-14]'s in the
logs; it exports with [04-14]'s scheme (``record_0414``). Not reproduced: the int8 gate rows at export
(``record_0427`` has them)."""

derive("record-0419", "record-0414", RECORD_0419,
       doc="[04-19] PR #1736, 1.0655: record-0414 + CaseOps + dense GatedAttn (35,989,658 params)")

RECORD_0427 = {
    "model.attn.gate": "sparse",            # SparseAttnGate [04-23] PR #1787 replaces the dense gate, …
    "model.attn.gate_scale": 0.5,           # … scale 0.5 [04-27a]
    "model.attn.gate_init_std": 0.0,        # sparse_attn_gate_init_std 0.0
    "model.embed.smear": "v3",              # SmearGate [04-16] PR #1667 …
    "model.embed.smear_bos_fix": True,      # … with the BOS fix [04-27a] PR #1855
    "optim.beta2": 0.99,                    # [04-27a]
    "optim.muon_ns": "polar_express",       # Polar Express [04-23] PR #1787
    "train.warmdown_frac": 0.85,            # [04-27a]
    "train.min_lr_mult": 0.1,               # MIN_LR 0.1 [04-23] PR #1787
    # GPTQ Hessians from 16 training batches: the record reserves 0.5 s but its 16 batches took 4.7 s after the
    # 599.5 s (train_seed42.log "GPTQ:collected 67 Hessians in 4.7s"); here they are collected inside the 600 s
    "train.calib_reserve_seconds": 5.0,
    "train.calib_batches": 16,
    "eval.ttt.lora_alpha": 144.0,           # TTT_LORA_ALPHA default 144 (PR #1767; l. 1639): output × α/r
    "eval.ttt.warm_start_a": True,          # TTT_WARM_START_A default 1 (l. 1642): a reset zeroes B only
    "eval.ttt.lora_rank": 80,               # phased TTT: rank 80, β2 0.99, prefix 2,500 documents [04-27a]
    "eval.ttt.lora_beta2": 0.99,
    "eval.ttt.prefix_docs": 2500,
    "export.scheme": "record_0427",         # its own export: GPTQ + LQER top-3 + int8 gates, per-group streams
}
"""[04-27a] ``2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611`` (PR #1855; 1.06108 over 3
seeds) = [04-19] with the changes of [04-23] (#1787) and [04-27a] (#1855) above, as the records were
built (the hyperparameter blocks of the three ``train_seed42.log`` files differ exactly there, besides
export settings). 35,945,671 parameters, as ``train_seed42.log``'s ``model_params``. Its TTT is its code's
(α 144, warm-start A, one LoRA slot per virtual layer, the length-sorted document queue) and its GPTQ
calibration takes its 16 training batches, inside the 600 s here (the record collected them in 4.7 s after
its 599.5 s). Compiled with fullgraph, as it ran. It exports with its own recipe (scheme ``record_0427``: GPTQ+SDClip
MLP k 11.5 / attention 13, int7 embedding k 14, int8 gate rows, LQER asymmetric rank 4 on the top 3, per-group
streams with row reordering; the best of brotli/lzma/zstd per stream where the record used lrzip-ZPAQ). The
fused Triton CE is the switch ``model.fused_kernels`` (a CUDA accelerator; off here, the reference CE). Document-aware attention (``model.attn.doc_mask``) packs the documents for torch's FlashAttention
varlen kernel on CUDA, as the record does (``doc_kernel=auto``), and masks elsewhere; unlike the record,
a document that runs past the end of a training sequence is cut there, not carried on."""

derive("record-0427", "record-0419", RECORD_0427,
       doc="[04-27a] PR #1855, 1.0611: SP8192, 11L×512 MLP4×, loop 3–5 ×3 from 35 %, parallel lanes from 8, "
           "XSA-all, gated skips, BOS-fixed SmearGate, SparseAttnGate, MuonEq-R + Polar Express, EMA 0.9965 "
           "(35,945,671 params)")

derive("cpu-fixed", "cpu", {"train.autosize": False},
       "The cpu recipe at its fixed reference shape (3L×192, 8K-token batch, tuned on a fast AMX Xeon), "
       "without the throughput probe: the `cpu` preset before autosize, for runs that must not depend on "
       "the machine's speed.")

derive("cpu-v1", "cpu-fixed", {"model.mlp_act": "relu2", "model.parallel_start": 0, "train.ema.horizon_frac": 0.0,
                               "eval.method": "plain"},
       "The cpu recipe as first tuned (3L×192, 8K-token batch, ReLU², no lanes, no EMA, no probe, plain "
       "evaluation): the preset issue 8 measures the upgraded `cpu` against.")

derive("swiglu-5090", "baseline", {
    # track_non_record_16mb/2026-03-19_SwiGLU_WarmdownFix_QuarterBatch_1x5090, its best run (exp 008): "VOCAB_SIZE=1024
    # NUM_LAYERS=9 MODEL_DIM=512 NUM_HEADS=8 NUM_KV_HEADS=4 MLP_HIDDEN=640 TRAIN_BATCH_TOKENS=131072
    # TRAIN_SEQ_LEN=1024 WARMDOWN_FRAC=0.2 GRAD_ACCUM_STEPS=2"; "Model params: 16,470,088"
    "model.mlp_act": "swiglu", "model.mlp_hidden": 640,
    "train.batch_tokens": 131072, "train.warmdown_frac": 0.2, "train.grad_accum": 2,
}, "The SwiGLU non-record run on one RTX 5090 (1.3281 after 600 s there): the baseline with a SwiGLU MLP of "
   "hidden width 640 (1.25×d, model.mlp_hidden), quarter batches of 131,072 tokens, 2 micro-steps, and the "
   "warmdown over the last 20 % of the wallclock (the schedule fix it reported, −0.006). 16,470,088 params.")

derive("baseline-cpu", "baseline", {
    # the official baseline [03-17b] shrunk to the 2-core CPU's compute, everything else its own
    "data.path": "",
    "model.num_layers": 4, "model.model_dim": 128, "model.num_heads": 4, "model.num_kv_heads": 2,
    "train.batch_tokens": 16384, "train.grad_accum": 1,
    # its 1,200-step warmdown of ≈13,780 steps on 8×H100 is 8.7 % of the run: the same fraction here
    "train.warmdown_frac": 0.087,
    "train.warmup_steps": 2, "train.compile": True, "train.val_every": 500,
    "train.val_tokens_during_training": 65536, "train.log_every": 50,
    "eval.batch_tokens": 65536, "eval.compile": True,
}, "The official baseline's recipe ported to a 2-core CPU as a new user would (4L×128, 16K-token batch, "
   "warmdown scaled to the run): the reference the cpu presets must beat (issue 8).")

RECORD_0324 = {
    "train.compile": True,                  # torch.compile(base_model) (COMPILE_MODE=default)
    "eval.compile": True,
    "data.path": "data/datasets/fineweb10B_sp8192",
    # model: 10L × 768, 8 heads / 4 KV (head_dim 96), MLP 4× ReLU², U-Net 5 + 5 with ones-init skips
    "model.vocab_size": 8192,
    "model.num_layers": 10,
    "model.model_dim": 768,
    "model.mlp_mult": 4,
    "model.rope_base": 5000.0,              # ROPE_BASE=5000 (with YaRN 2048, not reproduced)
    "model.logit_softcap": 10.0,            # LOGIT_SOFTCAP=10 (the record's degree-5 polynomial cap; tanh here)
    "model.qk_gain_init": 2.25,
    "model.embed.factor_dim": 254,          # EMBED_DIM=254: factored tied embedding 8192×254 + 254↔768 projections
    "model.embed.vocab_bias": True,         # vocab_bias [8192]
    "model.embed.count_frozen_head": True,  # its params: line counts the frozen, unused lm_head [8192, 768]
    # optimizer: NeoMuon = Muon with 3 Newton–Schulz steps, no weight decay
    "optim.muon_backend_steps": 3,
    "optim.scalar_lr": 0.02,
    "optim.tied_embed_lr": 0.02,
    # training: ternary from the first step, groups of 128 (BITNET_GROUP_SIZE=128)
    "train.qat.kind": "ternary",
    "train.qat.group_size": 128,
    "train.max_wallclock_seconds": 599.0,
    "train.iterations": 10000,
    "train.warmup_steps": 5,
    "train.warmdown_frac": 0.2,
    "train.val_every": 0,
    "train.log_every": 1000,
    "eval.method": "sliding",               # SLIDING_EVAL=1, stride 16: the record's score
    "eval.sliding.stride": 16,
    "export.scheme": "ternary_g128+fp8",    # base-3 trits + fp16 group scales, fp8 2-D floats, fp16 rest, lzma-9
}
"""[03-24] ``2026-03-24_74M_Ternary_UNet_FP8_10L_8192BPE_YaRN_NeoMuon`` (PR #640; 1.1570 over 3 seeds, the
ternary row of the leaderboard): every setting of its run that pgolf has, with its source. 73,685,840
parameters, as ``ternary_log_1337.txt``'s ``params:`` — which counts the record's tied model's frozen, never
read ``lm_head`` [8192, 768] (6,291,456; ``model.embed.count_frozen_head`` counts it without allocating it);
64,880,640 of them ternary, as its ``artifact:`` line. Not reproduced (a different function or budget, not
a different parameter count): the RMSNorm on the input of the output projections (``NormedTernaryLinear``),
fused QKV / up projections (the same parameters), YaRN 2048, the degree-5 polynomial softcap and z-loss 1e-4,
FP8 QAT of the embedding and its projections (the fp8 storage here is rounded at export, so its round trip
is not exact), the shrinkage fix at load only (``train.qat.shrink`` applies it in training and export alike),
eval temperature scaling (T = 0.90 from a 5-point grid), FlashAttention-3. Needs FineWeb sp8192 shards and
8×H100 for its 599 s."""

derive("record-0324", "baseline", RECORD_0324,
       doc="[03-24] PR #640, 1.1570: ternary (BitNet b1.58, groups of 128) 10L×768 MLP4× ReLU², factored tied "
           "embedding 254, vocab bias, NeoMuon (3 NS steps), base-3 + lzma export (73,685,840 params)")

derive("ternary-cpu", "cpu", {
    # the cpu recipe with ternary attention/MLP weights: autosize then fits a larger model into the same
    # 1,000,000 model bytes (the low-bit export's bytes per parameter come from the planner)
    "train.qat.kind": "ternary",
    "train.qat.group_size": 64,             # the record's 128 is wider than the cpu shapes' rows (192)
    "export.scheme": "ternary_g64+fp16",
}, "The cpu recipe with ternary weights ([03-24] PR #640: BitNet b1.58 absmean, packed 5 trits per byte, "
   "lzma-9): same 1,000,000-byte cap, same 600 s, autosized to the low-bit bytes per parameter.")

BYTE260 = {
    "data.path": "data/datasets/fineweb10B_byte260",  # DATA_PATH of train_gpt_hnet_byte.py
    "data.tokenizer": "byte260",            # 4 specials + 256 bytes, no SentencePiece model
    "model.vocab_size": 260,                # VOCAB_SIZE 260
}
"""Bytes as tokens: the 10-minute shape of the non-record ``2026-03-29_HNet_ByteVsSubword_Study``
(``train_byte260_best_10_min.log``: ``val_bpb:enabled tokenizer_kind=byte vocab_size=260``, 9 layers × 512,
8 heads / 4 KV heads, MLP 2×, tied embeddings, ``train_batch_tokens:524288 train_seq_len:1024``, embed_lr
0.05, matrix/scalar lr 0.04, 600 s on 8×H100: the baseline's hyperparameters at vocabulary 260), as the plain
transformer: the study's H-Net dynamic chunking (its encoder/router/main/decoder split, ``model_params:
17455176``) is another architecture and is not here. The study's score: 1.4116 ± 0.013 over 3 seeds
(best seed ``final_int8_zlib_roundtrip_exact val_bpb:1.40320671``, 4,520 steps). Its bytes are raw UTF-8
bytes (:func:`pgolf.data.bytetables.byte260_tables`), so val_bpb = val_bpb_raw. Data: ``pgolf data build
--tokenizer byte260`` of a corpus, or the challenge's ``fineweb10B_byte260`` export."""

derive("byte260", "baseline", BYTE260,
       doc="bytes as tokens: the byte260 vocabulary (no SentencePiece model) at the H-Net study's 10-minute shape, "
           "9L×512 as the baseline (2026-03-29_HNet_ByteVsSubword_Study, without its dynamic chunking)")

derive("byte260-cpu", "cpu", {"data.tokenizer": "byte260", "model.vocab_size": 260},
       "The cpu recipe on bytes (byte260 vocabulary, no SentencePiece model), everything else cpu's — the same "
       "autosize probe and 1,000,000-byte model cap, 600 s, 256 positions per sequence (as the H-Net study kept "
       "sp1024's 1,024 positions for bytes), the mixer evaluation — so the two compare on one machine. "
       "data.path empty = the embedded corpus built as bytes; on other text, `pgolf data build --tokenizer "
       "byte260`. Compare its val_bpb with cpu's val_bpb_raw (both over the original bytes).")

MDLM = {
    "model.objective": "mdlm",              # masked diffusion: bidirectional, MDLM's 1/t-weighted ELBO
    "model.num_layers": 11,                 # NUM_LAYERS = 11
    "model.mlp_mult": 3,                    # MLP_MULT = 3.0 (ReLU²)
    "model.num_kv_heads": 8,                # NUM_HEADS = 8, full multi-head attention
    "model.tie_embeddings": False,          # its own head (nn.Linear beside wte)
    "model.mdlm_eps": 0.001,                # NOISE_EPS = 1e-3
    "train.seq_len": 2048,                  # SEQ_LEN = 2048
    "train.batch_tokens": 65536,            # BATCH_SIZE 8 × GRAD_ACCUM 4 × 2048
    "train.iterations": 6000,               # TRAIN_STEPS = 6000
    "train.warmdown_frac": 0.25,            # WARMDOWN_STEPS 1500 of 6000
    "train.val_every": 0,                   # no exact val_bpb to log: the bound is scored after training
    "eval.seq_len": 2048,
    "export.scheme": "record_0322",         # int6 GPTQ-lite + zstd-22, no Hessians: int8+zlib would be ≈23.2 MB
}
"""Masked diffusion: the shape of the non-record ``2026-03-29_LLaDA_MDLM_Diffusion`` (``train_mdlm.py``; the
folder has no log, its README and submission.json give ``val_var_bpb`` 1.1465 with 512 discrete ELBO steps over
500 sequences, bytes assumed 4.3 per token, 6,000 steps in 31 min on 2×H100): 11L×512, 8 heads, MLP 3×, sp1024,
2,048-token sequences, 65,536-token batches, warmdown over the last quarter, trained with MDLM's continuous-time
ELBO (weight 1/t; the folder weighted by dσ instead, :mod:`pgolf.model.mdlm`) under the challenge's 600 s, scored
by the variational bound ``val_var_bpb`` over the exact scorer's bytes with its standard error
(``eval.var_samples``). Not reproduced: its adaLN time conditioning (MDLM and LLaDA show none is needed with
absorbing masks), AdamW at 6e-4 (pgolf's Muon/Adam split here), its antithetic pairs (a low-discrepancy draw
of t per batch here). 29,909,592 parameters here (the folder's 33 M include adaLN and a vocabulary padded to
1,088); the folder never exported an artifact: here ``record_0322``'s int6 export (the planner's estimate
15,766,290 bytes; the baseline's int8+zlib ≈ 23.2 MB would not fit)."""

derive("mdlm", "baseline", MDLM,
       doc="masked diffusion LM (MDLM objective, bidirectional) at the LLaDA_MDLM_Diffusion folder's shape, 11L×512 "
           "MLP3×, 2,048-token sequences; scored by the variational bound val_var_bpb, never val_bpb")

derive("mdlm-cpu", "cpu", {"model.objective": "mdlm", "eval.method": "plain", "train.val_every": 0},
       "The cpu recipe trained as a masked diffusion LM (model.objective=mdlm: bidirectional attention, MDLM's "
       "ELBO), everything else cpu's, so the two compare on one machine; scored by its variational bound "
       "val_var_bpb (an upper bound with its standard error, eval.var_samples), not the mixer or val_bpb.")

HYBRID_SSM = {
    # Mamba-3 hybrid (non-record 2026-04-15_Mamba3Hybrid_SP8192_GPTQ_TTT, 1.1473): its README command and the
    # header of train_seed1337.log ("model_params:25159984", "attn_indices:[2, 5]", "ssd: d_state:64 expand:2.0
    # headdim:64 ngroups:1", "num_layers:7 mlp_mult:3.0", "train_batch_tokens:1048576 train_seq_len:4096").
    # Its Mamba-3 SISO layers (trapezoidal rule, rotary B/C, no conv) are Mamba-2 SSD layers here (conv 4, as
    # 37M_LeWM_Jepa_Mamba2_10L_UNet), so the parameter count differs from the log's.
    "data.path": "data/datasets/fineweb10B_sp8192",
    "model.vocab_size": 8192,
    "model.num_layers": 7,
    "model.ssm_layers": (0, 1, 3, 4, 6),    # attention at 2 and 5 (NUM_ATTN_LAYERS=2, evenly spaced)
    "model.mlp_mult": 3,
    "model.mlp_act": "leaky_relu2",         # its MLP: LeakyReLU(0.5)²
    "model.init": "orthogonal",             # USE_ORTHO_INIT=1 (default)
    "model.ssm.state": 64, "model.ssm.expand": 2, "model.ssm.headdim": 64, "model.ssm.groups": 1,
    "model.ssm.chunk": 64,                  # MAMBA3_CHUNK_SIZE
    "train.seq_len": 4096,
    "train.batch_tokens": 1_048_576,
    "train.warmdown_iters": 2600,           # WARMDOWN_ITERS=2600 WARMDOWN_SHAPE=linear
    "train.ema.decay": 0.997,               # EMA_ENABLED=1, EMA_DECAY=0.997 (defaults)
    "train.qat.kind": "ste", "train.qat.bits": 6,
    "train.qat.start_lr_mult": 0.15,        # LATE_QAT_THRESHOLD=0.15
    "optim.matrix_lr": 0.025, "optim.scalar_lr": 0.02, "optim.tied_embed_lr": 0.05,
    "optim.muon_momentum": 0.99,
    "optim.muon_wd": 0.04,                  # WEIGHT_DECAY=0.04
    "optim.muon_row_normalize": True,       # MUON_EQ_R=1
    "export.scheme": "gptq6_emb7_brotli",   # the nearest scheme to its GPTQ int6 + int8 embedding + LZMA
    "train.compile": True, "eval.compile": True,
}
derive("hybrid-ssm", "baseline", HYBRID_SSM,
       "The Mamba-3 hybrid of the non-record track (2026-04-15_Mamba3Hybrid_SP8192_GPTQ_TTT, 1.1473) at its "
       "logged shape: SP8192, 7 layers × 512, Mamba-2 SSD mixers (pgolf.model.ssm: d_state 64, expand 2, head "
       "dim 64, chunk 64) on layers 0 1 3 4 6 and attention on 2 and 5, MLP 3× LeakyReLU², 4096-token "
       "sequences, 1M-token batches, its optimizer settings, late QAT and GPTQ int6. Not reproduced: Mamba-3's "
       "SISO variant (its log: 25,159,984 parameters), its stateful-overlap evaluation, TTT (a TTT adapter "
       "targets attention blocks) and evaluation temperature.")

derive("hybrid-ssm-cpu", "cpu", {
    # the cpu recipe (autosize probe, 1,000,000-byte model cap, 600 s, mixer evaluation) with the hybrid's
    # pattern: SSD mixers on the first and last layers, attention between (3 layers: 2 SSM + 1 attention,
    # near the Mamba-3 hybrid's 5:2); the record's SSD shape, untuned on the CPU
    "model.ssm_layers": (0, -1),
}, "The cpu recipe with Mamba-2 SSD mixers (pgolf.model.ssm) on the first and last layers, attention "
   "between — the hybrid-ssm pattern at CPU size, for the side-by-side with cpu at the same 1,000,000-byte cap.")
