"""One entry point for every evaluation method, each inside its own time budget.

Methods (``pgolf eval --method NAME``, repeatable):

    plain         the challenge's non-overlapping windows (:mod:`pgolf.eval.bpb`)
    sliding       sliding windows, ``eval.sliding.*`` (:mod:`pgolf.eval.sliding`)
    ttt           score-first test-time training, ``eval.ttt.*`` (:mod:`pgolf.eval.ttt`)
    mix           plain + causal online n-gram mixing, ``eval.mix.*`` (:mod:`pgolf.eval.mix`)
    sliding+mix   sliding windows, then the mixer;   ttt+mix   TTT, then the mixer

Order of work inside a method, all on its :class:`~pgolf.eval.clock.EvalClock` (started by the
caller when it opened the artifact): compile warm-up on random tokens (``eval.compile``; plain and
sliding) timed to project the scoring; the mixer's n-gram statistics (tokens only; they also give the
tilt's hints, which the LM pass needs); the scoring pass; the mixing. A projection over the budget
before any validation token is scored is a BudgetError.

Every method returns a :class:`MethodRun`: the :class:`~pgolf.eval.scoring.Scored` per-target losses
(after mixing), its metrics, and a report (settings, seconds per phase, tokens/s, budget actions).

Every method runs on any number of ranks (torchrun). The clock is one for all of them
(:meth:`~pgolf.eval.clock.EvalClock.agree_start`, agreed refusals and degradations). plain and sliding
split the sequences / windows into contiguous runs; TTT: :mod:`pgolf.eval.ttt` ("Ranks"). The mixer is
not sharded: its n-gram statistics are counted on every rank over the whole stream (the tokens are on
every rank), the LM's per-target losses (and log p(hint)) are gathered to every rank (one all-reduce),
and every rank mixes the whole stream, the same float64 numpy on the same inputs. Each rank then sums
only the targets it scored. So the mixed per-target losses equal the one-process ones bit for bit
whenever the LM's do (plain, sliding, LoRA TTT; to float32 rounding after phased/sgd TTT), the learned
weights are exactly the one-process weights, and the mixing costs each rank the one-process seconds
(the LM pass is what the ranks share). The sums differ only by float64 addition order.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from pgolf import dist
from pgolf.compile import compile_model
from pgolf.compile import resolve as resolve_compile
from pgolf.config import RunConfig, parse_eval_method
from pgolf.data.bytetables import ByteTables
from pgolf.eval.bpb import ValTokens, evaluate_scored, num_eval_sequences
from pgolf.eval.clock import EvalClock
from pgolf.eval.scoring import Scored, amp_context, finish, gathered, score_logits
from pgolf.eval.sliding import evaluate_sliding, sliding_windows

NEEDED_WHEN = "eval.method != 'plain'"


def cheaper(name: str) -> str | None:
    """The method to fall back to when the clock refuses ``name`` before it scores a token: a mixed method
    keeps the mixer on the plain pass (``ttt+mix``/``sliding+mix`` → ``mix``); anything else has only the
    plain round trip left (None)."""
    base, mixed = parse_eval_method(name)
    return "mix" if mixed and base != "plain" else None


@dataclass
class MethodRun:
    name: str
    scored: Scored
    report: dict[str, Any]


def settings(name: str, cfg: RunConfig) -> dict[str, Any]:
    """The config values a method depends on (for its report line)."""
    base, mixed = parse_eval_method(name)
    e = cfg.eval
    out: dict[str, Any] = {"seq_len": cfg.eval_seq_len}
    if base == "sliding" or (base == "ttt" and e.ttt.mode == "sgd"):
        out.update(stride=e.sliding.stride, doc_aware=e.sliding.doc_aware)
    if base == "ttt":
        t = e.ttt
        out.update(mode=t.mode)
        if t.mode in ("lora", "phased"):
            from pgolf.eval.ttt import chunk_for

            out.update(chunk=chunk_for(t, cfg.eval_seq_len), rank=t.lora_rank, targets=",".join(t.lora_targets), lr=t.lora_lr,
                       steps=t.lora_steps, batch_docs=t.batch_docs, warm_start_a=t.warm_start_a,
                       order="stream" if t.warm_start_a else t.order)
        if t.mode == "phased":
            out.update(phases=t.phases, prefix_docs=t.prefix_docs, global_lr=t.global_lr)
        if t.mode == "sgd":
            out.update(chunk_tokens=t.sgd_chunk_tokens, sgd_lr=t.sgd_lr, epochs=t.sgd_epochs)
    if mixed:
        m = e.mix
        if m.mode == "cm":
            out.update(mix="cm", lr=m.cm_lr, chunk=m.cm_chunk, components=m.cm_components)
        else:
            out.update(mix=m.mode, order=m.max_order, discount=m.discount, learn=m.learn)
    return out


def _warmup(model: nn.Module, vocab: int, rows: int, seq_len: int, device: torch.device, amp_dtype: str,
            logits: bool = False, paths: bool = False) -> float:
    """Run the scoring call twice on random tokens (the first call compiles); seconds of the second.
    ``logits``: the call that returns logits (the tilt needs log p(hint)) instead of the CE one."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, vocab, (rows, seq_len), generator=g).to(device)
    y = torch.randint(0, vocab, (rows, seq_len), generator=g).to(device)
    h = torch.randint(0, vocab, (rows, seq_len), generator=g).to(device) if logits else None
    if paths:  # the context mixer's path probabilities (pgolf.eval.scoring.PATH_HINT)
        h = torch.full((rows, seq_len), -2, dtype=torch.int64, device=device)
    with torch.no_grad(), amp_context(device, amp_dtype):
        score_logits(model, x, y, h)
        t0 = time.perf_counter()
        score_logits(model, x, y, h)
    return time.perf_counter() - t0


