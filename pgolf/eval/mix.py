"""Causal online mixing: an n-gram model of the tokens scored so far, mixed with the LM's distribution.

Sources: the causal token-only n-gram tilt of [04-09a] (kernel from PR #1420) and PR #2135 (CATALOGUE
§2.6, §6); the n-gram model is the interpolated absolute-discounting form of PPM (Cleary & Witten;
PPM-D is D = ½). Legality (RULES.md "Legal evaluation"): the distribution of target u_p depends only
on the artifact (through the LM) and on u_0 .. u_{p−1}; it is a full normalized distribution over the
vocabulary; nothing is rescored. The mixer's state is built at evaluation time from scored tokens
only, so it costs evaluation seconds, never artifact bytes.

The n-gram model. For order n (context length), the context of u_p is c_n(p) = (u_{p−n} .. u_{p−1})
(positions before 0 read as a pad symbol). Over the earlier targets q < p with the same context:
C_n = their number, c_n(w) = how many were w, d_n = how many distinct w. With V the vocabulary and D
the discount,

    P_{−1}(w) = 1/V
    P_n(w)    = (max(c_n(w) − D, 0) + D·d_n·P_{n−1}(w)) / C_n     if C_n > 0, else P_{n−1}(w)

Each level sums to 1 because Σ_w max(c_n(w) − D, 0) = C_n − D·d_n (every seen w has c ≥ 1 ≥ D).
Only P(u_p) is needed to score, and C_n(p), c_n(p, u_p), d_n(p) are ranks inside groups of equal
context / equal (context, token) in stream order: one stable sort per order, no loop over tokens.

Mixing (``eval.mix.mode``):

- ``linear``: p(w) = λ·p_LM(w) + (1 − λ)·P(w). Normalized as both are.
- ``tilt``: hint h_p = the token that followed the most recent earlier occurrence of the longest
  context of order ≥ ``tilt_min_order`` seen before (a match model); then
  p(w) = p_LM(w)·e^{β·[w = h]} / Z,  Z = 1 + p_LM(h)(e^β − 1)   — exactly normalized ([04-09a]).
  Without a hint p = p_LM.

Weights (``eval.mix.learn``): the targets are grouped into blocks of ``update_every``; every target
falls in a bucket (longest order with C_n > 0, and ⌊log2 C_n⌋ up to 7). For each bucket, the weight
of a block is the grid value (λ ∈ {0, 0.05, .., 1} or β ∈ {0, 0.25, .., 4}) with the highest
log-likelihood on that bucket's targets in all earlier blocks, shrunk towards all buckets' choice
by a pseudo-count of 64 targets; before a bucket has data, the fixed ``lm_weight`` / ``tilt_beta``.
So the weight used at p depends only on targets of earlier blocks: causal.

Exact references for the tests: :func:`ngram_distribution` builds P(·) at one position from the
history by counting (dense, float64), :func:`mixed_distribution` the whole mixed distribution.

Ranks: not sharded. Under torchrun every rank counts the whole stream and mixes the gathered LM losses
(:mod:`pgolf.eval.methods`), so the statistics, the learned weights and the mixed losses are the
one-process ones bit for bit given the same LM losses; only the LM pass is split over the ranks.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from pgolf.config import MixConfig

NEEDED_WHEN = "eval.method.endswith('mix')"

LAMBDA_GRID = np.linspace(0.0, 1.0, 21)
BETA_GRID = np.linspace(0.0, 4.0, 17)
COUNT_BUCKETS = 8
PRIOR_TARGETS = 64.0


@dataclass
class NgramStats:
    """Per-target statistics of every order (index p−1 for target u_p), all from earlier targets only."""

    C: np.ndarray
    """int64 [orders, N−1]: earlier targets with the same context."""
    c: np.ndarray
    """int64 [orders, N−1]: of those, how many were u_p."""
    d: np.ndarray
    """int64 [orders, N−1]: distinct tokens among them."""
    last: np.ndarray
    """int64 [orders, N−1]: the token after the most recent earlier occurrence of the context (−1: none)."""


def _rank_in_groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For keys in stream order: (order, group start index in that order, rank of each element among the
    earlier elements with the same key). Stable, so ties keep stream order."""
    order = np.argsort(keys, kind="stable")
    ks = keys[order]
    new = np.ones(ks.shape[0], dtype=bool)
    new[1:] = ks[1:] != ks[:-1]
    start = np.maximum.accumulate(np.where(new, np.arange(ks.shape[0]), 0))
    rank = np.empty(ks.shape[0], dtype=np.int64)
    rank[order] = np.arange(ks.shape[0]) - start
    return order, start, rank


