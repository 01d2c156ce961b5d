"""The causal online mixer (pgolf.eval.mix) against exact references.

The sort-based statistics equal counting by hand; the n-gram probability of each target equals the
dense distribution built by counting the history, which sums to 1 over the whole vocabulary in
float64; the mixed distribution (linear and tilt, fixed and learned weights) sums to 1 and its value
at the target is exactly what the fast path scored; the learned weight of a block depends only on
earlier blocks.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pgolf.config import MixConfig
from pgolf.eval.mix import (
    BETA_GRID,
    LAMBDA_GRID,
    hints,
    mix_losses,
    mixed_distribution,
    ngram_distribution,
    ngram_prob,
    ngram_stats,
)

V = 12


def _stream(n: int, seed: int) -> np.ndarray:
    """Repetitive enough that high orders match: a small alphabet with a repeated phrase."""
    rng = np.random.default_rng(seed)
    t = rng.integers(0, V, n)
    phrase = rng.integers(0, V, 6)
    for s in rng.integers(0, n - 6, n // 15):
        t[s : s + 6] = phrase
    t[0] = 1
    return t.astype(np.uint16)


def _ref_stats(t: np.ndarray, k: int, p: int) -> tuple[int, int, int, int]:
    """(C, c, d, last) of order k at target position p, by counting."""
    def ctx(q: int) -> tuple[int, ...]:
        return tuple(int(t[q - j]) if q - j >= 0 else V for j in range(k, 0, -1))

    same = [q for q in range(1, p) if ctx(q) == ctx(p)]
    ys = [int(t[q]) for q in same]
    return len(same), ys.count(int(t[p])), len(set(ys)), (ys[-1] if ys else -1)


@pytest.mark.parametrize("seed", [0, 1])
def test_sort_based_statistics_equal_counting(seed: int) -> None:
    t = _stream(160, seed)
    st = ngram_stats(t, 4, V)
    for k in range(5):
        for p in range(1, len(t)):
            assert (st.C[k, p - 1], st.c[k, p - 1], st.d[k, p - 1], st.last[k, p - 1]) == _ref_stats(t, k, p), (k, p)


@pytest.mark.parametrize("discount", [0.3, 0.7, 1.0])
def test_ngram_probability_is_the_dense_normalized_distribution(discount: float) -> None:
    t = _stream(140, 2)
    st = ngram_stats(t, 3, V)
    fast = ngram_prob(st, discount, V)
    for p in range(1, len(t), 3):
        dense = ngram_distribution(t, p, 3, discount, V)
        assert math.isclose(math.fsum(dense), 1.0, rel_tol=0, abs_tol=1e-12)  # over the whole vocabulary
        assert np.all(dense > 0)
        assert math.isclose(fast[p - 1], dense[t[p]], rel_tol=1e-12)


def _lm(n: int, seed: int) -> np.ndarray:
    """A synthetic LM: a full distribution over V per target."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, V)) * 2
    return np.exp(z) / np.exp(z).sum(1, keepdims=True)


