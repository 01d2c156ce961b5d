"""The dataset layout against stand-ins of the official loaders (``official_loaders.py``): every
consumer reads correct data from a directory ``pgolf data build`` wrote, or refuses it loudly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from official_loaders import caseops_0418_train_gpt, caseops_train_gpt, root_train_gpt

from pgolf.config import DataConfig
from pgolf.data.corpus import build_dataset
from pgolf.data.embedded import stdlib_documents
from pgolf.data.loader import load_validation, resolve_data
from pgolf.data.shards import (
    BYTES_MAGIC,
    CASEOPS_GUARD,
    SHARD_MAGIC,
    list_shards,
    read_byte_sidecar,
    read_shard,
    sidecar_name,
    write_byte_sidecar,
)
from pgolf.errors import DataError

VOCAB = 384


@pytest.fixture(scope="module")
def caseops_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("caseops-layout")
    src = root / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for _n, t in stdlib_documents()[:120]))
    out = root / "data"
    build_dataset([src], out, vocab_size=VOCAB, val_docs=15, shard_tokens=8_000, workers=1, progress=False,
                  caseops=True)
    return out


def _pgolf(d: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    spec = resolve_data(DataConfig(path=str(d)), VOCAB)
    val = load_validation(spec)
    return np.concatenate([read_shard(f) for f in spec.train_files]), val.tokens, val.raw_bytes


def test_plain_dataset_reads_the_same_in_every_loader(tiny_data: Path) -> None:
    train, val, raw = _pgolf(tiny_data)
    manifest = json.loads((tiny_data / "manifest.json").read_text())
    assert raw is not None and int(raw.sum(dtype=np.int64)) == manifest["splits"]["val"]["bytes"]
    assert manifest["byte_sidecar_style"] == "pgolf" and not (tiny_data / CASEOPS_GUARD).exists()
    r_train, r_val = root_train_gpt(tiny_data)  # the root script: no sidecar picked up as validation
    assert np.array_equal(r_train, train) and np.array_equal(r_val, val)
    c_train, c_val, c_raw = caseops_train_gpt(tiny_data, caseops_enabled=False)
    assert np.array_equal(c_train, train) and np.array_equal(c_val, val) and c_raw is None
    with pytest.raises(FileNotFoundError):  # CASEOPS_ENABLED=1 on a plain dataset: refused, not mis-scored
        caseops_train_gpt(tiny_data, caseops_enabled=True)
    o_train, o_val, o_raw = caseops_0418_train_gpt(tiny_data)  # no sidecar found: byte tables, right for plain text
    assert np.array_equal(o_train, train) and np.array_equal(o_val, val) and o_raw is None


def test_caseops_dataset_loads_unchanged_in_the_caseops_records_and_stops_the_root_script(caseops_data: Path) -> None:
    train, val, raw = _pgolf(caseops_data)
    assert raw is not None and len(list_shards(caseops_data, "val")) > 1
    for f in caseops_data.glob("fineweb_val_bytes_*.bin"):
        assert int(np.fromfile(f, "<i4", 1)[0]) == SHARD_MAGIC  # the records' own sidecar format
    c_train, c_val, c_raw = caseops_train_gpt(caseops_data, caseops_enabled=True)
    assert np.array_equal(c_train, train) and np.array_equal(c_val, val) and np.array_equal(c_raw, raw)
    o_train, o_val, o_raw = caseops_0418_train_gpt(caseops_data)
    assert np.array_equal(o_train, train) and np.array_equal(o_val, val) and np.array_equal(o_raw, raw)
    with pytest.raises(ValueError, match=f"Unexpected shard header for .*{CASEOPS_GUARD}"):
        root_train_gpt(caseops_data)


def test_without_the_guard_the_root_script_would_silently_read_the_sidecar_as_tokens(caseops_data: Path,
                                                                                     tmp_path: Path) -> None:
    """Why the guard file exists: the CaseOps records' own layout is a silent mix-up for the root script."""
    d = tmp_path / "noguard"
    shutil.copytree(caseops_data, d)
    (d / CASEOPS_GUARD).unlink()
    _train, val, raw = _pgolf(d)
    _r_train, r_val = root_train_gpt(d)
    assert r_val.size > val.size  # no error: validation = tokens and byte counts interleaved by file name
    assert np.array_equal(r_val, np.concatenate([read_shard(f) for f in sorted(d.glob("fineweb_val_*.bin"))]))


def _old_layout(src: Path, dst: Path) -> Path:
    """A dataset as pgolf ≤ 0.1 wrote it: sidecar ``fineweb_val_bytes_*`` with magic 20240521, no guard."""
    shutil.copytree(src, dst)
    (dst / CASEOPS_GUARD).unlink(missing_ok=True)
    for f in sorted(dst.glob("*_val_bytes_*.bin")):
        counts = read_byte_sidecar(f)
        f.unlink()
        write_byte_sidecar(dst / sidecar_name(int(f.stem[-6:]), "caseops"), counts, magic=BYTES_MAGIC)
    return dst


@pytest.mark.parametrize("which", ["plain", "caseops"])
def test_old_pgolf_datasets_still_read_in_pgolf_and_are_refused_by_official_loaders(
        which: str, tiny_data: Path, caseops_data: Path, tmp_path: Path) -> None:
    src = tiny_data if which == "plain" else caseops_data
    old = _old_layout(src, tmp_path / "old")
    new_train, new_val, new_raw = _pgolf(src)
    train, val, raw = _pgolf(old)
    assert np.array_equal(train, new_train) and np.array_equal(val, new_val) and np.array_equal(raw, new_raw)
    with pytest.raises(ValueError, match="Unexpected shard header for .*fineweb_val_bytes_000000.bin"):
        root_train_gpt(old)
    with pytest.raises(ValueError, match="Unexpected shard header for .*fineweb_val_bytes_000000.bin"):
        caseops_train_gpt(old, caseops_enabled=True)
    with pytest.raises(ValueError, match="Unexpected shard header"):
        caseops_0418_train_gpt(old)


def test_official_caseops_layout_reads_in_pgolf(caseops_data: Path, tmp_path: Path) -> None:
    """What prepare_caseops_data.py writes (sidecar magic 20240520, no guard, no pgolf manifest)."""
    d = tmp_path / "official"
    shutil.copytree(caseops_data, d)
    (d / CASEOPS_GUARD).unlink()
    (d / "manifest.json").unlink()
    _train, val, raw = _pgolf(caseops_data)
    _t, o_val, o_raw = _pgolf(d)
    assert np.array_equal(o_val, val) and np.array_equal(o_raw, raw)


def test_a_token_shard_in_the_sidecar_place_is_refused(caseops_data: Path, tmp_path: Path) -> None:
    """A val shard copied to ``fineweb_val_bytes_*`` has the right magic and size; its BOS entries
    (1, not 0) give it away."""
    d = tmp_path / "swapped"
    shutil.copytree(caseops_data, d)
    shutil.copyfile(d / "fineweb_val_000000.bin", d / "fineweb_val_bytes_000000.bin")
    with pytest.raises(DataError, match=r"fineweb_val_bytes_000000.bin: 1 bytes at token 0, a BOS of "
                                        r"fineweb_val_000000.bin \(BOS counts 0\)"):
        load_validation(resolve_data(DataConfig(path=str(d)), VOCAB))
