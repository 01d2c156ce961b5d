"""Dataset building: inputs, tokenizer training (the long-line trap), byte sidecar maths,
build_dataset counts/determinism, and the embedded stdlib corpus."""

from __future__ import annotations

import gzip
import hashlib
import json
import multiprocessing
import random
import threading
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
from hypothesis import given, settings
from hypothesis import strategies as st

from pgolf.data import corpus, embedded
from pgolf.data.corpus import (
    build_dataset,
    default_val_docs,
    encode_document,
    iter_documents,
    token_byte_counts,
)
from pgolf.data.shards import list_byte_sidecars, list_shards, read_byte_sidecar, read_shard
from pgolf.data.tokenizer import (
    OFFICIAL_TRAINER_SETTINGS,
    check_vocab,
    encode_with_offsets,
    load_tokenizer,
    split_for_trainer,
    train_tokenizer,
)
from pgolf.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared"
VOCAB = 384

TRICKY = [
    "ﬁne ﬂow ﬃ",  # NFKC ligatures expand
    "Ｆｕｌｌｗｉｄｔｈ　ｔｅｘｔ １２３",  # fullwidth letters, digits, ideographic space
    "emoji 😀🎉 and 👩‍👩‍👧 family",  # 4-byte chars, ZWJ sequence
    "中文字符和日本語のテキスト",  # CJK → byte fallback
    "e\u0301 a\u0308 combining marks",  # NFKC composes
    "runs   of \t\t spaces\n\n\nand\r\nnewlines",
    "   leading spaces",
    "trailing spaces   \n",
    "\x00\x01 control \x7f chars",
    "x\u200by zero width",
    "ÅÆØ ß ǅ ﬀ ㎏ ① ½",  # compatibility decompositions
    "",
    "   ",
]


def _synthetic_docs(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    syll = ["ka", "lo", "mi", "ne", "ru", "so", "ta", "vi", "po", "de", "ga", "zu"]
    words = ["".join(rng.choice(syll) for _ in range(rng.randint(1, 3))) for _ in range(150)]
    docs = []
    for _ in range(n):
        sents = []
        for _ in range(rng.randint(1, 4)):
            w = [rng.choice(words) for _ in range(rng.randint(3, 12))]
            sents.append(" ".join(w).capitalize() + rng.choice([".", "!", "?", ", 42."]))
        docs.append(rng.choice([" ", "\n"]).join(sents))
    return docs


def _write_jsonl(path: Path, docs: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(docs)))
    return path


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("tok") / "t.model"
    train_tokenizer(_synthetic_docs(300, seed=1), VOCAB, p)
    return p


# ------------------------------------------------------------------------------------- inputs


def test_iter_documents_jsonl_and_text(tmp_path: Path) -> None:
    j = tmp_path / "a.jsonl"
    j.write_text('{"text": "one", "title": "x"}\n\n{"url": "u", "text": "two\\nlines"}\n')
    t = tmp_path / "b.txt"
    t.write_text("first doc\n\nstill first\n\n\n\fsecond doc\n")
    g = tmp_path / "c.jsonl.gz"
    g.write_bytes(gzip.compress(b'{"text": "zipped"}\n'))
    assert list(iter_documents([j, t, g])) == ["one", "two\nlines", "first doc\n\nstill first\n\n\n", "second doc\n", "zipped"]
    d = tmp_path / "dir"
    d.mkdir()
    (d / "2.txt").write_text("B")
    (d / "1.md").write_text("A")
    (d / "ignored.csv").write_text("C")
    assert list(iter_documents([d])) == ["A", "B"]


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"title": "no text"}', ":2: no \"text\" field"),
        ('{"text": 5}', ":2: \"text\" is not a string"),
        ("[1, 2]", ":2: no \"text\" field"),
        ('{"text": "unterminated', ":2: invalid JSON"),
        ('{"text": "\\ud800"}', ":2: \"text\" is not valid Unicode"),
    ],
)
def test_bad_jsonl_line_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "fine"}\n' + line + "\n")
    with pytest.raises(DataError) as e:
        list(iter_documents([p]))
    assert str(e.value).startswith(f"{p}{message}")


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such input"):
        list(iter_documents([tmp_path / "missing.jsonl"]))
    (tmp_path / "x.csv").write_text("a")
    with pytest.raises(DataError, match="unknown input type"):
        list(iter_documents([tmp_path / "x.csv"]))
    (tmp_path / "bin.txt").write_bytes(b"ok \xff\xfe")
    with pytest.raises(DataError, match="not valid UTF-8"):
        list(iter_documents([tmp_path / "bin.txt"]))


