"""The byte260 vocabulary (issue 26 item 2): bytes as tokens with no SentencePiece model, through
``pgolf data build --tokenizer byte260``, the loader, the exact scorer (table bytes = raw UTF-8 bytes), a
``pgolf run`` and the standalone bundle. Sources: the challenge's ``PureByteTokenizer``
(``data/download_hf_docs_and_tokenize.py``) and the non-record ``2026-03-29_HNet_ByteVsSubword_Study``."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pgolf.cli import main
from pgolf.config import RunConfig, apply_overrides
from pgolf.data.bytetables import byte260_tables, stream_token_bytes
from pgolf.data.corpus import build_dataset
from pgolf.data.prepare import prepare_data
from pgolf.data.shards import list_byte_sidecars, list_shards, read_byte_sidecar, read_shard
from pgolf.data.tokenizer import BYTE260_SPEC, ByteTokenizer, byte260_sha256
from pgolf.errors import DataError

# Multi-byte UTF-8 (2, 3, 4 bytes), a NUL, CRLF, a ligature NFKC would fold, combining marks, a lone "▁"
# (SentencePiece's space mark, 3 bytes here): bytes are bytes, none is normalized away.
TEXTS = [
    "héllo wörld — ﬁne\r\n\tcafé",
    "emoji 😀 and ✓ and \x00 NUL",
    "e\u0301 combining, ▁ spacemark, 漢字かな",
    "plain ascii text for the validation split",
] + [f"training document {i}: the quick brown fox {'jumps ' * (i % 7)}over ünïcödé {i * 7919}" for i in range(40)]
VAL_DOCS = 4


def _corpus(tmp: Path) -> Path:
    src = tmp / "corpus.jsonl"
    src.write_text("\n".join(json.dumps({"text": t}) for t in TEXTS) + "\n", encoding="utf-8")
    return src


@pytest.fixture(scope="module")
def byte_data(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("byte260")
    out = tmp / "data"
    build_dataset([_corpus(tmp)], out, tokenizer="byte260", val_docs=VAL_DOCS, shard_tokens=700, workers=1,
                  progress=False)
    return out


def test_the_byte_vocabulary_is_the_challenges_pure_byte_tokenizer():
    text = "A é ✓ 😀\x00"
    ids = ByteTokenizer.encode(text)
    assert ids.dtype == np.uint16 and ids.tolist() == [b + 4 for b in text.encode("utf-8")]
    assert ByteTokenizer.decode(ids) == text and ByteTokenizer.decode([1, *ids.tolist(), 2]) == text
    assert ByteTokenizer.encode("").size == 0
    # the description the challenge's save_json writes, hashed as a .model file names a SentencePiece model
    assert BYTE260_SPEC["config"] == {"pad_id": 0, "bos_id": 1, "eos_id": 2, "unk_id": 3, "byte_offset": 4,
                                      "byte_count": 256}
    expect = hashlib.sha256((json.dumps(BYTE260_SPEC, indent=2, sort_keys=True) + "\n").encode()).hexdigest()
    assert byte260_sha256() == expect


def test_byte_tables_count_one_byte_per_byte_id_and_none_for_specials():
    t = byte260_tables()
    assert t.vocab_size == 260 and t.base_bytes[:4].tolist() == [0, 0, 0, 0] and (t.base_bytes[4:] == 1).all()
    assert t.is_boundary[:4].all() and not t.is_boundary[4:].any() and not t.has_leading_space.any()
    padded = byte260_tables(264)
    assert padded.base_bytes[260:].tolist() == [0] * 4 and padded.is_boundary[260:].all()
    with pytest.raises(DataError, match="260 ids"):
        byte260_tables(259)


def test_build_writes_bos_plus_bytes_and_no_tokenizer_model(byte_data):
    assert not (byte_data / "tokenizer.model").exists()
    m = json.loads((byte_data / "manifest.json").read_text())
    assert m["vocab_size"] == 260 and m["bos_id"] == 1 and m["append_eos"] is False
    assert m["tokenizer"]["kind"] == "byte260" and m["tokenizer"]["file"] is None
    assert m["tokenizer"]["sha256"] == byte260_sha256() and "tokenizer.model" not in m["files"]
    for split, docs in (("val", TEXTS[:VAL_DOCS]), ("train", TEXTS[VAL_DOCS:])):
        stream = np.concatenate([read_shard(f, 260) for f in list_shards(byte_data, split)])
        starts = np.flatnonzero(stream == 1)  # BOS; byte ids are ≥ 4
        parts = np.split(stream, starts[1:])
        assert [ByteTokenizer.decode(p[1:]) for p in parts] == docs
        assert [p[1:].tolist() for p in parts] == [[b + 4 for b in d.encode("utf-8")] for d in docs]
        assert m["splits"][split]["bytes"] == sum(len(d.encode("utf-8")) for d in docs)
    sidecar = np.concatenate([read_byte_sidecar(f) for f in list_byte_sidecars(byte_data)])
    val = np.concatenate([read_shard(f, 260) for f in list_shards(byte_data, "val")])
    assert sidecar.tolist() == [0 if t == 1 else 1 for t in val.tolist()]


def test_table_bytes_of_the_validation_targets_are_the_raw_utf8_bytes(byte_data):
    """The exact scorer's denominator: Σ table bytes of every scored target = the validation text's UTF-8 bytes
    (the first token is context, never a target: it is a BOS), target by target equal to the sidecar."""
    cfg = apply_overrides(RunConfig(), [f"data.path={byte_data}", "model.vocab_size=260"])
    data = prepare_data(cfg)  # the manifest says byte260: no data.tokenizer needed
    assert data.spec.tokenizer_path is None and data.spec.tokenizer_kind == "byte260"
    assert data.spec.tokenizer_label == "byte260" and data.score == "table"
    counts = stream_token_bytes(data.tables, data.val.tokens)
    raw_val = sum(len(t.encode("utf-8")) for t in TEXTS[:VAL_DOCS])
    assert int(counts[1:].sum()) == raw_val
    assert counts[1:].tolist() == data.val.raw_bytes[1:].tolist()
    # the same with data.tokenizer named explicitly
    assert prepare_data(apply_overrides(cfg, ["data.tokenizer=byte260"])).tables.base_bytes.tolist() == \
        data.tables.base_bytes.tolist()


def test_the_loader_refuses_a_tokenizer_that_did_not_build_the_shards(byte_data, tmp_path):
    cfg = apply_overrides(RunConfig(), [f"data.path={byte_data}", "model.vocab_size=260"])
    with pytest.raises(DataError, match="hold bytes"):
        prepare_data(apply_overrides(cfg, [f"data.tokenizer={tmp_path / 'x.model'}"]))
    with pytest.raises(DataError, match="260 ids but model.vocab_size is 1024"):
        prepare_data(apply_overrides(cfg, ["model.vocab_size=1024"]))
    sp_like = tmp_path / "sp"  # the same shards under a manifest that names a SentencePiece model
    sp_like.mkdir()
    for f in byte_data.iterdir():
        (sp_like / f.name).write_bytes(f.read_bytes())
    m = json.loads((sp_like / "manifest.json").read_text())
    m["tokenizer"] = {"file": "tokenizer.model", "sha256": "0" * 64, "source": "trained"}
    (sp_like / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DataError, match="SentencePiece tokenizer, not byte260"):
        prepare_data(apply_overrides(cfg, [f"data.path={sp_like}", "data.tokenizer=byte260"]))


def test_build_options_that_do_not_fit_bytes_are_one_line(tmp_path, capsys):
    src = _corpus(tmp_path)
    with pytest.raises(DataError, match="leave out --vocab-size"):
        build_dataset([src], tmp_path / "a", tokenizer="byte260", vocab_size=1024, workers=1, progress=False)
    with pytest.raises(DataError, match="--caseops needs a SentencePiece"):
        build_dataset([src], tmp_path / "b", tokenizer="byte260", caseops=True, workers=1, progress=False)
    assert main(["data", "build", "--input", str(src), "--out", str(tmp_path / "c"), "--tokenizer", "byte260",
                 "--vocab-size", "512"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pgolf: error:")


def test_cli_builds_byte260_without_vocab_size_and_workers_agree(tmp_path):
    """`pgolf data build --tokenizer byte260` (no --vocab-size): the same files with 2 worker processes as with one."""
    src = _corpus(tmp_path)
    assert main(["data", "build", "--input", str(src), "--out", str(tmp_path / "one"), "--tokenizer", "byte260",
                 "--val-docs", str(VAL_DOCS), "--workers", "1"]) == 0
    build_dataset([src], tmp_path / "two", tokenizer="byte260", val_docs=VAL_DOCS, workers=2, progress=False)
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert "tokenizer.model" not in names and names == sorted(p.name for p in (tmp_path / "two").iterdir())
    for n in names:
        if n != "manifest.json":
            assert (tmp_path / "one" / n).read_bytes() == (tmp_path / "two" / n).read_bytes(), n


TINY = ["model.vocab_size=260", "model.num_layers=2", "model.model_dim=32", "model.num_heads=2",
        "model.num_kv_heads=1", "train.iterations=4", "train.max_wallclock_seconds=0", "train.warmup_steps=0",
        "train.batch_tokens=512", "train.seq_len=64", "train.val_every=0", "train.log_every=2",
        "train.checkpoint_every_seconds=0", "train.amp_dtype=fp32", "train.threads=1", "eval.batch_tokens=1024",
        "train.compile=false", "eval.compile=false", "data.tokenizer=byte260"]


def test_pgolf_run_scores_bytes_exactly(byte_data, tmp_path):
    """End to end: train → export → reload → the exact scorer, whose bytes are the raw bytes of the scored
    targets (counted here from the shards' ids) and whose val_bpb is val_loss / ln 2 × tokens / bytes."""
    out = tmp_path / "run"
    assert main(["run", "tiny", *[a for s in TINY for a in ("--set", s)], "--set", f"data.path={byte_data}",
                 "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    val = np.concatenate([read_shard(f, 260) for f in list_shards(byte_data, "val")])
    n_targets = (val.size - 1) // 64 * 64
    scored = val[1 : n_targets + 1]
    assert m["val_tokens"] == n_targets and m["val_bytes"] == int((scored >= 4).sum()) == m["val_bytes_raw"]
    assert m["val_bpb"] == pytest.approx(m["val_loss"] / math.log(2) * m["val_tokens"] / m["val_bytes"], rel=1e-12)
    assert m["val_bpb"] == m["val_bpb_raw"] and m["val_byte_ratio"] == 1.0
    assert m["dataset"] and "tokenizer_path:byte260" in (out / "train.log").read_text()


def test_standalone_defaults_to_byte260_at_vocab_260(byte_data):
    from pgolf.standalone import configure

    cfg = configure(RunConfig(model=RunConfig().model.__class__(vocab_size=260)).to_dict(), {"DATA_PATH": str(byte_data)})
    assert cfg.data.tokenizer == "byte260" and cfg.data.path == str(byte_data)
    bare = configure(RunConfig(model=RunConfig().model.__class__(vocab_size=260)).to_dict(), {})
    assert bare.data.path == "./data/datasets/fineweb10B_byte260" and bare.data.tokenizer == "byte260"
    sp = configure(RunConfig().to_dict(), {})
    assert sp.data.tokenizer == "./data/tokenizers/fineweb_1024_bpe.model"


def test_the_bundle_runs_on_byte260_without_a_model_file(byte_data, tmp_path):
    """The standalone train_gpt.py of a byte260 config, with DATA_PATH only (no TOKENIZER_PATH, no .model
    anywhere), reproduces `pgolf run`'s exact score."""
    from pgolf.runner import run
    from pgolf.submit.bundle import write_bundle

    cfg = apply_overrides(RunConfig(name="byte-tiny"), [*TINY, f"data.path={byte_data}"])
    ref = run(cfg, tmp_path / "ref", progress=False)
    script = tmp_path / "dist" / "train_gpt.py"
    script.parent.mkdir()
    write_bundle(cfg, script, compact=False)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(DATA_PATH=str(byte_data), RUN_ID="b1", OMP_NUM_THREADS="1", PGOLF_SET="train.threads=1")
    work = tmp_path / "work"
    work.mkdir()
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=work, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    line = next(x for x in r.stdout.splitlines() if re.match(r"final_\w+_roundtrip_exact ", x))
    loss, bpb = (float(v) for v in re.findall(r"val_(?:loss|bpb):([\d.]+)", line))
    assert loss == pytest.approx(ref["val_loss"], abs=5e-8) and bpb == pytest.approx(ref["val_bpb"], abs=5e-8)
    m = json.loads((work / "runs" / "b1" / "metrics.json").read_text())
    assert m["val_bytes"] == ref["val_bytes"] and m["val_loss"] == ref["val_loss"]
