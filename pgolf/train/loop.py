"""The budgeted training loop (CATALOGUE §1.5–§1.6).

Commands (same code path everywhere):

    pgolf train tiny --out runs/t                        # CPU, seconds
    pgolf train cpu --out runs/cpu                       # CPU, 600 s budget
    pgolf train baseline --out runs/b                    # one GPU (grad_accum 8)
    torchrun --standalone --nproc_per_node=8 -m pgolf train baseline --out runs/b   # 8×H100

What one optimizer step is: every rank runs ``grad_accum`` micro-steps of
``batch_tokens / (world_size × grad_accum)`` tokens; each micro-loss is scaled by 1/grad_accum and
DDP averages gradients across ranks on the last micro-step only — so the update is the mean
gradient over the global batch, the same on 1, 2, 4 or 8 processes.

The clock: ``train_seconds`` counts only training steps (synchronised on CUDA); periodic
validation and checkpoint writing pause it. Stopping: after each step every rank compares its
time with ``max_wallclock_seconds`` and the flags are all-reduced with MAX, so all ranks stop after
the same step (the step in flight finishes, as in the baseline). The LR multiplier comes from
:func:`pgolf.optim.schedule.lr_multiplier` (wallclock-aware warmdown).

Robustness: a resumable checkpoint is written at most every ``checkpoint_every_seconds`` and at
the end; ``resume=True`` continues the exact token stream, optimizer state and clock. A non-finite
loss stops training with :class:`~pgolf.errors.TrainingError` naming the step; the last good
checkpoint is left untouched.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from pgolf import dist, logformat
from pgolf.compile import compile_model
from pgolf.compile import resolve as resolve_compile
from pgolf.config import RunConfig
from pgolf.data.loader import DistributedTokenLoader, ValData
from pgolf.data.prepare import RunData, prepare_data
from pgolf.errors import ConfigError, TrainingError
from pgolf.eval.bpb import EvalResult, evaluate
from pgolf.model.gpt import GPT, parameter_groups
from pgolf.optim import build_optimizers
from pgolf.optim.clip import clip_gradients
from pgolf.optim.schedule import lr_multiplier, muon_momentum, seq_len_at, wd_multiplier
from pgolf.optim.schedule import progress as run_progress
from pgolf.precision import agreed_amp, autocast
from pgolf.quant import HESSIANS_FILE
from pgolf.switch import needs
from pgolf.train import checkpoint as ckpt_mod
from pgolf.train.averaging import WeightAverager
from pgolf.train.log import RunLog


@dataclass
class TrainResult:
    model: GPT
    steps: int
    train_seconds: float
    tokens_seen: int
    stopped_by: str
    last_val: EvalResult | None
    losses: list[float]
    """Training loss of every step run by this call (a resumed call starts after the checkpoint)."""

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_seen / self.train_seconds if self.train_seconds > 0 else 0.0

    @property
    def ms_per_step(self) -> float:
        return 1000.0 * self.train_seconds / self.steps if self.steps else 0.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def grad_accum_steps(cfg: RunConfig, world_size: int) -> int:
    t = cfg.train
    if t.grad_accum:
        accum = t.grad_accum
    else:
        if 8 % world_size:
            raise ConfigError(f"world size {world_size} must divide 8 when train.grad_accum=0 (baseline rule)")
        accum = 8 // world_size
    per_micro = t.batch_tokens // (world_size * accum)
    for seq in (t.seq_len, *t.seq_len_stages):
        if per_micro * world_size * accum != t.batch_tokens or per_micro % seq:
            raise ConfigError(
                f"train.batch_tokens={t.batch_tokens} must split into world_size={world_size} × grad_accum={accum}"
                f" micro-batches of whole sequences of {seq} tokens (train.seq_len / seq_len_stages)"
            )
    return accum


def _set_threads(cfg: RunConfig) -> None:
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)


def train(
    cfg: RunConfig,
    run_dir: str | Path,
    *,
    data: RunData | None = None,
    resume: bool = False,
    log: RunLog | None = None,
    progress: bool | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train ``cfg`` into ``run_dir`` (checkpoints) and return the trained (uncompiled) model.

    ``on_step(step, loss)`` is called after every completed step (and its checkpoint, if any)."""
    run_dir = Path(run_dir)
    info = dist.init(cfg.train.device)
    device, rank, world = info.device, info.rank, info.world_size
    log = log or RunLog(None)
    _set_threads(cfg)
    t = cfg.train
    # With a calibration reserve the schedule and the stop rule see the budget minus the reserve.
    sched = t
    if t.calib_reserve_seconds > 0 and t.max_wallclock_seconds > 0:
        sched = dataclasses.replace(t, max_wallclock_seconds=t.max_wallclock_seconds - t.calib_reserve_seconds,
                                    calib_reserve_seconds=0.0)
    accum = grad_accum_steps(cfg, world)
    data = data or prepare_data(cfg)
    prec = agreed_amp(t.amp_dtype, device)
    log(f"precision: {prec.dtype} ({prec.reason})")

    torch.manual_seed(t.seed)  # identical init on every rank
    model = GPT(cfg.model).to(device)
    optimizers = build_optimizers(model, cfg.optim)
    qat = None
    if t.qat.kind != "off":  # imported behind its switch (a bundle without QAT leaves pgolf.quant.qat out)
        from pgolf.quant.qat import attach_qat

        qat = attach_qat(model, t.qat)  # before compile: the weight functions are part of the graph
    recur = cfg.model.recur
    late_loop = recur.loops > 0 and recur.start_frac > 0  # plain stack first, looped from start_frac
    averager = WeightAverager(model, t)
    use_compile, why_compile = resolve_compile(t.compile, device)
    compiled: torch.nn.Module = compile_model(model, fullgraph=t.compile_fullgraph) if use_compile else model
    fwd: torch.nn.Module = compiled
    if world > 1:
        if cfg.optim.parallel_muon:  # parallel Muon reduce-scatters the matrix gradients itself
            mat = {id(p) for _, p in parameter_groups(model)["matrix"]}
            DDP._set_params_and_buffers_to_ignore_for_model(
                compiled, [n for n, p in compiled.named_parameters() if id(p) in mat])
        fwd = DDP(compiled, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
    overlap = data.overlap_checker() if cfg.data.overlap_check else None
    if overlap is not None and cfg.data.overlap_prescan:  # before the clock; each rank checks its share
        t0 = time.perf_counter()
        shards, tokens = overlap.prescan(rank, world, functools.partial(_reduce_over_ranks, device=device) if world > 1 else None)
        log(f"overlap: no validation document in the {len(overlap.files)} train shards; this rank checked {shards} "
            f"({tokens:,} tokens) in {time.perf_counter() - t0:.2f}s before the training clock")
    loader = DistributedTokenLoader(data.spec.train_files, rank, world, device, vocab_size=cfg.model.vocab_size,
                                    overlap=overlap)
    suffix = "" if rank == 0 else f".rank{rank}"

    def val_subset() -> ValData:
        n = t.val_tokens_during_training
        if n and n < len(data.val.tokens):
            rb = data.val.raw_bytes[: n + 1] if data.val.raw_bytes is not None else None
            return ValData(tokens=data.val.tokens[: n + 1], raw_bytes=rb)
        return data.val

    def run_val() -> EvalResult:
        model.eval()
        r = evaluate(
            compiled if resolve_compile(cfg.eval.compile, device)[0] else model, val_subset(), data.tables, seq_len=cfg.eval.seq_len or t.seq_len,
            batch_tokens=cfg.eval.batch_tokens, device=device, amp_dtype=prec.dtype, score=data.score,
        )
        model.train()
        return r

    cur_seq = [0]

    def one_step(step: int, elapsed: float, seq_override: int = 0) -> float:
        """One optimizer step; returns the mean micro-loss (all-reduced). ``seq_override``: train at this
        sequence length instead of the schedule's (priming every stage's compile)."""
        mul = lr_multiplier(step, elapsed, sched)
        prog = run_progress(step, elapsed, sched)
        mom = muon_momentum(step, cfg.optim, prog)
        wd_mul = wd_multiplier(prog, cfg.optim)
        if late_loop and not model.looping and prog >= recur.start_frac:
            model.looping = True  # one recompile under torch.compile (the plan is a guarded attribute)
            log(f"layer_loop:enabled step:{step} progress:{prog:.4f} order:{[p.block for p in model.plan]}")
        if qat is not None and qat.update(prog, mul):
            log(f"late_qat:enabled step:{step} progress:{prog:.4f} lr_mul:{mul:.4f} kind:{t.qat.kind} bits:{t.qat.bits}")
        for opt in optimizers:
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * mul
                if "base_wd" in g:
                    g["weight_decay"] = g["base_wd"] * wd_mul
                if "momentum" in g:
                    g["momentum"] = mom
        seq = seq_override or seq_len_at(prog, sched)
        if not seq_override and seq != cur_seq[0]:
            if cur_seq[0]:
                log(f"seq_len:{seq} step:{step} progress:{prog:.4f}")
            cur_seq[0] = seq
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        for micro in range(accum):
            x, y = loader.next_batch(t.batch_tokens, seq, accum)
            sync_ctx = fwd.no_sync() if (world > 1 and micro < accum - 1) else contextlib.nullcontext()
            with sync_ctx:
                with autocast(prec, device):
                    loss = fwd(x, y)
                (loss / accum).backward()
            loss_sum += loss.detach().double()
        if cfg.optim.grad_clip_norm > 0:
            clip_gradients(model.parameters(), optimizers, cfg.optim.grad_clip_norm)
        for opt in optimizers:
            opt.step()
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        if averager.enabled:
            averager.update(model, step + 1, prog, mul)
        dist.all_reduce_(loss_sum)
        return float(loss_sum.item()) / (accum * world)

    # Priming steps (compile, autotune) are rolled back: not an LR warmup (CATALOGUE §1.5).
    priming = max(t.warmup_steps, 1 if use_compile else 0)  # a compiled run compiles before the clock
    if priming > 0 and not resume:
        init_model = copy.deepcopy(model.state_dict())
        init_opts = [copy.deepcopy(o.state_dict()) for o in optimizers]
        init_loader = loader.state_dict()
        avg_t, avg_info = averager.state_dict()  # copies: the priming steps update the average in place
        init_avg = ({k: v.clone() for k, v in avg_t.items()}, dict(avg_info))
        # prime every compile the run will need before the clock: both plans of a late loop, and each
        # progressive sequence length (a stage switch would otherwise recompile inside the training clock)
        for looped in ([False, True] if late_loop else [model.looping]):
            model.looping = looped
            for seq in dict.fromkeys(t.seq_len_stages or (0,)):
                for i in range(priming):
                    one_step(i, 0.0, seq)
        if qat is not None:  # priming steps may have switched QAT on (a schedule that starts at 0)
            qat.reset()
        averager.load_state_dict(*init_avg)
        model.load_state_dict(init_model)
        for o, s in zip(optimizers, init_opts, strict=True):
            o.load_state_dict(s)
        loader.load_state_dict(init_loader)

    if late_loop:
        model.looping = False
    step, train_seconds, tokens_seen = 0, 0.0, 0
    if not resume and rank == 0:  # Hessians of an earlier run in this directory belong to other weights
        (run_dir / HESSIANS_FILE).unlink(missing_ok=True)
    if resume:
        ck = ckpt_mod.load_checkpoint(run_dir, suffix)
        if ck.extra.get("world_size", world) != world:
            raise ConfigError(f"{run_dir}: checkpoint was written with world size {ck.extra['world_size']}, not {world}")
        model.load_state_dict(ck.model_state if ck.model_state else ckpt_mod.load_checkpoint(run_dir).model_state)
        for o, s in zip(optimizers, ck.optimizer_states, strict=True):
            o.load_state_dict(s)
        loader.load_state_dict(ck.loader_state)
        if averager.enabled:
            live = {k[len("live."):]: v for k, v in ck.averages.items() if k.startswith("live.")}
            if live:  # a run that ended on its average: continue from its live weights
                model.load_state_dict(live)
            averager.load_state_dict({k: v.to(device) for k, v in ck.averages.items()}, ck.extra.get("averaging", {}))
        ckpt_mod.restore_rng(ck.rng.get("tensors", {}), ck.rng.get("json", {}))
        step, train_seconds, tokens_seen = ck.step, ck.train_seconds, ck.tokens_seen
        log(f"resume: step:{step} train_time:{train_seconds * 1000:.0f}ms tokens:{tokens_seen}")

    def save(at_step: int, live_state: dict | None = None) -> None:
        """``live_state``: the model holds the applied average; keep the live weights beside it."""
        avg_t, avg_info = averager.state_dict()
        averages = dict(avg_t) if rank == 0 else {}
        model_state = model.state_dict() if rank == 0 else {}
        if live_state is not None and rank == 0:
            averages.update({f"live.{k}": v for k, v in live_state.items()})
        ck = ckpt_mod.Checkpoint(
            step=at_step, train_seconds=train_seconds, tokens_seen=tokens_seen,
            loader_state=loader.state_dict(),
            model_state=model_state,
            optimizer_states=[o.state_dict() for o in optimizers],
            extra={"world_size": world, "config": cfg.to_dict(), "averaging": avg_info,
                   "weights": averager.kind if live_state is not None else "live"},
            averages=averages,
        )
        ckpt_mod.save_checkpoint(run_dir, ck, suffix)
        dist.barrier()

    log(logformat.kv_line(model_params=model.num_params(), world_size=world, grad_accum_steps=accum, device=device))
    log(f"train: batch_tokens:{t.batch_tokens} seq_len:{t.seq_len} budget:{t.max_wallclock_seconds}s "
        f"iterations:{t.iterations} warmdown_frac:{t.warmdown_frac} amp:{prec.dtype} compile:{use_compile} "
        f"({why_compile}{', fullgraph' if use_compile and t.compile_fullgraph else ''})")

    budget = sched.max_wallclock_seconds
    show_bar = progress if progress is not None else sys.stderr.isatty()
    bar = None
    if show_bar and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=int(budget) if budget else t.iterations, initial=int(train_seconds) if budget else step,
                   unit="s" if budget else "step", file=sys.stderr, dynamic_ncols=True, leave=False)

    last_val: EvalResult | None = None
    last_ckpt = time.perf_counter()
    stopped_by = "iterations"
    losses: list[float] = []
    model.train()
    while True:
        if step >= t.iterations:
            stopped_by = "iterations"
            break
        _sync(device)
        t0 = time.perf_counter()
        loss = one_step(step, train_seconds)
        _sync(device)
        dt = time.perf_counter() - t0
        if not math.isfinite(loss):
            kept = "the last good checkpoint is kept" if ckpt_mod.has_checkpoint(run_dir) else "no checkpoint yet"
            raise TrainingError(f"non-finite training loss ({loss}) at step {step + 1}; training stopped, {kept} in {run_dir}")
        step += 1
        losses.append(loss)
        train_seconds += dt
        tokens_seen += t.batch_tokens
        if bar is not None:
            bar.n = min(int(train_seconds), int(budget)) if budget else step
            bar.set_postfix(loss=f"{loss:.4f}", step=step, refresh=True)
        if step % max(t.log_every, 1) == 0 or step == 1 or step >= t.iterations:  # the last step, as the root script
            log(logformat.step_line(step, t.iterations, loss, train_seconds, tokens_per_second=tokens_seen / train_seconds,
                                    lr_mul=lr_multiplier(step, train_seconds, sched)))
        stop = torch.tensor(1.0 if (budget and train_seconds >= budget) else 0.0, device=device)
        dist.all_reduce_(stop, "max")
        if t.val_every and step % t.val_every == 0 and not stop.item():
            last_val = run_val()
            log(logformat.val_line(step, t.iterations, last_val.val_loss, last_val.val_bpb, train_seconds))
        if stop.item():
            stopped_by = "wallclock"
            log(logformat.stop_line(train_seconds, step, t.iterations))
            break
        if t.checkpoint_every_seconds and time.perf_counter() - last_ckpt >= t.checkpoint_every_seconds:
            save(step)
            last_ckpt = time.perf_counter()
        if on_step is not None:
            on_step(step, loss)
    if bar is not None:
        bar.close()
    if late_loop and not model.looping:  # evaluation and the exported model always run looped
        log(f"layer_loop: the run ended at progress < {recur.start_frac}; the model is evaluated looped anyway")
        model.looping = True
    final = averager.averaged_state(model)
    if qat is not None:
        qat.detach()  # the exported model is the plain GPT
    live_state = None
    if final is not None:
        if averager.kind == "ema":
            log(f"ema: applying EMA weights (last decay {averager.last_decay:.6f}, {averager.count} updates)")
        else:
            log(f"swa: applying the mean of {averager.count} snapshots")
        live_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(final)
    elif averager.kind == "swa":
        log("swa: the window never opened; exporting the live weights")
    if t.calib_reserve_seconds > 0:  # Hessians of the weights that get exported (after averaging)
        left = t.calib_reserve_seconds
        if t.max_wallclock_seconds > 0:  # the last step may have run into the reserve
            left = min(left, t.max_wallclock_seconds - train_seconds)
        train_seconds += _calibrate_in_reserve(cfg, model, loader, accum, left, run_dir, log,
                                              prec.torch_dtype)
    save(step, live_state)
    return TrainResult(model=model, steps=step, train_seconds=train_seconds, tokens_seen=tokens_seen,
                       stopped_by=stopped_by, last_val=last_val, losses=losses)