def test_default_val_docs() -> None:
    assert [default_val_docs(n) for n in (2, 9, 10, 645, 10**6)] == [1, 1, 1, 64, 50_000]


# ---------------------------------------------------------------------------------- tokenizer


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab \n\t€"), max_size=200), st.integers(1, 30))
def test_split_for_trainer_is_lossless_and_bounded(text: str, max_chars: int) -> None:
    parts = split_for_trainer(text, max_chars)
    assert "".join(parts) == text
    assert all(len(p) <= max_chars for p in parts)


def test_official_settings() -> None:
    s = OFFICIAL_TRAINER_SETTINGS
    assert (s["model_type"], s["byte_fallback"], s["split_digits"], s["normalization_rule_name"]) == ("bpe", True, True, "nmt_nfkc")
    assert (s["add_dummy_prefix"], s["character_coverage"], s["hard_vocab_limit"]) == (False, 0.999, False)
    assert (s["pad_id"], s["bos_id"], s["eos_id"], s["unk_id"]) == (0, 1, 2, 3)


def test_trained_tokenizer_has_official_ids(sp_model: Path) -> None:
    sp = load_tokenizer(sp_model)
    assert sp.get_piece_size() == VOCAB
    assert (sp.pad_id(), sp.bos_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2, 3)
    assert sp.is_byte(sp.piece_to_id("<0xE4>"))  # byte fallback present
    assert sp.encode("4242") == [sp.piece_to_id(c) for c in "4242"]  # split_digits: no "42" piece


def test_long_lines_are_fully_seen_by_the_trainer(tmp_path: Path) -> None:
    # One 60k-character line whose only word is "qwxzj"; SentencePiece's default
    # max_sentence_length (4192 bytes) would drop the line and never learn the word.
    docs = _synthetic_docs(80, seed=2) + [" ".join(["qwxzj"] * 10_000)]
    report = train_tokenizer(docs, VOCAB, tmp_path / "t.model", max_sentence_chars=2000)
    assert report["fed_chars"] == report["total_chars"] == sum(map(len, docs))
    assert report["documents"] == len(docs) and report["documents_split"] == 1
    n_chunks = len(split_for_trainer(docs[-1], 2000))
    assert n_chunks >= 30 and report["sentences_fed"] == report["sentences_total"] == 80 + n_chunks
    sp = load_tokenizer(tmp_path / "t.model")
    assert sp.piece_to_id("▁qwxzj") != sp.unk_id() and sp.id_to_piece(sp.piece_to_id("▁qwxzj")) == "▁qwxzj"


def test_sampling_is_reported_and_seeded(tmp_path: Path) -> None:
    docs = _synthetic_docs(300, seed=3)
    r1 = train_tokenizer(docs, VOCAB, tmp_path / "a.model", input_sentence_size=200, seed=5)
    r2 = train_tokenizer(docs, VOCAB, tmp_path / "b.model", input_sentence_size=200, seed=5)
    assert r1["sentences_fed"] == 200 and r1["sentences_total"] == 300 and r1["fed_chars"] < r1["total_chars"]
    assert r1 == r2 and (tmp_path / "a.model").read_bytes() == (tmp_path / "b.model").read_bytes()


def test_training_is_deterministic(tmp_path: Path, sp_model: Path) -> None:
    train_tokenizer(_synthetic_docs(300, seed=1), VOCAB, tmp_path / "again.model")
    assert (tmp_path / "again.model").read_bytes() == sp_model.read_bytes()


