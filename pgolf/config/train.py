"""``train``: the budgeted loop, with its sub-sections ``train.ema``, ``train.swa`` and ``train.qat``
(and :func:`window_open`, the start rule SWA and QAT share)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pgolf.config.overrides import _check


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
