"""Score-first test-time training: the model adapts only on tokens it has already scored.

Sources (CATALOGUE §2.6): per-document LoRA [03-17a] and the batched, document-independent form of
[04-10] PR #1530 (chunks inside a window, one optimizer step per chunk, reset per document,
warm-start A from PR #1767); chunked full-model SGD over the stream [03-23] PR #549 (recipe PR #461);
phased global SGD on the already-scored document prefix [04-13] PR #1610 and its multi-phase form
[04-14] PR #1626. The records' code was read for understanding; this is a new implementation.

``eval.ttt.mode``:

- ``lora``: documents (split at BOS) are claimed from a queue (``eval.ttt.order``: longest first, or
  stream order) into ``batch_docs`` slots, one :class:`~pgolf.eval.lora.BatchedLoRA` row each. Chunk k of a document holds its targets
  r ∈ (k·c, (k+1)·c], read from the window of the ``seq_len`` inputs before the chunk's end
  (:func:`pgolf.eval.windows.plan` with first = step = c). For k = 0, 1, …: score chunk k of every
  document under no-grad, then take ``lora_steps`` optimizer steps on the loss of those same targets
  (Σ over documents of each document's mean CE). So chunk k is scored with an adapter trained on
  chunks < k of its own document only. When a slot takes its next document the adapter resets (B = 0;
  A drawn from (seed, document index), or kept with ``warm_start_a``) and its optimizer state is new,
  so a document's losses depend on its own tokens and the base model only, not on the claim order.
- ``phased``: ``lora``, and whenever the documents scored so far reach a phase boundary
  ⌈prefix_docs·i/phases⌉, the base model takes SGD steps (momentum ``sgd_momentum``, clip
  ``sgd_clip``, cosine lr from ``global_lr``, ``global_epochs``) over all documents scored so far, cut
  into non-overlapping ``seq_len`` pieces inside each document; scoring then resumes with the new base.
  The phase groups are stream-order prefixes (the records sort the whole stream by length, which breaks
  causality in stream order); only inside a group are documents claimed longest first. So every update
  uses only documents before every document scored after it.
- ``sgd``: the sliding windows of ``eval.sliding`` are grouped into chunks of ``sgd_chunk_tokens``
  targets by their first scored target; chunk i is scored under no-grad, then (except the last) the
  whole model trains on the targets of chunk i for ``sgd_epochs`` epochs (SGD, momentum, clip, lr
  cosine over the chunks from ``sgd_lr``). A window that reaches past its chunk is scored before the
  update, so every target used for training was scored first.

Nothing is rescored: every target is written once (the single-pass check of
:mod:`pgolf.eval.scoring`). The model's weights are restored when the method ends.

Budget (:mod:`pgolf.eval.clock`): the warm-up runs the scoring and training shapes on random tokens
(never validation tokens) and times them; if scoring alone cannot finish in the budget, BudgetError.
During the pass the measured rates project the rest: pending global phases are skipped first, then
adaptation stops (the rest is scored with the current weights, in full batches: :func:`_frozen_tail`),
whenever the projection overruns. Which documents were adapted before such a stop depends on the claim
order: with ``order=length`` also on the lengths of later documents of the group, so a run whose budget
binds is strictly causal in stream order only with ``eval.ttt.order=stream`` (the tests' perturbation
checks run without a cut, where the order changes nothing).

Ranks (torchrun; [04-27a] ``eval_val_ttt_phased`` for the queue, new code): ``lora``/``phased`` cut the
documents into groups at the phase boundaries (stream order: group g = documents ⌈prefix·g/phases⌉ ..,
the last group the rest; ``lora``: one group), and each group is a :class:`~pgolf.eval.work.WorkQueue`
through torch.distributed's store, longest document first, that every rank's ``batch_docs`` slots claim
from as they free up. A phase starts when every rank has emptied the group (the gradient all-reduce is
the meeting point); its SGD steps split each batch's rows over the ranks and all-reduce the gradients
(:func:`_sgd_steps`). Every rank holds the whole stream, so "the scored documents" of a phase are
documents 0 .. ⌈prefix·g/phases⌉ − 1 on every rank, without a gather. ``sgd`` splits each chunk's
windows over the ranks and trains on the chunk the same way. Budget decisions are one for all ranks
(:mod:`pgolf.eval.clock`). What 2 ranks give, against 1 (tests/test_eval_dist.py):

- ``lora`` (A redrawn): equal, bit for bit. A document's adapter starts from (seed, its index) and sees
  only its own chunks, rows never mix, so a document's losses do not depend on the rank, slot or time
  it was claimed at. (The claim order — longest first — is the same on one process.)
- ``phased``: equal to float32 rounding (measured ≤ 1e-6 nats per target on the tests' stream): the
  phases' gradients are sums over rows computed on different ranks, added in another order.
- ``sgd``: the same, for the same reason (≤ 1e-6 nats per target measured).
- ``lora`` with ``warm_start_a``: causal but not equal. A slot's A comes from the document it held
  before, so the result depends on which documents shared a slot; to keep that deterministic and in
  stream order the queue is not length-sorted and each rank takes every W-th document of a group.
- With a budget that degrades the method (phases skipped, adaptation stopped) the result depends on
  timing on any number of ranks; on several, on which rank's projection overran first.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn

from pgolf import dist
from pgolf.config import TttConfig, ttt_ssm_message
from pgolf.data.bytetables import ByteTables
from pgolf.errors import ConfigError
from pgolf.eval.bpb import ValTokens, rank_sequences
from pgolf.eval.clock import EvalClock, Rate
from pgolf.eval.lora import BatchedLoRA, RowAdam
from pgolf.eval.scoring import Scored, TargetSink, amp_context, check_tokens, finish, score_logits
from pgolf.eval.sliding import score_windows, sliding_windows
from pgolf.eval.windows import Windows, gather, plan, spans
from pgolf.eval.work import Board, WorkQueue

NEEDED_WHEN = "eval.method.startswith('ttt')"

TAIL = 2.0
"""Scoring the rest of a LoRA stream without adaptation is projected at TAIL × the measured seconds per
target: at the end of the stream the slots empty one by one while every step still costs a full batch
(enwiki, ``cpu`` model, budget 200 s: deciding at 1× the tail ran at 1.45× the average rate and the
method ended at 219 s; at 2× it stopped adapting at 86 s and ended at 166.5 s, docs/benchmarks.md). The
projection may not look at the lengths of documents not yet scored: that would make earlier losses
depend on later BOS positions. The stop hands the rest to :func:`_frozen_tail` (full batches), so
after it the stream costs at most the full-slot rate, which TAIL × the measured average bounds."""


FREEZE_TAIL = True
"""Once adaptation stops, score the rest in full batches with the adapters frozen (:func:`_frozen_tail`);
False keeps the slot-by-slot pass to the end (the reference the tests compare against)."""


def _masked_mean_ce(ce: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
    """Per row: mean CE over the scored entries (0 for a row with none) — rows stay independent."""
    m = scored.to(ce.dtype)
    return (ce * m).sum(1) / m.sum(1).clamp(min=1.0)


def _sgd_steps(model: nn.Module, tokens_t: torch.Tensor, w: Windows, opt: torch.optim.Optimizer, lr_at, *,
               rows: int, seq_len: int, clip: float, epochs: int, device: torch.device, amp_dtype: str,
               rank: int = 0, world: int = 1) -> int:
    """Full-model SGD over the windows ``w`` (their inputs and scored targets), ``rows`` windows a step,
    lr ``lr_at(step, total_steps)``, loss = Σ CE of the step's scored targets / their number. Under torchrun
    each step's rows are split over the ranks (contiguous runs), each rank's loss is its CE sum over the
    step's *global* target count, and one SUM all-reduce of the flattened gradients gives every rank the
    one-process gradient (to float32 summation order), so every rank takes the same step.
    Returns the number of target tokens trained on (× epochs)."""
    params = [p for g in opt.param_groups for p in g["params"]]
    for p in params:
        p.requires_grad_(True)
    total = max(1, epochs * math.ceil(len(w) / rows))
    per_window = w.hi - w.lo
    step = 0
    for _ in range(epochs):
        for i in range(0, len(w), rows):
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total)
            j = min(i + rows, len(w))
            n_b = max(int(per_window[i:j].sum()), 1)
            a, b = rank_sequences(j - i, rank, world)
            opt.zero_grad(set_to_none=True)
            if b > a:
                x, y, scored, _, _ = gather(tokens_t, w.take(slice(i + a, i + b)), seq_len, device)
                with amp_context(device, amp_dtype):
                    ce, _ = score_logits(model, x, y)
                loss = (ce * scored).sum() / n_b
                loss.backward()
            if world > 1:
                _all_reduce_grads(params)
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            step += 1
    for p in params:
        p.requires_grad_(False)
        p.grad = None
    return epochs * w.targets()


def _all_reduce_grads(params: list[torch.Tensor]) -> None:
    """Sum every parameter's gradient over the ranks (one flat all-reduce; a missing gradient counts as 0)."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    dist.all_reduce_(flat, "sum")
    off = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[off : off + n].view_as(g).to(g.dtype)
        off += n


