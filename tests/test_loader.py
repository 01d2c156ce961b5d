"""Loader: the token stream against a NumPy reference, the rank/grad-accum equivalence the DDP test
relies on, exact resume, lazy validated reads, resolve_data and load_validation errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from pgolf.config import DataConfig
from pgolf.data import embedded
from pgolf.data.loader import DataSpec, DistributedTokenLoader, ValData, load_validation, resolve_data
from pgolf.data.shards import shard_name, sidecar_name, write_byte_sidecar, write_shard
from pgolf.data.tokenizer import train_tokenizer
from pgolf.errors import ConfigError, DataError

V = 512
SIZES = [1000, 37, 1500, 613]


def _make_shards(d: Path, split: str = "train", sizes: list[int] = SIZES, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    files = []
    for i, n in enumerate(sizes):
        p = d / shard_name(split, i)
        write_shard(p, rng.integers(0, V, n))
        files.append(p)
    return files


def _stream(files: list[Path]) -> np.ndarray:
    from pgolf.data.shards import read_shard

    return np.concatenate([read_shard(f) for f in files]).astype(np.int64)


def test_single_process_stream_matches_reference_with_wraparound(tmp_path: Path) -> None:
    files = _make_shards(tmp_path)
    ref = _stream(files)
    loader = DistributedTokenLoader(files, 0, 1, "cpu", vocab_size=V)
    seq, glob = 16, 256
    pos = 0
    for _ in range(40):  # 40 × 257 tokens ≈ 3.3 passes over the 3150-token stream
        x, y = loader.next_batch(glob, seq, 1)
        idx = (pos + np.arange(glob + 1)) % ref.size
        span = ref[idx]
        assert x.dtype == torch.int64 and x.shape == (glob // seq, seq) and y.shape == x.shape
        assert x.flatten().tolist() == span[:-1].tolist() and y.flatten().tolist() == span[1:].tolist()
        pos += glob + 1


@pytest.mark.parametrize("world, accum", [(2, 1), (4, 1), (2, 2)])
def test_ranks_equal_micro_steps(tmp_path: Path, world: int, accum: int) -> None:
    """Rank r, micro-step k (W ranks, accum A) sees exactly micro-step k·W + r of one process
    with accum W·A: the union across ranks is the single process's batch, in the same order."""
    files = _make_shards(tmp_path)
    glob, seq = 512, 32
    single = DistributedTokenLoader(files, 0, 1, "cpu")
    ranks = [DistributedTokenLoader(files, r, world, "cpu") for r in range(world)]
    for _step in range(12):
        one = [single.next_batch(glob, seq, world * accum) for _ in range(world * accum)]
        for k in range(accum):
            for r, ld in enumerate(ranks):
                x, y = ld.next_batch(glob, seq, accum)
                x1, y1 = one[k * world + r]
                assert torch.equal(x, x1) and torch.equal(y, y1)


def test_rank_parts_are_disjoint_contiguous(tmp_path: Path) -> None:
    files = _make_shards(tmp_path)
    ref = _stream(files)
    parts = [DistributedTokenLoader(files, r, 3, "cpu").next_batch(3 * 64, 16, 1) for r in range(3)]
    for r, (x, y) in enumerate(parts):
        start = r * 65
        assert x.flatten().tolist() == ref[start : start + 64].tolist()
        assert y.flatten().tolist() == ref[start + 1 : start + 65].tolist()


def test_state_round_trip_resumes_exact_stream(tmp_path: Path) -> None:
    files = _make_shards(tmp_path)
    a = DistributedTokenLoader(files, 1, 2, "cpu", vocab_size=V)
    rng = random.Random(0)
    for _ in range(7):
        a.next_batch(2 * 128, 32, 1)
    state = json.loads(json.dumps(a.state_dict()))  # checkpoints store it as JSON
    expected = [a.next_batch(2 * 128, 32, rng.choice([1, 2])) for _ in range(20)]
    b = DistributedTokenLoader(files, 1, 2, "cpu", vocab_size=V)
    b.load_state_dict(state)
    rng = random.Random(0)
    got = [b.next_batch(2 * 128, 32, rng.choice([1, 2])) for _ in range(20)]
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(expected, got, strict=True))
    c = DistributedTokenLoader(files[:2], 1, 2, "cpu")
    with pytest.raises(DataError, match="saved with 4 train shards"):
        c.load_state_dict(state)


def test_batch_shape_errors(tmp_path: Path) -> None:
    loader = DistributedTokenLoader(_make_shards(tmp_path), 0, 2, "cpu")
    with pytest.raises(ConfigError, match="not a positive multiple of seq_len"):
        loader.next_batch(1000, 64, 1)  # 500 per rank
    with pytest.raises(ConfigError):
        loader.next_batch(64, 64, 1)  # 32 per rank < seq_len


def test_shards_read_lazily_and_validated(tmp_path: Path) -> None:
    files = _make_shards(tmp_path, sizes=[300, 300, 300])
    data = files[1].read_bytes()
    files[1].write_bytes(data[:-2])  # truncated second shard
    loader = DistributedTokenLoader(files, 0, 1, "cpu", vocab_size=V)
    loader.next_batch(256, 16, 1)  # only the first shard is needed so far
    with pytest.raises(DataError) as e:
        loader.next_batch(256, 16, 1)
    assert str(files[1]) in str(e.value) and "truncated" in str(e.value)

    files[1].write_bytes(data)
    write_shard(files[2], np.r_[np.zeros(10, int), [V + 3], np.zeros(289, int)])
    loader = DistributedTokenLoader(files, 0, 1, "cpu", vocab_size=V)
    loader.next_batch(512, 16, 1)  # tokens 0..512: shards 0 and 1
    with pytest.raises(DataError, match=f"token id {V + 3} at position 10 >= vocab size {V}"):
        loader.next_batch(512, 16, 1)