def ngram_stats(tokens: np.ndarray, max_order: int, vocab_size: int) -> NgramStats:
    """The statistics of the module docstring for every target of ``tokens`` and every order 0..max_order."""
    t = np.asarray(tokens, dtype=np.int64)
    n = t.shape[0] - 1
    y = t[1:]
    orders = max_order + 1
    C = np.zeros((orders, n), np.int64)
    c = np.zeros((orders, n), np.int64)
    d = np.zeros((orders, n), np.int64)
    last = np.full((orders, n), -1, np.int64)
    g = np.zeros(n, np.int64)  # context id of order 0: one context
    pos = np.arange(1, n + 1)
    for k in range(orders):
        if k > 0:  # extend every context by the token k places back (pad = vocab_size before the stream)
            back = pos - k
            prev = np.where(back >= 0, t[np.maximum(back, 0)], vocab_size)
            _, g = np.unique(g * (vocab_size + 1) + prev, return_inverse=True)
            g = g.astype(np.int64).reshape(-1)
        order, start, rank = _rank_in_groups(g)
        C[k] = rank
        _, _, rc = _rank_in_groups(g * vocab_size + y)
        c[k] = rc
        first = (rc == 0).astype(np.int64)[order]  # in (context, time) order: first time this token followed
        cs = np.cumsum(first) - first
        dd = np.empty(n, np.int64)
        dd[order] = cs - cs[start]
        d[k] = dd
        prev_in_group = np.arange(n) - 1
        has = (np.arange(n) > start)
        lt = np.full(n, -1, np.int64)
        lt[order[has]] = y[order[prev_in_group[has]]]
        last[k] = lt
    return NgramStats(C=C, c=c, d=d, last=last)


def ngram_prob(stats: NgramStats, discount: float, vocab_size: int) -> np.ndarray:
    """float64 [N−1]: P(u_p) of the interpolated model (module docstring)."""
    p = np.full(stats.C.shape[1], 1.0 / vocab_size)
    D = float(discount)
    for k in range(stats.C.shape[0]):
        C, cnt, d = stats.C[k], stats.c[k], stats.d[k]
        seen = C > 0
        num = np.maximum(cnt - D, 0.0) + D * d * p
        p = np.where(seen, num / np.maximum(C, 1), p)
    return p


def longest_order(stats: NgramStats, min_order: int = 0) -> np.ndarray:
    """int64 [N−1]: the longest order ≥ ``min_order`` whose context was seen before (−1: none)."""
    best = np.full(stats.C.shape[1], -1, np.int64)
    for k in range(min_order, stats.C.shape[0]):
        best = np.where(stats.C[k] > 0, k, best)
    return best


def hints(stats: NgramStats, min_order: int) -> np.ndarray:
    """int64 [N−1]: the tilt's hint per target (−1 = none): the last continuation of the longest seen context."""
    k = longest_order(stats, min_order)
    out = np.full(k.shape[0], -1, np.int64)
    ok = k >= 0
    out[ok] = stats.last[k[ok], np.flatnonzero(ok)]
    return out


def buckets(stats: NgramStats) -> np.ndarray:
    """int64 [N−1]: bucket of each target = longest seen order (−1 → 0) × 8 + min(⌊log2 C⌋, 7)."""
    k = longest_order(stats)
    kk = np.maximum(k, 0)
    cnt = stats.C[kk, np.arange(k.shape[0])]
    lb = np.minimum(np.floor(np.log2(np.maximum(cnt, 1))).astype(np.int64), COUNT_BUCKETS - 1)
    return (k + 1) * COUNT_BUCKETS + lb


def _choose(ll: np.ndarray, bucket: np.ndarray, block: np.ndarray, n_buckets: int, n_blocks: int,
            default_index: int) -> np.ndarray:
    """Grid index per target: argmax over the grid of the bucket's log-likelihood summed over earlier
    blocks (+ the all-bucket mean × PRIOR_TARGETS); ``default_index`` where the bucket has no data yet."""
    G = ll.shape[1]
    flat = block * n_buckets + bucket
    size = n_blocks * n_buckets
    S = np.stack([np.bincount(flat, weights=ll[:, g], minlength=size) for g in range(G)], axis=1)
    S = S.reshape(n_blocks, n_buckets, G)
    N = np.bincount(flat, minlength=size).reshape(n_blocks, n_buckets).astype(np.float64)
    # earlier blocks only, and exactly: shift the inclusive sums (cumsum − S would let block b's own
    # values into block b's rounding, i.e. a later token into an earlier weight)
    cum = np.concatenate([np.zeros_like(S[:1]), np.cumsum(S, axis=0)[:-1]])
    ncum = np.concatenate([np.zeros_like(N[:1]), np.cumsum(N, axis=0)[:-1]])
    all_ll = cum.sum(axis=1)  # [blocks, G]
    all_n = ncum.sum(axis=1)  # [blocks]
    prior = np.where(all_n[:, None] > 0, all_ll / np.maximum(all_n, 1)[:, None], 0.0)
    score = cum + PRIOR_TARGETS * prior[:, None, :]
    pick = np.argmax(score, axis=2)  # [blocks, buckets]
    pick = np.where(ncum > 0, pick, default_index)
    return pick[block, bucket]


@dataclass
class MixOutput:
    losses: np.ndarray
    """float32 [N−1]: −log p_mix(u_p) (0 where the base did not score)."""
    weight: np.ndarray
    """float64 [N−1]: λ (linear) or β (tilt) used at each target."""
    ngram_p: np.ndarray
    """float64 [N−1]: P(u_p) of the n-gram model."""
    hints: np.ndarray | None
    info: dict