def test_too_small_corpus(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="too small"):
        train_tokenizer(["tiny corpus"] * 3, 1024, tmp_path / "t.model")
    assert not (tmp_path / "t.model").exists()


def test_load_and_check_errors(tmp_path: Path, sp_model: Path) -> None:
    with pytest.raises(DataError, match="tokenizer not found"):
        load_tokenizer(tmp_path / "none.model")
    (tmp_path / "junk.model").write_bytes(b"not a model at all")
    with pytest.raises(DataError, match="not a SentencePiece model"):
        load_tokenizer(tmp_path / "junk.model")
    sp = load_tokenizer(sp_model)
    check_vocab(sp, VOCAB)
    with pytest.raises(DataError) as e:
        check_vocab(sp, 1024, sp_model)
    assert str(e.value) == f"tokenizer {sp_model} has {VOCAB} pieces but model.vocab_size is 1024"


# ----------------------------------------------------------------------------- byte sidecar maths


def test_token_byte_counts_hand_cases() -> None:
    # gap before the first span and after the last → first / last token
    assert token_byte_counts(10, [2, 5], [5, 8]).tolist() == [5, 5]
    # byte-fallback pieces of one 4-byte char: 3 empty spans then the full span → 1 each
    assert token_byte_counts(5, [0, 1, 1, 1, 1], [1, 1, 1, 1, 5]).tolist() == [1, 1, 1, 1, 1]
    # ligature: "f" (0,0) + "in" (0,4) share 4 bytes evenly
    assert token_byte_counts(4, [0, 0], [0, 4]).tolist() == [2, 2]
    # uneven share: earlier pieces take the remainder
    assert token_byte_counts(5, [0, 0], [0, 5]).tolist() == [3, 2]
    # gap between spans goes to the next token
    assert token_byte_counts(9, [0, 6], [3, 9]).tolist() == [3, 6]
    assert token_byte_counts(3, [], []).tolist() == []


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_token_byte_counts_sum_exactly(data: st.DataObject) -> None:
    n = data.draw(st.integers(0, 60))
    m = data.draw(st.integers(1, 20))
    cuts = sorted(data.draw(st.lists(st.integers(0, n), min_size=2 * m, max_size=2 * m)))
    begins, ends = cuts[0::2], cuts[1::2]
    counts = token_byte_counts(n, begins, ends)
    assert counts.sum() == n and (counts >= 0).all() and counts.size == m


def test_offsets_parser_matches_sentencepiece(sp_model: Path) -> None:
    sp = load_tokenizer(sp_model)
    for text in TRICKY + _synthetic_docs(5):
        ids, begins, ends = encode_with_offsets(sp, text)
        assert ids == sp.encode(text)
        try:
            ref = sp.encode(text, return_type="offset_mapping", return_bytes=True)
        except (TypeError, ValueError):  # sentencepiece < 0.2.1: no offset_mapping to compare with
            continue
        assert [tuple(o) for o in ref["offsets"]] == list(zip(begins, ends, strict=True))


def _check_sums(sp: spm.SentencePieceProcessor, texts: list[str]) -> None:
    for text in texts:
        enc = encode_document(sp, text, with_bytes=True)
        if enc is None:
            assert sp.encode(text) == []
            continue
        ids, counts = enc
        assert ids.tolist() == [1, *sp.encode(text)]
        assert counts[0] == 0 and counts.size == ids.size
        assert int(counts.sum()) == len(text.encode("utf-8")), repr(text)


def test_sidecar_sums_equal_utf8_lengths_on_tricky_text(sp_model: Path) -> None:
    _check_sums(load_tokenizer(sp_model), TRICKY + [" ".join(TRICKY)])