def _cosine(peak: float):
    return lambda step, total: peak * 0.5 * (1.0 + math.cos(math.pi * step / total))


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


DEFAULT_CHUNK = 128
"""Targets per chunk when ``eval.ttt.chunk`` is 0 and the context is at least this long (docs/benchmarks.md)."""


def chunk_for(cfg: TttConfig, seq_len: int) -> int:
    """The chunk the ``lora``/``phased`` modes use: ``eval.ttt.chunk``, or for 0 min(:data:`DEFAULT_CHUNK`,
    ``seq_len``); ConfigError when a chunk set explicitly is longer than the context."""
    if cfg.chunk == 0:
        return min(DEFAULT_CHUNK, seq_len)
    if cfg.chunk > seq_len:
        raise ConfigError(f"eval.ttt.chunk={cfg.chunk} is longer than the context seq_len={seq_len} "
                          f"(0 = min({DEFAULT_CHUNK}, the context))")
    return cfg.chunk


def evaluate_ttt(
    model: nn.Module,
    val: ValTokens,
    tables: ByteTables,
    cfg: TttConfig,
    *,
    seq_len: int,
    device: torch.device | str,
    stride: int = 0,
    doc_aware: bool = False,
    batch_tokens: int = 65536,
    bos_id: int = 1,
    amp_dtype: str = "fp32",
    score: str = "table",
    clock: EvalClock | None = None,
    hints: np.ndarray | None = None,
    seed: int = 0,
) -> Scored:
    """Score-first TTT of ``val`` (module docstring). ``stride``/``doc_aware``/``batch_tokens`` are the
    sliding windows of the ``sgd`` mode (stride 0 = ``seq_len``). ``hints``: also record log p(hint)."""
    t0 = time.perf_counter()
    device = torch.device(device)
    clock = clock or EvalClock(0.0)
    tokens = np.asarray(val.tokens)
    raw = None if val.raw_bytes is None else np.asarray(val.raw_bytes)
    check_tokens(tokens, tables, raw)
    chunk_for(cfg, seq_len)  # a chunk set longer than the context fails before any work
    if cfg.mode != "sgd" and any(hasattr(b, "ssm") for b in getattr(model, "blocks", ())):
        raise ConfigError(ttt_ssm_message(cfg.mode))  # LoRA targets attention; an SSM block has none
    tokens_t = torch.from_numpy(tokens.astype(np.int64))
    hints_t = None if hints is None else torch.from_numpy(np.asarray(hints, dtype=np.int64))
    sink = TargetSink(tokens.shape[0] - 1, device, hints=hints is not None)
    board = Board.create()  # collective: every rank evaluates
    world = board.world
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        if cfg.mode == "sgd":
            info = _sgd_stream(model, tokens_t, sink, cfg, seq_len=seq_len, stride=stride or seq_len,
                               doc_aware=doc_aware, rows=max(1, batch_tokens // (world * seq_len)), bos_id=bos_id,
                               device=device, amp_dtype=amp_dtype, clock=clock, hints_t=hints_t, seed=seed,
                               rank=board.rank, world=world)
        else:
            info = _lora_stream(model, tokens_t, sink, cfg, seq_len=seq_len, bos_id=bos_id, device=device,
                                amp_dtype=amp_dtype, clock=clock, hints_t=hints_t, seed=seed, board=board)
    finally:
        model.load_state_dict(saved)
        for p, f in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(f)
        model.train(was_training)
    losses, counts, hl = sink.host()
    info = {"method": "ttt", "mode": cfg.mode, "seq_len": seq_len, **info}
    return finish(losses, counts, tokens, raw, tables, expected=None, world_size=world, device=device, t0=t0,
                  score=score, what=f"ttt ({cfg.mode})", hint_logp=hl, info=info)


def _random_batch(vocab: int, rows: int, width: int, device: torch.device, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, vocab, (rows, width + 1), generator=g)
    return t[:, :-1].to(device), t[:, 1:].to(device)



def _full_model_step_seconds(model, vocab: int, cfg, seq_len: int, device, amp_dtype: str, seed: int) -> float:
    """Seconds per trained target of one full-model forward + backward on random tokens (one warm-up call,
    then one timed; gradients dropped, ``requires_grad`` restored off) — the rate the budget projects with."""
    gx, gy = _random_batch(vocab, cfg.sgd_batch_seqs, seq_len, device, seed + 1)
    params = list(model.parameters())

    def fwd_bwd():
        for p in params:
            p.requires_grad_(True)
        with amp_context(device, amp_dtype):
            ce, _ = score_logits(model, gx, gy)
        ce.mean().backward()
        for p in params:
            p.grad = None
            p.requires_grad_(False)

    fwd_bwd()
    return _time(fwd_bwd) / (cfg.sgd_batch_seqs * seq_len)

def _queue_order(docs: np.ndarray, ns: np.ndarray, in_stream: bool) -> np.ndarray:
    """The order a group's documents are claimed in: longest first (ties in stream order), so long documents
    start early and the ranks finish together; stream order for ``eval.ttt.order=stream`` and with
    ``warm_start_a`` (a slot's A then comes from the document it held before, which must be an earlier one)."""
    docs = np.asarray(docs, np.int64)
    return docs if in_stream else docs[np.argsort(-ns[docs], kind="stable")]


def _lora_stream(model, tokens_t, sink, cfg: TttConfig, *, seq_len, bos_id, device, amp_dtype, clock: EvalClock,
                 hints_t, seed, board: Board) -> dict:
    tokens = tokens_t.numpy()
    world = board.world
    starts, ns = spans(tokens, bos_id, doc_aware=True)
    n_docs, bsz, c = len(starts), cfg.batch_docs, chunk_for(cfg, seq_len)
    vocab = model.cfg.vocab_size
    phased = cfg.mode == "phased"
    prefix = min(cfg.prefix_docs, n_docs) if phased else 0
    n_phases = cfg.phases if phased and prefix > 0 else 0
    bounds = sorted({math.ceil(prefix * (i + 1) / n_phases) for i in range(n_phases)} - {n_docs})  # none after the end
    ends = [*bounds, n_docs]  # group g = documents ends[g−1] .. ends[g]−1 (stream order); a phase after each but the last
    in_stream = cfg.warm_start_a or cfg.order == "stream"
    groups = [_queue_order(np.arange(0 if g == 0 else ends[g - 1], ends[g]), ns, in_stream) for g in range(len(ends))]
    w = plan(starts, ns, seq_len, c, c)  # every document's chunk windows, in stream order
    first = np.concatenate([[0], np.cumsum(np.bincount(w.span, minlength=n_docs))])  # doc j: windows first[j]..
    n_chunks = np.diff(first)

    def lora_step(lora, opt, x, y, scored, rows):
        with amp_context(device, amp_dtype):
            ce, _ = score_logits(model, x, y, adapter=lora.head)
        loss = _masked_mean_ce(ce, scored).sum()  # a sum of per-document losses: rows stay independent
        opt.zero_grad()
        loss.backward()
        opt.step(rows)

    def new_opt(lora):
        return RowAdam(list(lora.parameters()), cfg.lora_optimizer, cfg.lora_lr, cfg.lora_beta1, cfg.lora_beta2,
                       cfg.lora_weight_decay)

    # warm-up on random tokens: the scoring shape, a LoRA step and a global SGD step, timed
    with clock.phase("warmup"):
        lora = BatchedLoRA(model, bsz, cfg.lora_rank, cfg.lora_targets, cfg.lora_alpha, seed=seed,
                       slots=cfg.lora_slots)
        opt = new_opt(lora)
        x, y = _random_batch(vocab, bsz, seq_len, device, seed)
        full = torch.ones_like(y, dtype=torch.bool)
        all_rows = torch.ones(bsz, dtype=torch.bool)

        def score_once():
            with torch.no_grad(), amp_context(device, amp_dtype):
                score_logits(model, x, y, adapter=lora.head)

        score_once()
        t_score = _time(score_once)  # one step of bsz windows
        t_train = _time(lambda: lora_step(lora, opt, x, y, full, all_rows)) if cfg.lora_steps > 0 else 0.0
        t_global = 0.0
        lora.detach()
        if n_phases:
            t_global = _full_model_step_seconds(model, vocab, cfg, seq_len, device, amp_dtype, seed)
        del lora, opt

    total_targets = int(ns.sum())
    est_score = t_score / (bsz * c)  # per target, slots full
    est_train = t_train * cfg.lora_steps / (bsz * c)
    clock.require(total_targets / world * est_score, f"scoring {total_targets:,} targets in chunks of {c}")
    score_rate, train_rate = Rate(), Rate()
    cum_ns = np.concatenate([[0], np.cumsum(ns)])  # targets of the first j documents

    # Each rank's slots take documents from the group's queue; a slot refills as soon as its document is
    # done. Every tensor is [bsz, seq_len] (short windows padded), so rows never change shape with their
    # neighbours. Projections are per rank: the work left is shared by the world's ranks.
    lora = BatchedLoRA(model, bsz, cfg.lora_rank, cfg.lora_targets, cfg.lora_alpha, seed=seed,
                       slots=cfg.lora_slots)
    opt = new_opt(lora)
    slot_doc = np.full(bsz, -1, np.int64)
    slot_k = np.zeros(bsz, np.int64)
    adapt = cfg.lora_steps > 0
    phases_run, scored_all, skip_posted = 0, 0, False
    stopped_at = None

    def stop(why: str) -> None:
        nonlocal adapt, stopped_at
        adapt = False
        stopped_at = (board.read("docs"), board.read("scored"))
        clock.act(f"stopped adapting after {stopped_at[1]:,} of {total_targets:,} targets "
                  f"({stopped_at[0]} of {n_docs} documents done): {why}")

    g = 0
    try:
        while g < len(groups):
            queue = WorkQueue(board, f"g{g}", groups[g], static=cfg.warm_start_a)
            last = g == len(groups) - 1
            while True:
                free = np.flatnonzero(slot_doc < 0)
                new = queue.claim(len(free))
                if new.size:
                    rows_t = torch.from_numpy(free[: new.size])
                    slot_doc[free[: new.size]] = new
                    slot_k[free[: new.size]] = 0
                    lora.reset(cfg.warm_start_a, rows_t, docs=new)
                    opt.reset(rows_t)
                active = slot_doc >= 0
                if not active.any():
                    break  # this group's queue is empty and every slot is done
                rows = Windows(*(np.zeros(bsz, np.int64) for _ in range(7)))
                idx = first[slot_doc[active]] + slot_k[active]
                for f in ("start", "width", "valid", "lo", "hi", "span", "k"):
                    getattr(rows, f)[active] = getattr(w, f)[idx]
                x, y, scored, index, h = gather(tokens_t, rows, seq_len, device, hints_t=hints_t)
                ts = time.perf_counter()
                with torch.no_grad(), amp_context(device, amp_dtype):
                    ce, hl = score_logits(model, x, y, h, adapter=lora.head)
                sink.put(index, ce[scored], None if hl is None else hl[scored])
                n_scored = int(scored.sum())
                score_rate.add(time.perf_counter() - ts, n_scored)
                scored_all = board.add("scored", n_scored)  # by every rank so far
                left = (total_targets - scored_all) / world  # this rank's share of what is left
                s_rate, t_rate = score_rate.per_unit(est_score), train_rate.per_unit(est_train)
                train = active & (slot_k < n_chunks[np.maximum(slot_doc, 0)] - 1)  # no use training on a last chunk
                if adapt and not last and not skip_posted:  # first give up the global phases still ahead ...
                    pending = sum(int(cum_ns[ends[i]]) for i in range(g, len(groups) - 1)) * cfg.global_epochs * t_global
                    if not clock.affords(pending / world + left * (s_rate + t_rate), "global"):
                        board.raise_flag("skip")  # agreed at the next phase boundary
                        skip_posted = True
                if adapt and train.any() and not clock.affords(TAIL * left * s_rate + n_scored * t_rate, "adapt"):
                    board.raise_flag("stop")  # ... then adaptation, once only scoring the rest still fits
                    stop("projected over budget")
                elif adapt and world > 1 and board.flag("stop"):
                    stop("another rank's projection is over budget")
                if adapt and train.any():
                    tt = time.perf_counter()
                    train_t = torch.from_numpy(train)
                    mask = scored & train_t.to(device)[:, None]
                    for _ in range(cfg.lora_steps):
                        lora_step(lora, opt, x, y, mask, train_t)
                    train_rate.add(time.perf_counter() - tt, n_scored)
                slot_k[active] += 1
                finished = active & (slot_k >= n_chunks[np.maximum(slot_doc, 0)])
                if finished.any():
                    board.add("docs", int(finished.sum()))
                slot_doc[finished] = -1
                if FREEZE_TAIL and stopped_at is not None and last:
                    n_tail = _frozen_tail(model, lora, tokens_t, sink, w, first, slot_doc, slot_k, queue,
                                          seq_len=seq_len, device=device, amp_dtype=amp_dtype, hints_t=hints_t,
                                          rate=score_rate)
                    slot_doc[:] = -1
                    clock.act(f"scored the remaining {n_tail:,} targets of this rank in full batches "
                              f"with the adapters frozen")
                    break
            if not last:  # every rank is here with group g scored: global SGD on documents 0 .. ends[g]−1, or not
                done = int(ends[g])
                cost = int(cum_ns[done]) * cfg.global_epochs * t_global / world
                left = (total_targets - int(cum_ns[done])) / world
                s_rate, t_rate = score_rate.per_unit(est_score), train_rate.per_unit(est_train)
                ok = not board.flag("skip") and clock.affords(cost + left * (s_rate + (t_rate if adapt else 0.0)),
                                                              "global")
                if clock.agree(ok):
                    with clock.phase("global_sgd"):
                        lora.detach()
                        sw = plan(starts[:done], ns[:done], seq_len, seq_len, seq_len)
                        tg = time.perf_counter()
                        gopt = torch.optim.SGD(list(model.parameters()), lr=cfg.global_lr, momentum=cfg.sgd_momentum)
                        trained = _sgd_steps(model, tokens_t, sw, gopt, _cosine(cfg.global_lr), rows=cfg.sgd_batch_seqs,
                                             seq_len=seq_len, clip=cfg.sgd_clip, epochs=cfg.global_epochs,
                                             device=device, amp_dtype=amp_dtype, rank=board.rank, world=world)
                        del gopt
                        if trained:
                            t_global = (time.perf_counter() - tg) * world / trained
                        lora.attach()
                    phases_run += 1
                    clock.act(f"global SGD phase {phases_run} on the first {done} documents ({trained:,} targets)")
                    lora.reset(False)  # the adapters restart on the new base model
                else:
                    clock.act(f"skipped global SGD phases {g + 1}..{len(groups) - 1}: projected over budget")
                    rest = np.concatenate(groups[g + 1 :])
                    groups = groups[: g + 1] + [_queue_order(np.sort(rest), ns, in_stream)]
                    ends = ends[: g + 1] + [n_docs]
                if adapt and world > 1 and board.flag("stop"):  # read after the collective: every rank sees it
                    stop("another rank's projection is over budget")
            g += 1
    finally:
        lora.detach()
    clock.add_phase("score", score_rate.seconds)
    clock.add_phase("adapt", train_rate.seconds)
    return {"documents": n_docs, "chunk": c, "batch_docs": bsz, "lora_rank": cfg.lora_rank,
            "lora_targets": list(cfg.lora_targets), "lora_lr": cfg.lora_lr, "lora_steps": cfg.lora_steps,
            "warm_start_a": cfg.warm_start_a, "phases_planned": cfg.phases if phased else 0, "phases_run": phases_run,
            "prefix_docs": prefix, "adapted_documents": n_docs if stopped_at is None else stopped_at[0],
            "adapted_targets": total_targets if stopped_at is None else stopped_at[1], "ranks": world}


def _frozen_tail(model, lora: BatchedLoRA, tokens_t, sink, w: Windows, first, slot_doc, slot_k, queue: WorkQueue, *,
                 seq_len: int, device, amp_dtype, hints_t, rate: Rate) -> int:
    """Score every window this rank has left once adaptation has stopped, ``bsz`` windows per batch;
    returns the number of targets scored here.

    After the stop nothing is learned any more, so a document's remaining chunks no longer need to wait
    for each other: each is scored with its document's adapter as it stood at the stop (documents claimed
    from the queue from now on: B = 0, the base model, as a reset slot gives), several chunks of one
    document side by side. Without this the stream's tail ran one chunk of one long document per step at
    the cost of a full batch — a 281,278-token document of 511,427 (pysrc) took 2,201 steps where full
    slots take 251, and the method overran its clock by 2× (docs/benchmarks.md). The losses equal the
    slot-by-slot pass's (tests/test_eval_ttt.py); the batches have the same [bsz, seq_len] shape, so no
    row depends on its neighbours."""
    bsz = len(slot_doc)
    wins, srcs = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for s in np.flatnonzero(slot_doc >= 0):
        j = slot_doc[s]
        wins.append(np.arange(first[j] + slot_k[s], first[j + 1]))
        srcs.append(np.full(len(wins[-1]), s))
    win, src = np.concatenate(wins), np.concatenate(srcs)
    frozen = {name: (sl.A.detach().clone(), sl.B.detach().clone()) for name, sl in lora.slots.items()}
    pos, n_done = 0, 0
    with torch.no_grad():
        while True:
            while len(win) - pos < bsz and not queue.empty:  # documents not begun: no adapter (B = 0)
                new = queue.claim(bsz)
                if new.size:
                    extra = np.concatenate([np.arange(first[j], first[j + 1]) for j in new])
                    win = np.concatenate([win[pos:], extra])
                    src = np.concatenate([src[pos:], np.full(len(extra), -1)])
                    pos = 0
            if pos >= len(win):
                break
            idx, sr = win[pos : pos + bsz], src[pos : pos + bsz]
            pos += len(idx)
            m = len(idx)
            pick = torch.from_numpy(np.where(sr >= 0, sr, 0)).to(device)
            none = torch.from_numpy(sr < 0).to(device)
            for name, sl in lora.slots.items():
                a0, b0 = frozen[name]
                sl.A[:m] = a0[pick]
                sl.B[:m] = torch.where(none[:, None, None], 0.0, b0[pick])
            # padded to bsz empty rows by gather: the slot loop's shape
            x, y, scored, index, h = gather(tokens_t, w.take(idx), seq_len, device, rows=bsz, hints_t=hints_t)
            ts = time.perf_counter()
            with amp_context(device, amp_dtype):
                ce, hl = score_logits(model, x, y, h, adapter=lora.head)
            sink.put(index, ce[scored], None if hl is None else hl[scored])
            n = int(scored.sum())
            n_done += n
            rate.add(time.perf_counter() - ts, n)
    return n_done


def _sgd_stream(model, tokens_t, sink, cfg: TttConfig, *, seq_len, stride, doc_aware, rows, bos_id, device,
                amp_dtype, clock: EvalClock, hints_t, seed, rank: int = 0, world: int = 1) -> dict:
    tokens = tokens_t.numpy()
    n_targets = tokens.shape[0] - 1
    T = cfg.sgd_chunk_tokens
    w = sliding_windows(tokens, seq_len, stride, doc_aware, bos_id)
    chunk_of = (w.start + w.lo) // T  # chunk of each window's first scored target (position − 1)
    n_chunks = (n_targets + T - 1) // T
    vocab = model.cfg.vocab_size
    with clock.phase("warmup"):
        x, y = _random_batch(vocab, rows, seq_len, device, seed)

        def score_once():
            with torch.no_grad(), amp_context(device, amp_dtype):
                score_logits(model, x, y)

        score_once()
        t_score = _time(score_once) / rows  # per window
        t_train = _full_model_step_seconds(model, vocab, cfg, seq_len, device, amp_dtype, seed)
    clock.require(len(w) / world * t_score, f"scoring {len(w):,} sliding windows")
    score_rate, train_rate = Rate(), Rate()
    adapt = cfg.sgd_epochs > 0
    trained_chunks = 0
    opt = torch.optim.SGD(list(model.parameters()), lr=cfg.sgd_lr, momentum=cfg.sgd_momentum)  # momentum across chunks
    for ci in range(n_chunks):
        sel = np.flatnonzero(chunk_of == ci)
        a, b = rank_sequences(len(sel), rank, world)  # the chunk's windows, split over the ranks
        mine = w.take(sel[a:b])
        ts = time.perf_counter()
        score_windows(model, tokens_t, mine, sink, rows=rows, width=seq_len, device=device, amp_dtype=amp_dtype,
                      hints_t=hints_t)
        score_rate.add(time.perf_counter() - ts, len(mine))
        if not adapt or ci == n_chunks - 1:
            continue
        left_windows = int((chunk_of > ci).sum()) / world
        lo, n = ci * T, min(T, n_targets - ci * T)
        cost = n * cfg.sgd_epochs * train_rate.per_unit(t_train) / world
        if not clock.agree(clock.affords(left_windows * score_rate.per_unit(t_score) + cost, "adapt")):
            adapt = False  # training on this chunk and scoring the rest would overrun: score only from here
            clock.act(f"stopped adapting after chunk {ci + 1} of {n_chunks}: projected over budget")
            continue
        tt = time.perf_counter()
        cw = plan(np.array([lo]), np.array([n]), seq_len, seq_len, seq_len)
        lr = cfg.sgd_lr * 0.5 * (1.0 + math.cos(math.pi * ci / max(n_chunks - 1, 1)))
        trained = _sgd_steps(model, tokens_t, cw, opt, lambda _s, _t, lr=lr: lr, rows=cfg.sgd_batch_seqs,
                             seq_len=seq_len, clip=cfg.sgd_clip, epochs=cfg.sgd_epochs, device=device,
                             amp_dtype=amp_dtype, rank=rank, world=world)
        train_rate.add(time.perf_counter() - tt, trained / world)
        trained_chunks += 1
    clock.add_phase("score", score_rate.seconds)
    clock.add_phase("adapt", train_rate.seconds)
    return {"stride": stride, "doc_aware": doc_aware, "chunk_tokens": T, "chunks": n_chunks,
            "trained_chunks": trained_chunks, "sgd_lr": cfg.sgd_lr, "sgd_epochs": cfg.sgd_epochs, "ranks": world}
