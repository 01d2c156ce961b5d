"""Window-sampling training loaders (``train.loader``): the coprime-stride and shuffled-sequence loaders of the
later records, in place of the baseline's one wrapping stream (:class:`pgolf.data.loader.DistributedTokenLoader`).

Sources (CATALOGUE §2.7 "Loaders"): ``coprime`` — the coprime-stride multi-shard loader of [03-29]
``2026-03-29_Loader_FullGPTQ_XSA11_BigramHash2816`` (PR #1060, from PR #726): "each shard is visited with a
stride coprime to its block count, ensuring every block is seen before repeating", batches drawn from many
shards at once, zero step-time overhead; ``shuffled`` — ``ShuffledSequenceLoader`` of [04-05]
``2026-04-05_SP8192_GPTQ-Embeddings_SDClip_Loop45x2`` (PR #1394) and the records after it: the shards split
across the ranks (rank r owns shards r, r+W, …), each shard's sequence starts permuted behind a random phase,
and each sequence drawn from a shard with probability proportional to the sequences it has left.

A *window* is T + 1 consecutive tokens of one shard (T = the step's sequence length; x its first T, y its
last T). A shard of n tokens with phase φ ∈ [0, min(T − 1, n − T − 1)] (drawn per shard and epoch) holds
b = ⌊(n − 1 − φ)/T⌋ windows, window j starting at φ + jT; shards with n ≤ T hold none. An *epoch* visits every
window of the loader's shards exactly once, in this order:

- within shard s, its k-th visit reads window w_s(k): ``coprime`` w_s(k) = (a_s + k·c_s) mod b_s with a random
  start a_s and a random stride c_s ∈ [1, b_s) with gcd(c_s, b_s) = 1 (so k ↦ w_s(k) is a bijection of
  0..b_s − 1, the records' rule); ``shuffled`` w_s(k) = π_s(k), a uniformly random permutation;
- across shards, the epoch's sequence of shard ids is a uniformly random arrangement of the multiset
  {s × b_s}: the same law as drawing each next window's shard with probability ∝ its windows left (both
  records' rule), drawn at once so that an epoch is a function of (seed, epoch, T) and the loader's state is
  (epoch, position) — a resumed run continues the exact sequence.

Every draw comes from ``numpy.random.PCG64`` seeded by (``train.seed``, the loader kind, the epoch, T, the shard
index or the rank), so a seed gives the same windows on every machine. ``coprime`` is one global sequence,
the same on every rank: each :meth:`SampledLoader.next_batch` takes the next W·m windows (m = local tokens / T)
and rank r keeps the r-th m — ranks are disjoint, and micro-step k of one process with ``grad_accum`` = W·A gets
what rank k mod W gets at micro-step ⌊k/W⌋ with W processes and A (the baseline loader's property).
``shuffled`` is one sequence per rank over its own shards (disjoint by construction; it needs at least W
shards), so the global batch depends on W, as in the record.

A sequence-length change (``train.seq_len_stages``) starts a new epoch at the new T. Shards are memory-mapped
(headers and sizes checked when first opened), every window's ids are checked against the vocabulary, and
with an ``overlap`` checker each shard is checked once, whole, before its first window is used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pgolf.data.shards import HEADER_BYTES, read_shard_header
from pgolf.errors import ConfigError, DataError

if TYPE_CHECKING:
    from pgolf.data.overlap import OverlapChecker

NEEDED_WHEN = "train.loader != 'stream'"

KINDS = ("coprime", "shuffled")
_KIND_CODE = {"coprime": 1, "shuffled": 2}


def coprime_stride(n: int, rng: np.random.Generator) -> int:
    """A stride c uniform over [1, n) with gcd(c, n) = 1 (1 when n ≤ 2): the [03-29] loader's rejection draw."""
    if n <= 2:
        return 1
    while True:
        c = int(rng.integers(1, n))
        if math.gcd(c, n) == 1:
            return c


