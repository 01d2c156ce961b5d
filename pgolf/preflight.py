"""Preflight: what a configuration will do on given hardware, before renting it (``pgolf info --hardware``).

Participants paid for 8×H100 runs to learn that a config did not fit (openai/parameter-golf issues
#1102, #942). From the model's FLOP count (:mod:`pgolf.model.flops`) and a per-hardware table this
predicts ms/step, steps within the budget, tokens seen, artifact bytes (the planner,
:mod:`pgolf.export.planner`) and the plain evaluation's time.

Time model, per optimizer step of B tokens with F_train FLOPs per token:

    ms/step = overhead_ms + 1000 · B · F_train / R

R (FLOP/s) and the fixed overhead (data, optimizer, all-reduce, launches) are fitted for ``8xH100`` on
the records' logs (``bench/preflight_fit.py``; leave-one-out errors in docs/benchmarks.md). With depth
recurrence switched on at a fraction f of the run, the two plans run at their own speeds and the
average is the time-weighted 1/(f/ms_plain + (1−f)/ms_looped). ``1xH100`` is derived (R/8, same
overhead: not measured). ``cpu`` is *measured on the spot*: a few real training steps of this config
on this machine (a shorter micro-batch for big models, scaled by tokens), in the precision
``train.amp_dtype`` resolves to.

Evaluation: the plain evaluation's forward FLOPs over the validation tokens at R_eval, fitted on the
records' logged evaluations (coarser: compile and data time are not modelled). ``sliding`` adds the
windows' FLOPs (× seq_len/stride). Score-first TTT (:mod:`pgolf.eval.ttt`) adds its passes at R_ttt:

    lora / phased:  N·F_fwd·3s  (each chunk scored by a forward that its s LoRA steps reuse; a step is a
                                 forward + a backward through the whole network ≈ 3 F_fwd; s = 0: N·F_fwd)
    phased:         + 3·F_fwd·E·P·(K+1)/2   (at each of K phase ends, E epochs of SGD over every document
                                 scored so far: P = prefix_docs × mean document tokens)
    sgd:            N·F_fwd·(1 + 3·epochs)

R_ttt is fitted on the records' logged phased-TTT evaluations ([04-14], [04-19], [04-27a]; their
compile warm-up, 80–160 s, ran before the timer and is not in these times — pgolf's clock counts it);
``bench/preflight_fit.py`` prints the leave-one-out errors. The causal n-gram mixer (``mix``) costs a
forward (the plain round trip's) plus its counting, which runs in numpy on the host CPU over the whole
gathered stream on every rank: :func:`mixer_seconds` measures it on this machine (sorts of synthetic
tokens), so its figure is this CPU's, not the GPU machine's host.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from pgolf.compile import compile_model
from pgolf.compile import resolve as resolve_compile
from pgolf.config import RunConfig
from pgolf.errors import ConfigError
from pgolf.model.flops import forward_flops_per_token, train_flops_per_token

NEEDED_WHEN = "train.autosize"

TTT_RATE_8XH100 = 5.273e13
"""R_ttt of 8×H100, fitted by bench/preflight_fit.py on [04-14], [04-19], [04-27a] (in-sample −11…+7 %,
leave-one-out −16…+10 %): about 6.6 TFLOP/s per GPU, so the records' TTT is bound by its many small
chunk steps, not by the matmuls (docs/benchmarks.md)."""
VAL_DOCS = 50_000
"""Documents in the official validation set (the first 50,000 of the fixed FineWeb selection)."""


@dataclass(frozen=True)
class Hardware:
    name: str
    flops: float
    """R: effective training FLOP/s of the whole machine."""
    overhead_ms: float
    """Fixed time per optimizer step."""
    eval_flops: float
    """R_eval: effective forward FLOP/s of the plain evaluation."""
    source: str
    ttt_flops: float | None = None
    """R_ttt: effective FLOP/s of score-first TTT's passes (module docstring); None: not known."""


HARDWARE: dict[str, Hardware] = {
    "8xH100": Hardware(
        "8xH100", flops=2.786e15, overhead_ms=19.09, eval_flops=1.707e15,
        source="fitted by bench/preflight_fit.py on the logged ms/step of [03-17b] (43.54), [03-22] (84.56) and "
               "[04-27a] (121.25, loop from 35 %), the logged plain evals of [03-17b], [03-22] and [04-27a] (1.4, 2.0, "
               "6.7 s) and phased-TTT evals of [04-14], [04-19], [04-27a] (331, 397, 463 s)",
        ttt_flops=TTT_RATE_8XH100,
    ),
    "1xH100": Hardware(
        "1xH100", flops=2.786e15 / 8, overhead_ms=19.09, eval_flops=1.707e15 / 8,
        source="derived from 8xH100 (one eighth of the rate, the same per-step overhead); not measured",
        ttt_flops=TTT_RATE_8XH100 / 8,
    ),
}
VAL_TOKENS = {1024: 63_779_840, 4096: 45_508_608, 8192: 40_540_160}
"""The official validation sets' token counts by vocabulary (CATALOGUE §1.1); CaseOps SP8192: 47,851,520."""
VAL_TOKENS_CASEOPS = 47_851_520