def test_empty_shards_are_skipped(tmp_path: Path) -> None:
    files = _make_shards(tmp_path, sizes=[0, 50, 0, 30])
    ref = _stream(files)
    loader = DistributedTokenLoader(files, 0, 1, "cpu")
    x, y = loader.next_batch(160, 16, 1)
    idx = np.arange(161) % 80
    assert x.flatten().tolist() == ref[idx[:-1]].tolist()
    (tmp_path / "e").mkdir()
    empty = DistributedTokenLoader(_make_shards(tmp_path / "e", sizes=[0, 0]), 0, 1, "cpu")
    with pytest.raises(DataError, match="every train shard is empty"):
        empty.next_batch(16, 16, 1)


# ------------------------------------------------------------------------------ resolve / validation


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("tok") / "tokenizer.model"
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa", "lambda", "sigma"]
    rng = random.Random(0)
    train_tokenizer([" ".join(rng.choice(words) for _ in range(30)) for _ in range(200)], 300, p)
    return p


def _dataset(d: Path, tok: Path, sidecars: bool = True) -> None:
    d.mkdir(parents=True, exist_ok=True)
    _make_shards(d, "train", [400, 200])
    rng = np.random.default_rng(1)
    for i, n in enumerate([100, 57]):
        toks = rng.integers(0, 300, n)
        write_shard(d / shard_name("val", i), toks)
        if sidecars:
            write_byte_sidecar(d / sidecar_name(i), np.where(toks == 1, 0, rng.integers(1, 9, n)))
    (d / "tokenizer.model").write_bytes(tok.read_bytes())


def test_resolve_data_and_load_validation(tmp_path: Path, tok: Path) -> None:
    d = tmp_path / "ds"
    _dataset(d, tok)
    spec = resolve_data(DataConfig(path=str(d)), 300)
    assert [f.name for f in spec.train_files] == ["fineweb_train_000000.bin", "fineweb_train_000001.bin"]
    assert [f.name for f in spec.val_byte_files] == [sidecar_name(0), sidecar_name(1)]
    assert spec.tokenizer_path == d / "tokenizer.model" and spec.vocab_size == 300
    val = load_validation(spec, 300)
    assert isinstance(val, ValData) and val.tokens.size == 157 and val.raw_bytes is not None
    assert val.raw_bytes.size == 157
    short = load_validation(spec, max_tokens=120)
    assert short.tokens.tolist() == val.tokens[:120].tolist() and short.raw_bytes.tolist() == val.raw_bytes[:120].tolist()
    with pytest.raises(DataError, match=">= vocab size 100"):
        load_validation(spec, 100)

    d2 = tmp_path / "nosidecar"
    _dataset(d2, tok, sidecars=False)
    assert load_validation(resolve_data(DataConfig(path=str(d2)), 300)).raw_bytes is None


def test_sidecar_mismatch(tmp_path: Path, tok: Path) -> None:
    d = tmp_path / "ds"
    _dataset(d, tok)
    write_byte_sidecar(d / sidecar_name(1), np.zeros(56, int))
    with pytest.raises(DataError, match="has 56 entries but its val shard has 57 tokens"):
        resolve_data(DataConfig(path=str(d)), 300)
    spec = DataSpec(d, d / "tokenizer.model", [], [d / shard_name("val", 0), d / shard_name("val", 1)],
                    [d / sidecar_name(0), d / sidecar_name(1)])
    with pytest.raises(DataError, match="has 56 entries but its val shard has 57 tokens"):
        load_validation(spec, 300)
    (d / sidecar_name(1)).unlink()
    with pytest.raises(DataError, match="do not match the val shards"):
        resolve_data(DataConfig(path=str(d)), 300)


def test_resolve_data_errors(tmp_path: Path, tok: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        resolve_data(DataConfig(path=str(tmp_path / "missing")), 300)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="is empty"):
        resolve_data(DataConfig(path=str(tmp_path / "empty")), 300)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no train shards"):
        resolve_data(DataConfig(path=str(tmp_path / "other")), 300)
    d = tmp_path / "ds"
    _dataset(d, tok)
    with pytest.raises(DataError, match="has 300 pieces but model.vocab_size is 1024"):
        resolve_data(DataConfig(path=str(d)), 1024)
    with pytest.raises(DataError, match="tokenizer not found"):
        resolve_data(DataConfig(path=str(d), tokenizer=str(tmp_path / "nope.model")), 300)
    (d / shard_name("val", 0)).write_bytes(b"\0" * 10)
    with pytest.raises(DataError, match="fineweb_val_000000.bin: truncated"):
        resolve_data(DataConfig(path=str(d)), 300)
    for f in d.glob("fineweb_val_*"):
        f.unlink()
    with pytest.raises(DataError, match="no validation shards"):
        resolve_data(DataConfig(path=str(d)), 300)


def test_empty_path_means_embedded(tmp_path: Path, tok: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "emb"
    _dataset(d, tok)
    monkeypatch.setattr(embedded, "embedded_data_dir", lambda cache_dir=None: d)
    assert resolve_data(DataConfig(path=""), 300).data_dir == d