def _reduce_over_ranks(a: np.ndarray, op: str, device: torch.device) -> np.ndarray:
    """All-reduce (``op``: max, min, sum) of a float64 array over the ranks — the overlap prescan's
    verdict, the same on every rank; on ``device`` (NCCL reduces CUDA tensors only)."""
    t = torch.from_numpy(np.asarray(a, dtype=np.float64)).to(device)
    return dist.all_reduce_(t, op).cpu().numpy()


@needs("train.calib_reserve_seconds > 0")
def _calibrate_in_reserve(cfg: RunConfig, model: GPT, loader: DistributedTokenLoader, accum: int,
                          seconds: float, run_dir: Path, log: RunLog, amp: torch.dtype | None) -> float:
    """GPTQ Hessians from the training loader within ``seconds`` (what is left of
    ``train.calib_reserve_seconds`` inside the budget: CATALOGUE §2.5 "Calibration data", inside the
    600 s, never after), saved to ``hessians.safetensors``; returns the seconds spent, which count as
    training time. No time or no batch left: nothing is saved (export then self-generates)."""
    from pgolf.quant.calib import calibrate_from_train, save_hessians

    t = cfg.train
    cal = calibrate_from_train(
        model, loader, batch_tokens=t.batch_tokens, seq_len=t.seq_len, grad_accum=accum,
        reserve_seconds=max(seconds, 0.0), autocast_dtype=amp, max_batches=t.calib_batches,
    )
    log(f"calibration: {cal.batches} training batches ({cal.tokens} tokens) in {cal.seconds * 1000:.0f}ms "
        f"of the {t.calib_reserve_seconds}s reserve; {len(cal.hessians)} Hessians")
    if not cal.hessians:  # the same on every rank (all-reduced), unlike the batch count
        log("calibration: no time left in the reserve; no Hessians saved (export will self-generate)")
        return cal.seconds
    if dist.is_main():
        info = {"source": "train", "tokens": cal.tokens, "batches": cal.batches, "seconds": round(cal.seconds, 3),
                "reserve_seconds": t.calib_reserve_seconds}
        save_hessians(run_dir / HESSIANS_FILE, cal.hessians, info)
    dist.barrier()
    return cal.seconds
