"""The contexts of the token context mixer and their causal counts, vectorized over the stream.

Tokens as bit paths. With B = ⌈log2 V⌉, token w is the path of its B bits, most significant first:
bit_d(w) = (w >> (B−1−d)) & 1 and prefix_d(w) = w >> (B−d) (d = 0 .. B; prefix_0 = 0, prefix_B = w). A
distribution over tokens is the product of B binary decisions p(bit_d | prefix_d) along the path, so
any predictor of those decisions in (0, 1) gives a distribution that sums to 1 over the 2^B leaves by
construction (ids ≥ V get a decision of exactly 0: :mod:`.mixer`). This is how paq8/lpaq/zpaq and
cmix code bytes (8 binary decisions); here the symbol is a token.

Contexts. For target u_p (index i = p − 1) every context model names a context from u_0 .. u_{p−1}
only (positions before 0 read as a pad symbol):

- ``o0`` .. ``oK``: the last k tokens (order-k, as PPM / paq's order-n models);
- ``w0``: the tokens of the current word so far (from the last word-start piece, SentencePiece "▁",
  or a control token, through u_{p−1}); ``w1``: the previous whole word and ``w0`` (paq8's word model);
- ``s2``: u_{p−2} alone; ``s3``: u_{p−3}, u_{p−2} (sparse / skip contexts, paq8's sparse model);
- ``d0``, ``d1``, .. and ``dw`` (``w0``): order-k inside the current document only (a document starts at a control piece,
  BOS): a cache of this document's own statistics beside the whole stream's;
- ``a0``: the LM's top choice for u_p; ``a1``: it and u_{p−1} (a model's prediction as a context, as
  paq8 and cmix use their models' outputs): the counts learn what this document does where the LM
  guesses a given token;
- the match model: the longest of the lengths in :data:`MATCH_LENGTHS` whose last k tokens occurred
  before; it predicts the token that followed their most recent occurrence (lpaq/zpaq's MatchModel).

Contexts are hashed to 64 bits (a polynomial hash modulo 2^64) and renumbered densely; a collision of
two different contexts has probability ≈ N²/2^64 ≈ 10⁻⁷ at N = 10⁶ and would only merge two
statistics — the distribution stays causal and normalized either way.

Counts. For context model m, target i and depth d: n_d = how many earlier targets j < i had the same
context and the same prefix_d (the node of the tree the path is at), and n_{d+1} how many of them also
took the same bit as u_p at depth d; the previous such target's bit at depth d (the node's most recent
decision, paq's run information). Each is a rank inside groups of equal (context, node) in stream order:
one integer sort per (model, depth), no loop over tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEEDED_WHEN = "eval.method.endswith('mix') and eval.mix.mode == 'cm'"

MATCH_LENGTHS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
"""Context lengths (tokens) the match model tries, longest first."""
_P = np.uint64(0x9E3779B97F4A7C15)
_Q = np.uint64(0xC2B2AE3D27D4EB4F)


def n_bits(vocab_size: int) -> int:
    """B = ⌈log2 V⌉ (at least 1): the bits of a token's path."""
    return max(1, int(vocab_size - 1).bit_length())


def path_bits(y: np.ndarray, B: int) -> np.ndarray:
    """uint8 [n, B]: bit_d of each token, most significant first."""
    y = np.asarray(y, np.int64)
    return ((y[:, None] >> (B - 1 - np.arange(B))[None]) & 1).astype(np.uint8)


