"""The token context mixer: paq-style logistic mixing of bit predictions, then an APM/SSE stage.

Sources: the context-mixing compressors' architecture (M. Mahoney's paq8/lpaq1 and zpaq's ``-m5`` CM
models; B. Knoll's cmix, which also feeds an LSTM's byte distribution to the mixer as bit
probabilities): every model predicts the next binary decision, a gated linear network mixes the
predictions in the logistic domain with weights learned online and selected by a small context, and
an adaptive probability map (APM / SSE) refines the result. Here the decisions are the B bits of the
next token's path (:mod:`.contexts`) and the language model is one of the inputs.

Per target u_p (index i) and depth d = 0 .. B−1, with st(p) = ln(p / (1 − p)) and σ its inverse:

- the tree: the leaves are the tokens ordered by a recursive bisection of the artifact's output
  embedding along each node's first principal component (:func:`embedding_code`; ``tree``), so a node
  pools tokens the LM embeds alike and a context's counts at a node are a class-based backoff (off:
  leaves in id order, where a node pools ids that only share bits);
- inputs x_k: st(p_LM(bit_d = 1 | prefix_d)) from the LM's full distribution (its mass under the
  node's right child over the node's mass, :func:`lm_path_probs`); for each context model m
  (:mod:`.contexts`: orders 0–6, word, sparse, document-local and LM-top-choice contexts), st of a
  **state map** S_m[cell] (paq's StateMap) with cell = (depth group, the node's previous decision,
  q(n0), q(n1)) — q a quantized count of the earlier targets of that context at the node that took
  0 / 1 — where S_m[cell] = (prior + bits seen in that cell) / (prior weight + times seen), the times
  capped at :data:`SM_LIMIT` (a running average that keeps adapting); the match model's state map,
  cell = (length bucket, depth group, the expected bit or "no prediction": the predicted token's path
  left the target's); and a bias 1;
- three mixers, each with weight vectors selected by its own small context (mixer 1: depth × the
  longest order seen at this node × match state; mixer 2: depth × the LM's confidence |st p_LM|
  bucket × the order-2 node's count bucket; mixer 3: depth × log2 of the position in the document ×
  match state), z_j = clip(w_{j, sel_j} · x, ±12), and a final mixer z = clip(Σ_j v_{d,j} z_j, ±12)
  with weights per depth (paq8's two-layer network; ``mixer2`` off: mixer 1 alone);
- optionally (``apm``) an APM: a table over (depth × match state) × 33 points of st ∈ [−8, 8],
  interpolated linearly at st(σ(z)) (paq's APM); p₁ = σ((1 − a)·z + a·st(APM)), a = :data:`APM_WEIGHT`;
  else p₁ = σ(z);
- where the right child holds no token (leaf ≥ V), p₁ = 0 exactly (so leaves ≥ V get nothing).

p(u_p) = Π_d p(bit_d(leaf(u_p)) | prefix_d). Every factor is in (0, 1) (or the forced 0/1), so the
distribution over the V tokens sums to 1 by construction: for every node the two children share its
mass. :mod:`.reference` builds it densely at a position and checks it.

Learning, exactly causal. The stream is cut into chunks of ``chunk`` targets. Within a chunk the
weights, state maps and APM are the ones left by the earlier chunks; after it, they learn from its
scored targets: each mixer w += η·(bit − σ(z_j))·x (online gradient descent on the coding cost, paq's
update; η = ``lr``, decaying as lr·max(0.25, (1 + t/2¹⁶)^−½) with t the decisions learned so far), the
final mixer v += :data:`FINAL_RATE`·η·(bit − σ(z))·z_j, the state maps and the APM by adding the chunk's
decisions. So the distribution of u_p depends only on u_0 .. u_{p−1}, the artifact (LM, embedding tree)
and the LM's output at p: counts are of earlier targets, learned state of earlier chunks. Unscored
targets (the plain cut's tail) are counted as history but not learned from.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from pgolf.eval.cm.contexts import (
    MATCH_LENGTHS,
    context_hashes,
    dense_ids,
    match_predictions,
    n_bits,
    path_bits,
    path_counts,
)

NEEDED_WHEN = "eval.method.endswith('mix') and eval.mix.mode == 'cm'"

ORDERS = ("o0", "o1", "o2", "o3", "o4", "o5", "o6")
DOC_CONTEXTS = ("d0", "d1", "d2", "d3", "d5", "dw")
DEFAULT_SPEC = "orders,words,doc,lmtop,match,mixer2,tree"
"""``eval.mix.cm_components``' default (sparse and apm did not pay on enwiki)."""
COMPONENTS = ("orders", "words", "sparse", "doc", "lmtop", "match", "apm", "mixer2", "tree")
"""What ``eval.mix.cm_components`` can switch (ablations): the order-0..6 models, the word models, the
sparse models, the document models, the LM's top choice as a context, the match model, the APM stage,
mixers 2 and 3 with the final mixer, and the embedding tree (off: leaves in id order)."""
Q_LEVELS = np.r_[0, 1, 2, 3, 4, 5, 6, 7, 7, 8, 8, 8, 9, 9, 9, 9, np.full(8, 10), np.full(8, 11),
                 np.full(16, 12), np.full(16, 13)].astype(np.int64)
