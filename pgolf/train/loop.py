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
the same step (the step in flight finishes, as in the baseline). Every per-step setting (LR, weight decay,
momentum, sequence length, recurrence, QAT, EMA/SWA) comes from :class:`pgolf.optim.schedule.Schedule`.

Robustness: a resumable checkpoint is written at most every ``checkpoint_every_seconds`` and at
the end; ``resume=True`` continues the exact token stream, optimizer state and clock. A non-finite
loss stops training with :class:`~pgolf.errors.TrainingError` naming the step; the last good
checkpoint is left untouched.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from pgolf import dist, logformat
from pgolf.compile import compile_model
from pgolf.compile import resolve as resolve_compile
from pgolf.config import RunConfig
from pgolf.data.loader import ValData, train_loader
from pgolf.data.prepare import RunData, prepare_data
from pgolf.errors import ConfigError, TrainingError
from pgolf.eval.bpb import EvalResult, evaluate
from pgolf.model.gpt import GPT, parameter_groups
from pgolf.optim import apply_step, build_optimizers
from pgolf.optim.clip import clip_gradients
from pgolf.optim.schedule import Schedule, StepSettings
from pgolf.precision import agreed_amp, autocast
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


@dataclass
class Hooks:
    """Other stages' work around the training clock, registered by the runner (:func:`pgolf.runner.train_hooks`):
    the trainer calls them and knows nothing of what they do."""

    before_clock: list[Callable[[Trainer], None]] = field(default_factory=list)
    """Each ``hook(trainer)`` runs once the model, optimizers and loader exist, before the priming steps and the
    clock (the overlap prescan, removing an earlier run's export Hessians)."""
    after_clock: list[Callable[[Trainer], float]] = field(default_factory=list)
    """Each ``hook(trainer)`` runs after the last step on the weights that get exported (average applied, QAT
    removed), before the final checkpoint, and returns the seconds it spent inside the training budget
    (added to ``train_seconds``): GPTQ calibration in ``train.calib_reserve_seconds``."""


