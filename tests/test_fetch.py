"""pgolf.data.fetch against a local stand-in for the Hugging Face Hub (no network).

The fake remote mirrors the real export layout (``datasets/manifest.json``,
``datasets/datasets/fineweb10B_sp1024/*.bin``, ``datasets/tokenizers/*.model``). Most tests use a
fake ``Hub`` object; one drives the real ``huggingface_hub.hf_hub_download`` against a tiny HTTP
server on 127.0.0.1 speaking enough of the Hub's resolve API.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import random
import shutil
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pgolf.data import fetch
from pgolf.data.fetch import HfHub, fetch_dataset
from pgolf.errors import ConfigError, DataError

REPO = "willdepueoai/parameter-golf"
DATASET = "datasets/datasets/fineweb10B_sp1024"
TOKENIZER = "datasets/tokenizers/fineweb_1024_bpe.model"
SHARD_SIZE = 8
VAL_SIZES = [8, 3]  # the last shard of a split is short
TRAIN_SIZES = [8, 8, 5]


def shard_bytes(tokens) -> bytes:
    tokens = np.asarray(tokens, dtype="<u2")
    header = np.zeros(256, dtype="<i4")
    header[:3] = [20240520, 1, tokens.size]
    return header.tobytes() + tokens.tobytes()


@pytest.fixture(scope="module")
def sp_model() -> bytes:
    """A real 1024-piece SentencePiece BPE model (trained in ~0.2 s on synthetic words)."""
    import sentencepiece as spm

    rng = random.Random(0)
    words = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
        for _ in range(3000)
    ]
    lines = [" ".join(rng.choice(words) for _ in range(20)) for _ in range(3000)]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=buf,
        vocab_size=1024,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        minloglevel=2,
        num_threads=1,
    )
    return buf.getvalue()


def make_remote(root: Path, sp_model: bytes, *, with_sha: bool = False) -> Path:
    """Write the fake export under ``root``, as the challenge's export script lays it out."""
    rng = np.random.default_rng(0)
    stats = {
        "files_val": len(VAL_SIZES),
        "files_train": len(TRAIN_SIZES),
        "tokens_val": sum(VAL_SIZES),
        "tokens_train": sum(TRAIN_SIZES),
    }
    files = {}
    for split, sizes in (("val", VAL_SIZES), ("train", TRAIN_SIZES)):
        for i, n in enumerate(sizes):
            data = shard_bytes(np.concatenate([[1], rng.integers(4, 1024, n - 1)]))
            name = f"fineweb_{split}_{i:06d}.bin"
            (root / DATASET).mkdir(parents=True, exist_ok=True)
            (root / DATASET / name).write_bytes(data)
            files[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (root / "datasets/tokenizers").mkdir(parents=True)
    (root / TOKENIZER).write_bytes(sp_model)
    (root / "datasets/tokenizers/fineweb_1024_bpe.vocab").write_text("unused\n")
    dataset = {
        "name": "fineweb10B_sp1024",
        "tokenizer_name": "sp_bpe_1024",
        "vocab_size": 1024,
        "path": "datasets/fineweb10B_sp1024",
        "stats": stats,
    }
    if with_sha:
        dataset["files"] = files
    manifest = {
        "version": "10B",
        "shard_size": SHARD_SIZE,
        "tokenizers": [
            {
                "name": "sp_bpe_1024",
                "kind": "sentencepiece_bpe",
                "vocab_size": 1024,
                "model_path": "tokenizers/fineweb_1024_bpe.model",
                "vocab_path": "tokenizers/fineweb_1024_bpe.vocab",
            }
        ],
        "datasets": [dataset],
    }
    (root / "datasets/manifest.json").write_text(json.dumps(manifest))
    return root


class FakeHub:
    """Serves ``root`` like ``hf_hub_download(local_dir=...)``: writes ``local_dir/remote_path``.

    ``faults[remote_path]`` is a list consumed one per call: bytes to serve instead of the real
    file, or an exception to raise (after writing half the file, to mimic a broken transfer).
    """

    def __init__(self, root: Path, faults: dict | None = None) -> None:
        self.root, self.faults = root, faults or {}
        self.calls: Counter[str] = Counter()
        self.forced: list[str] = []

    def download(self, remote_path: str, local_dir: Path, *, force: bool = False) -> Path:
        self.calls[remote_path] += 1
        if force:
            self.forced.append(remote_path)
        src = self.root / remote_path
        if not src.is_file():
            raise FileNotFoundError(remote_path)
        data = src.read_bytes()
        dest = Path(local_dir) / remote_path
        dest.parent.mkdir(parents=True, exist_ok=True)
        fault = self.faults.get(remote_path, [])
        if fault:
            f = fault.pop(0)
            if isinstance(f, BaseException):
                dest.write_bytes(data[: len(data) // 2])
                raise f
            data = f
        dest.write_bytes(data)
        return dest


class CacheHub(FakeHub):
    """Returns paths outside local_dir (like the hub's own cache): the fetch must copy, never move."""

    def download(self, remote_path: str, local_dir: Path, *, force: bool = False) -> Path:
        self.calls[remote_path] += 1
        return self.root / remote_path


@pytest.fixture
def remote(tmp_path, sp_model) -> Path:
    return make_remote(tmp_path / "remote", sp_model)


def _shard_names(n_train: int) -> list[str]:
    return [f"fineweb_val_{i:06d}.bin" for i in range(len(VAL_SIZES))] + [
        f"fineweb_train_{i:06d}.bin" for i in range(n_train)
    ]


def _assert_clean(out: Path) -> None:
    """No temp files beside the final names, nothing left staged."""
    assert not list(out.glob(".*.tmp"))
    assert not [p for p in (out / fetch.STAGING_DIRNAME).rglob("*.bin")]


def test_full_fetch(tmp_path, remote):
    out, hub = tmp_path / "out", FakeHub(remote)
    summary = fetch_dataset("sp1024", 2, out, hub=hub, progress=False)

    names = _shard_names(2)
    assert sorted(p.name for p in out.glob("fineweb_*.bin")) == sorted(names)
    for name in names:  # byte-identical copies, at the top of out_dir
        assert (out / name).read_bytes() == (remote / DATASET / name).read_bytes()
    assert (out / "tokenizer.model").read_bytes() == (remote / TOKENIZER).read_bytes()
    assert not (out / "fineweb_train_000002.bin").exists()  # only the first N train shards
    _assert_clean(out)

    m = json.loads((out / "manifest.json").read_text())
    tok = (remote / TOKENIZER).read_bytes()
    assert (m["format"], m["source"], m["vocab_size"], m["bos_id"], m["shard_tokens"]) == (
        "pgolf-dataset-v1",
        "official",
        1024,
        1,
        SHARD_SIZE,
    )
    assert m["tokenizer"] == {
        "file": "tokenizer.model",
        "sha256": hashlib.sha256(tok).hexdigest(),
        "source": "official",
    }
    assert (
        m["splits"]
        == {
            "val": {
                "tokens": 11,
                "shards": names[:2],
                "byte_sidecars": [],
            },  # no sidecar in the official export
            "train": {"tokens": 16, "shards": names[2:]},
        }
    )
    assert (m["official"]["variant"], m["official"]["repo_id"], m["official"]["revision"]) == (
        "sp1024",
        REPO,
        None,
    )
    for name, n in zip(names, VAL_SIZES + TRAIN_SIZES[:2], strict=True):
        assert m["files"][name] == {"bytes": 1024 + 2 * n, "tokens": n}
    assert m["files"]["tokenizer.model"]["bytes"] == len((remote / TOKENIZER).read_bytes())

    assert sorted(summary["downloaded"]) == sorted(names + ["tokenizer.model"]) and summary["skipped"] == []
    assert summary["bytes_downloaded"] == sum((out / n).stat().st_size for n in names + ["tokenizer.model"])
    assert summary["manifest_path"] == str(out / "manifest.json")
    assert all(c == 1 for c in hub.calls.values()) and hub.forced == []
    # order: manifest, tokenizer, val shards, then train shards
    assert list(hub.calls)[:3] == ["datasets/manifest.json", TOKENIZER, f"{DATASET}/fineweb_val_000000.bin"]


def test_resume_skips_valid_files(tmp_path, remote):
    out = tmp_path / "out"
    fetch_dataset("sp1024", 3, out, hub=FakeHub(remote), progress=False)
    hub = FakeHub(remote)
    summary = fetch_dataset("sp1024", 3, out, hub=hub, progress=False)
    assert dict(hub.calls) == {"datasets/manifest.json": 1}  # nothing but the manifest
    assert summary["downloaded"] == [] and len(summary["skipped"]) == 6

    # one shard lost, one truncated (an external copy that died half-way): exactly those two come back
    (out / "fineweb_val_000001.bin").unlink()
    good = (out / "fineweb_train_000001.bin").read_bytes()
    (out / "fineweb_train_000001.bin").write_bytes(good[:-2])
    hub = FakeHub(remote)
    summary = fetch_dataset("sp1024", 3, out, hub=hub, progress=False)
    assert sorted(summary["downloaded"]) == ["fineweb_train_000001.bin", "fineweb_val_000001.bin"]
    assert sum(hub.calls.values()) == 3
    assert (out / "fineweb_train_000001.bin").read_bytes() == good


def test_valid_format_but_wrong_count_is_refetched(tmp_path, remote):
    """A well-formed shard whose token count the manifest contradicts is not 'valid'."""
    out = tmp_path / "out"
    fetch_dataset("sp1024", 1, out, hub=FakeHub(remote), progress=False)
    (out / "fineweb_val_000000.bin").write_bytes(shard_bytes(np.ones(5)))
    hub = FakeHub(remote)
    summary = fetch_dataset("sp1024", 1, out, hub=hub, progress=False)
    assert summary["downloaded"] == ["fineweb_val_000000.bin"]
    assert (out / "fineweb_val_000000.bin").read_bytes() == (
        remote / DATASET / "fineweb_val_000000.bin"
    ).read_bytes()


def test_interrupted_download_never_gets_final_name(tmp_path, remote):
    out = tmp_path / "out"
    name = "fineweb_train_000000.bin"
    hub = FakeHub(remote, {f"{DATASET}/{name}": [ConnectionError("connection reset by peer")]})
    with pytest.raises(DataError) as ei:
        fetch_dataset("sp1024", 2, out, hub=hub, progress=False)
    assert "\n" not in str(ei.value) and "cannot reach the Hugging Face Hub" in str(ei.value)
    assert not (out / name).exists() and (out / "fineweb_val_000000.bin").exists()
    assert not (out / "manifest.json").exists()  # written only once everything is verified

    hub = FakeHub(remote)  # rerun: the rest comes, nothing fetched twice
    summary = fetch_dataset("sp1024", 2, out, hub=hub, progress=False)
    assert sorted(summary["downloaded"]) == [name, "fineweb_train_000001.bin"]
    assert (out / name).read_bytes() == (remote / DATASET / name).read_bytes()
    _assert_clean(out)


def test_zero_byte_shard_is_downloaded_again_once(tmp_path, remote):
    out, remote_name = tmp_path / "out", f"{DATASET}/fineweb_val_000001.bin"
    hub = FakeHub(remote, {remote_name: [b""]})
    summary = fetch_dataset("sp1024", 1, out, hub=hub, progress=False)
    assert hub.calls[remote_name] == 2 and hub.forced == [remote_name]  # the retry bypasses the cache
    assert (out / "fineweb_val_000001.bin").read_bytes() == (remote / remote_name).read_bytes()
    assert "fineweb_val_000001.bin" in summary["downloaded"]


@pytest.mark.parametrize(
    "bad, words",
    [
        ([b"", b""], "0 bytes"),
        ([b"\x00" * 2048, shard_bytes(np.ones(3))[:-1]], "truncated"),  # bad magic, then truncated
        ([shard_bytes(np.ones(4))] * 2, "the manifest implies 3"),  # well-formed, wrong length
    ],
)
def test_corrupt_shard_after_retry_is_one_line_error(tmp_path, remote, bad, words):
    out, remote_name = tmp_path / "out", f"{DATASET}/fineweb_val_000001.bin"
    hub = FakeHub(remote, {remote_name: list(bad)})
    with pytest.raises(DataError) as ei:
        fetch_dataset("sp1024", 1, out, hub=hub, progress=False)
    msg = str(ei.value)
    assert "\n" not in msg and words in msg and f"{REPO}/{remote_name}" in msg and "twice" in msg
    assert hub.calls[remote_name] == 2
    assert not (out / "fineweb_val_000001.bin").exists() and not (out / "manifest.json").exists()
    _assert_clean(out)


def test_corrupt_tokenizer_is_refused(tmp_path, remote):
    hub = FakeHub(remote, {TOKENIZER: [b"not a model", b"not a model"]})
    with pytest.raises(DataError, match="not a SentencePiece model"):
        fetch_dataset("sp1024", 0, tmp_path / "out", hub=hub, progress=False)
    assert not (tmp_path / "out" / "tokenizer.model").exists()


def test_sha256_from_the_manifest_is_checked(tmp_path, sp_model):
    remote = make_remote(tmp_path / "remote", sp_model, with_sha=True)
    name = "fineweb_val_000000.bin"
    good = (remote / DATASET / name).read_bytes()
    tampered = bytearray(good)
    tampered[-1] ^= 1  # same header and size, one token differs
    hub = FakeHub(remote, {f"{DATASET}/{name}": [bytes(tampered)]})
    summary = fetch_dataset("sp1024", 1, tmp_path / "out", hub=hub, progress=False)
    assert hub.calls[f"{DATASET}/{name}"] == 2
    m = json.loads(Path(summary["manifest_path"]).read_text())
    assert m["files"][name]["sha256"] == hashlib.sha256(good).hexdigest()

    hub = FakeHub(remote, {f"{DATASET}/{name}": [bytes(tampered), bytes(tampered)]})
    with pytest.raises(DataError, match="sha256"):
        fetch_dataset("sp1024", 1, tmp_path / "out2", hub=hub, progress=False)


def test_hub_cache_paths_are_copied_not_moved(tmp_path, remote):
    before = {p: p.read_bytes() for p in remote.rglob("*") if p.is_file()}
    out = tmp_path / "out"
    fetch_dataset("sp1024", 2, out, hub=CacheHub(remote), progress=False)
    assert {p: p.read_bytes() for p in remote.rglob("*") if p.is_file()} == before
    for name in _shard_names(2):
        assert (out / name).read_bytes() == before[remote / DATASET / name]
    _assert_clean(out)


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionError("Name or service not known"),
        TimeoutError("timed out"),
        OSError(101, "Network is unreachable"),
    ],
)
def test_offline_is_one_line_error(tmp_path, remote, exc):
    class Offline:
        def download(self, remote_path, local_dir, *, force=False):
            raise exc

    with pytest.raises(DataError) as ei:
        fetch_dataset("sp1024", 1, tmp_path / "out", hub=Offline(), progress=False)
    msg = str(ei.value)
    assert "\n" not in msg
    assert f"cannot reach the Hugging Face Hub to download {REPO}" in msg
    assert "HF_ENDPOINT" in msg and "pgolf data build" in msg


def test_unknown_variant(tmp_path, remote):
    with pytest.raises(ConfigError) as ei:
        fetch_dataset("sp999", 1, tmp_path / "out", hub=FakeHub(remote))
    assert all(v in str(ei.value) for v in ("sp1024", "sp8192"))
    with pytest.raises(ConfigError):
        fetch_dataset("sp1024", -1, tmp_path / "out", hub=FakeHub(remote))


def test_too_many_shards_names_the_maximum(tmp_path, remote):
    hub = FakeHub(remote)
    with pytest.raises(DataError, match=r"only 3 training shards.*maximum is 3"):
        fetch_dataset("sp1024", 4, tmp_path / "out", hub=hub, progress=False)
    assert dict(hub.calls) == {"datasets/manifest.json": 1}  # fails before downloading any data


def test_variant_missing_from_manifest(tmp_path, remote):
    with pytest.raises(DataError, match="does not list dataset fineweb10B_sp8192"):
        fetch_dataset("sp8192", 1, tmp_path / "out", repo_id=REPO, hub=FakeHub(remote), progress=False)


def test_missing_remote_file(tmp_path, remote):
    (remote / DATASET / "fineweb_train_000000.bin").unlink()
    with pytest.raises(DataError, match="fineweb_train_000000.bin not found"):
        fetch_dataset("sp1024", 1, tmp_path / "out", hub=FakeHub(remote), progress=False)


def test_refuses_a_directory_of_another_dataset(tmp_path, remote):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"source": "build", "vocab_size": 1024}))
    with pytest.raises(DataError, match="different dataset"):
        fetch_dataset("sp1024", 1, out, hub=FakeHub(remote), progress=False)


