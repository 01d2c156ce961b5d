"""The records' window-sampling loaders (train.loader = coprime | shuffled, pgolf.data.sampled): every window of an
epoch visited exactly once and read as the shard holds it, the coprime stride walk, determinism per seed, ranks
disjoint (and, for coprime, the baseline's rank/grad-accum equivalence), exact resume, a new epoch at a new
sequence length, the overlap check before a shard's first window, and the vocabulary check."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pgolf.config import TrainConfig
from pgolf.data.loader import DistributedTokenLoader, train_loader
from pgolf.data.sampled import SampledLoader, coprime_stride
from pgolf.data.shards import shard_name, write_shard
from pgolf.errors import ConfigError, DataError

SIZES = [1000, 37, 1500, 613, 16, 97]  # a shard too short for a window at T = 16, one with a single window


def _shards(d: Path, sizes=SIZES) -> list[Path]:
    """Shards whose every token is unique: token = 1 + its offset in the concatenation of the shards."""
    files, off = [], 0
    for i, n in enumerate(sizes):
        p = d / shard_name("train", i)
        write_shard(p, 1 + off + np.arange(n))
        files.append(p)
        off += n
    return files


def _locate(tok: int, sizes=SIZES) -> tuple[int, int]:
    """(shard, offset) of a token of :func:`_shards`."""
    ends = np.cumsum(sizes)
    g = int(np.searchsorted(ends, tok - 1, side="right"))
    return g, tok - 1 - int(ends[g] - sizes[g])


def _epoch(loader: SampledLoader, T: int) -> list[tuple[int, int]]:
    """(shard, start) of every window of the loader's next epoch, one window per call, checking each row."""
    seen, e = [], loader.epoch
    while loader.epoch == e:
        x, y = loader.next_batch(T, T, 1)
        assert x.shape == (1, T) and x.dtype == torch.int64
        row = torch.cat([x[0], y[0, -1:]]).numpy()
        assert (np.diff(row) == 1).all() and (y[0] == x[0] + 1).all()  # consecutive tokens of one shard
        g, s = _locate(int(row[0]))
        assert _locate(int(row[-1])) == (g, s + T)  # never crosses into the next shard
        seen.append((g, s))
    return seen