class Trainer:
    """One training run: the model, its optimizers, the loader and the clock. :func:`train` drives it;
    every per-step setting comes from :attr:`schedule` (:class:`pgolf.optim.schedule.Schedule`).

    Attributes hooks may read: ``cfg``, ``run_dir``, ``data``, ``log``, ``resume``, ``device``, ``rank``,
    ``world``, ``accum``, ``prec`` (:class:`pgolf.precision.Precision`), ``model``, ``loader``, ``train_seconds``."""

    def __init__(self, cfg: RunConfig, run_dir: Path, data: RunData | None, log: RunLog, resume: bool):
        info = dist.init(cfg.train.device)
        self.cfg, self.run_dir, self.log, self.resume = cfg, run_dir, log, resume
        self.device, self.rank, self.world = info.device, info.rank, info.world_size
        _set_threads(cfg)
        t = cfg.train
        self.schedule = Schedule(cfg)
        self.accum = grad_accum_steps(cfg, self.world)
        self.data = data or prepare_data(cfg)
        self.prec = agreed_amp(t.amp_dtype, self.device)
        log(f"precision: {self.prec.dtype} ({self.prec.reason})")

        torch.manual_seed(t.seed)  # identical init on every rank
        self.model = model = GPT(cfg.model).to(self.device)
        self.optimizers = build_optimizers(model, cfg.optim)
        self.qat = None
        if t.qat.kind != "off":  # imported behind its switch (a bundle without QAT leaves pgolf.quant.qat out)
            from pgolf.quant.qat import attach_qat

            self.qat = attach_qat(model, t.qat)  # before compile: the weight functions are part of the graph
        self.averager = WeightAverager(model, t)
        self.use_compile, self.why_compile = resolve_compile(t.compile, self.device)
        self.compiled: torch.nn.Module = (compile_model(model, fullgraph=t.compile_fullgraph) if self.use_compile
                                          else model)
        self.fwd: torch.nn.Module = self.compiled
        if self.world > 1:
            if cfg.optim.parallel_muon:  # parallel Muon reduce-scatters the matrix gradients itself
                mat = {id(p) for _, p in parameter_groups(model)["matrix"]}
                DDP._set_params_and_buffers_to_ignore_for_model(
                    self.compiled, [n for n, p in self.compiled.named_parameters() if id(p) in mat])
            self.fwd = DDP(self.compiled, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                           broadcast_buffers=False)
        overlap = self.data.overlap_checker() if cfg.data.overlap_check else None  # checks shards as they load
        self.loader = train_loader(t, self.data.spec.train_files, self.rank, self.world, self.device,
                                   vocab_size=cfg.model.vocab_size, overlap=overlap)  # train.loader
        self.suffix = "" if self.rank == 0 else f".rank{self.rank}"
        self.step, self.train_seconds, self.tokens_seen = 0, 0.0, 0
        self.seq_len = 0
        """The sequence length the last step trained at (0 before the first)."""

    # --- one optimizer step -------------------------------------------------------------------------

    def run_step(self, s: StepSettings) -> float:
        """One optimizer step with settings ``s`` (every group's lr = base_lr × lr_mult, weight_decay = base_wd ×
        wd_mult, Muon's momentum); returns the mean micro-loss (all-reduced)."""
        t, accum, world = self.cfg.train, self.accum, self.world
        apply_step(self.optimizers, s)
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        for micro in range(accum):
            x, y = self.loader.next_batch(t.batch_tokens, s.seq_len, accum)
            sync_ctx = self.fwd.no_sync() if (world > 1 and micro < accum - 1) else contextlib.nullcontext()
            with sync_ctx:
                with autocast(self.prec, self.device):
                    loss = self.fwd(x, y)
                (loss / accum).backward()
            loss_sum += loss.detach().double()
        if self.cfg.optim.grad_clip_norm > 0:
            clip_gradients(self.model.parameters(), self.optimizers, self.cfg.optim.grad_clip_norm)
        for opt in self.optimizers:
            opt.step()
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        if self.averager.enabled:
            self.averager.update(self.model, s.step + 1, s.progress, s.lr_mult)
        dist.all_reduce_(loss_sum)
        return float(loss_sum.item()) / (accum * world)

    def switch(self, s: StepSettings) -> None:
        """Follow the schedule's switches before a step of the run (logged once each): the looped plan from
        ``model.recur.start_frac`` (one recompile under torch.compile: the plan is a guarded attribute), QAT
        once its window opens (it stays on), a new progressive sequence length."""
        if self.schedule.late_loop and s.looping and (not self.model.looping or self.model.loop_passes != s.loop_passes):
            self.model.looping, self.model.loop_passes = True, s.loop_passes  # passes: progressive recurrence
            self.log(f"layer_loop:enabled step:{s.step} progress:{s.progress:.4f} order:{[p.block for p in self.model.plan]}")
        if self.qat is not None and self.qat.update(s.progress, s.lr_mult):
            q = self.cfg.train.qat
            self.log(f"late_qat:enabled step:{s.step} progress:{s.progress:.4f} lr_mul:{s.lr_mult:.4f} kind:{q.kind} "
                     f"bits:{q.bits}")
        if s.seq_len != self.seq_len:
            if self.seq_len:
                self.log(f"seq_len:{s.seq_len} step:{s.step} progress:{s.progress:.4f}")
            self.seq_len = s.seq_len

    # --- before the clock ------------------------------------------------------------------------------

    def prime(self) -> None:
        """Priming steps (compile, autotune) before the clock, rolled back: not an LR warmup (CATALOGUE §1.5).
        They build every graph the run will need — both plans of a late loop, each progressive sequence
        length (a stage switch would otherwise recompile inside the training clock) — with the settings of
        steps 0, 1, … at elapsed 0; a compiled run primes at least one step."""
        t, model = self.cfg.train, self.model
        priming = max(t.warmup_steps, 1 if self.use_compile else 0)
        if priming == 0 or self.resume:
            return
        init_model = copy.deepcopy(model.state_dict())
        init_opts = [copy.deepcopy(o.state_dict()) for o in self.optimizers]
        init_loader = self.loader.state_dict()
        avg_t, avg_info = self.averager.state_dict()  # copies: the priming steps update the average in place
        init_avg = ({k: v.clone() for k, v in avg_t.items()}, dict(avg_info))
        for looped, passes in self.schedule.loop_plans():
            model.looping, model.loop_passes = looped, passes
            for seq in self.schedule.seq_lens():
                for i in range(priming):
                    s = dataclasses.replace(self.schedule.at(i, 0.0), seq_len=seq)
                    if self.qat is not None:
                        self.qat.update(s.progress, s.lr_mult)
                    self.run_step(s)
        if self.qat is not None:  # priming steps may have switched QAT on (a schedule that starts at 0)
            self.qat.reset()
        self.averager.load_state_dict(*init_avg)
        model.load_state_dict(init_model)
        for o, st in zip(self.optimizers, init_opts, strict=True):
            o.load_state_dict(st)
        self.loader.load_state_dict(init_loader)

    def restore(self) -> None:
        """Continue from the run directory's checkpoint: weights, optimizers, token stream, averages, RNG, clock."""
        run_dir, model = self.run_dir, self.model
        ck = ckpt_mod.load_checkpoint(run_dir, self.suffix)
        if ck.extra.get("world_size", self.world) != self.world:
            raise ConfigError(f"{run_dir}: checkpoint was written with world size {ck.extra['world_size']}, not {self.world}")
        model.load_state_dict(ck.model_state if ck.model_state else ckpt_mod.load_checkpoint(run_dir).model_state)
        for o, st in zip(self.optimizers, ck.optimizer_states, strict=True):
            o.load_state_dict(st)
        self.loader.load_state_dict(ck.loader_state)
        if self.averager.enabled:
            live = {k[len("live."):]: v for k, v in ck.averages.items() if k.startswith("live.")}
            if live:  # a run that ended on its average: continue from its live weights
                model.load_state_dict(live)
            self.averager.load_state_dict({k: v.to(self.device) for k, v in ck.averages.items()},
                                          ck.extra.get("averaging", {}))
        ckpt_mod.restore_rng(ck.rng.get("tensors", {}), ck.rng.get("json", {}))
        self.step, self.train_seconds, self.tokens_seen = ck.step, ck.train_seconds, ck.tokens_seen
        self.log(f"resume: step:{self.step} train_time:{self.train_seconds * 1000:.0f}ms tokens:{self.tokens_seen}")

    # --- around the loop -------------------------------------------------------------------------------

    def validate(self) -> EvalResult:
        """The periodic validation on at most ``train.val_tokens_during_training`` tokens (0 = all)."""
        cfg, data, model = self.cfg, self.data, self.model
        val, n = data.val, cfg.train.val_tokens_during_training
        if n and n < len(val.tokens):
            val = ValData(tokens=val.tokens[: n + 1], raw_bytes=val.raw_bytes[: n + 1] if val.raw_bytes is not None else None)
        model.eval()
        r = evaluate(
            self.compiled if resolve_compile(cfg.eval.compile, self.device)[0] else model, val, data.tables,
            seq_len=cfg.eval_seq_len, batch_tokens=cfg.eval.batch_tokens, device=self.device,
            amp_dtype=self.prec.dtype, score=data.score,
        )
        model.train()
        return r

    def save(self, live_state: dict | None = None) -> None:
        """A resumable checkpoint at the current step. ``live_state``: the model holds the applied average;
        keep the live weights beside it."""
        avg_t, avg_info = self.averager.state_dict()
        main = self.rank == 0
        averages = dict(avg_t) if main else {}
        if live_state is not None and main:
            averages.update({f"live.{k}": v for k, v in live_state.items()})
        ck = ckpt_mod.Checkpoint(
            step=self.step, train_seconds=self.train_seconds, tokens_seen=self.tokens_seen,
            loader_state=self.loader.state_dict(),
            model_state=self.model.state_dict() if main else {},
            optimizer_states=[o.state_dict() for o in self.optimizers],
            extra={"world_size": self.world, "config": self.cfg.to_dict(), "averaging": avg_info,
                   "weights": self.averager.kind if live_state is not None else "live"},
            averages=averages,
        )
        ckpt_mod.save_checkpoint(self.run_dir, ck, self.suffix)
        dist.barrier()

    def final_weights(self) -> dict | None:
        """Make the model what gets evaluated and exported: looped, QAT removed, the average applied. Returns
        the live weights when an average replaced them (else None)."""
        model, averager = self.model, self.averager
        r = self.cfg.model.recur  # evaluation and the exported model always run looped, every pass
        if self.schedule.late_loop and (not model.looping or model.loop_passes != r.loops):
            self.log(f"layer_loop: the run ended at progress < {r.progressive_frac or r.start_frac}; the model is "
                     "evaluated looped anyway")
            model.looping, model.loop_passes = True, r.loops
        final = averager.averaged_state(model)
        if self.qat is not None:
            self.qat.detach()  # the exported model is the plain GPT
        if final is None:
            if averager.kind == "swa":
                self.log("swa: the window never opened; exporting the live weights")
            return None
        if averager.kind == "ema":
            self.log(f"ema: applying EMA weights (last decay {averager.last_decay:.6f}, {averager.count} updates)")
        else:
            self.log(f"swa: applying the mean of {averager.count} snapshots")
        live_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(final)
        return live_state