@pytest.mark.parametrize("name", ["fineweb_8192_bpe.model", "fineweb_1024_bpe.model", "enwiki_1024_bpe.model"])
def test_sidecar_sums_with_shared_tokenizers(name: str) -> None:
    path = SHARED / "tokenizers" / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    texts = list(TRICKY)
    val = SHARED / "data" / "enwiki" / "val.jsonl"
    if val.exists():
        with open(val) as f:
            texts += [json.loads(next(f))["text"] for _ in range(5)]
    _check_sums(load_tokenizer(path), texts)  # fineweb_1024 has no byte fallback: <unk> spans


# ---------------------------------------------------------------------------------- build_dataset


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_build_dataset_counts_and_contents(tmp_path: Path) -> None:
    docs = _synthetic_docs(400, seed=4)
    docs[3] = "   "  # a val document with no token is skipped
    docs[7] = "emoji 😀 and ﬁ in val"
    src = _write_jsonl(tmp_path / "corpus.jsonl", docs)
    out = tmp_path / "out"
    m = build_dataset([src], out, vocab_size=VOCAB, val_docs=50, shard_tokens=1500, workers=1, progress=False)
    sp = load_tokenizer(out / "tokenizer.model")
    assert sp.get_piece_size() == VOCAB

    val_docs = [d for d in docs[:50] if sp.encode(d)]
    train_docs = docs[50:]
    ref_val = np.concatenate([[1, *sp.encode(d)] for d in val_docs])
    ref_train = np.concatenate([[1, *sp.encode(d)] for d in train_docs])
    val_files, train_files = list_shards(out, "val"), list_shards(out, "train")
    val_tokens = np.concatenate([read_shard(f, VOCAB) for f in val_files])
    train_tokens = np.concatenate([read_shard(f, VOCAB) for f in train_files])
    assert val_tokens.tolist() == ref_val.tolist() and train_tokens.tolist() == ref_train.tolist()
    assert all(read_shard(f).size == 1500 for f in train_files[:-1]) and len(train_files) > 2

    sidecars = list_byte_sidecars(out)
    assert [s.name for s in sidecars] == [f.name.replace("fineweb_val_", "pgolf_val_bytes_") for f in val_files]
    raw = np.concatenate([read_byte_sidecar(s, read_shard(f).size) for s, f in zip(sidecars, val_files, strict=True)])
    assert raw[val_tokens == 1].sum() == 0

    sv, st_ = m["splits"]["val"], m["splits"]["train"]
    assert (sv["documents"], sv["empty_documents_skipped"], st_["documents"]) == (49, 1, 350)
    assert sv["tokens"] == ref_val.size and st_["tokens"] == ref_train.size
    assert sv["bytes"] == int(raw.sum(dtype=np.int64)) == sum(len(d.encode()) for d in val_docs)
    assert st_["bytes"] == sum(len(d.encode()) for d in train_docs)
    assert m["vocab_size"] == VOCAB and m["tokenizer"]["sha256"] == _sha(out / "tokenizer.model")
    assert m["tokenizer_report"]["documents"] == 350 and m["tokenizer_report"]["fed_fraction"] == 1.0
    assert m["inputs"] == [{"path": str(src), "bytes": src.stat().st_size, "sha256": _sha(src)}]
    assert set(m["files"]) == {p.name for p in out.iterdir()} - {"manifest.json"}
    assert all(m["files"][n]["sha256"] == _sha(out / n) for n in m["files"])
    assert json.loads((out / "manifest.json").read_text()) == m


def test_build_is_deterministic_across_runs_and_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _write_jsonl(tmp_path / "corpus.jsonl", _synthetic_docs(1200, seed=5))
    kw = dict(vocab_size=VOCAB, shard_tokens=4000, progress=False)
    build_dataset([src], tmp_path / "a", workers=1, **kw)
    build_dataset([src], tmp_path / "b", workers=2, **kw)  # pool (fork when single-threaded)
    used: list[str] = []
    spawn = multiprocessing.get_context("spawn")
    monkeypatch.setattr(corpus, "_pool_context", lambda: used.append("spawn") or spawn)
    build_dataset([src], tmp_path / "c", workers=2, **kw)
    assert used == ["spawn"]
    a, b, c = ({p.name: _sha(p) for p in (tmp_path / d).iterdir()} for d in "abc")
    assert a == b == c and "manifest.json" in a and len(a) > 4