def _prefix_hashes(tokens: np.ndarray, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """(H, POW) over a = (``pad`` zeros, u_0 + 1, u_1 + 1, ..): H[m] = Σ_{j<m} a_j·P^{m−1−j} and POW[k] = P^k,
    modulo 2^64. P is odd, so invertible modulo 2^64: H[m] = P^{m−1}·Σ_{j<m} a_j·P^{−j}, one cumulative sum."""
    a = np.concatenate([np.zeros(pad, np.uint64), np.asarray(tokens, np.uint64) + np.uint64(1)])
    m = a.shape[0]
    with np.errstate(over="ignore"):
        POW = np.concatenate([np.ones(1, np.uint64), np.cumprod(np.full(m, _P, np.uint64), dtype=np.uint64)])
        INV = np.concatenate([np.ones(1, np.uint64), np.cumprod(np.full(m - 1, _PINV, np.uint64), dtype=np.uint64)])
        H = np.zeros(m + 1, np.uint64)
        H[1:] = POW[:m] * np.cumsum(a * INV, dtype=np.uint64)
    return H, POW


def _inv(x: int) -> int:
    """Inverse of an odd x modulo 2^64 (Newton's iteration doubles the correct bits: 6 steps ≥ 64)."""
    y = x
    for _ in range(6):
        y = (y * (2 - x * y)) % (1 << 64)
    return y


_PINV = np.uint64(_inv(int(_P)))


def window_hash(H: np.ndarray, POW: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """uint64: hash of a[start .. end−1] (indices into the padded sequence of :func:`_prefix_hashes`)."""
    with np.errstate(over="ignore"):
        return H[end] - H[start] * POW[end - start]


def dense_ids(h: np.ndarray) -> np.ndarray:
    """int64: the hashes renumbered 0 .. (distinct − 1)."""
    _, inv = np.unique(h, return_inverse=True)
    return inv.reshape(-1).astype(np.int64)


def context_hashes(tokens: np.ndarray, word_start: np.ndarray, names: tuple[str, ...],
                   lm_top: np.ndarray | None = None, boundary: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """uint64 [N−1] per context name (module docstring) for every target u_1 .. u_{N−1}.
    ``word_start`` bool [V]: pieces that begin a word ("▁" or control); ``lm_top`` int [N−1]: the LM's top
    choice for each target (contexts ``a0``, ``a1``); ``boundary`` bool [V]: control pieces, each of which
    starts a document (contexts ``d0`` .. ``d9``: order-k within the document only)."""
    t = np.asarray(tokens, np.int64)
    N = t.shape[0]
    K = 40
    H, POW = _prefix_hashes(t, K)
    p = np.arange(1, N)  # target positions
    end = K + p  # a[end−1] = u_{p−1}
    out: dict[str, np.ndarray] = {}
    ws = np.asarray(word_start, bool)[t]
    idx = np.arange(N)
    last_ws = np.maximum.accumulate(np.where(ws, idx, -1))  # last word start ≤ position
    cur = np.maximum(last_ws[p - 1], 0)  # the current word: cur .. p−1
    prev_ws = np.where(cur > 0, last_ws[np.maximum(cur - 1, 0)], -1)
    prev = np.maximum(prev_ws, 0)
    for name in names:
        if name[0] == "o":
            k = int(name[1:])
            out[name] = window_hash(H, POW, end - k, end) if k else np.zeros(N - 1, np.uint64)
        elif name == "w0":
            out[name] = window_hash(H, POW, K + cur, end)
        elif name == "w1":
            h0 = window_hash(H, POW, K + cur, end)
            h1 = np.where(cur > 0, window_hash(H, POW, K + prev, K + cur), np.uint64(0))
            with np.errstate(over="ignore"):
                out[name] = h1 * _Q + h0 + np.uint64(1)
        elif name == "s2":
            out[name] = window_hash(H, POW, end - 2, end - 1)
        elif name == "s3":
            out[name] = window_hash(H, POW, end - 3, end - 1)
        elif name[0] == "d":
            bnd = np.zeros(int(t.max(initial=0)) + 1, bool) if boundary is None else np.asarray(boundary, bool)
            doc = np.cumsum(bnd[t]).astype(np.uint64)[p - 1] + np.uint64(1)  # None: one document
            if name == "dw":
                inner = window_hash(H, POW, K + cur, end)
            else:
                k = int(name[1:])
                inner = window_hash(H, POW, end - k, end) if k else np.uint64(0)
            with np.errstate(over="ignore"):
                out[name] = doc * _Q + inner
        elif name in ("a0", "a1"):
            if lm_top is None:
                raise ValueError("contexts a0/a1 need the LM's top choices")
            top = np.asarray(lm_top, np.uint64) + np.uint64(1)
            with np.errstate(over="ignore"):
                out[name] = top if name == "a0" else top * _Q + window_hash(H, POW, end - 1, end)
        else:
            raise ValueError(f"unknown context {name!r}")
    return out


def _earlier(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For keys (int64 ≥ 0) in stream order: (rank = how many earlier elements have the same key,
    index of the most recent earlier one or −1)."""
    n = keys.shape[0]
    tb = max(1, int(n).bit_length())
    top = int(keys.max(initial=0))
    if top.bit_length() + tb <= 62:
        s = np.sort((keys << tb) | np.arange(n, dtype=np.int64))
        order = s & ((1 << tb) - 1)
        ks = s >> tb
    else:
        order = np.argsort(keys, kind="stable")
        ks = keys[order]
    new = np.ones(n, bool)
    new[1:] = ks[1:] != ks[:-1]
    start = np.maximum.accumulate(np.where(new, np.arange(n), 0))
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n) - start
    prev = np.full(n, -1, np.int64)
    has = ~new
    prev[order[has]] = order[np.flatnonzero(has) - 1]
    return rank, prev


@dataclass
class PathCounts:
    """Per target i and depth d (int32 [n, B]): ``n`` earlier targets of the same context at the node,
    ``same`` of those the ones that took u_p's bit, ``last`` the bit the node's most recent earlier
    target took (−1: none)."""

    n: np.ndarray
    same: np.ndarray
    last: np.ndarray


def path_counts(ctx: np.ndarray, y: np.ndarray, B: int) -> PathCounts:
    """Counts of one context model (``ctx`` int64 dense ids [n], ``y`` the targets)."""
    y = np.asarray(y, np.int64)
    n = y.shape[0]
    rank = np.empty((B + 1, n), np.int64)
    lastbit = np.full((B, n), -1, np.int8)
    bits = path_bits(y, B)
    for d in range(B + 1):
        r, prev = _earlier((ctx << d) | (y >> (B - d)))
        rank[d] = r
        if d < B:
            ok = prev >= 0
            lb = np.full(n, -1, np.int8)
            lb[ok] = bits[prev[ok], d]
            lastbit[d] = lb
    return PathCounts(n=rank[:B].T.astype(np.int32), same=rank[1:].T.astype(np.int32),
                      last=lastbit.T.copy())


def match_predictions(tokens: np.ndarray, lengths: tuple[int, ...] = MATCH_LENGTHS) -> tuple[np.ndarray, np.ndarray]:
    """(predicted token, matched length) per target (−1 / 0: no match): for the longest k in ``lengths``
    whose last k tokens occurred before target p, the token after their most recent occurrence."""
    t = np.asarray(tokens, np.int64)
    N = t.shape[0]
    K = max(lengths) + 1
    H, POW = _prefix_hashes(t, K)
    p = np.arange(1, N)
    end = K + p
    pred = np.full(N - 1, -1, np.int64)
    length = np.zeros(N - 1, np.int64)
    for k in sorted(lengths):
        h = window_hash(H, POW, end - k, end)
        _, prev = _earlier(dense_ids(h))
        ok = prev >= 0
        pred = np.where(ok, t[np.maximum(prev, 0) + 1], pred)
        length = np.where(ok, k, length)
    return pred, length