@pytest.mark.parametrize("kind", ["coprime", "shuffled"])
@pytest.mark.parametrize("T", [16, 7])
def test_an_epoch_visits_every_window_exactly_once(tmp_path, kind, T):
    loader = SampledLoader(_shards(tmp_path), kind=kind, seed=5)
    for _ in range(2):  # two epochs, each with its own phases and order
        seen = _epoch(loader, T)
        assert len(seen) == len(set(seen))
        for g, n in enumerate(SIZES):
            starts = sorted(s for h, s in seen if h == g)
            if n < T + 1:
                assert not starts
                continue
            phase = starts[0]
            assert 0 <= phase <= min(T - 1, n - T - 1)
            assert starts == [phase + j * T for j in range((n - 1 - phase) // T)]  # all of them, once each


def test_coprime_walks_each_shard_with_a_stride_coprime_to_its_window_count(tmp_path):
    loader = SampledLoader(_shards(tmp_path), kind="coprime", seed=11)
    T = 8
    seen = _epoch(loader, T)
    for g in range(len(SIZES)):
        starts = [s for h, s in seen if h == g]  # in visit order
        b = len(starts)
        if b <= 2:
            continue
        phase = min(starts)
        blocks = [(s - phase) // T for s in starts]
        steps = {(q - p) % b for p, q in zip(blocks, blocks[1:], strict=False)}
        assert len(steps) == 1 and math.gcd(steps.pop(), b) == 1, (g, blocks)


def test_coprime_stride_draw():
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 12, 97, 360):
        for _ in range(20):
            c = coprime_stride(n, rng)
            assert 1 <= c < max(n, 2) and math.gcd(c, n) == 1


def test_shuffled_orders_differ_from_a_stride_walk(tmp_path):
    """The shuffled loader's within-shard order is a permutation, not an arithmetic walk (on the 1,500-token shard
    at T = 8, 187 windows: a uniformly random permutation is a stride walk with probability < 1e-300)."""
    seen = _epoch(SampledLoader(_shards(tmp_path), kind="shuffled", seed=3), 8)
    starts = [s for h, s in seen if h == 2]
    b, phase = len(starts), min(starts)
    blocks = [(s - phase) // 8 for s in starts]
    assert len({(q - p) % b for p, q in zip(blocks, blocks[1:], strict=False)}) > 1


@pytest.mark.parametrize("kind", ["coprime", "shuffled"])
def test_deterministic_per_seed(tmp_path, kind):
    files = _shards(tmp_path)

    def batches(seed):
        ld = SampledLoader(files, kind=kind, seed=seed)
        return [torch.cat(ld.next_batch(64, 16, 1)) for _ in range(30)]

    a, b, c = batches(1337), batches(1337), batches(42)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(a, c, strict=True))


@pytest.mark.parametrize("world, accum", [(2, 1), (3, 2)])
def test_coprime_ranks_are_disjoint_and_split_one_process_batch(tmp_path, world, accum):
    """Rank r at micro-step k (W ranks, accum A) gets exactly micro-step k·W + r of one process with accum W·A."""
    files = _shards(tmp_path)
    T, glob = 8, 8 * 6 * 6
    single = SampledLoader(files, 0, 1, kind="coprime", seed=9)
    ranks = [SampledLoader(files, r, world, kind="coprime", seed=9) for r in range(world)]
    for _ in range(15):  # ≈ 2 epochs of the 399 windows at T = 8
        for _k in range(accum):
            got = [ld.next_batch(glob, T, accum) for ld in ranks]
            starts = [set(x[:, 0].tolist()) for x, _ in got]
            assert all(not (starts[i] & starts[j]) for i in range(world) for j in range(i))  # disjoint windows
            for x, y in got:
                xs, ys = single.next_batch(glob, T, accum * world)
                assert torch.equal(x, xs) and torch.equal(y, ys)


def test_shuffled_ranks_own_disjoint_shards(tmp_path):
    files = _shards(tmp_path)
    for r in range(2):
        ld = SampledLoader(files, r, 2, kind="shuffled", seed=4)
        shards = {_locate(int(t))[0] for _ in range(40) for t in ld.next_batch(2 * 32, 8, 1)[0][:, 0]}
        assert shards == {g for g in range(r, len(SIZES), 2) if SIZES[g] >= 9}
    with pytest.raises(DataError, match="at least one per rank"):
        SampledLoader(files[:2], 0, 3, kind="shuffled")


@pytest.mark.parametrize("kind", ["coprime", "shuffled"])
def test_resume_continues_the_exact_sequence(tmp_path, kind):
    files = _shards(tmp_path)
    a = SampledLoader(files, kind=kind, seed=7)
    for _ in range(37):  # into the second epoch
        a.next_batch(80, 8, 1)
    state = a.state_dict()
    b = SampledLoader(files, kind=kind, seed=7)
    b.load_state_dict(state)
    for _ in range(60):
        for p, q in zip(a.next_batch(80, 8, 1), b.next_batch(80, 8, 1), strict=True):
            assert torch.equal(p, q)
    with pytest.raises(DataError, match="seed"):
        SampledLoader(files, kind=kind, seed=8).load_state_dict(state)


def test_a_new_sequence_length_starts_a_new_epoch(tmp_path):
    ld = SampledLoader(_shards(tmp_path), kind="coprime", seed=2)
    ld.next_batch(32, 16, 1)
    assert (ld.epoch, ld.pos, ld.seq_len) == (0, 2, 16)
    x, _ = ld.next_batch(32, 8, 1)
    assert x.shape == (4, 8) and (ld.epoch, ld.pos, ld.seq_len) == (1, 4, 8)


def test_overlap_checked_once_per_shard_before_its_first_window(tmp_path):
    class Checker:
        def __init__(self):
            self.calls = []

        def check(self, index, tokens):
            self.calls.append((index, int(tokens.size)))

    files, chk = _shards(tmp_path), Checker()
    ld = SampledLoader(files, kind="coprime", seed=1, overlap=chk)
    seen = set()
    for _ in range(200):
        x, _ = ld.next_batch(8, 8, 1)
        g = _locate(int(x[0, 0]))[0]
        seen.add(g)
        assert g in {i for i, _ in chk.calls}
    assert sorted(i for i, _ in chk.calls) == sorted(seen) and all(n == SIZES[i] for i, n in chk.calls)


def test_ids_beyond_the_vocabulary_are_refused(tmp_path):
    ld = SampledLoader(_shards(tmp_path), kind="shuffled", seed=0, vocab_size=1000)
    with pytest.raises(DataError, match="vocab size 1000"):
        for _ in range(400):
            ld.next_batch(8, 8, 1)


def test_the_switch_picks_the_loader_and_the_batch_shape_is_checked(tmp_path):
    files = _shards(tmp_path)
    assert isinstance(train_loader(TrainConfig(), files), DistributedTokenLoader)
    ld = train_loader(TrainConfig(loader="shuffled", seed=3), files)
    assert isinstance(ld, SampledLoader) and (ld.kind, ld.seed) == ("shuffled", 3)
    with pytest.raises(ConfigError, match="multiple of seq_len"):
        ld.next_batch(20, 8, 1)
