"""CaseOps ([04-18] PR #1729): decode(encode(x)) == x on every document of every corpus here and on
arbitrary strings; the byte sidecar counts original bytes; a CaseOps dataset is scored over them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgolf.data import caseops as C
from pgolf.data.corpus import build_dataset
from pgolf.data.embedded import stdlib_documents
from pgolf.data.shards import list_byte_sidecars, list_shards, read_byte_sidecar, read_shard
from pgolf.data.tokenizer import has_user_symbols, load_tokenizer

ENWIKI = Path(__file__).resolve().parents[2] / "shared" / "data" / "enwiki"

EXAMPLES = [
    ("The NASA Launch", "\ue001the \ue002nasa \ue001launch"),
    ("iPhone", "i\ue003phone"),
    ("ABc", "\ue001a\ue003bc"),
    ("A", "\ue001a"),
    ("McDonald's", "\ue001mc\ue003donald's"),
    ("ÉCOLE", "É\ue002cole"),  # non-ASCII letters pass unchanged
    ("x\ue001y", "x\ue004\ue001y"),  # a literal operator is escaped
    ("ABC123def", "\ue002abc123def"),
]


@pytest.mark.parametrize("text, encoded", EXAMPLES)
def test_examples(text, encoded):
    assert C.encode(text) == encoded and C.decode(encoded) == text


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("aZbYcX \n1é") + list(C.OPERATORS) + ["😀"]), max_size=60) | st.text())
def test_round_trip_and_weights_on_arbitrary_strings(text):
    enc, w = C.encode_with_weights(text)
    assert C.decode(enc) == text and C.encode(text) == enc
    assert w.sum() == len(text.encode("utf-8")) and w.size == len(enc.encode("utf-8"))
    assert set(np.unique(w)) <= {0, 1}
    assert not any("A" <= c <= "Z" for c in enc)  # no ASCII capital survives: case lives in the operators


def test_malformed_operator_streams_are_errors():
    for bad in ["\ue001", "\ue002 x", "\ue0031", "abc\ue004"]:
        with pytest.raises(C.CaseOpsError):
            C.decode(bad)


def _corpora():
    yield "stdlib", (t for _n, t in stdlib_documents())
    if ENWIKI.is_dir():
        for f in sorted(ENWIKI.glob("*.jsonl")):
            yield f"enwiki/{f.name}", (json.loads(line)["text"] for line in f.open())


def test_round_trip_on_every_document_of_every_corpus():
    """Every document of the embedded corpus and of ../shared/data/enwiki (when present)."""
    seen = {}
    for name, docs in _corpora():
        n = 0
        for doc in docs:
            enc = C.encode(doc)
            assert C.decode(enc) == doc, (name, n)
            n += 1
        seen[name] = n
    assert seen["stdlib"] > 100
    if ENWIKI.is_dir():
        assert sum(v for k, v in seen.items() if k.startswith("enwiki")) > 1000


def test_caseops_dataset_builds_with_reserved_operators_and_original_byte_sidecar(tmp_path):
    docs = [t for _n, t in stdlib_documents()[:160]]
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    out = tmp_path / "data"
    m = build_dataset([src], out, vocab_size=384, val_docs=20, workers=1, progress=False, caseops=True)
    assert m["text_transform"] == "caseops_v1"
    sp = load_tokenizer(out / "tokenizer.model")
    assert has_user_symbols(sp, C.OPERATORS)
    # sidecar: per document, the counts sum to the original UTF-8 bytes (not the encoded ones)
    toks = np.concatenate([read_shard(p) for p in list_shards(out, "val")])
    counts = np.concatenate([read_byte_sidecar(p) for p in list_byte_sidecars(out)])
    starts = np.flatnonzero(toks == 1)
    per_doc = np.add.reduceat(counts.astype(np.int64), starts)
    kept = [d for d in docs[:20] if d.strip()]
    assert per_doc.tolist() == [len(d.encode("utf-8")) for d in kept]
    # the tokens decode (SentencePiece, then CaseOps) to the document up to NFKC whitespace folding
    first = toks[starts[0] + 1 : starts[1]].tolist()
    text = C.decode(sp.decode(first))
    assert " ".join(text.split()) == " ".join(kept[0].split())
    # a tokenizer without the operators is refused for --caseops
    from pgolf.errors import DataError

    plain = tmp_path / "plain"
    build_dataset([src], plain, vocab_size=384, val_docs=20, workers=1, progress=False)
    with pytest.raises(DataError, match="user-defined pieces"):
        build_dataset([src], tmp_path / "again", tokenizer=plain / "tokenizer.model", vocab_size=384,
                      val_docs=20, workers=1, progress=False, caseops=True)


def test_a_caseops_run_is_scored_over_original_bytes(tmp_path, capsys):
    from pgolf.cli import main

    docs = [t for _n, t in stdlib_documents()[:160]]
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    assert main(["data", "build", "--input", str(src), "--out", str(tmp_path / "d"), "--vocab-size", "384",
                 "--val-docs", "20", "--workers", "1", "--caseops"]) == 0
    run = tmp_path / "run"
    assert main(["run", "tiny", "--set", "model.vocab_size=384", "--set", f"data.path={tmp_path / 'd'}",
                 "--out", str(run)]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["val_bpb_bytes"] == "sidecar" and m["val_bpb"] == m["val_bpb_raw"]
    assert "val_bpb:byte_sidecar:enabled" in (run / "train.log").read_text()
