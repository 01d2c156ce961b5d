"""Validation provenance: the fingerprints against a plain-Python reference of the documented rules,
overlap evidence (shard, offset, document) across shard boundaries, the build leaving copies out,
and training refusing train shards that hold a validation document."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from pgolf.data import overlap as O
from pgolf.data import provenance as P
from pgolf.data.loader import DistributedTokenLoader
from pgolf.data.shards import list_shards, read_shard, shard_name, write_shard
from pgolf.errors import DataError

M64 = (1 << 64) - 1


# ------------------------------------------------------------------ plain-Python reference of the rules


def _mix(x: int) -> int:
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & M64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def _eligible(t: int) -> bool:
    return t != P.BOS_ID and (t * P.ELIGIBLE_MUL) % 65536 < 65536 // P.SAMPLE


def _shingle_hash(ids: list[int]) -> int:
    w = [sum(ids[4 * j + i] << (16 * i) for i in range(4)) for j in range(4)]
    k = [int(x) for x in P.K]
    acc = (w[0] * k[0]) & M64
    for j in range(1, 4):
        acc = ((acc ^ w[j]) * k[j]) & M64
    return _mix(acc) >> 32


def _docs(tokens: list[int]) -> list[list[int]]:
    """Ids of each BOS-delimited document (a leading segment without BOS is a document too)."""
    out: list[list[int]] = []
    for i, t in enumerate(tokens):
        if t == P.BOS_ID:
            out.append([])
        elif not out:
            out.append([t]) if i == 0 else None
        else:
            out[-1].append(t)
    return out


def _sampled(doc: list[int]) -> set[int]:
    return {_shingle_hash(doc[p:p + P.NGRAM]) for p in range(len(doc) - P.NGRAM + 1) if _eligible(doc[p])}


def _reference(val: list[int], train: list[int]) -> dict[int, tuple[int, str]]:
    """{train doc index: (val doc, kind)} by the module docstring's rules."""
    vdocs, tdocs = _docs(val), _docs(train)
    exact = {}
    for i, d in enumerate(vdocs):
        exact.setdefault(tuple(d), i)
    sketches = [sorted(_sampled(d))[:P.SKETCH] for d in vdocs]
    out = {}
    for j, d in enumerate(tdocs):
        if tuple(d) in exact:
            out[j] = (exact[tuple(d)], "exact")
            continue
        have = _sampled(d)
        for i, sk in enumerate(sketches):
            if len(sk) >= P.MIN_ANCHORS and sum(h in have for h in sk) >= math.ceil(0.75 * len(sk)):
                out[j] = (i, "near")
                break
    return out


# ------------------------------------------------------------------------------------------ helpers


def _doc(rng: np.random.Generator, n: int, vocab: int = 300) -> np.ndarray:
    return np.r_[P.BOS_ID, rng.integers(2, vocab, n)].astype(np.uint16)


def _mutate(rng: np.random.Generator, doc: np.ndarray, frac: float) -> np.ndarray:
    d = doc.copy()
    idx = rng.choice(np.arange(1, d.size), int(frac * (d.size - 1)), replace=False)
    d[idx] = rng.integers(2, 300, idx.size)
    return d


def test_exact_hash_is_blake2b_of_the_little_endian_ids() -> None:
    ids = [5, 300, 65535, 2]
    ref = hashlib.blake2b(b"".join(i.to_bytes(2, "little") for i in ids), digest_size=8, person=b"pgolf-val-doc")
    assert P.doc_hash(np.array(ids, np.uint16)) == int.from_bytes(ref.digest(), "little")
    assert P.doc_hash(np.array(ids[::-1], np.uint16)) != P.doc_hash(np.array(ids, np.uint16))


def test_fingerprints_match_the_reference_and_survive_the_manifest() -> None:
    rng = np.random.default_rng(0)
    val = np.concatenate([_doc(rng, int(n)) for n in rng.integers(1, 400, 30)])
    fp = P.ValFingerprints.from_tokens(val)
    vdocs = _docs(val.tolist())
    assert fp.documents == len(vdocs) == 30
    assert fp.lengths.tolist() == [len(d) for d in vdocs]
    for i, d in enumerate(vdocs):
        sk = sorted(_sampled(d))[:P.SKETCH]
        assert fp.anchors[i] == len(sk) and fp.sketch[i, :len(sk)].tolist() == sk
        assert fp.exact[i] == P.doc_hash(np.array(d, np.uint16))
    assert {int(a) for a in fp.anchors} & {0, P.SKETCH} == {0, P.SKETCH}  # short and long documents both present
    back = P.ValFingerprints.from_manifest(json.loads(json.dumps(fp.to_manifest())), "m")
    assert back.mismatch(fp) is None and np.array_equal(back.sketch, fp.sketch) and np.array_equal(back.anchors, fp.anchors)