class SampledLoader:
    """The ``coprime`` / ``shuffled`` loader (module docstring): ``next_batch``, ``state_dict`` and
    ``load_state_dict`` as :class:`pgolf.data.loader.DistributedTokenLoader`."""

    def __init__(self, files: Sequence[Path | str], rank: int = 0, world_size: int = 1,
                 device: torch.device | str = "cpu", vocab_size: int | None = None,
                 overlap: OverlapChecker | None = None, *, kind: str = "coprime", seed: int = 0) -> None:
        if kind not in KINDS:
            raise ConfigError(f"train.loader must be stream, {' or '.join(KINDS)}, got {kind!r}")
        if not files:
            raise DataError("no train shards to load")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of {world_size}")
        self.files = [Path(f) for f in files]
        self.kind, self.seed = kind, int(seed)
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)
        self.vocab_size = vocab_size
        self.overlap = overlap
        if kind == "shuffled" and len(self.files) < world_size:
            raise DataError(f"{self.files[0].parent}: train.loader=shuffled splits the train shards across the ranks "
                            f"and needs at least one per rank ({len(self.files)} shards, {world_size} ranks)")
        self.own = list(range(rank, len(self.files), world_size)) if kind == "shuffled" else list(range(len(self.files)))
        """Indices (into ``files``) of the shards this loader draws from."""
        self._sizes: dict[int, int] = {}
        self._maps: dict[int, np.memmap] = {}
        self.epoch, self.pos, self.seq_len = 0, 0, 0
        self._plan: tuple[np.ndarray, np.ndarray] | None = None  # (shard index, window start) per position

    # --- the epoch's windows ------------------------------------------------------------------------

    def _size(self, g: int) -> int:
        if g not in self._sizes:
            self._sizes[g] = read_shard_header(self.files[g])
        return self._sizes[g]

    def _rng(self, *key: int) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence(
            [self.seed & 0xFFFFFFFF, self.seed >> 32 & 0xFFFFFFFF, _KIND_CODE[self.kind], *key])))

    def shard_windows(self, g: int, T: int, epoch: int) -> np.ndarray:
        """Start positions of shard ``g``'s windows in the order the epoch visits them (module docstring)."""
        n = self._size(g)
        if n < T + 1:
            return np.zeros(0, dtype=np.int64)
        rng = self._rng(epoch, T, 0, g)
        max_phase = min(T - 1, n - T - 1)
        phase = int(rng.integers(max_phase + 1)) if max_phase > 0 else 0
        b = (n - 1 - phase) // T
        k = np.arange(b, dtype=np.int64)
        if self.kind == "coprime":
            start = int(rng.integers(b)) if b > 1 else 0
            blocks = (start + k * coprime_stride(b, rng)) % b
        else:
            blocks = rng.permutation(b)
        return phase + blocks.astype(np.int64) * T

    def plan(self, T: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(shard index, window start) of every window of the epoch, in order."""
        windows = {g: self.shard_windows(g, T, epoch) for g in self.own}
        counts = np.array([windows[g].size for g in self.own], dtype=np.int64)
        if counts.sum() == 0:
            raise DataError(f"{self.files[0].parent}: no train shard of this loader holds a window of "
                            f"{T + 1} tokens (sequence length {T})")
        ids = np.repeat(np.array(self.own, dtype=np.int64), counts)  # ascending shard ids
        order = self._rng(epoch, T, 1, self.rank if self.kind == "shuffled" else 0).permutation(ids)
        starts = np.empty(order.size, dtype=np.int64)
        # the k-th occurrence of shard g in ``order`` reads its k-th window: a stable sort lists each shard's
        # occurrences in visit order, shard after shard, as the concatenated windows are
        starts[np.argsort(order, kind="stable")] = np.concatenate([windows[g] for g in self.own])
        return order, starts

    def _take(self, count: int, T: int) -> tuple[np.ndarray, np.ndarray]:
        """The next ``count`` windows of the sequence (shards, starts), crossing epochs as needed."""
        if T != self.seq_len:  # a new sequence length starts a new epoch at it
            if self.seq_len:
                self.epoch, self.pos = self.epoch + 1, 0
            self.seq_len, self._plan = T, None
        shards, starts = [], []
        while count > 0:
            if self._plan is None:
                self._plan = self.plan(T, self.epoch)
            order, st = self._plan
            k = min(count, order.size - self.pos)
            shards.append(order[self.pos:self.pos + k])
            starts.append(st[self.pos:self.pos + k])
            self.pos += k
            count -= k
            if self.pos == order.size:
                self.epoch, self.pos, self._plan = self.epoch + 1, 0, None
        return np.concatenate(shards), np.concatenate(starts)

    # --- reading ------------------------------------------------------------------------------------

    def _map(self, g: int) -> np.memmap:
        if g not in self._maps:
            n = self._size(g)
            mm = np.memmap(self.files[g], dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(n,))
            if self.overlap is not None:  # the whole shard, once, before its first window is used
                self.overlap.check(g, np.asarray(mm))
            self._maps[g] = mm
        return self._maps[g]

    def _window(self, g: int, start: int, T: int) -> np.ndarray:
        w = np.asarray(self._map(g)[start:start + T + 1], dtype=np.int64)
        if self.vocab_size is not None and int(w.max()) >= self.vocab_size:
            at = int(np.argmax(w >= self.vocab_size))
            raise DataError(f"{self.files[g]}: token id {int(w[at])} at position {start + at} >= vocab size "
                            f"{self.vocab_size}")
        return w

    def next_batch(self, global_tokens: int, seq_len: int, grad_accum: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` for this rank's next micro-step: int64 ``[local_tokens/seq_len, seq_len]``."""
        local = global_tokens // (self.world_size * grad_accum)
        if local < seq_len or local % seq_len:
            raise ConfigError(
                f"batch of {global_tokens} tokens over {self.world_size} rank(s) × {grad_accum} micro-step(s) gives "
                f"{local} tokens per micro-step, not a positive multiple of seq_len={seq_len}")
        m = local // seq_len
        if self.kind == "coprime":  # one global sequence: this rank's m of the next W·m windows
            shards, starts = self._take(self.world_size * m, seq_len)
            shards, starts = shards[self.rank * m:(self.rank + 1) * m], starts[self.rank * m:(self.rank + 1) * m]
        else:  # this rank's own sequence over its own shards
            shards, starts = self._take(m, seq_len)
        win = torch.from_numpy(np.stack([self._window(int(g), int(s), seq_len) for g, s in zip(shards, starts, strict=True)]))
        x, y = win[:, :-1], win[:, 1:]  # [m, T] each
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    # --- resume -------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """JSON-able position: (epoch, position, sequence length) of the loader's sequence (+ kind, seed, shards)."""
        return {"kind": self.kind, "seed": self.seed, "epoch": self.epoch, "pos": self.pos, "seq_len": self.seq_len,
                "files": [f.name for f in self.files]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly where :meth:`state_dict` was taken (the epoch's plan is rebuilt from the seed)."""
        names = [f.name for f in self.files]
        if list(state.get("files", names)) != names:
            raise DataError(f"{self.files[0].parent}: the loader state was saved with other train shards "
                            f"({len(state['files'])}, not these {len(names)})")
        if state.get("kind") != self.kind or int(state.get("seed", self.seed)) != self.seed:
            raise DataError(f"{self.files[0].parent}: the loader state is of train.loader={state.get('kind')} "
                            f"seed {state.get('seed')}, not {self.kind} seed {self.seed}")
        self.epoch, self.pos, self.seq_len = int(state["epoch"]), int(state["pos"]), int(state["seq_len"])
        self._plan = None