"""q(n) for n < 64; n ≥ 64: 14 + min(⌊log2(n/64)⌋, 3)."""
N_Q = 18
DEPTH_GROUPS = 4
SM_PRIOR = 2.0
SM_LIMIT = 1023.0
APM_POINTS = 33
APM_RATE = 0.02
APM_WEIGHT = 0.5
LM_CONF_BUCKETS = 6
DOCPOS_BUCKETS = 12
FINAL_RATE = 0.25
Z_CLIP = 12.0
"""Every mixer's output is clipped to ±12 (p in [6·10⁻⁶, 1 − 6·10⁻⁶]): a diverging weight can cost at most
12 nats a decision, and the final mixer's inputs stay bounded."""
ST_CLIP = 1e-6


def st(p: np.ndarray) -> np.ndarray:
    """ln(p / (1 − p)), p clipped to [1e−6, 1 − 1e−6]."""
    p = np.clip(p, ST_CLIP, 1.0 - ST_CLIP)
    return np.log(p) - np.log1p(-p)


def squash(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _q_table() -> np.ndarray:
    n = np.arange(513)
    big = 14 + np.minimum(np.floor(np.log2(np.maximum(n, 64) / 64.0)).astype(np.int64), 3)
    return np.where(n < 64, Q_LEVELS[np.minimum(n, 63)], big)


_Q_TABLE = _q_table()


def quantize(n: np.ndarray) -> np.ndarray:
    """q(n): 18 levels, exact up to 6, then roughly logarithmic (n ≥ 512: 17)."""
    return _Q_TABLE[np.minimum(np.asarray(n, np.int64), 512)]


def depth_group(d: np.ndarray | int, B: int) -> np.ndarray:
    """0 .. 3: which quarter of the path the depth is in."""
    return np.minimum(np.asarray(d) * DEPTH_GROUPS // B, DEPTH_GROUPS - 1)


def sm_cell(n0: np.ndarray, n1: np.ndarray, last: np.ndarray, dg: np.ndarray) -> np.ndarray:
    """State-map cell of a context model: (depth group, previous decision + 1, q(n0), q(n1))."""
    return ((dg * 3 + (last.astype(np.int64) + 1)) * N_Q + quantize(n0)) * N_Q + quantize(n1)


SM_CELLS = DEPTH_GROUPS * 3 * N_Q * N_Q


def sm_init() -> tuple[np.ndarray, np.ndarray]:
    """Initial (bit sums, weights) of one state map: the KT estimate (n1 + ½)/(n + 1) at each cell's
    smallest counts, with weight :data:`SM_PRIOR`."""
    cell = np.arange(SM_CELLS)
    q1 = cell % N_Q
    q0 = (cell // N_Q) % N_Q
    rep = np.r_[0, 1, 2, 3, 4, 5, 6, 7, 9, 12, 16, 24, 32, 48, 64, 128, 256, 512].astype(np.float64)
    p0 = (rep[q1] + 0.5) / (rep[q0] + rep[q1] + 1.0)
    return p0 * SM_PRIOR, np.full(SM_CELLS, SM_PRIOR)


def match_cell(length_bucket: np.ndarray, dg: np.ndarray, expect: np.ndarray) -> np.ndarray:
    """Match-model cell: (length bucket, depth group, expected bit + 1 with 0 = no prediction)."""
    return (length_bucket * DEPTH_GROUPS + dg) * 3 + expect


MATCH_CELLS = (len(MATCH_LENGTHS) + 1) * DEPTH_GROUPS * 3


def lm_conf_bucket(x_lm: np.ndarray) -> np.ndarray:
    return np.minimum(np.floor(np.abs(x_lm) / 1.5).astype(np.int64), LM_CONF_BUCKETS - 1)


@dataclass
class Features:
    """Everything the learning loop reads, per target and depth ([n, B] unless said)."""

    bits: np.ndarray  # uint8: the target's decisions
    free: np.ndarray  # bool: the right child holds a token id < V (else the decision is forced to 0)
    x_lm: np.ndarray  # float64: st(p_LM)
    cells: np.ndarray  # int64 [n, B, M]: global state-map cells (model m's cells start at m·SM_CELLS)
    mcell: np.ndarray  # int64: match-model cell
    sel: np.ndarray  # int64 [n, B, J]: each mixer's weight set (global row of State.W1)
    apm: np.ndarray  # int64: APM context
    names: tuple[str, ...]
    seconds: dict = field(default_factory=dict)


def components(spec: str) -> set[str]:
    """The set named by ``eval.mix.cm_components`` ("all" or a comma list of :data:`COMPONENTS`)."""
    s = {c.strip() for c in spec.split(",") if c.strip()}
    if s == {"all"}:
        return set(COMPONENTS)
    bad = s - set(COMPONENTS)
    if bad:
        raise ValueError(f"unknown cm component(s) {sorted(bad)}")
    return s


def context_names(comp: set[str]) -> tuple[str, ...]:
    names: tuple[str, ...] = ()
    if "orders" in comp:
        names += ORDERS
    if "words" in comp:
        names += ("w0", "w1")
    if "sparse" in comp:
        names += ("s2", "s3")
    if "doc" in comp:
        names += DOC_CONTEXTS
    if "lmtop" in comp:
        names += ("a0", "a1")
    return names


def features(tokens: np.ndarray, lm_p1: np.ndarray, vocab_size: int, word_start: np.ndarray,
             comp: set[str], boundary: np.ndarray | None = None) -> Features:
    """The inputs of every decision of the stream (module docstring), from the tokens and the LM's
    path probabilities and top choice ``lm_p1`` float [N−1, B + 1] (:func:`lm_path_probs`)."""
    t0 = time.perf_counter()
    tok = np.asarray(tokens, np.int64)
    y = tok[1:]
    n = y.shape[0]
    B = n_bits(vocab_size)
    bits = path_bits(y, B)
    d = np.arange(B)
    prefix = y[:, None] >> (B - d)[None]  # prefix_d
    free = (((prefix << 1) | 1) << (B - 1 - d)[None]) < vocab_size
    dg = np.broadcast_to(depth_group(d, B)[None], (n, B))
    names = context_names(comp)
    lm_p1 = np.asarray(lm_p1)
    hashes = context_hashes(tok, word_start, names, lm_top=lm_p1[:, B].astype(np.int64), boundary=boundary)
    cells = np.zeros((n, B, len(names)), np.int32)
    hi_order = np.full((n, B), -1, np.int64)
    o2_count = np.zeros((n, B), np.int64)
    for m, name in enumerate(names):
        pc = path_counts(dense_ids(hashes.pop(name)), y, B)
        n1 = np.where(bits == 1, pc.same, pc.n - pc.same)
        cells[:, :, m] = m * SM_CELLS + sm_cell(pc.n - n1, n1, pc.last, dg)
        if name in ORDERS:
            hi_order = np.where(pc.n > 0, int(name[1:]), hi_order)
        if name == "o2":
            o2_count = pc.n
    t1 = time.perf_counter()
    if "match" in comp:
        pred, length = match_predictions(tok)
        lb = np.where(length > 0, np.searchsorted(np.asarray(MATCH_LENGTHS), length) + 1, 0)
        pp = np.maximum(pred, 0)[:, None] >> (B - d)[None]
        agree = (pred[:, None] >= 0) & (pp == prefix)
        ebit = (np.maximum(pred, 0)[:, None] >> (B - 1 - d)[None]) & 1
        expect = np.where(agree, ebit + 1, 0)
        mcell = match_cell(np.broadcast_to(lb[:, None], (n, B)), dg, expect)
        mstate = np.where(agree, np.where(length[:, None] <= 4, 1, 2), 0)
    else:
        mcell = np.zeros((n, B), np.int64)
        mstate = np.zeros((n, B), np.int64)
    x_lm = st(lm_p1[:, :B].astype(np.float64))
    if boundary is not None:
        starts = np.maximum.accumulate(np.where(np.asarray(boundary, bool)[tok], np.arange(tok.shape[0]), 0))
        docpos = np.arange(1, n + 1) - starts[:-1]
    else:
        docpos = np.arange(1, n + 1)
    sel = selectors(d[None], hi_order, mstate, x_lm, o2_count if "o2" in names else np.zeros((n, B), np.int64),
                    docpos[:, None], B, comp)
    apm = d[None] * 3 + mstate
    return Features(bits=bits, free=free, x_lm=x_lm, cells=cells, mcell=mcell, sel=sel, apm=apm,
                    names=names, seconds={"contexts": t1 - t0, "match": time.perf_counter() - t1})


def mixer_sets(B: int, comp: set[str]) -> list[int]:
    """Weight sets of each mixer: 1 (depth × longest order seen at the node × match state), and with
    ``mixer2`` also 2 (depth × LM confidence × the order-2 node's count) and 3 (depth × the position in
    the document, log2 buckets × match state)."""
    sets = [B * 8 * 3]
    if "mixer2" in comp:
        sets += [B * LM_CONF_BUCKETS * 8, B * DOCPOS_BUCKETS * 3]
    return sets


def selectors(d, hi_order, mstate, x_lm, o2_count, docpos, B: int, comp: set[str]) -> np.ndarray:
    """int64 [.., J]: the global weight-set row of each mixer (rows of mixer j follow those of j − 1)."""
    shape = np.broadcast_shapes(np.shape(d), np.shape(hi_order), np.shape(x_lm), np.shape(docpos))
    out = [np.broadcast_to((d * 8 + hi_order + 1) * 3 + mstate, shape)]
    if "mixer2" in comp:
        sets = mixer_sets(B, comp)
        o2b = np.minimum(quantize(o2_count), 7)
        out.append(sets[0] + (d * LM_CONF_BUCKETS + lm_conf_bucket(x_lm)) * 8 + o2b)
        dp = np.minimum(np.floor(np.log2(np.maximum(docpos, 1))).astype(np.int64), DOCPOS_BUCKETS - 1)
        out.append(sets[0] + sets[1] + (d * DOCPOS_BUCKETS + dp) * 3 + mstate)
    return np.stack([np.broadcast_to(o, shape) for o in out], -1).astype(np.int64)


@dataclass
class State:
    """What the mixer has learned (copied at the probed chunks for :mod:`.reference`)."""

    S: np.ndarray
    W: np.ndarray
    MS: np.ndarray
    MW: np.ndarray
    W1: np.ndarray
    """[Σ sets, inputs]: every mixer's weight vectors."""
    W2: np.ndarray
    """[B, J]: the final mixer's weights over the J mixers' outputs, per depth."""
    A: np.ndarray
    steps: float

    def copy(self) -> State:
        return State(*(getattr(self, k).copy() for k in ("S", "W", "MS", "MW", "W1", "W2", "A")), self.steps)


def initial_state(n_models: int, B: int, comp: set[str]) -> State:
    s0, w0 = sm_init()
    n_in = n_models + 3
    sets = mixer_sets(B, comp)
    W1 = np.zeros((sum(sets), n_in))
    W1[:, 0] = 1.0  # the LM's input: every mixer starts as the LM
    W2 = np.full((B, len(sets)), 1.0 / len(sets))
    grid = np.linspace(-8.0, 8.0, APM_POINTS)
    A = np.tile(squash(grid)[None], (B * 3, 1))  # starts as the identity map
    return State(S=np.tile(s0, n_models), W=np.tile(w0, n_models), MS=np.full(MATCH_CELLS, 0.5 * SM_PRIOR),
                 MW=np.full(MATCH_CELLS, SM_PRIOR), W1=W1, W2=W2, A=A, steps=0.0)


def inputs(st_: State, cells: np.ndarray, mcell: np.ndarray, x_lm: np.ndarray, use_match: bool) -> np.ndarray:
    """[k, n_models + 3]: (LM, context models.., match, bias) for k decisions."""
    k = x_lm.shape[0]
    x = np.empty((k, cells.shape[1] + 3))
    x[:, 0] = x_lm
    x[:, 1 : 1 + cells.shape[1]] = st(st_.S[cells] / st_.W[cells])
    x[:, -2] = st(st_.MS[mcell] / st_.MW[mcell]) if use_match else 0.0
    x[:, -1] = 1.0
    return x


def predict(st_: State, x: np.ndarray, sel: np.ndarray, depth: np.ndarray, apm: np.ndarray, comp: set[str]):
    """(p₁ of each decision, the mixers' z [k, J], APM interpolation (j, frac)) with the state as it is."""
    zs = np.stack([np.einsum("ki,ki->k", st_.W1[sel[:, m]], x) for m in range(sel.shape[1])], 1)
    np.clip(zs, -Z_CLIP, Z_CLIP, out=zs)
    z = zs[:, 0] if zs.shape[1] == 1 else np.clip(np.einsum("kj,kj->k", st_.W2[depth], zs), -Z_CLIP, Z_CLIP)
    zc = np.clip(z, -8.0, 8.0)
    pos = (zc + 8.0) * ((APM_POINTS - 1) / 16.0)
    j = np.minimum(np.floor(pos).astype(np.int64), APM_POINTS - 2)
    fr = pos - j
    if "apm" in comp:
        pa = (1.0 - fr) * st_.A[apm, j] + fr * st_.A[apm, j + 1]
        p1 = squash((1.0 - APM_WEIGHT) * z + APM_WEIGHT * st(pa))
    else:
        p1 = squash(z)
    return p1, zs, z, j, fr


def learn(st_: State, x, cells, mcell, sel, depth, apm, j, fr, zs, z, bit, lr: float, comp: set[str]) -> None:
    """Fold one chunk's scored decisions into the state (module docstring)."""
    b = bit.astype(np.float64)
    k = b.shape[0]
    if k == 0:
        return
    eta = lr * max(0.25, (1.0 + st_.steps / 65536.0) ** -0.5)
    st_.steps += k
    for m in range(sel.shape[1]):  # each mixer learns from its own error (paq's mixers)
        _add_rows(st_.W1, sel[:, m], (eta * (b - squash(zs[:, m])))[:, None] * x)
    if zs.shape[1] > 1:  # the final mixer, on the mixers' outputs
        _add_rows(st_.W2, depth, (FINAL_RATE * eta * (b - squash(z)))[:, None] * zs)
    if cells.shape[1]:
        flat = cells.reshape(-1)
        size = st_.S.shape[0]
        st_.S += np.bincount(flat, weights=np.repeat(b, cells.shape[1]), minlength=size)
        st_.W += np.bincount(flat, minlength=size)
        f = np.minimum(1.0, SM_LIMIT / st_.W)  # counts capped: a running average that keeps adapting
        st_.S *= f
        st_.W *= f
    if "match" in comp:
        st_.MS += np.bincount(mcell, weights=b, minlength=MATCH_CELLS)
        st_.MW += np.bincount(mcell, minlength=MATCH_CELLS)
        f = np.minimum(1.0, SM_LIMIT / st_.MW)
        st_.MS *= f
        st_.MW *= f
    if "apm" in comp:
        A = st_.A
        flat = apm * APM_POINTS + j
        e0 = APM_RATE * (1.0 - fr) * (b - A[apm, j])
        e1 = APM_RATE * fr * (b - A[apm, j + 1])
        A += (np.bincount(flat, weights=e0, minlength=A.size)
              + np.bincount(flat + 1, weights=e1, minlength=A.size)).reshape(A.shape)


def _add_rows(W: np.ndarray, rows: np.ndarray, g: np.ndarray) -> None:
    """W[rows[k]] += g[k] for every k (repeated rows add up), as one bincount."""
    cols = W.shape[1]
    flat = (rows[:, None] * cols + np.arange(cols)[None]).reshape(-1)
    W += np.bincount(flat, weights=g.reshape(-1), minlength=W.size).reshape(W.shape)


@dataclass
class CMOutput:
    losses: np.ndarray
    """float32 [N−1]: −ln p(u_p) of the mixed distribution (0 where the base did not score)."""
    info: dict
    probes: dict[int, State]
    """State at the start of the chunk of each probed target index (tests)."""


def cm_losses(tokens: np.ndarray, lm_p1: np.ndarray, scored: np.ndarray, vocab_size: int, word_start: np.ndarray,
              *, boundary: np.ndarray | None = None, lr: float = 0.02, chunk: int = 64, spec: str = DEFAULT_SPEC,
              probe: tuple[int, ...] = (), code: np.ndarray | None = None) -> CMOutput:
    """Score every target of ``scored`` with the context mixer (module docstring). ``lm_p1`` float
    [N−1, B]: the LM's p(bit_d = 1 | prefix_d(u_p)) (:func:`lm_path_probs`)."""
    t0 = time.perf_counter()
    comp = components(spec)
    if code is not None:  # everything in leaf codes (a bijection: the contexts are the same contexts)
        code = np.asarray(code, np.int64)
        inv = np.argsort(code)
        tokens = code[np.asarray(tokens, np.int64)]
        word_start = np.asarray(word_start, bool)[inv]
        boundary = None if boundary is None else np.asarray(boundary, bool)[inv]
    f = features(tokens, lm_p1, vocab_size, word_start, comp, boundary)
    n, B = f.bits.shape
    M = f.cells.shape[2]
    state = initial_state(M, B, comp)
    use_match = "match" in comp
    losses = np.zeros(n, np.float64)
    probes: dict[int, State] = {}
    want = {int(q) // chunk for q in probe}
    scored = np.asarray(scored, bool)
    t1 = time.perf_counter()
    for a in range(0, n, chunk):
        e = min(n, a + chunk)
        if a // chunk in want:
            probes[a // chunk] = state.copy()
        free = f.free[a:e].reshape(-1)
        cells = f.cells[a:e].reshape((e - a) * B, M)
        mcell = f.mcell[a:e].reshape(-1)
        x = inputs(state, cells, mcell, f.x_lm[a:e].reshape(-1), use_match)
        sel, apm = f.sel[a:e].reshape((e - a) * B, -1), f.apm[a:e].reshape(-1)
        depth = np.tile(np.arange(B), e - a)
        p1, zs, z, j, fr = predict(state, x, sel, depth, apm, comp)
        bit = f.bits[a:e].reshape(-1)
        p1 = np.where(free, p1, 0.0)
        pb = np.where(bit == 1, p1, 1.0 - p1)
        losses[a:e] = -np.log(pb).reshape(e - a, B).sum(1)
        keep = (np.repeat(scored[a:e], B)) & free
        if keep.any():
            learn(state, x[keep], cells[keep], mcell[keep], sel[keep], depth[keep], apm[keep], j[keep], fr[keep],
                  zs[keep], z[keep], bit[keep], lr, comp)
    out = np.where(scored, losses, 0.0).astype(np.float32)
    info = {"mode": "cm", "components": sorted(comp), "contexts": list(f.names), "chunk": chunk, "lr": lr,
            "bits": B, "features_seconds": t1 - t0, "mix_seconds": time.perf_counter() - t0,
            **{f"{k}_seconds": v for k, v in f.seconds.items()}}
    return CMOutput(losses=out, info=info, probes={q: probes[q // chunk] for q in probe})


_CODE: dict = {"code": None}
"""The token → leaf code the LM pass uses (:func:`set_code`); None = the identity."""


def set_code(code: np.ndarray | None) -> None:
    """Use ``code`` (int [V], a permutation of 0 .. V−1) as the leaf of each token in :func:`lm_path_probs`
    from now on (None: the identity). :mod:`pgolf.eval.methods` sets it for a ``cm`` evaluation and clears
    it after."""
    _CODE["code"] = None if code is None else np.asarray(code, np.int64)


def embedding_code(E: np.ndarray) -> np.ndarray:
    """int64 [V]: each token's leaf, by recursive bisection of the token embeddings ``E`` [V, d] (the
    artifact's): at each node, the tokens sorted by their projection on the node's first principal
    component are split into halves, to depth B. Similar tokens share deep subtrees, so a context's counts
    at a node pool tokens the LM embeds alike (a class-based backoff inside the tree) instead of ids that
    only share bits. Deterministic in E; a permutation of 0 .. V−1."""
    E = np.asarray(E, np.float64)
    V = E.shape[0]
    B = n_bits(V)
    leaves: list[np.ndarray] = []

    def split(ids: np.ndarray, depth: int) -> None:
        if depth == 0 or ids.shape[0] <= 1:
            leaves.append(ids)
            return
        X = E[ids] - E[ids].mean(0)
        u = np.linalg.svd(X, full_matrices=False)[2][0]
        proj = X @ u
        order = ids[np.lexsort((ids, proj))]  # ties broken by id: deterministic
        h = order.shape[0] // 2
        split(order[:h], depth - 1)
        split(order[h:], depth - 1)

    split(np.arange(V), B)
    code = np.empty(V, np.int64)
    code[np.concatenate(leaves)] = np.arange(V)
    return code


def model_code(model) -> np.ndarray | None:
    """:func:`embedding_code` of the model's output embedding (``lm_head``, else the tied ``tok_emb``);
    None when it has neither."""
    for name in ("lm_head", "tok_emb"):
        mod = getattr(model, name, None)
        if mod is not None and getattr(mod, "weight", None) is not None:
            return embedding_code(mod.weight.detach().float().cpu().numpy())
    return None


def lm_path_probs(logp, y, vocab_size: int):
    """torch float32 [..., B + 1]: p(bit_d = 1 | prefix_d(y)) under softmax(``logp``) [..., V] for targets
    ``y`` [...] (d < B: the mass of the node's right child over the node's mass, summed up the tree from
    the leaves; ids ≥ V have mass 0), and in column B the LM's top choice argmax logp (an id < 2^24, exact
    in float32)."""
    import torch

    B = n_bits(vocab_size)
    p = torch.softmax(logp.float(), dim=-1)
    top = logp.argmax(-1).float()
    code = _CODE["code"]
    if code is not None:  # leaves in code order: p_code[c] = p[inverse[c]], the path of code[y]
        inv = torch.from_numpy(np.argsort(code)).to(p.device)
        p = p.index_select(-1, inv)
        y = torch.from_numpy(code).to(y.device)[y.long()]
    full = 1 << B
    if p.shape[-1] < full:
        p = torch.nn.functional.pad(p, (0, full - p.shape[-1]))
    levels = [p]
    for _ in range(B):
        levels.append(levels[-1].unflatten(-1, (-1, 2)).sum(-1))
    levels = levels[::-1]  # levels[d]: masses of the 2^d nodes at depth d
    y = y.long()
    out = []
    for d in range(B):
        node = y >> (B - d)
        right = levels[d + 1].gather(-1, ((node << 1) | 1).unsqueeze(-1)).squeeze(-1)
        left = levels[d + 1].gather(-1, (node << 1).unsqueeze(-1)).squeeze(-1)
        out.append(right / (left + right).clamp_min(1e-30))
    out.append(top)
    return torch.stack(out, -1)


def expected_seconds(n_tokens: int, vocab_size: int) -> float:
    """A cautious projection of :func:`cm_losses`' seconds with the default components: 12 µs per
    decision × (1 + log2 N / 40) (2-core AMD EPYC shared with other jobs: 187 s for enwiki's 1.13 M
    tokens, where this says 204 s)."""
    return 1.2e-5 * n_tokens * n_bits(vocab_size) * (1.0 + math.log2(max(n_tokens, 2)) / 40)