@dataclass
class Preflight:
    hardware: str
    ms_per_step: float
    """Average over the run (time-weighted over the plain and looped phases)."""
    ms_per_step_phases: dict[str, float]
    steps: int
    tokens: int
    train_flops_per_token: float
    artifact_bytes: int
    eval_seconds: float | None
    """Forward FLOPs of the plain round trip over the validation tokens at the eval rate, plus, for
    ``eval.method`` sliding, that × seq_len/stride (each window scores ``stride`` new tokens: [03-22] at
    seq 2048 stride 64 → 94 s predicted on 8×H100, CATALOGUE §2.6 reports ≈70–120 s for such stacks);
    ``ttt`` adds its passes at R_ttt, ``mix`` the mixer's counting on the host CPU (module docstring); None
    when unknown (no validation size, or hardware without an eval rate)."""
    eval_tokens: int | None
    method: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def ttt_flops(cfg: RunConfig, n_val: int, n_docs: int = VAL_DOCS) -> float:
    """FLOPs of score-first TTT's passes over ``n_val`` validation tokens in ``n_docs`` documents (module
    docstring; the plain round trip before it is not included)."""
    t = cfg.eval.ttt
    f = forward_flops_per_token(cfg.model, cfg.eval_seq_len,
                                True if cfg.model.recur.loops else None)
    if t.mode == "sgd":
        return n_val * f * (1 + 3 * t.sgd_epochs)
    out = n_val * f * (3 * t.lora_steps if t.lora_steps else 1)
    if t.mode == "phased" and t.phases:
        prefix_tokens = min(t.prefix_docs, n_docs) * n_val / n_docs
        out += 3 * f * t.global_epochs * prefix_tokens * (t.phases + 1) / 2
    return out


_MIXER_RATE: dict[int, float] = {}


def mixer_seconds(n_val: int, max_order: int, probe_tokens: int = 200_000) -> float:
    """Seconds the causal mixer's counting takes over ``n_val`` tokens on this machine's CPU: its statistics
    (:func:`pgolf.eval.mix.ngram_stats`: one stable sort per order) timed on ``probe_tokens`` synthetic Zipf
    tokens once per order setting, scaled linearly (the sort's log factor is within a few % over 10×)."""
    if max_order not in _MIXER_RATE:
        import numpy as np

        from pgolf.eval.mix import ngram_stats

        rng = np.random.default_rng(0)
        toks = np.minimum(rng.zipf(1.2, probe_tokens), 8191).astype(np.int64)
        t0 = time.perf_counter()
        ngram_stats(toks, max_order, 8192)
        _MIXER_RATE[max_order] = (time.perf_counter() - t0) / probe_tokens
    return n_val * _MIXER_RATE[max_order]


def _budget_ms(cfg: RunConfig) -> float:
    t = cfg.train
    return 1000.0 * (t.max_wallclock_seconds - t.calib_reserve_seconds) if t.max_wallclock_seconds > 0 else 0.0


def _average(ms_plain: float, ms_looped: float | None, frac: float) -> float:
    """Time-weighted ms/step: plain for the first ``frac`` of the wallclock, looped after."""
    if ms_looped is None:
        return ms_plain
    return 1.0 / (frac / ms_plain + (1.0 - frac) / ms_looped)


