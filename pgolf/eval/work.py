"""Work shared by the ranks of one evaluation: a global queue of documents and sticky flags.

Source: the records' multi-GPU TTT ([04-27a] ``eval_val_ttt_phased``: length-sorted document batches
that every rank claims from an atomic counter). New implementation.

Everything goes through torch.distributed's key-value store (the default process group's, under a
prefix that rank 0 draws and broadcasts), so nothing is written to disk and any rank may touch it at
any time, without the lockstep a collective needs:

- :class:`Board`: named integer counters. ``add(key, n)`` is the store's atomic add and returns the new
  total; ``read(key)`` is ``add(key, 0)`` (a get would block on a missing key). A flag is a counter
  that some rank raised above 0: sticky, and seen by every rank at its next read.
- :class:`WorkQueue`: a fixed list of items (document indices); ``claim(k)`` atomically takes the next
  k not yet taken (``add(key, k)`` → [total − k, total)), so every item goes to exactly one rank.
  ``static=True`` instead gives rank r the items r, r + W, r + 2W, … in order (deterministic: for
  warm-started adapters, whose result depends on which documents shared a slot).

On one process (no group) the same classes keep their counters in a dict.
"""

from __future__ import annotations

import uuid

import numpy as np
import torch.distributed as tdist

from pgolf import dist


class Board:
    """Atomic named counters shared by every rank (module docstring)."""

    def __init__(self, store=None, rank: int = 0, world: int = 1) -> None:
        self.store, self.rank, self.world = store, rank, world
        self.local: dict[str, int] = {}

    @classmethod
    def create(cls) -> Board:
        """A fresh board for one evaluation: collective (every rank calls it at the same point)."""
        world = dist.world_size()
        if world == 1:
            return cls()
        name = [uuid.uuid4().hex if dist.rank() == 0 else None]
        tdist.broadcast_object_list(name, src=0)
        from torch.distributed.distributed_c10d import _get_default_store

        store = tdist.PrefixStore(f"pgolf/eval/{name[0]}/", _get_default_store())
        return cls(store, dist.rank(), world)

    def add(self, key: str, n: int) -> int:
        if self.store is None:
            self.local[key] = self.local.get(key, 0) + int(n)
            return self.local[key]
        return int(self.store.add(key, int(n)))

    def read(self, key: str) -> int:
        return self.add(key, 0)

    def raise_flag(self, key: str) -> None:
        self.add(key, 1)

    def flag(self, key: str) -> bool:
        return self.read(key) > 0


class WorkQueue:
    """Items claimed by the ranks of a :class:`Board`, each by exactly one (module docstring)."""

    def __init__(self, board: Board, name: str, items: np.ndarray, static: bool = False) -> None:
        self.board, self.key = board, f"queue/{name}"
        self.items = np.asarray(items, np.int64)
        self.static = static and board.world > 1
        if self.static:
            self.items = self.items[board.rank :: board.world]
        self.taken = 0  # static: how many of this rank's items are claimed
        self.empty = len(self.items) == 0

    def claim(self, k: int) -> np.ndarray:
        """Up to ``k`` items nobody has claimed yet (fewer, or none, at the end of the queue)."""
        if k <= 0 or self.empty:
            return np.zeros(0, np.int64)
        if self.static or self.board.store is None:
            a = self.taken
            self.taken += k
        else:
            a = self.board.add(self.key, k) - k
        out = self.items[min(a, len(self.items)) : min(a + k, len(self.items))]
        if a + k >= len(self.items):
            self.empty = True
        return out