@pytest.mark.parametrize("seed", range(4))
def test_scan_agrees_with_the_reference_on_planted_copies(seed: int) -> None:
    rng = np.random.default_rng(seed)
    vdocs = [_doc(rng, int(n)) for n in rng.integers(20, 500, 12)]
    val = np.concatenate(vdocs)
    train_docs = [_doc(rng, int(n)) for n in rng.integers(20, 500, 25)]
    for i in range(8):  # copies, edited copies, pasted-in copies, heavily edited copies
        v = vdocs[int(rng.integers(len(vdocs)))]
        kind = i % 4
        if kind == 0:
            d = v.copy()
        elif kind == 1:
            d = _mutate(rng, v, 0.02)
        elif kind == 2:
            d = np.r_[_doc(rng, 50), v[1:], rng.integers(2, 300, 30)].astype(np.uint16)
        else:
            d = _mutate(rng, v, 0.5)
        train_docs.insert(int(rng.integers(len(train_docs) + 1)), d)
    train = np.concatenate(train_docs)
    starts = np.cumsum([0] + [d.size for d in train_docs[:-1]])
    got = {int(np.searchsorted(starts, s)): (v, kind) for s, _n, v, kind, _h, _k in P.scan_tokens(train, P.ValFingerprints.from_tokens(val))}
    ref = _reference(val.tolist(), train.tolist())
    assert got == ref and any(k == "exact" for _v, k in ref.values()) and any(k == "near" for _v, k in ref.values())


def test_near_rule_cases() -> None:
    rng = np.random.default_rng(7)
    v = _doc(rng, 800)
    fp = P.ValFingerprints.from_tokens(v)
    assert fp.anchors[0] == P.SKETCH

    def kinds(doc: np.ndarray) -> list[str]:
        return [k for *_x, k, _h, _kk in P.scan_tokens(doc, fp)]

    assert kinds(v) == ["exact"]
    assert kinds(np.r_[_doc(rng, 300), v[1:], rng.integers(2, 300, 500)].astype(np.uint16)) == ["near"]  # pasted in
    assert kinds(_mutate(rng, v, 0.01)) == ["near"]  # a few edits
    assert kinds(_mutate(rng, v, 0.6)) == []  # most 16-token passages broken
    shared = np.r_[_doc(rng, 400), v[200:240], rng.integers(2, 300, 400)].astype(np.uint16)
    assert kinds(shared) == []  # one shared 40-token passage is not a near-duplicate
    short = _doc(rng, 30)
    fps = P.ValFingerprints.from_tokens(short)
    assert fps.anchors[0] < P.MIN_ANCHORS
    assert [k for *_x, k, _h, _kk in P.scan_tokens(short, fps)] == ["exact"]
    assert P.scan_tokens(np.r_[short, 5, 6].astype(np.uint16), fps) == []  # too short for the near rule
    assert (P.near_threshold(8), P.near_threshold(4), P.near_threshold(3)) == (6, 3, 0)


def _write_stream(d: Path, tokens: np.ndarray, cuts: list[int]) -> list[Path]:
    d.mkdir(parents=True, exist_ok=True)
    files = []
    for i, (a, b) in enumerate(zip([0, *cuts], [*cuts, tokens.size], strict=True)):
        write_shard(d / shard_name("train", i), tokens[a:b])
        files.append(d / shard_name("train", i))
    return files