def mix_losses(tokens: np.ndarray, lm_losses: np.ndarray, scored: np.ndarray, cfg: MixConfig, vocab_size: int,
               hint_logp: np.ndarray | None = None, hint_ids: np.ndarray | None = None,
               stats: NgramStats | None = None) -> MixOutput:
    """Mix the LM's per-target losses (nats, float32 [N−1]) with the online n-gram model.
    ``scored`` bool [N−1]: the targets the base scored (the rest stay 0 and are not learned from).
    ``tilt`` needs ``hint_logp`` = log p_LM(hint) per target for ``hint_ids`` (from :func:`hints`)."""
    t0 = time.perf_counter()
    stats = stats or ngram_stats(tokens, cfg.max_order, vocab_size)
    t_stats = time.perf_counter() - t0
    n = lm_losses.shape[0]
    lm_logp = -lm_losses.astype(np.float64)
    png = ngram_prob(stats, cfg.discount, vocab_size)
    bucket = buckets(stats)
    n_buckets = (cfg.max_order + 2) * COUNT_BUCKETS
    block = np.arange(n) // cfg.update_every
    n_blocks = int(block[-1]) + 1 if n else 1
    y = np.asarray(tokens, np.int64)[1:]
    if cfg.mode == "linear":
        grid = LAMBDA_GRID
        default = cfg.lm_weight
        plm = np.exp(lm_logp)

        def loglik(w: np.ndarray | float) -> np.ndarray:
            with np.errstate(divide="ignore"):
                return np.log(w * plm + (1.0 - w) * png)
    else:
        if hint_ids is None or hint_logp is None:
            raise ValueError("tilt mixing needs the hints and log p_LM(hint)")
        grid = BETA_GRID
        default = cfg.tilt_beta
        has = hint_ids >= 0
        hit = has & (hint_ids == y)
        ph = np.where(has, np.exp(hint_logp.astype(np.float64)), 0.0)

        def loglik(b: np.ndarray | float) -> np.ndarray:
            b = np.asarray(b, np.float64)
            return lm_logp + np.where(hit, b, 0.0) - np.where(has, np.log1p(ph * np.expm1(b)), 0.0)
    if cfg.learn:
        mask = scored
        ll = np.stack([np.where(mask, loglik(g), 0.0) for g in grid], axis=1)  # [N−1, G]
        default_index = int(np.argmin(np.abs(grid - default)))
        # bucket/block of unscored targets contribute nothing: give them an empty bucket of their own
        bk = np.where(mask, bucket, n_buckets)
        pick = _choose(ll, bk, block, n_buckets + 1, n_blocks, default_index)
        weight = grid[pick]
        weight = np.where(mask & (bk < n_buckets), weight, grid[default_index])
    else:
        weight = np.full(n, float(default))
    mixed = loglik(weight)
    losses = np.where(scored, -mixed, 0.0).astype(np.float32)
    info = {"mode": cfg.mode, "max_order": cfg.max_order, "discount": cfg.discount, "learn": cfg.learn,
            "ngram_seconds": t_stats, "mix_seconds": time.perf_counter() - t0,
            "ngram_bpt": float(-np.log2(png[scored]).mean()) if scored.any() else math.nan}
    return MixOutput(losses=losses, weight=weight, ngram_p=png, hints=hint_ids, info=info)


# --- exact dense references (tests) ----------------------------------------------------------------

def ngram_distribution(tokens: np.ndarray, p: int, max_order: int, discount: float, vocab_size: int) -> np.ndarray:
    """float64 [V]: the whole n-gram distribution for target position ``p`` by counting u_1 .. u_{p−1}."""
    t = [int(v) for v in np.asarray(tokens)[:p]]

    def ctx(q: int, k: int) -> tuple[int, ...]:
        return tuple(t[q - j] if q - j >= 0 else vocab_size for j in range(k, 0, -1))

    dist = np.full(vocab_size, 1.0 / vocab_size)
    for k in range(max_order + 1):
        want = ctx(p, k)
        counts = np.zeros(vocab_size)
        for q in range(1, p):
            if ctx(q, k) == want:
                counts[t[q]] += 1
        C = counts.sum()
        if C > 0:
            d = float((counts > 0).sum())
            dist = (np.maximum(counts - discount, 0.0) + discount * d * dist) / C
    return dist


def mixed_distribution(lm_dist: np.ndarray, ng_dist: np.ndarray, mode: str, weight: float, hint: int = -1) -> np.ndarray:
    """float64 [V]: the whole mixed distribution at one position, from the LM's and the n-gram's."""
    if mode == "linear":
        return weight * lm_dist + (1.0 - weight) * ng_dist
    if hint < 0:
        return lm_dist.copy()
    out = lm_dist.copy()
    out[hint] *= math.exp(weight)
    return out / (1.0 + lm_dist[hint] * math.expm1(weight))
