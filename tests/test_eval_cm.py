"""The token context mixer (pgolf.eval.cm) against exact references.

The hashed, sorted statistics equal counting by hand; the whole distribution the mixer scores from,
rebuilt densely from the history at probed positions (every one of the tree's decisions predicted
with the state the fast path had), sums to 1 over the vocabulary in float64 and its value at the
target is what the fast path scored; the LM's path probabilities multiply to its softmax; the losses
of targets before a perturbation are bit for bit unchanged (and a mixer that peeks is caught).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from pgolf.config import MixConfig, apply_overrides
from pgolf.data.bytetables import ByteTables
from pgolf.errors import ConfigError
from pgolf.eval.cm.contexts import (
    MATCH_LENGTHS,
    _prefix_hashes,
    context_hashes,
    match_predictions,
    path_counts,
)
from pgolf.eval.cm.mixer import cm_losses, components, embedding_code, lm_path_probs, set_code
from pgolf.eval.cm.reference import _ctx, _match, dense_distribution
from pgolf.eval.scoring import PATH_HINT, score_logits
from pgolf.eval.sliding import evaluate_sliding
from pgolf.model.gpt import GPT
from pgolf.presets import get_preset

pytestmark = pytest.mark.usefixtures("one_thread")
V = 12
WORD_START = np.zeros(V, bool)
WORD_START[[0, 3, 7]] = True
BOUNDARY = np.zeros(V, bool)
BOUNDARY[1] = True


def _stream(n: int, seed: int) -> np.ndarray:
    """Repetitive enough that long contexts and matches recur: a small alphabet with a repeated phrase."""
    rng = np.random.default_rng(seed)
    t = rng.integers(0, V, n)
    phrase = rng.integers(0, V, 7)
    for s in rng.integers(0, n - 7, n // 12):
        t[s : s + 7] = phrase
    return t.astype(np.int64)


def _lm(n: int, seed: int, vocab: int = V) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, vocab)) * 1.5
    return np.exp(z) / np.exp(z).sum(1, keepdims=True)


def _path_p1(lm: np.ndarray, y: np.ndarray, vocab: int = V) -> np.ndarray:
    return lm_path_probs(torch.log(torch.from_numpy(lm)), torch.from_numpy(y), vocab).double().numpy()


def test_window_hashes_and_counts_equal_counting() -> None:
    t = _stream(150, 0)
    top = np.random.default_rng(1).integers(0, V, len(t) - 1)
    hs = context_hashes(t, WORD_START, ("o0", "o2", "o5", "w0", "w1", "s2", "s3", "d0", "d2", "dw", "a0", "a1"),
                        lm_top=top, boundary=BOUNDARY)
    y = t[1:]
    B = 4
    for name, h in hs.items():
        _, ids = np.unique(h, return_inverse=True)
        pc = path_counts(ids.astype(np.int64), y, B)
        for p in range(1, len(t), 3):
            ctx = _ctx(list(t[:p]), p, name, WORD_START, top, BOUNDARY)
            hist = [int(t[q]) for q in range(1, p) if _ctx(list(t[:p]), q, name, WORD_START, top, BOUNDARY) == ctx]
            for d in range(B):
                node = int(y[p - 1]) >> (B - d)
                seen = [v for v in hist if v >> (B - d) == node]
                same = [v for v in seen if v >> (B - 1 - d) == int(y[p - 1]) >> (B - 1 - d)]
                last = ((seen[-1] >> (B - 1 - d)) & 1) if seen else -1
                got = (pc.n[p - 1, d], pc.same[p - 1, d], pc.last[p - 1, d])
                assert got == (len(seen), len(same), last), (name, p, d)


def test_match_model_equals_search() -> None:
    t = _stream(160, 1)
    pred, length = match_predictions(t)
    for p in range(1, len(t)):
        assert (pred[p - 1], length[p - 1]) == _match(list(t[:p]), p), p
    assert (length >= max(MATCH_LENGTHS) // 4).any()  # long matches happen


def test_prefix_hash_is_the_polynomial_hash() -> None:
    t = np.array([5, 0, 3, 3, 9])
    H, POW = _prefix_hashes(t, 2)
    a = [0, 0, 6, 1, 4, 4, 10]
    h = 0
    for j, v in enumerate(a):
        h = (h * int(POW[1]) + v) % (1 << 64)
        assert int(H[j + 1]) == h


@pytest.mark.parametrize("coded", [False, True])
def test_lm_path_probabilities_multiply_to_the_softmax(coded: bool) -> None:
    for vocab in (12, 16, 1000):
        lm = _lm(50, 2, vocab)
        y = np.random.default_rng(3).integers(0, vocab, 50)
        code = embedding_code(np.random.default_rng(4).normal(size=(vocab, 8))) if coded else None
        if coded:
            assert np.array_equal(np.sort(code), np.arange(vocab))  # a permutation
        set_code(code)
        try:
            p1 = _path_p1(lm, y, vocab)
        finally:
            set_code(None)
        leaf = code[y] if coded else y  # the path is the leaf's
        np.testing.assert_array_equal(p1[:, -1], lm.argmax(1))  # the top choice rides along (an id)
        p1 = p1[:, :-1]
        bits = (leaf[:, None] >> (p1.shape[1] - 1 - np.arange(p1.shape[1]))[None]) & 1
        prod = np.where(bits == 1, p1, 1 - p1).prod(1)
        np.testing.assert_allclose(prod, lm[np.arange(50), y], rtol=2e-5)


@pytest.mark.parametrize("spec", ["all", "orders,doc,lmtop,match", "", "all,tree"])
def test_the_scored_distribution_is_normalized_and_is_what_was_scored(spec: str) -> None:
    t = _stream(260, 4)
    n = len(t) - 1
    lm = _lm(n, 5)
    y = t[1:]
    probe = (3, 40, 77, 150, 222, 258)
    code = embedding_code(np.random.default_rng(6).normal(size=(V, 5))) if "tree" in spec else None
    spec = spec.replace(",tree", "")
    set_code(code)
    try:
        p1 = _path_p1(lm, y)
    finally:
        set_code(None)
    out = cm_losses(t, p1, np.ones(n, bool), V, WORD_START, boundary=BOUNDARY, chunk=16, lr=0.05,
                    spec=spec, probe=probe, code=code)
    if code is not None:  # the reference works on the leaves: tokens, word starts and the LM relabelled
        inv = np.argsort(code)
        t, y, lm = code[t], code[y], lm[:, inv]
        ws, bnd = WORD_START[inv], BOUNDARY[inv]
    else:
        ws, bnd = WORD_START, BOUNDARY
    for i in probe:
        dense = dense_distribution(t, i + 1, lm, out.probes[i], V, ws, spec, bnd)
        assert math.isclose(math.fsum(dense), 1.0, rel_tol=0, abs_tol=1e-12)  # over the whole vocabulary
        assert np.all(dense > 0)
        assert math.isclose(-math.log(dense[y[i]]), float(out.losses[i]), rel_tol=2e-6)
    if spec == "all":  # it learned: later chunks differ from the first state, and it beats the LM here
        assert not np.array_equal(out.probes[222].W1, out.probes[3].W1)
        assert out.losses.mean() < (-np.log(lm[np.arange(n), y])).mean()


def test_it_adapts_to_repetition() -> None:
    t = _stream(3000, 6)
    n = len(t) - 1
    lm = np.full((n, V), 1.0 / V)  # an LM that knows nothing
    out = cm_losses(t, _path_p1(lm, t[1:]), np.ones(n, bool), V, WORD_START)
    assert out.losses.astype(np.float64).mean() < 0.8 * math.log(V)


def test_unscored_targets_are_not_learned_from_and_score_zero() -> None:
    t = _stream(400, 7)
    n = len(t) - 1
    p1 = _path_p1(_lm(n, 8), t[1:])
    mask = np.ones(n, bool)
    mask[300:] = False
    a = cm_losses(t, p1, mask, V, WORD_START, chunk=32)
    assert np.all(a.losses[300:] == 0)
    b = cm_losses(t, p1, np.ones(n, bool), V, WORD_START, chunk=32)
    np.testing.assert_array_equal(a.losses[:300], b.losses[:300])


def test_components_and_config_are_checked() -> None:
    assert components("all") == {"orders", "words", "sparse", "doc", "lmtop", "match", "apm", "mixer2", "tree"}
    with pytest.raises(ValueError):
        components("orders,nope")
    with pytest.raises(ConfigError):
        MixConfig(mode="cm", cm_components="orders,nope")
    with pytest.raises(ConfigError):
        MixConfig(mode="cm", cm_chunk=0)


# --- through the LM pass: plumbing and causality ---------------------------------------------------

BOS, L = 1, 32


@dataclass
class Val:
    tokens: np.ndarray
    raw_bytes: np.ndarray | None


TABLES = ByteTables(np.r_[0, 0, np.ones(V - 2, np.int32)].astype(np.int32), WORD_START.copy(),
                    np.r_[True, True, np.zeros(V - 2, bool)], None)


def _gpt() -> GPT:
    torch.manual_seed(0)
    cfg = apply_overrides(get_preset("tiny"), [f"model.vocab_size={V}"])
    m = GPT(cfg.model)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m.eval()


def _run(model, leaky: bool = False):
    def run(tok):
        n = len(tok) - 1
        s = evaluate_sliding(model, Val(tok, None), TABLES, seq_len=L, stride=L, batch_tokens=4 * L, device="cpu",
                             amp_dtype="fp32", hints=np.full(n, PATH_HINT, np.int64))
        assert np.all(s.counts[: (n // L) * L] == 1)
        p1 = s.hint_logp
        hist = np.roll(tok, -1) if leaky else tok  # leaky: the contexts see u_p
        return cm_losses(hist, p1, s.counts > 0, V, WORD_START, boundary=BOUNDARY, chunk=16).losses
    return run


def test_path_hints_through_the_lm_pass_give_the_lms_loss() -> None:
    model = _gpt()
    tok = _stream(200, 9) % V
    n = len(tok) - 1
    s = evaluate_sliding(model, Val(tok, None), TABLES, seq_len=L, stride=L, batch_tokens=4 * L, device="cpu",
                         amp_dtype="fp32", hints=np.full(n, PATH_HINT, np.int64))
    m = s.counts > 0
    bits = (tok[1:, None] >> (3 - np.arange(4))[None]) & 1
    prod = np.where(bits == 1, s.hint_logp[:, :4], 1 - s.hint_logp[:, :4]).prod(1)
    np.testing.assert_allclose(-np.log(prod[m]), s.losses[m], rtol=1e-4, atol=1e-5)
    ce, hl = score_logits(model, torch.from_numpy(tok[None, :L]), torch.from_numpy(tok[None, 1 : L + 1]),
                          torch.full((1, L), PATH_HINT))
    assert hl.shape == (1, L, 5)


def _perturbed(tokens: np.ndarray, t: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = tokens.copy()
    out[t:] = rng.integers(0, V, len(tokens) - t)
    return out


@pytest.mark.parametrize("leaky", [False, True])
def test_the_mixer_is_causal_and_a_peeking_one_is_caught(leaky: bool) -> None:
    run = _run(_gpt(), leaky)
    tok = _stream(330, 10)
    base = run(tok)
    caught = False
    for t in (120, 200, 260):
        other = run(_perturbed(tok, t, t))
        same = np.array_equal(base[: t - 1], other[: t - 1])
        if not leaky:
            assert same, f"a target before {t} changed"
            assert not np.array_equal(base[t - 1 :], other[t - 1 :])
        caught |= not same
    assert caught == leaky