def test_find_overlap_evidence_across_shard_boundaries(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    vdocs = [_doc(rng, 200) for _ in range(6)]
    val = np.concatenate(vdocs)
    parts = [_doc(rng, 100), vdocs[4], _doc(rng, 100), vdocs[1], _doc(rng, 50), _mutate(rng, vdocs[2], 0.01)]
    train = np.concatenate(parts)
    at = np.cumsum([0] + [p.size for p in parts])  # document starts in the stream
    # cut inside the copy of val doc 1 and twice inside the edited copy of val doc 2 (it spans 3 shards)
    cuts = [int(at[3] + 80), int(at[5] + 60), int(at[5] + 120)]
    files = _write_stream(tmp_path / "d", train, cuts)
    found = O.find_overlap(files, val)
    assert [(Path(o.shard).name, o.offset, o.length, o.val_doc, o.kind) for o in found] == [
        (files[0].name, int(at[1]), 201, 4, "exact"),
        (files[0].name, int(at[3]), 201, 1, "exact"),
        (files[1].name, int(at[5] - cuts[0]), 201, 2, "near"),
    ]
    assert found[2].anchors == P.SKETCH and found[2].anchors_hit >= 6
    assert "validation document 1" in found[1].describe() and found[1].describe().startswith(str(files[0]))
    # the same from a directory and a manifest entry; and per shard, the straddling copies are cut
    write_shard(tmp_path / "d" / shard_name("val", 0), val)
    assert O.find_overlap(tmp_path / "d", tmp_path / "d") == found
    assert O.find_overlap(tmp_path / "d", {"validation_fingerprints": P.ValFingerprints.from_tokens(val).to_manifest()}) == found
    assert [o.kind for o in O.find_overlap(files[0], val)] == ["exact"]  # doc 1's copy cut at the shard end


def test_find_overlap_bad_input(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such train shard"):
        O.find_overlap(tmp_path / "nope.bin", np.array([1, 2, 3], np.uint16))
    (tmp_path / "m.json").write_text(json.dumps({"format": "pgolf-dataset-v1"}))
    with pytest.raises(DataError, match="has no validation_fingerprints"):
        O.load_fingerprints(tmp_path / "m.json")
    good = P.ValFingerprints.from_tokens(np.array([1, 5, 6, 1, 7], np.uint16)).to_manifest()
    for key, value, msg in [("rule", "other", "rule 'other'"), ("exact", "!!", "exact is not 2 base64"),
                            ("lengths", "AAAA", "lengths is not 2"), ("documents", -1, "not a count")]:
        with pytest.raises(DataError, match=msg):
            P.ValFingerprints.from_manifest({**good, key: value}, "m.json")


# ------------------------------------------------------------------------------ build and training


def _corpus(tmp_path: Path, docs: list[str]) -> Path:
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    return src


def test_build_records_fingerprints_and_leaves_copies_of_validation_out(tiny_data: Path, tmp_path: Path) -> None:
    from pgolf.data.corpus import build_dataset

    lines = (tiny_data.parent / "docs.jsonl").read_text().splitlines()  # the fixture's stdlib documents
    docs = [json.loads(x)["text"] for x in lines[:60]]
    docs += [docs[3], docs[5] + "\n\nOne more paragraph at the end of a copied document."]  # exact + near copies
    out = tmp_path / "d"
    m = build_dataset([_corpus(tmp_path, docs)], out, tokenizer=tiny_data / "tokenizer.model", vocab_size=384,
                      val_docs=10, workers=1, progress=False)
    assert m["splits"]["train"]["validation_overlaps_dropped"] == {"exact": 1, "near": 1}
    assert m["splits"]["train"]["documents"] == 50
    fp = O.load_fingerprints(out / "manifest.json")
    assert fp.documents == 10 and O.load_fingerprints(out).mismatch(fp) is None
    assert O.find_overlap(out, out) == []
    # the stdlib corpus has real near-duplicates: encodings/utf_8.py and latin_1.py (train) repeat
    # encodings/unicode_escape.py's docstring (val) but for the codec name; the build left them out
    tiny = json.loads((tiny_data / "manifest.json").read_text())
    assert tiny["splits"]["train"]["validation_overlaps_dropped"] == {"exact": 0, "near": 2}
    assert O.find_overlap(tiny_data, tiny_data / "manifest.json") == []


def _contaminated(tiny_data: Path, tmp_path: Path) -> tuple[Path, int, int]:
    """tiny_data with validation document 4 copied into a new last train shard, after 7 train tokens."""
    d = tmp_path / "dirty"
    shutil.copytree(tiny_data, d)
    val = np.concatenate([read_shard(f) for f in list_shards(d, "val")])
    starts = np.flatnonzero(val == 1)
    copy = val[starts[4]:starts[5]]
    n = len(list_shards(d, "train"))
    write_shard(d / shard_name("train", n), np.r_[1, 20, 21, 22, 23, 24, 25, copy, 1, 30, 31].astype(np.uint16))
    return d, n, 7


def test_training_refuses_a_train_shard_holding_a_validation_document(tiny_data: Path, tmp_path: Path) -> None:
    from pgolf.config import RunConfig
    from pgolf.data.prepare import prepare_data

    d, n, off = _contaminated(tiny_data, tmp_path)
    cfg = RunConfig.from_dict({"data": {"path": str(d)}, "model": {"vocab_size": 384}})
    data = prepare_data(cfg)
    checker = data.overlap_checker()
    assert checker is not None
    loader = DistributedTokenLoader(data.spec.train_files, overlap=checker)
    with pytest.raises(DataError) as e:
        for _ in range(10_000):
            loader.next_batch(256, 64)
    assert str(e.value) == (f"{d / shard_name('train', n)}: the train document at token {off} "
                            f"({int(np.diff(np.flatnonzero(data.val.tokens == 1))[4])} tokens) is an exact copy of "
                            "validation document 4: training refuses validation data in the train shards "
                            "(rebuild the dataset with `pgolf data build`, which keeps them apart)")
    clean = DistributedTokenLoader(data.spec.train_files[:-1], overlap=O.OverlapChecker(checker.fp, data.spec.train_files[:-1]))
    for _ in range(200):  # wraps around the clean shards several times without complaint
        clean.next_batch(256, 64)


def test_pgolf_train_refuses_in_one_line(tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pgolf.cli import main

    d, n, off = _contaminated(tiny_data, tmp_path)
    for f in list_shards(d, "train")[:-1]:
        f.unlink()  # the contaminated shard is the first one read
    (d / shard_name("train", n)).rename(d / shard_name("train", 0))
    rc = main(["train", "tiny", "--set", "model.vocab_size=384", "--set", f"data.path={d}", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1
    assert err[0].startswith("pgolf: error: ") and f"train document at token {off}" in err[0]
    assert "exact copy of validation document 4" in err[0]
    # data.overlap_check=false trusts the data (the check costs time inside the training clock)
    rc = main(["train", "tiny", "--set", "model.vocab_size=384", "--set", f"data.path={d}", "--set", "train.iterations=1",
               "--set", "data.overlap_check=false", "--out", str(tmp_path / "r2")])
    assert rc == 0, capsys.readouterr().err


def test_val_shards_must_match_the_manifest_and_official_data_is_not_second_guessed(tiny_data: Path, tmp_path: Path) -> None:
    from pgolf.config import RunConfig
    from pgolf.data.prepare import prepare_data

    d = tmp_path / "swapped"
    shutil.copytree(tiny_data, d)
    val = read_shard(d / shard_name("val", 0))
    write_shard(d / shard_name("val", 0), np.r_[val[:-1], (int(val[-1]) + 1) % 384 or 2].astype(np.uint16))
    cfg = RunConfig.from_dict({"data": {"path": str(d)}, "model": {"vocab_size": 384}})
    with pytest.raises(DataError, match=r"manifest.json: validation document \d+ of the val shards differs"):
        prepare_data(cfg).overlap_checker()
    m = json.loads((d / "manifest.json").read_text())
    m["source"] = "official"
    (d / "manifest.json").write_text(json.dumps(m))
    assert prepare_data(cfg).overlap_checker() is None


def test_without_pgolf_fingerprints_a_small_share_is_tolerated_and_a_split_mistake_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    vdocs = [_doc(rng, 120) for _ in range(300)]
    fp = P.ValFingerprints.from_documents(vdocs)
    few = np.concatenate([_doc(rng, 90), vdocs[7], _doc(rng, 90), vdocs[250], vdocs[250]])  # 2 of 300 documents
    files = _write_stream(tmp_path / "few", few, [])
    c = O.OverlapChecker(fp, files, O.FOREIGN_TOLERANCE)
    c.check(0, read_shard(files[0]))
    assert [(o.val_doc, o.kind) for o in c.found] == [(7, "exact"), (250, "exact"), (250, "exact")]
    with pytest.raises(DataError, match="validation document 7"):  # strict: the first one stops it
        O.OverlapChecker(fp, files).check(0, read_shard(files[0]))
    many = np.concatenate([_doc(rng, 90), *vdocs[100:104]])  # 4 of 300 > 1 %
    files = _write_stream(tmp_path / "many", many, [])
    with pytest.raises(DataError, match=r"; 4 of the 300 validation documents \(1\.3%\) are in the train shards, "
                                        r"more than the 1% allowed without pgolf fingerprints"):
        O.OverlapChecker(fp, files, O.FOREIGN_TOLERANCE).check(0, read_shard(files[0]))


def test_a_directory_without_manifest_is_checked_with_the_tolerance(tiny_data: Path, tmp_path: Path) -> None:
    from pgolf.config import RunConfig
    from pgolf.data.prepare import prepare_data

    d, n, _off = _contaminated(tiny_data, tmp_path)
    (d / "manifest.json").unlink()
    data = prepare_data(RunConfig.from_dict({"data": {"path": str(d)}, "model": {"vocab_size": 384}}))
    checker = data.overlap_checker()
    assert checker is not None and checker.tolerance == O.FOREIGN_TOLERANCE
    with pytest.raises(DataError, match=r"1 of the 20 validation documents \(5\.0%\)"):  # 1 of 20 is over 1 %
        checker.check(n, read_shard(d / shard_name("train", n)))


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_prescan_split_over_ranks_finds_what_the_whole_scan_finds(tmp_path: Path, world: int) -> None:
    """Rank r checks its block of shards (and the head of the next one): together the ranks find every
    validation document find_overlap finds, including the copies cut by shard (and block) boundaries."""
    rng = np.random.default_rng(5)
    vdocs = [_doc(rng, 200) for _ in range(6)]
    val = np.concatenate(vdocs)
    parts = [_doc(rng, 100), vdocs[4], _doc(rng, 100), vdocs[1], _doc(rng, 50), _mutate(rng, vdocs[2], 0.01),
             _doc(rng, 80), vdocs[5]]
    train = np.concatenate(parts)
    at = np.cumsum([0] + [p.size for p in parts])
    cuts = [int(at[1] + 50), int(at[3] + 80), int(at[5] + 60), int(at[5] + 120), int(at[7] + 10)]
    files = _write_stream(tmp_path / "d", train, cuts)
    want = {o.val_doc for o in O.find_overlap(files, val)}
    assert want == {1, 2, 4, 5}
    fp = P.ValFingerprints.from_tokens(val)
    local = []
    for rank in range(world):
        c = O.OverlapChecker(fp, files, tolerance=1.0)  # never refuses: collect what each rank sees
        c.prescan(rank, world, reduce=lambda h, op: (local.append(h.copy()), h)[1] if h.size == len(vdocs) else h)
        assert c.checked == set(range(len(files)))  # the loader checks nothing afterwards
    assert {int(i) for h in local for i in np.flatnonzero(h)} == want
    # strict: every rank refuses, with the reduced verdict, even a rank whose own block is clean
    # strict, ranks in parallel: every rank refuses with the same evidence, even a rank whose block is clean
    errors = _ThreadRanks(world).run(lambda r, red: O.OverlapChecker(fp, files).prescan(r, world, reduce=red))
    assert all(isinstance(e, DataError) for e in errors) and len({str(e) for e in errors}) == 1
    assert str(errors[0]).startswith(O.find_overlap(files, val)[0].describe() + " (and 3 more)")
    clean = _write_stream(tmp_path / "clean", np.concatenate([_doc(rng, 90) for _ in range(9)]), [200, 400, 600])
    assert O.OverlapChecker(fp, clean).prescan(0, 1) == (4, 9 * 91)  # _doc: BOS + n ids



class _ThreadRanks:
    """``world`` threads as ranks with an all-reduce over a barrier (a stand-in for torch.distributed)."""

    def __init__(self, world: int) -> None:
        import threading

        self.world, self.barrier, self.slots = world, threading.Barrier(world), [None] * world

    def reduce(self, rank: int):
        def all_reduce(h: np.ndarray, op: str) -> np.ndarray:
            self.slots[rank] = np.array(h, dtype=np.float64)
            self.barrier.wait()
            out = {"max": np.max, "min": np.min, "sum": np.sum}[op](np.stack(self.slots), axis=0)
            self.barrier.wait()
            return out
        return all_reduce

    def run(self, fn) -> list:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.world) as ex:
            futures = [ex.submit(fn, r, self.reduce(r)) for r in range(self.world)]
            out = []
            for f in futures:
                try:
                    out.append(f.result(timeout=60))
                except DataError as e:
                    out.append(e)
            return out