def train(
    cfg: RunConfig,
    run_dir: str | Path,
    *,
    data: RunData | None = None,
    resume: bool = False,
    log: RunLog | None = None,
    progress: bool | None = None,
    on_step: Callable[[int, float], None] | None = None,
    hooks: Hooks | None = None,
) -> TrainResult:
    """Train ``cfg`` into ``run_dir`` (checkpoints) and return the trained (uncompiled) model.

    ``on_step(step, loss)`` is called after every completed step (and its checkpoint, if any). ``hooks``:
    other stages' work before and after the clock (:class:`Hooks`; ``pgolf run`` and ``pgolf train`` pass the runner's
    :func:`pgolf.runner.train_hooks`)."""
    tr = Trainer(cfg, Path(run_dir), data, log or RunLog(None), resume)
    hooks = hooks or Hooks()
    t, log_, sched = cfg.train, tr.log, tr.schedule
    for hook in hooks.before_clock:
        hook(tr)
    tr.prime()
    if sched.late_loop:
        tr.model.looping = False
    if resume:
        tr.restore()

    log_(logformat.kv_line(model_params=tr.model.num_params(), world_size=tr.world, grad_accum_steps=tr.accum,
                           device=tr.device))
    log_(f"train: batch_tokens:{t.batch_tokens} seq_len:{t.seq_len} budget:{t.max_wallclock_seconds}s "
         f"iterations:{t.iterations} warmdown_frac:{t.warmdown_frac} amp:{tr.prec.dtype} compile:{tr.use_compile} "
         f"({tr.why_compile}{', fullgraph' if tr.use_compile and t.compile_fullgraph else ''})")

    budget = sched.budget_seconds
    show_bar = progress if progress is not None else sys.stderr.isatty()
    bar = None
    if show_bar and tr.rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=int(budget) if budget else t.iterations, initial=int(tr.train_seconds) if budget else tr.step,
                   unit="s" if budget else "step", file=sys.stderr, dynamic_ncols=True, leave=False)

    last_val: EvalResult | None = None
    last_ckpt = time.perf_counter()
    stopped_by = "iterations"
    losses: list[float] = []
    tr.model.train()
    while tr.step < t.iterations:
        s = sched.at(tr.step, tr.train_seconds)
        tr.switch(s)
        _sync(tr.device)
        t0 = time.perf_counter()
        loss = tr.run_step(s)
        _sync(tr.device)
        dt = time.perf_counter() - t0
        if not math.isfinite(loss):
            kept = "the last good checkpoint is kept" if ckpt_mod.has_checkpoint(tr.run_dir) else "no checkpoint yet"
            raise TrainingError(f"non-finite training loss ({loss}) at step {tr.step + 1}; training stopped, {kept} in "
                                f"{tr.run_dir}")
        tr.step += 1
        step = tr.step
        losses.append(loss)
        tr.train_seconds += dt
        tr.tokens_seen += t.batch_tokens
        if bar is not None:
            bar.n = min(int(tr.train_seconds), int(budget)) if budget else step
            bar.set_postfix(loss=f"{loss:.4f}", step=step, refresh=True)
        if step % max(t.log_every, 1) == 0 or step == 1 or step >= t.iterations:  # the last step, as the root script
            log_(logformat.step_line(step, t.iterations, loss, tr.train_seconds,
                                     tokens_per_second=tr.tokens_seen / tr.train_seconds,
                                     lr_mul=sched.at(step, tr.train_seconds).lr_mult))
        stop = torch.tensor(1.0 if (budget and tr.train_seconds >= budget) else 0.0, device=tr.device)
        dist.all_reduce_(stop, "max")
        if t.val_every and step % t.val_every == 0 and not stop.item() and cfg.model.objective == "ar":  # MDLM: no exact val_bpb
            last_val = tr.validate()
            log_(logformat.val_line(step, t.iterations, last_val.val_loss, last_val.val_bpb, tr.train_seconds))
        if stop.item():
            stopped_by = "wallclock"
            log_(logformat.stop_line(tr.train_seconds, step, t.iterations))
            break
        if t.checkpoint_every_seconds and time.perf_counter() - last_ckpt >= t.checkpoint_every_seconds:
            tr.save()
            last_ckpt = time.perf_counter()
        if on_step is not None:
            on_step(step, loss)
    if bar is not None:
        bar.close()
    live_state = tr.final_weights()
    for after in hooks.after_clock:
        tr.train_seconds += after(tr)
    tr.save(live_state)
    return TrainResult(model=tr.model, steps=tr.step, train_seconds=tr.train_seconds, tokens_seen=tr.tokens_seen,
                       stopped_by=stopped_by, last_val=last_val, losses=losses)