def _ngram_estimate(n_tokens: int, max_order: int, vocab: int) -> float:
    from pgolf.eval.mix import ngram_stats

    """Seconds of the n-gram statistics for ``n_tokens``, from a timed run on random tokens (≤ 65,536)."""
    m = min(n_tokens, 65536)
    rand = np.random.default_rng(0).integers(0, vocab, m)
    t0 = time.perf_counter()
    ngram_stats(rand, max_order, vocab)
    return (time.perf_counter() - t0) * n_tokens / max(m, 1) * (1.0 + math.log2(max(n_tokens / max(m, 1), 1.0)) / 16)


def run_method(name: str, model: nn.Module, val: ValTokens, tables: ByteTables, cfg: RunConfig, *,
               device: torch.device, amp_dtype: str, score: str, clock: EvalClock) -> MethodRun:
    """Evaluate ``model`` on ``val`` with method ``name`` (module docstring) on ``clock``."""
    base, mixed = parse_eval_method(name)
    e = cfg.eval
    seq_len = cfg.eval_seq_len
    world = dist.world_size()
    clock.agree_start()  # one clock for every rank: the earliest start
    tokens = np.asarray(val.tokens)
    vocab = tables.vocab_size
    bos = cfg.model.embed.bos_id
    t_start = clock.elapsed()
    scorer = model
    per_batch = 0.0
    rows = max(1, e.batch_tokens // (world * seq_len))
    use_compile = resolve_compile(e.compile, device)[0]
    if base in ("plain", "sliding"):
        with clock.phase("warmup"):
            if use_compile:
                scorer = compile_model(model)
            model.eval()
            per_batch = _warmup(scorer, vocab, rows, seq_len, device, amp_dtype,
                                logits=mixed and e.mix.mode in ("tilt", "cm"), paths=mixed and e.mix.mode == "cm")
    stats = hint_ids = None
    held = 0.0
    if mixed and e.mix.mode == "cm":  # the LM pass records every target's path probabilities
        # behind eval.mix.mode=cm
        from pgolf.eval.cm.mixer import components, expected_seconds, model_code, set_code
        from pgolf.eval.scoring import PATH_HINT

        held = expected_seconds(tokens.shape[0], vocab)
        clock.require(held, f"context mixing of {tokens.shape[0]:,} tokens")
        hint_ids = np.full(tokens.shape[0] - 1, PATH_HINT, np.int64)
        code = model_code(model) if "tree" in components(e.mix.cm_components) else None
        set_code(code)  # the LM pass's path probabilities follow the embedding tree
    elif mixed:
        with clock.phase("warmup"):
            est = _ngram_estimate(tokens.shape[0], e.mix.max_order, vocab)
        clock.require(est, f"the n-gram statistics of {tokens.shape[0]:,} tokens")
        with clock.phase("ngram"):
            # behind its switch (a bundle without the mixer leaves pgolf.eval.mix out)
            from pgolf.eval.mix import hints as ngram_hints
            from pgolf.eval.mix import ngram_stats

            stats = ngram_stats(tokens, e.mix.max_order, vocab)
            if e.mix.mode == "tilt":
                hint_ids = ngram_hints(stats, e.mix.tilt_min_order)
    if base == "plain":
        n_batches = math.ceil(math.ceil(num_eval_sequences(tokens.shape[0], seq_len) / world) / rows)
        clock.require(n_batches * per_batch, f"scoring {n_batches} batches")
        with clock.phase("score"):
            if hint_ids is None:
                scored = evaluate_scored(scorer, val, tables, seq_len=seq_len, batch_tokens=e.batch_tokens,
                                         device=device, amp_dtype=amp_dtype, score=score, pad_batches=use_compile)
            else:  # tilt needs log p(hint): the plain cut as sliding windows with stride = seq_len
                scored = evaluate_sliding(scorer, _truncated(val, seq_len), tables, seq_len=seq_len, stride=seq_len,
                                          batch_tokens=e.batch_tokens, device=device, amp_dtype=amp_dtype,
                                          score=score, hints=hint_ids[: num_eval_sequences(tokens.shape[0], seq_len) * seq_len],
                                          pad_batches=use_compile)
                scored = _extend(scored, tokens.shape[0])
    elif base == "sliding":
        n_win = len(sliding_windows(tokens, seq_len, e.sliding.stride, e.sliding.doc_aware, bos))
        n_batches = math.ceil(math.ceil(n_win / world) / rows)
        clock.require(n_batches * per_batch, f"scoring {n_win:,} sliding windows")
        with clock.phase("score"):
            scored = evaluate_sliding(scorer, val, tables, seq_len=seq_len, stride=e.sliding.stride,
                                      doc_aware=e.sliding.doc_aware, bos_id=bos, batch_tokens=e.batch_tokens,
                                      device=device, amp_dtype=amp_dtype, score=score, hints=hint_ids,
                                      pad_batches=use_compile)
    else:
        from pgolf.eval.ttt import evaluate_ttt  # behind its switch

        clock.reserve += held  # TTT's clock leaves the context mixer its projected seconds
        try:
            scored = evaluate_ttt(model, val, tables, e.ttt, seq_len=seq_len, device=device, stride=e.sliding.stride,
                                  doc_aware=e.sliding.doc_aware, batch_tokens=e.batch_tokens, bos_id=bos,
                                  amp_dtype=amp_dtype, score=score, clock=clock, hints=hint_ids, seed=cfg.train.seed)
        finally:
            clock.reserve -= held
    if held:
        set_code(None)
        if not clock.agree(clock.affords(held, "cm")):  # the LM pass ran long: score it as it is
            clock.act(f"context mixing skipped: its ≈{held:.0f} s no longer fit the clock; scored by the LM alone")
            mixed = False
    info = dict(scored.info)
    if mixed:
        with clock.phase("mix"):
            whole = gathered(scored, device)  # every rank mixes the whole stream (module docstring)
            mask = whole.counts > 0
            if e.mix.mode == "cm":
                from pgolf.eval.cm.mixer import cm_losses

                out = cm_losses(tokens, whole.hint_logp, mask, vocab, tables.has_leading_space | tables.is_boundary,
                                boundary=tables.is_boundary, lr=e.mix.cm_lr, chunk=e.mix.cm_chunk,
                                spec=e.mix.cm_components, code=code)
            else:
                from pgolf.eval.mix import mix_losses

                out = mix_losses(tokens, whole.losses, mask, e.mix, vocab, hint_logp=whole.hint_logp,
                                 hint_ids=hint_ids, stats=stats)
            info["mix"] = {k: v for k, v in out.info.items() if k != "ngram_seconds"}
            info["lm_val_bpb"] = scored.result.val_bpb
            raw = None if val.raw_bytes is None else np.asarray(val.raw_bytes)
            mine = np.where(scored.counts > 0, out.losses, np.float32(0.0))  # this rank's targets, summed once
            scored = finish(mine, scored.counts, tokens, raw, tables, expected=mask, world_size=world,
                            device=device, t0=time.perf_counter(), score=score, what=f"{name} evaluation", info=info)
    rep = clock.report()
    seconds = rep["total_seconds"]
    rep.update(method=name, settings=settings(name, cfg), method_seconds=seconds - t_start,
               tokens_per_second=scored.result.tokens / seconds if seconds > 0 else math.nan, details=info)
    scored.result.seconds = seconds
    return MethodRun(name=name, scored=scored, report=rep)


def _truncated(val: ValTokens, seq_len: int):
    """The plain evaluation's tokens: the first ⌊(N−1)/L⌋·L + 1 of the stream."""
    from pgolf.data.loader import ValData

    m = num_eval_sequences(len(val.tokens), seq_len) * seq_len + 1
    raw = None if val.raw_bytes is None else np.asarray(val.raw_bytes)[:m]
    return ValData(np.asarray(val.tokens)[:m], raw)


def _extend(s: Scored, n_tokens: int) -> Scored:
    """Pad a Scored of a truncated stream back to the full stream's N − 1 targets (the tail unscored)."""
    pad = n_tokens - 1 - s.losses.shape[0]
    z32 = np.zeros(pad, np.float32)
    return Scored(losses=np.concatenate([s.losses, z32]), counts=np.concatenate([s.counts, np.zeros(pad, np.uint8)]),
                  result=s.result, hint_logp=None if s.hint_logp is None else
                  np.concatenate([s.hint_logp, np.zeros((pad,) + s.hint_logp.shape[1:], np.float32)]),
                  info=s.info)