def test_refuses_another_variant_in_the_same_directory(tmp_path, sp_model):
    remote = make_remote(tmp_path / "remote", sp_model)
    out = tmp_path / "out"
    fetch_dataset("sp1024", 1, out, hub=FakeHub(remote), progress=False)
    with pytest.raises(DataError, match="different dataset"):
        fetch_dataset("sp1024", 1, out, repo_id="someone/else", hub=FakeHub(remote), progress=False)


def test_manifest_schema_matches_data_build():
    corpus = pytest.importorskip("pgolf.data.corpus")
    assert (fetch.MANIFEST_FORMAT, fetch.TOKENIZER_FILE) == (corpus.MANIFEST_FORMAT, corpus.TOKENIZER_FILE)


def test_default_repo_per_variant():
    assert fetch.VARIANTS["sp1024"].repo_id == "willdepueoai/parameter-golf"
    assert fetch.VARIANTS["sp8192"].repo_id == "kevclark/parameter-golf"  # where records [04-05]+ fetch it


# --- the CaseOps records' export (romeerp/parameter-golf-caseops-v1) ----------------------------

CASEOPS_NAME = "fineweb10B_sp8192_lossless_caps_caseops_v1_reserved"
CASEOPS_TOK = "tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model"


def make_caseops_remote(root: Path, sp_model: bytes, *, bad_sidecar: bool = False) -> Path:
    """The CaseOps export as its records describe it: the same layout under another dataset and tokenizer
    name, plus ``fineweb_val_bytes_N.bin`` (shard format: magic 20240520) beside each val shard."""
    make_remote(root, sp_model)
    ds = root / "datasets/datasets"
    (ds / "fineweb10B_sp1024").rename(ds / CASEOPS_NAME)
    (root / TOKENIZER).rename(root / "datasets" / CASEOPS_TOK)
    m = json.loads((root / "datasets/manifest.json").read_text())
    m["datasets"][0] |= {"name": CASEOPS_NAME, "tokenizer_name": "sp8192_caseops", "vocab_size": 8192,
                         "path": f"datasets/{CASEOPS_NAME}"}
    m["tokenizers"][0] |= {"name": "sp8192_caseops", "vocab_size": 8192, "model_path": CASEOPS_TOK,
                           "text_transform": "lossless_caps_caseops_v1"}
    (root / "datasets/manifest.json").write_text(json.dumps(m))
    rng = np.random.default_rng(1)
    for i, _ in enumerate(VAL_SIZES):
        tokens = np.frombuffer((ds / CASEOPS_NAME / f"fineweb_val_{i:06d}.bin").read_bytes()[1024:], dtype="<u2")
        counts = np.where(tokens == 1, 0, rng.integers(1, 6, tokens.size))  # 0 at BOS
        if bad_sidecar and i == 1:
            counts = counts[:-1]  # one entry short: not that shard's
        (ds / CASEOPS_NAME / f"fineweb_val_bytes_{i:06d}.bin").write_bytes(shard_bytes(counts))
    return root


