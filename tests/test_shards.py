"""Shard and byte-sidecar format: exact bytes against struct.pack, round trips, every corruption."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgolf.data.shards import (
    BYTES_MAGIC,
    CASEOPS_GUARD,
    SHARD_MAGIC,
    list_byte_sidecars,
    list_shards,
    read_byte_sidecar,
    read_byte_sidecar_header,
    read_shard,
    read_shard_header,
    shard_name,
    sidecar_name,
    sidecar_path,
    sidecar_style,
    write_byte_sidecar,
    write_caseops_guard,
    write_shard,
)
from pgolf.errors import DataError


def reference_bytes(magic: int, values: list[int]) -> bytes:
    return struct.pack("<256i", magic, 1, len(values), *([0] * 253)) + struct.pack(f"<{len(values)}H", *values)


def test_exact_bytes_of_small_shard(tmp_path: Path) -> None:
    tokens = [1, 0, 65535, 258, 7, 1023]
    p = tmp_path / "fineweb_train_000000.bin"
    write_shard(p, np.array(tokens, dtype=np.int64))
    data = p.read_bytes()
    assert data == reference_bytes(20240520, tokens)
    assert len(data) == 1024 + 2 * len(tokens)
    assert SHARD_MAGIC == 20240520 and BYTES_MAGIC == 20240521


def test_exact_bytes_of_sidecar(tmp_path: Path) -> None:
    """pgolf's sidecar (a name no official glob matches) has magic 20240521; the CaseOps records' one
    (``fineweb_val_bytes_*``, read by their ``load_data_shard``) has the shard magic 20240520."""
    counts = [0, 3, 1, 1, 65535]
    p = tmp_path / "pgolf_val_bytes_000000.bin"
    write_byte_sidecar(p, counts)
    assert p.read_bytes() == reference_bytes(20240521, counts)
    c = tmp_path / "fineweb_val_bytes_000000.bin"
    write_byte_sidecar(c, counts)
    assert c.read_bytes() == reference_bytes(20240520, counts)
    assert (sidecar_name(0), sidecar_name(0, "caseops")) == (p.name, c.name)
    assert (sidecar_style(p.name), sidecar_style(c.name), sidecar_style("fineweb_val_000000.bin")) == ("pgolf", "caseops", None)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 65535), max_size=300))
def test_round_trip(tmp_path_factory: pytest.TempPathFactory, tokens: list[int]) -> None:
    p = tmp_path_factory.mktemp("rt") / "s.bin"
    write_shard(p, tokens)
    got = read_shard(p)
    assert got.dtype == np.uint16
    assert got.tolist() == tokens
    assert read_shard_header(p) == len(tokens)
    write_byte_sidecar(p, tokens)
    assert read_byte_sidecar(p, expected_tokens=len(tokens)).tolist() == tokens
    assert read_byte_sidecar_header(p) == len(tokens)


@pytest.mark.parametrize("bad", [[-1], [65536], [5, 70000]])
def test_write_rejects_ids_outside_uint16_and_leaves_old_file(tmp_path: Path, bad: list[int]) -> None:
    p = tmp_path / "fineweb_train_000000.bin"
    write_shard(p, [1, 2, 3])
    before = p.read_bytes()
    with pytest.raises(DataError, match="does not fit uint16"):
        write_shard(p, bad)
    assert p.read_bytes() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == [p.name]  # no temp file left


def test_write_rejects_floats(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        write_shard(tmp_path / "x.bin", np.array([1.5]))


def _corrupt(tmp_path: Path, data: bytes) -> Path:
    p = tmp_path / "fineweb_val_000000.bin"
    p.write_bytes(data)
    return p


GOOD = reference_bytes(SHARD_MAGIC, list(range(1000)))


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty file"),
        (GOOD[:500], "shorter than the 1024-byte header"),
        (struct.pack("<i", 123) + GOOD[4:], "bad magic 123"),
        (reference_bytes(BYTES_MAGIC, [1, 2]), "is a byte sidecar"),
        (GOOD[:4] + struct.pack("<i", 2) + GOOD[8:], "unsupported version 2"),
        (GOOD[:8] + struct.pack("<i", -5) + GOOD[12:], "negative token count"),
        (GOOD[:2000], "truncated: header says 1000 tokens (3024 bytes) but file has 2000 bytes"),
        (GOOD[:-1], "truncated: header says 1000 tokens"),
        (GOOD + b"\0\0", "2 extra bytes"),
    ],
)
def test_corruptions_name_file_and_problem(tmp_path: Path, data: bytes, message: str) -> None:
    p = _corrupt(tmp_path, data)
    for reader in (read_shard, read_shard_header):
        with pytest.raises(DataError) as e:
            reader(p)
        assert str(e.value).startswith(str(p))
        assert message in str(e.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_shard(tmp_path / "nope.bin")


def test_vocab_check_reports_first_bad_id(tmp_path: Path) -> None:
    tokens = np.arange(100) % 1000
    tokens[17], tokens[40] = 1500, 2000
    p = tmp_path / "fineweb_val_000000.bin"
    write_shard(p, tokens)
    with pytest.raises(DataError) as e:
        read_shard(p, vocab_size=1024)
    assert str(e.value) == f"{p}: token id 1500 at position 17 >= vocab size 1024"
    assert read_shard(p, vocab_size=2001).tolist() == tokens.tolist()


def test_sidecar_checks(tmp_path: Path) -> None:
    p = tmp_path / "pgolf_val_bytes_000000.bin"
    write_byte_sidecar(p, [0, 1, 2])
    with pytest.raises(DataError, match="byte sidecar has 3 entries but its val shard has 4 tokens"):
        read_byte_sidecar(p, expected_tokens=4)
    with pytest.raises(DataError, match="is a byte sidecar"):
        read_shard(p)
    s = tmp_path / "fineweb_val_000000.bin"
    write_shard(s, [1, 2, 3])
    with pytest.raises(DataError, match="is a token shard"):
        read_byte_sidecar(s)
    s.rename(p)  # a token shard under pgolf's sidecar name is refused too
    with pytest.raises(DataError, match="is a token shard"):
        read_byte_sidecar(p)


def test_caseops_sidecar_name_accepts_official_and_old_pgolf_magic(tmp_path: Path) -> None:
    """At ``fineweb_val_bytes_*`` the official magic (CaseOps records) and the old pgolf one (datasets
    written before the layout change) are both read; anything else is refused with both named."""
    c = tmp_path / "fineweb_val_bytes_000000.bin"
    for magic in (SHARD_MAGIC, BYTES_MAGIC):
        c.write_bytes(reference_bytes(magic, [0, 4, 2]))
        assert read_byte_sidecar(c, expected_tokens=3).tolist() == [0, 4, 2]
        assert read_byte_sidecar_header(c) == 3
    c.write_bytes(reference_bytes(123, [0, 4, 2]))
    with pytest.raises(DataError, match=r"bad magic 123 \(expected 20240520 or 20240521\)"):
        read_byte_sidecar(c)
    write_byte_sidecar(c, [0, 1], magic=BYTES_MAGIC)  # explicit magic: how the old layout is written in tests
    assert c.read_bytes() == reference_bytes(BYTES_MAGIC, [0, 1])


def test_caseops_guard_is_refused_by_every_shard_reader(tmp_path: Path) -> None:
    g = write_caseops_guard(tmp_path)
    assert g.name == CASEOPS_GUARD and 0 < g.stat().st_size < 1024
    assert g.read_text().startswith("pgolf: this directory holds a CaseOps")
    with pytest.raises(DataError, match="shorter than the 1024-byte header"):
        read_shard(g)
    assert list_shards(tmp_path, "val") == [] and list_byte_sidecars(tmp_path) == []


def test_list_shards_sorted_and_sidecars_excluded(tmp_path: Path) -> None:
    for name in [shard_name("train", 10), shard_name("train", 2), shard_name("val", 1), shard_name("val", 0),
                 sidecar_name(1), sidecar_name(0), "fineweb_train_000003.bin.tmp", "notes.txt", "fineweb_test_000000.bin"]:
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_shards(tmp_path, "train")] == ["fineweb_train_000002.bin", "fineweb_train_000010.bin"]
    assert [p.name for p in list_shards(tmp_path, "val")] == ["fineweb_val_000000.bin", "fineweb_val_000001.bin"]
    assert [p.name for p in list_byte_sidecars(tmp_path)] == [sidecar_name(0), sidecar_name(1)]
    assert sidecar_path(tmp_path / "fineweb_val_000001.bin") == tmp_path / "pgolf_val_bytes_000001.bin"
    assert sidecar_path(tmp_path / "fineweb_val_000001.bin", "caseops") == tmp_path / "fineweb_val_bytes_000001.bin"
    (tmp_path / sidecar_name(0, "caseops")).write_bytes(b"")
    with pytest.raises(DataError, match="both pgolf_val_bytes_\\* and fineweb_val_bytes_\\*"):
        list_byte_sidecars(tmp_path)
    with pytest.raises(ValueError):
        list_shards(tmp_path, "test")
    with pytest.raises(DataError, match="no such data directory"):
        list_shards(tmp_path / "missing", "train")