def measure_cpu_ms_per_token(cfg: RunConfig, looping: bool | None, steps: int = 2, max_seconds: float = 20.0) -> float:
    """Milliseconds per training token of ``cfg``'s model on this CPU: one warm-up (compiling when
    ``train.compile``) and ``steps`` optimizer steps on random tokens, each timed, the fastest kept (a
    neighbour on the CPU only slows steps down), with as many sequences as fit in about ``max_seconds``,
    at ``train.threads`` threads as the run will train."""
    from pgolf.model.gpt import GPT
    from pgolf.optim import build_optimizers
    from pgolf.precision import autocast, resolve_amp

    t = cfg.train
    prec = resolve_amp(t.amp_dtype, "cpu")
    torch.manual_seed(0)
    model = GPT(cfg.model)
    if looping is not None:
        model.looping = looping
    opts = build_optimizers(model, cfg.optim)
    fwd = compile_model(model, fullgraph=t.compile_fullgraph) if resolve_compile(t.compile, "cpu")[0] else model  # as the run
    per_seq = train_flops_per_token(cfg.model, t.seq_len, looping) * t.seq_len
    # a first guess of 2e10 FLOP/s bounds the micro-batch, then the measurement decides
    seqs = int(max(1, min(t.batch_tokens // t.seq_len, max_seconds * 2e10 / max(per_seq, 1) / (steps + 1))))
    g = torch.Generator().manual_seed(0)

    def step() -> None:
        x = torch.randint(0, cfg.model.vocab_size, (seqs, t.seq_len), generator=g)
        with autocast(prec, "cpu"):
            loss = fwd(x, x)
        loss.backward()
        for o in opts:
            o.step()
            o.zero_grad(set_to_none=True)

    if t.threads > 0:  # the thread count the run will train with (a probe with more would be too fast)
        torch.set_num_threads(t.threads)
    step()  # warm-up (and compilation), not timed
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    # the fastest step: another process on the CPU only ever slows a step down, never speeds it up
    return 1000.0 * min(times) / (seqs * t.seq_len)


def preflight(cfg: RunConfig, hardware: str, *, artifact_bytes: int | None = None,
              val_tokens: int | None = None) -> Preflight:
    """The prediction of the module docstring for ``cfg`` on ``hardware`` (``8xH100``, ``1xH100``, ``cpu``)."""
    m, t = cfg.model, cfg.train
    loops = m.recur.loops > 0
    frac = m.recur.start_frac if loops else 0.0
    f_plain = train_flops_per_token(m, t.seq_len, False)
    f_loop = train_flops_per_token(m, t.seq_len, True) if loops else None
    if hardware == "cpu":

        def ms_at(looping: bool | None) -> float:
            return measure_cpu_ms_per_token(cfg, looping) * t.batch_tokens

        method = "measured on this CPU (a few real training steps, scaled to the batch)"
        eval_rate = None
    else:
        hw = HARDWARE.get(hardware)
        if hw is None:
            raise ConfigError(f"unknown hardware {hardware!r} (known: {', '.join([*HARDWARE, 'cpu'])})")

        def ms_at(looping: bool | None) -> float:
            flops = f_loop if looping else f_plain
            return hw.overhead_ms + 1000.0 * t.batch_tokens * flops / hw.flops  # type: ignore[operator]

        method = f"FLOP model, {hw.name} table ({hw.source})"
        eval_rate = hw.eval_flops
    if loops and frac > 0:  # plain until start_frac, looped after
        ms_plain, ms_loop = ms_at(False), ms_at(True)
    else:  # one plan all run (looped from the start, or no recurrence)
        ms_plain, ms_loop = ms_at(True if loops else None), None
    avg = _average(ms_plain, ms_loop, frac)
    budget = _budget_ms(cfg)
    steps = min(t.iterations, int(budget // avg)) if budget > 0 else t.iterations
    phases = {"plain": ms_plain} if ms_loop is None else {"plain": ms_plain, "looped": ms_loop}
    n_val = val_tokens
    if n_val is None and cfg.data.path:
        n_val = VAL_TOKENS_CASEOPS if "caseops" in cfg.data.path else VAL_TOKENS.get(m.vocab_size)
    eval_s = None
    if n_val is not None and eval_rate is not None:
        seq = cfg.eval_seq_len
        eval_s = n_val * forward_flops_per_token(m, seq) / eval_rate  # the plain round trip
        ev = cfg.eval
        plain = eval_s
        if ev.method.startswith("sliding"):  # + the scoring pass: windows of seq tokens, each scoring stride new ones
            eval_s += plain * seq / max(min(ev.sliding.stride, seq), 1)
        elif ev.method.startswith("ttt"):
            r_ttt = None if hardware == "cpu" else HARDWARE[hardware].ttt_flops
            eval_s = None if r_ttt is None else eval_s + ttt_flops(cfg, n_val) / r_ttt
        if eval_s is not None and ev.method.endswith("mix"):
            eval_s += mixer_seconds(n_val, ev.mix.max_order)
    if artifact_bytes is None:
        from pgolf.export.planner import estimate_artifact_bytes

        artifact_bytes = estimate_artifact_bytes(cfg).artifact_bytes
    return Preflight(hardware=hardware, ms_per_step=avg, ms_per_step_phases=phases, steps=steps,
                     tokens=steps * t.batch_tokens, train_flops_per_token=f_plain if f_loop is None else f_loop,
                     artifact_bytes=int(artifact_bytes), eval_seconds=eval_s, eval_tokens=n_val, method=method)