@pytest.fixture
def caseops(monkeypatch):
    """The real variant, its vocabulary brought down to the stand-in tokenizer's 1024 pieces."""
    import dataclasses

    real = fetch.VARIANTS["sp8192_caseops"]
    assert (real.dataset, real.repo_id, real.vocab_size, real.text_transform) == (
        CASEOPS_NAME, "romeerp/parameter-golf-caseops-v1", 8192, "caseops_v1")  # names of [04-18]…[04-27a]
    monkeypatch.setitem(fetch.VARIANTS, "sp8192_caseops", dataclasses.replace(real, vocab_size=1024))


def _caseops_manifest(root: Path) -> None:
    m = json.loads((root / "datasets/manifest.json").read_text())
    for entry in m["datasets"] + m["tokenizers"]:
        entry["vocab_size"] = 1024
    (root / "datasets/manifest.json").write_text(json.dumps(m))


def test_caseops_fetch_is_pgolfs_caseops_layout(tmp_path, sp_model, caseops):
    from pgolf.config import DataConfig
    from pgolf.data.loader import load_validation, resolve_data
    from pgolf.data.shards import CASEOPS_GUARD

    remote = make_caseops_remote(tmp_path / "remote", sp_model)
    _caseops_manifest(remote)
    out = tmp_path / "out"
    summary = fetch_dataset("sp8192_caseops", 1, out, hub=FakeHub(remote), progress=False)
    sidecars = [f"fineweb_val_bytes_{i:06d}.bin" for i in range(len(VAL_SIZES))]
    for name in sidecars + ["fineweb_val_000000.bin", "fineweb_train_000000.bin"]:
        assert (out / name).read_bytes() == (remote / "datasets/datasets" / CASEOPS_NAME / name).read_bytes()
    assert (out / "tokenizer.model").read_bytes() == (remote / "datasets" / CASEOPS_TOK).read_bytes()
    assert (out / CASEOPS_GUARD).is_file()  # stops the root train_gpt.py
    assert sorted(summary["downloaded"]) == sorted(sidecars + _shard_names(1) + ["tokenizer.model"])
    m = json.loads((out / "manifest.json").read_text())
    assert (m["text_transform"], m["byte_sidecar_style"], m["source"]) == ("caseops_v1", "caseops", "official")
    assert m["splits"]["val"]["byte_sidecars"] == sidecars
    assert m["official"]["repo_id"] == "romeerp/parameter-golf-caseops-v1"
    # pgolf reads it as a CaseOps dataset: scored over the sidecar's original bytes
    spec = resolve_data(DataConfig(path=str(out)), 1024)
    assert spec.text_transform == "caseops_v1" and [p.name for p in spec.val_byte_files] == sidecars
    val = load_validation(spec)
    assert val.raw_bytes is not None and val.raw_bytes.size == val.tokens.size == sum(VAL_SIZES)
    # a second fetch finds everything in place
    again = fetch_dataset("sp8192_caseops", 1, out, hub=FakeHub(remote), progress=False)
    assert again["downloaded"] == [] and len(again["skipped"]) == len(summary["downloaded"])


