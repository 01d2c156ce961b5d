"""The context mixer's whole distribution at one position, rebuilt densely for the tests.

Independent of :mod:`.contexts`' hashing and sorting: every context is a tuple of tokens, every count is
a loop over the history u_0 .. u_{p−1}, and every one of the 2^B − 1 decisions of the tree is predicted
with the learned state the fast path had at the start of the target's chunk (:attr:`CMOutput.probes`).
The result is a float64 distribution over the V tokens; the tests check that it sums to 1 and that its
value at u_p is exactly what the fast path scored.
"""

from __future__ import annotations

import numpy as np

from pgolf.eval.cm.contexts import MATCH_LENGTHS, n_bits
from pgolf.eval.cm.mixer import (
    ORDERS,
    State,
    components,
    context_names,
    depth_group,
    inputs,
    match_cell,
    predict,
    selectors,
    sm_cell,
    st,
)

NEEDED_WHEN = "False"


def _ctx(t: list[int], p: int, name: str, word_start: np.ndarray, top: np.ndarray | None = None,
         boundary: np.ndarray | None = None) -> tuple:
    """The context of target position p as a tuple (−1 = before the stream); ``top`` [N−1]: the LM's top
    choice per target."""
    def tok(q: int) -> int:
        return t[q] if q >= 0 else -1

    if name[0] == "o":
        k = int(name[1:])
        return tuple(tok(p - j) for j in range(k, 0, -1))
    if name == "s2":
        return (tok(p - 2),)
    if name == "s3":
        return (tok(p - 3), tok(p - 2))
    if name[0] == "d":
        doc = sum(1 for q in range(p) if boundary is not None and boundary[t[q]])
        inner = _ctx(t, p, "w0" if name == "dw" else "o" + name[1:], word_start)
        return (doc, inner)
    if name == "a0":
        return (int(top[p - 1]),)
    if name == "a1":
        return (int(top[p - 1]), tok(p - 1))
    starts = [q for q in range(p) if word_start[t[q]]]
    cur = starts[-1] if starts else 0
    cur_word = tuple(t[cur:p])
    if name == "w0":
        return cur_word
    before = [q for q in starts if q < cur]
    prev = before[-1] if before else 0
    return (tuple(t[prev:cur]) if cur > 0 else (), cur_word)


def _match(t: list[int], p: int) -> tuple[int, int]:
    """(predicted token, length) of the match model at target position p, by search."""
    for k in sorted(MATCH_LENGTHS, reverse=True):
        want = tuple(t[p - j] if p - j >= 0 else -1 for j in range(k, 0, -1))
        for q in range(p - 1, 0, -1):
            if tuple(t[q - j] if q - j >= 0 else -1 for j in range(k, 0, -1)) == want:
                return t[q], k
    return -1, 0


def dense_distribution(tokens: np.ndarray, p: int, lm_dists: np.ndarray, state: State, vocab_size: int,
                       word_start: np.ndarray, spec: str = "all", boundary: np.ndarray | None = None) -> np.ndarray:
    """float64 [V]: the mixer's distribution of u_p given u_0 .. u_{p−1}, the LM's distributions
    ``lm_dists`` [≥ p, V] of targets 1 .. p (only their top choices are read before p) and the learned
    ``state`` of p's chunk."""
    lm_dist = lm_dists[p - 1]
    top = np.argmax(lm_dists, axis=1)
    t = [int(v) for v in np.asarray(tokens)[: p]]
    comp = components(spec)
    names = context_names(comp)
    B = n_bits(vocab_size)
    full = np.zeros(1 << B)
    full[:vocab_size] = lm_dist
    hist = {name: [t[q] for q in range(1, p)
                   if _ctx(t, q, name, word_start, top, boundary) == _ctx(t, p, name, word_start, top, boundary)]
            for name in names}
    pred, length = _match(t, p) if "match" in comp else (-1, 0)
    docs = [q for q in range(p) if boundary is not None and boundary[t[q]]]
    docpos = p - (docs[-1] if docs else 0)
    lb = (MATCH_LENGTHS.index(length) + 1) if length > 0 else 0
    probs = np.ones(1 << B)
    for w in range(1 << B):
        for d in range(B):
            node = w >> (B - d)
            bit = (w >> (B - 1 - d)) & 1
            lo = node << (B - d)
            half = 1 << (B - d - 1)
            if lo + half >= vocab_size:  # the right child holds no token: forced 0
                p1 = 0.0
            else:
                right = full[lo + half : lo + 2 * half].sum()
                mass = full[lo : lo + 2 * half].sum()
                x_lm = st(np.array([right / max(mass, 1e-30)]))
                dg = int(depth_group(d, B))
                cells, hi, o2 = [], -1, 0
                for m, name in enumerate(names):
                    seen = [v for v in hist[name] if v >> (B - d) == node]
                    n1 = sum((v >> (B - 1 - d)) & 1 for v in seen)
                    last = ((seen[-1] >> (B - 1 - d)) & 1) if seen else -1
                    cells.append(m * len(_cells_per_model()) + int(sm_cell(np.array(len(seen) - n1), np.array(n1),
                                                                          np.array(last), np.array(dg))))
                    if name in ORDERS and seen:
                        hi = int(name[1:])
                    if name == "o2":
                        o2 = len(seen)
                agree = pred >= 0 and (pred >> (B - d)) == node
                expect = (((pred >> (B - 1 - d)) & 1) + 1) if agree else 0
                mstate = (1 if length <= 4 else 2) if agree else 0
                mcell = int(match_cell(np.array(lb), np.array(dg), np.array(expect))) if "match" in comp else 0
                x = inputs(state, np.array([cells], np.int64).reshape(1, -1), np.array([mcell]), x_lm, "match" in comp)
                sel = selectors(np.array(d), np.array(hi), np.array(mstate), x_lm, np.array(o2), np.array(docpos), B,
                                comp).reshape(1, -1)
                p1 = float(predict(state, x, sel, np.array([d]), np.array([d * 3 + mstate]), comp)[0][0])
            probs[w] *= p1 if bit else 1.0 - p1
    return probs[:vocab_size]


def _cells_per_model() -> range:
    from pgolf.eval.cm.mixer import SM_CELLS

    return range(SM_CELLS)