@pytest.mark.parametrize("mode", ["linear", "tilt"])
@pytest.mark.parametrize("learn", [False, True])
def test_mixed_distribution_normalized_and_equal_to_the_scored_value(mode: str, learn: bool) -> None:
    t = _stream(400, 3)
    n = len(t) - 1
    lm = _lm(n, 4)
    y = t[1:].astype(np.int64)
    lm_loss = (-np.log(lm[np.arange(n), y])).astype(np.float32)
    cfg = MixConfig(mode=mode, max_order=3, discount=0.6, learn=learn, update_every=50, tilt_min_order=1)
    st = ngram_stats(t, cfg.max_order, V)
    h = hints(st, cfg.tilt_min_order)
    hint_logp = np.log(lm[np.arange(n), np.maximum(h, 0)]).astype(np.float32)
    out = mix_losses(t, lm_loss, np.ones(n, bool), cfg, V, hint_logp=hint_logp, hint_ids=h, stats=st)
    grid = LAMBDA_GRID if mode == "linear" else BETA_GRID
    if learn:
        assert np.all(np.isin(out.weight, grid)) and len(np.unique(out.weight)) > 1  # really learned
    for p in range(1, len(t), 5):
        dense = mixed_distribution(lm[p - 1], ngram_distribution(t, p, 3, 0.6, V), mode, out.weight[p - 1], int(h[p - 1]))
        assert math.isclose(math.fsum(dense), 1.0, abs_tol=1e-12)  # over the whole vocabulary, float64
        assert np.all(dense > 0)
        assert math.isclose(-math.log(dense[t[p]]), float(out.losses[p - 1]), rel_tol=1e-5)  # inputs were float32
    # tilt of an exactly normalized distribution stays exactly normalized, at every grid value
    for b in BETA_GRID:
        d = mixed_distribution(lm[7], lm[7], "tilt", float(b), 3)
        assert math.isclose(math.fsum(d), 1.0, abs_tol=1e-12)


def test_tilt_scored_value_matches_the_dense_tilt() -> None:
    t = _stream(300, 5)
    n = len(t) - 1
    lm = _lm(n, 6)
    y = t[1:].astype(np.int64)
    cfg = MixConfig(mode="tilt", max_order=3, learn=False, tilt_beta=1.5, tilt_min_order=1)
    st = ngram_stats(t, 3, V)
    h = hints(st, 1)
    out = mix_losses(t, -np.log(lm[np.arange(n), y]), np.ones(n, bool), cfg, V,
                     hint_logp=np.log(lm[np.arange(n), np.maximum(h, 0)]), hint_ids=h, stats=st)
    for p in range(1, len(t)):
        d = mixed_distribution(lm[p - 1], lm[p - 1], "tilt", 1.5, int(h[p - 1]))
        assert math.isclose(math.fsum(d), 1.0, abs_tol=1e-12)
        assert math.isclose(-math.log(d[t[p]]), float(out.losses[p - 1]), rel_tol=1e-5)


def test_fixed_weight_one_is_the_lm_and_mixing_helps_on_repeats() -> None:
    t = _stream(2000, 7)
    n = len(t) - 1
    lm = np.full((n, V), 1.0 / V)  # an LM that knows nothing
    loss = (-np.log(lm[np.arange(n), t[1:]])).astype(np.float32)
    same = mix_losses(t, loss, np.ones(n, bool), MixConfig(learn=False, lm_weight=1.0), V)
    np.testing.assert_allclose(same.losses, loss, rtol=1e-7)
    mixed = mix_losses(t, loss, np.ones(n, bool), MixConfig(), V)
    assert mixed.losses.astype(np.float64).mean() < 0.9 * loss.astype(np.float64).mean()


def test_learned_weights_of_a_block_use_only_earlier_blocks() -> None:
    t = _stream(600, 8)
    n = len(t) - 1
    lm = _lm(n, 9)
    loss = (-np.log(lm[np.arange(n), t[1:]])).astype(np.float32)
    cfg = MixConfig(max_order=3, update_every=64)
    base = mix_losses(t, loss, np.ones(n, bool), cfg, V)
    cut = 64 * 5 + 30  # inside block 5 (targets 321..384): change every target from position cut + 1 on
    t2 = t.copy()
    t2[cut + 1 :] = (t2[cut + 1 :] + 5) % V
    loss2 = loss.copy()
    loss2[cut:] = loss2[cut:] * 0.5
    other = mix_losses(t2, loss2, np.ones(n, bool), cfg, V)
    # the weights of block 5 were fixed before it started: its changed later targets cannot move them
    np.testing.assert_array_equal(base.weight[: cut + 1], other.weight[: cut + 1])
    np.testing.assert_array_equal(base.losses[:cut], other.losses[:cut])
    assert not np.array_equal(base.weight[64 * 6 :], other.weight[64 * 6 :])  # later blocks did learn from them