def test_caseops_sidecar_of_another_length_is_refused(tmp_path, sp_model, caseops):
    remote = make_caseops_remote(tmp_path / "remote", sp_model, bad_sidecar=True)
    _caseops_manifest(remote)
    with pytest.raises(DataError, match=r"fineweb_val_bytes_000001\.bin.*2 byte counts, its val shard has 3"):
        fetch_dataset("sp8192_caseops", 0, tmp_path / "out", hub=FakeHub(remote), progress=False)


# --- the real huggingface_hub code path -------------------------------------------------------


class _HubStandIn(http.server.BaseHTTPRequestHandler):
    """Just enough of ``{endpoint}/datasets/{repo}/resolve/{rev}/{path}`` for hf_hub_download."""

    root: Path
    gets: Counter
    cut: set

    def _resolve(self) -> Path | None:
        prefix = f"/datasets/{REPO}/resolve/main/"
        if not self.path.startswith(prefix):
            return None
        p = self.root / self.path[len(prefix) :]
        return p if p.is_file() else None

    def _head(self, send_body: bool) -> None:
        p = self._resolve()
        if p is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("X-Repo-Commit", "a" * 40)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = p.read_bytes()
        start = 0
        rng = self.headers.get("Range")
        if send_body and rng and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", "a" * 40)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if send_body:
            self.gets[p.name] += 1
            body = data[start:]
            if p.name in self.cut:  # the connection dies half-way through the body, once
                self.cut.discard(p.name)
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802
        self._head(False)

    def do_GET(self) -> None:  # noqa: N802
        self._head(True)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def hub_server(remote):
    pytest.importorskip("huggingface_hub")
    handler = type("H", (_HubStandIn,), {"root": remote, "gets": Counter(), "cut": set()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_real_huggingface_hub_against_local_stand_in(tmp_path, remote, hub_server, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    endpoint, handler = hub_server
    gets = handler.gets
    out = tmp_path / "out"
    summary = fetch_dataset("sp1024", 3, out, hub=HfHub(REPO, endpoint=endpoint), progress=False)
    for name in _shard_names(3):
        assert (out / name).read_bytes() == (remote / DATASET / name).read_bytes()
    assert (out / "tokenizer.model").read_bytes() == (remote / TOKENIZER).read_bytes()
    assert len(summary["downloaded"]) == 6 and gets["fineweb_val_000000.bin"] == 1
    _assert_clean(out)

    # resume: present files are not downloaded again
    summary = fetch_dataset("sp1024", 3, out, hub=HfHub(REPO, endpoint=endpoint), progress=False)
    assert summary["downloaded"] == [] and gets["fineweb_val_000000.bin"] == 1

    # a file the repo lacks -> one line naming it
    (out / "fineweb_train_000002.bin").unlink()
    (remote / DATASET / "fineweb_train_000002.bin").unlink()
    with pytest.raises(DataError, match=r"fineweb_train_000002.bin not found"):
        fetch_dataset("sp1024", 3, out, hub=HfHub(REPO, endpoint=endpoint), progress=False)


def test_real_huggingface_hub_resumes_a_broken_transfer(tmp_path, remote, hub_server, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr("time.sleep", lambda s: None)
    endpoint, handler = hub_server
    handler.cut.add("fineweb_train_000000.bin")
    out = tmp_path / "out"
    try:
        fetch_dataset("sp1024", 1, out, hub=HfHub(REPO, endpoint=endpoint), progress=False)
    except DataError:  # depending on the hub version the retry happens now or on the next run
        assert not (out / "fineweb_train_000000.bin").exists()
        fetch_dataset("sp1024", 1, out, hub=HfHub(REPO, endpoint=endpoint), progress=False)
    name = "fineweb_train_000000.bin"
    assert (out / name).read_bytes() == (remote / DATASET / name).read_bytes()
    assert handler.gets[name] == 2


@pytest.mark.parametrize("mode", ["closed_port", "HF_HUB_OFFLINE"])
def test_real_huggingface_hub_offline(tmp_path, remote, monkeypatch, mode):
    """hf_hub_download's own offline failures become the one-line DataError."""
    pytest.importorskip("huggingface_hub")
    import socket

    import huggingface_hub.constants as hf_constants

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr("time.sleep", lambda s: None)  # skip the hub's retry back-off (≈ 22 s)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", mode == "HF_HUB_OFFLINE")
    hub = HfHub(REPO, endpoint=f"http://127.0.0.1:{port}")
    with pytest.raises(DataError) as ei:
        fetch_dataset("sp1024", 1, tmp_path / "out", hub=hub, progress=False)
    assert "\n" not in str(ei.value) and "cannot reach the Hugging Face Hub" in str(ei.value)


def test_hf_adapter_translates_errors(tmp_path, monkeypatch):
    hf = pytest.importorskip("huggingface_hub")
    from huggingface_hub import utils as hf_utils

    calls = {}

    def fake_download(**kw):
        calls.update(kw)
        raise hf_utils.LocalEntryNotFoundError("cannot find the requested files in the disk cache")

    monkeypatch.setattr(hf, "hf_hub_download", fake_download)
    with pytest.raises(DataError, match="cannot reach the Hugging Face Hub"):
        HfHub(REPO, revision="r1").download("datasets/manifest.json", tmp_path, force=True)
    assert (calls["repo_id"], calls["filename"], calls["subfolder"]) == (REPO, "manifest.json", "datasets")
    assert (calls["repo_type"], calls["revision"], calls["force_download"]) == ("dataset", "r1", True)
    assert Path(calls["local_dir"]) == tmp_path

    monkeypatch.setattr(hf, "hf_hub_download", lambda **kw: (_ for _ in ()).throw(ValueError("a bug")))
    with pytest.raises(ValueError):  # a bug keeps its traceback
        HfHub(REPO).download("datasets/manifest.json", tmp_path)


def test_shard_check_matches_spec(tmp_path):
    """Header [magic, 1, N, 0...] + N uint16, size exactly 1024 + 2N; nothing else passes."""
    p = tmp_path / "s.bin"
    p.write_bytes(shard_bytes(np.arange(7)))
    assert fetch._check_shard(p, 7, {}) == {"bytes": 1024 + 14, "tokens": 7}
    for data in (shard_bytes(np.arange(7)) + b"\0\0", shard_bytes(np.arange(7))[:-2], b"x" * 100):
        p.write_bytes(data)
        with pytest.raises(DataError):
            fetch._check_shard(p, None, {})
    header = np.zeros(256, dtype="<i4")
    header[:3] = [20240520, 2, 0]  # wrong version
    p.write_bytes(header.tobytes())
    with pytest.raises(DataError, match="version 2"):
        fetch._check_shard(p, None, {})


def test_shared_tokenizer_passes_the_check(tmp_path):
    """The real challenge tokenizer (if the shared folder is present) passes the tokenizer check."""
    shared = Path(__file__).resolve().parents[2] / "shared" / "tokenizers" / "fineweb_1024_bpe.model"
    if not shared.is_file():
        pytest.skip("shared tokenizers not present")
    shutil.copyfile(shared, tmp_path / "t.model")
    info = fetch._check_tokenizer(tmp_path / "t.model", 1024)
    assert info == {"bytes": shared.stat().st_size, "sha256": hashlib.sha256(shared.read_bytes()).hexdigest()}
    with pytest.raises(DataError, match="vocab_size 1024, expected 8192"):
        fetch._check_tokenizer(tmp_path / "t.model", 8192)