def test_build_with_given_tokenizer_and_existing_output(tmp_path: Path, sp_model: Path) -> None:
    src = _write_jsonl(tmp_path / "c.jsonl", _synthetic_docs(40, seed=6))
    out = tmp_path / "out"
    m = build_dataset([src], out, tokenizer=sp_model, vocab_size=VOCAB, workers=1, progress=False)
    assert (out / "tokenizer.model").read_bytes() == sp_model.read_bytes()
    assert m["tokenizer_report"] is None and m["val_docs"] == 4  # default: a tenth
    with pytest.raises(DataError, match="already holds a dataset"):
        build_dataset([src], out, tokenizer=sp_model, vocab_size=VOCAB, workers=1, progress=False)
    build_dataset([src], out, tokenizer=sp_model, vocab_size=VOCAB, workers=1, progress=False, overwrite=True)
    with pytest.raises(DataError, match=f"has {VOCAB} pieces but model.vocab_size is 1024"):
        build_dataset([src], tmp_path / "o2", tokenizer=sp_model, vocab_size=1024, workers=1, progress=False)


def test_build_missing_text_is_data_error(tmp_path: Path) -> None:
    p = tmp_path / "c.jsonl"
    p.write_text('{"text": "a"}\n{"text": "b"}\n{"body": "c"}\n')
    with pytest.raises(DataError, match=r"c\.jsonl:3: no \"text\" field"):
        build_dataset([p], tmp_path / "out", vocab_size=VOCAB, workers=1, progress=False)
    assert not (tmp_path / "out" / "manifest.json").exists()


# --------------------------------------------------------------------------------------- embedded


def test_module_document_order_and_skips(tmp_path: Path) -> None:
    src = b'"""Module doc."""\nclass A:\n    """Class A.\n\n    More."""\n    def f(self):\n        """  Method f.  """\n\ndef g():\n    pass\n'
    assert embedded.module_document(src) == "Module doc.\n\nClass A.\n\nMore.\n\nMethod f."
    assert embedded.module_document(b"def broken(:\n") is None
    root = tmp_path / "lib"
    for rel, body in {
        "a.py": b'"""Alpha module."""',
        "pkg/b.py": b'"""Beta module."""',
        "test/t.py": b'"""Test suite."""',
        "pkg/tests/u.py": b'"""Tests."""',
        "test_x.py": b'"""Test file."""',
        "site-packages/s.py": b'"""Third party."""',
        "gen.py": b'# Auto-generated by a tool.\n"""Generated."""',
        "codec.py": b'""" Codec generated from MAPPINGS with gencodec.py."""',
        "nodoc.py": b"x = 1\n",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(body)
    docs = embedded.stdlib_documents(root)
    assert sorted(docs) == [("a.py", "Alpha module."), ("pkg/b.py", "Beta module.")]
    assert [r for r, _ in docs] == sorted(["a.py", "pkg/b.py"], key=lambda r: hashlib.sha256(r.encode()).hexdigest())


def test_embedded_data_dir_builds_once_concurrently(tmp_path: Path) -> None:
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(embedded.embedded_data_dir(tmp_path))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    d = results[0]
    assert results == [d, d] and d.parent == tmp_path and d.name.startswith("embedded-py")
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == [d.name]  # no temp dir left
    m = json.loads((d / "manifest.json").read_text())
    assert m["vocab_size"] == 1024 and m["tokenizer_report"]["fed_fraction"] == 1.0
    assert m["splits"]["train"]["tokens"] > 300_000 and m["splits"]["val"]["documents"] >= 20
    before = (d / "manifest.json").stat().st_mtime_ns
    assert embedded.embedded_data_dir(tmp_path) == d
    assert (d / "manifest.json").stat().st_mtime_ns == before  # reused, not rebuilt
