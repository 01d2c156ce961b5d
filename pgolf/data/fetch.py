"""Download the challenge's cached FineWeb export (``pgolf data fetch``).

Source: openai/parameter-golf ``data/cached_challenge_fineweb.py`` and ``data/README.md``
(CATALOGUE §1.1); the SP4096/SP8192 exports are those of records [04-01] (PR #1218) and [04-05]
(PR #1394), published at ``kevclark/parameter-golf``. Written from the layout, not the code.

Remote layout (Hugging Face *dataset* repo, export rooted at ``datasets/``)::

    datasets/manifest.json
    datasets/datasets/fineweb10B_sp{V}/fineweb_{val,train}_{i:06d}.bin
    datasets/tokenizers/fineweb_{V}_bpe.model      (the manifest's ``model_path``)

The manifest (written by ``data/download_hf_docs_and_tokenize.py``) holds ``shard_size`` and
lists ``datasets`` (``name``, ``tokenizer_name``, ``vocab_size``, ``stats`` with ``files_val``,
``files_train``, ``tokens_val``, ``tokens_train``) and ``tokenizers`` (``name``, ``model_path``).

Local layout (what ``pgolf.data.loader.resolve_data`` reads): every shard at the top of
``out_dir``, the SentencePiece model as ``out_dir/tokenizer.model`` and ``manifest.json`` in the
schema of ``pgolf data build`` (``format``, ``vocab_size``, ``shard_tokens``, ``tokenizer``,
``splits``, ``files``) plus ``source = "official"`` and an ``official`` section (variant, repo,
remote entries). The official export has no byte sidecar: ``splits.val.byte_sidecars = []``.
Downloads are staged in ``out_dir/.hub`` and renamed into place only once verified.

Checks on every file, before it gets its final name:

- shard: header ``[20240520, 1, N, 0…]`` and file size exactly 1024 + 2N bytes; when the
  manifest gives ``shard_size`` S and the split's totals (F files, T tokens), shard i must hold
  N = S for i < F − 1 and N = T − (F − 1)·S for the last one; size/sha256 when listed.
- tokenizer: loads with SentencePiece and has the dataset's ``vocab_size``.

**The CaseOps records' data** (``--variant sp8192_caseops``; published with [04-18] PR #1729, named by the
CaseOps records' READMEs through [04-27a] PR #1855): HF dataset ``romeerp/parameter-golf-caseops-v1``, the same
export layout with dataset ``fineweb10B_sp8192_lossless_caps_caseops_v1_reserved`` (80 training shards) and
tokenizer ``tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model`` (the SP8192 model with the
CaseOps operators U+E001–E004 reserved), plus one byte sidecar ``fineweb_val_bytes_{i:06d}.bin`` beside each
val shard (shard format, magic 20240520; each token's byte count in the original text, 0 at BOS). Locally
this is pgolf's CaseOps layout (README "Data layout"): the sidecars keep their name (the ``caseops`` style
of :mod:`pgolf.data.shards`), the guard file :data:`~pgolf.data.shards.CASEOPS_GUARD` stops the root
``train_gpt.py``, and the manifest says ``text_transform: caseops_v1`` and ``byte_sidecar_style: caseops``,
so pgolf scores it over the original bytes. A sidecar must hold exactly its val shard's token count.

An invalid download (zero bytes is the hub cache's known failure) is fetched once more with
``force``; a second failure is a :class:`~pgolf.errors.DataError`. Files already present and
valid are skipped, so an interrupted fetch resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pgolf import __version__
from pgolf.data.shards import read_byte_sidecar_header, read_shard_header, sidecar_name, write_caseops_guard
from pgolf.errors import ConfigError, DataError
from pgolf.fileio import atomic_path, write_json

REMOTE_ROOT = "datasets"
"""Folder of the HF repo under which the export lives (``MATCHED_FINEWEB_REMOTE_ROOT_PREFIX``)."""
DEFAULT_REPO_ID = "willdepueoai/parameter-golf"
STAGING_DIRNAME = ".hub"
"""Hidden folder of ``out_dir`` where the hub writes (and resumes) downloads before verification."""
MANIFEST_FORMAT = "pgolf-dataset-v1"
"""The local manifest shares the schema of ``pgolf.data.corpus`` (``pgolf data build``)."""
TOKENIZER_FILE = "tokenizer.model"
BOS_ID = 1


@dataclass(frozen=True)
class Variant:
    dataset: str
    """Dataset folder in the export (``fineweb10B_sp{V}``)."""
    repo_id: str
    """HF dataset repo the challenge records download this variant from."""
    vocab_size: int
    text_transform: str = "identity"
    """``caseops_v1``: the CaseOps records' export, with byte sidecars (module docstring)."""


VARIANTS: dict[str, Variant] = {
    "sp1024": Variant("fineweb10B_sp1024", DEFAULT_REPO_ID, 1024),  # the baseline [03-17b]
    "sp4096": Variant("fineweb10B_sp4096", "kevclark/parameter-golf", 4096),  # [04-01] PR #1218
    "sp8192": Variant("fineweb10B_sp8192", "kevclark/parameter-golf", 8192),  # [04-05] PR #1394
    # the CaseOps records' own data and tokenizer: [04-18] PR #1729, used by [04-19]…[04-27a]
    "sp8192_caseops": Variant("fineweb10B_sp8192_lossless_caps_caseops_v1_reserved",
                              "romeerp/parameter-golf-caseops-v1", 8192, "caseops_v1"),
}


class Hub(Protocol):
    """Where files come from. ``remote_path`` is relative to the repo root (``datasets/...``)."""

    def download(self, remote_path: str, local_dir: Path, *, force: bool = False) -> Path:
        """Return a local path holding the remote file (ideally under ``local_dir``).

        ``force`` re-downloads even if a cached copy exists. Raise ``FileNotFoundError`` for a
        file the repo lacks, ``OSError`` (e.g. ``ConnectionError``) when the hub is unreachable,
        or a :class:`DataError` with a one-line message.
        """
        ...


class HfHub:
    """:class:`Hub` backed by ``huggingface_hub.hf_hub_download`` in ``local_dir`` mode.

    Files land in ``local_dir/<remote_path>``; an interrupted download stays as an
    ``.incomplete`` file under ``local_dir/.cache/huggingface`` and is resumed next time.
    ``endpoint`` defaults to ``HF_ENDPOINT`` / huggingface.co.
    """

    def __init__(self, repo_id: str, *, revision: str | None = None, endpoint: str | None = None) -> None:
        self.repo_id = repo_id
        self.revision = revision
        self.endpoint = endpoint

    def download(self, remote_path: str, local_dir: Path, *, force: bool = False) -> Path:
        try:  # lazily: the training path never needs huggingface_hub
            import huggingface_hub
            from huggingface_hub import utils as hf_utils
        except ImportError as e:
            raise DataError(
                "huggingface_hub is not installed; `pip install huggingface_hub` to fetch the official data, "
                "or build local shards with `pgolf data build`"
            ) from e
        subfolder, _, name = remote_path.rpartition("/")
        where = f"{self.repo_id}/{remote_path}"
        try:
            path = huggingface_hub.hf_hub_download(
                repo_id=self.repo_id,
                filename=name,
                subfolder=subfolder or None,
                repo_type="dataset",
                revision=self.revision,
                local_dir=local_dir,
                force_download=force,
                endpoint=self.endpoint,
            )
        except hf_utils.RepositoryNotFoundError as e:  # includes gated repos
            raise DataError(
                f"dataset repo {self.repo_id} not found or not accessible on the Hugging Face Hub ({_first_line(e)})"
            ) from e
        except hf_utils.RevisionNotFoundError as e:
            raise DataError(f"revision {self.revision!r} not found in dataset repo {self.repo_id}") from e
        except hf_utils.LocalEntryNotFoundError as e:  # raised when offline and not cached; before its base
            raise _unreachable(where, e) from e
        except hf_utils.EntryNotFoundError as e:
            raise DataError(f"{where} not found on the Hugging Face Hub") from e
        except hf_utils.HfHubHTTPError as e:
            raise DataError(f"downloading {where} failed: {_first_line(e)}") from e
        except Exception as e:  # transport errors of requests/httpx (versions differ); bugs propagate
            if isinstance(e, (OSError, TimeoutError)) or _is_transport_error(e):
                raise _unreachable(where, e) from e
            raise
        return Path(path)


def fetch_dataset(
    variant: str,
    train_shards: int,
    out_dir: str | os.PathLike[str],
    *,
    repo_id: str | None = None,
    revision: str | None = None,
    hub: Hub | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Download ``variant``'s manifest, tokenizer, all val shards and the first ``train_shards``.

    ``repo_id`` defaults to the variant's official repo (``VARIANTS``). Returns a summary:
    ``variant, repo_id, revision, out_dir, train_shards, val_shards, train_tokens, val_tokens,
    downloaded, skipped`` (file names), ``bytes_downloaded, extra_train_shards`` (train shards
    beyond the first ``train_shards`` already in ``out_dir``, left in place), ``manifest_path``.
    """
    if variant not in VARIANTS:
        raise ConfigError(f"unknown data variant {variant!r}; known: {', '.join(VARIANTS)}")
    if isinstance(train_shards, bool) or not isinstance(train_shards, int) or train_shards < 0:
        raise ConfigError(f"train_shards must be an integer >= 0, got {train_shards!r}")
    spec = VARIANTS[variant]
    repo_id = repo_id or spec.repo_id
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} exists and is not a directory")
    _check_previous_manifest(out, variant, repo_id)
    job = _Fetch(hub or HfHub(repo_id, revision=revision), repo_id, out, progress)

    manifest_remote = f"{REMOTE_ROOT}/manifest.json"
    remote = job.fetch_json(manifest_remote)
    dataset, tokenizer_entry, shard_size = _dataset_entry(remote, spec, f"{repo_id}/{manifest_remote}")
    stats = dataset["stats"]
    n_val, n_train_max = stats["files_val"], stats["files_train"]
    if train_shards > n_train_max:
        raise DataError(
            f"{variant} has only {n_train_max} training shards on {repo_id}; asked for {train_shards} "
            f"(the maximum is {n_train_max})"
        )
    vocab_size = int(dataset.get("vocab_size") or spec.vocab_size)

    files: dict[str, dict[str, Any]] = {}
    model_remote = f"{REMOTE_ROOT}/{_safe_relpath(tokenizer_entry['model_path'], manifest_remote)}"
    files[TOKENIZER_FILE] = job.fetch(model_remote, TOKENIZER_FILE, lambda p: _check_tokenizer(p, vocab_size))
    prefix = f"{REMOTE_ROOT}/datasets/{dataset['name']}"
    splits: dict[str, dict[str, Any]] = {}
    for split, count in (("val", n_val), ("train", train_shards)):
        names = [f"fineweb_{split}_{i:06d}.bin" for i in range(count)]
        for i, name in enumerate(names):
            expect = _expected_tokens(stats, split, i, shard_size)
            meta = _listed_meta(dataset, name)
            files[name] = job.fetch(
                f"{prefix}/{name}", name, lambda p, e=expect, m=meta: _check_shard(p, e, m)
            )
        splits[split] = {"tokens": sum(files[n]["tokens"] for n in names), "shards": names}
    splits["val"]["byte_sidecars"] = []  # the official export has none: BPB comes from the byte tables
    caseops = spec.text_transform != "identity"
    if caseops:  # one sidecar per val shard, the same token count
        for i, shard in enumerate(splits["val"]["shards"]):
            name = sidecar_name(i, "caseops")
            files[name] = job.fetch(f"{prefix}/{name}", name,
                                    lambda p, n=files[shard]["tokens"]: _check_sidecar(p, n))
            splits["val"]["byte_sidecars"].append(name)
        write_caseops_guard(out)

    extra = sorted(p.name for p in out.glob("fineweb_train_*.bin") if p.name not in files)
    if extra:
        job.say(f"note: {len(extra)} more train shard(s) already in {out} were left in place ({extra[0]}…)")
    manifest = {
        "format": MANIFEST_FORMAT,
        "source": "official",
        "pgolf_version": __version__,
        "vocab_size": vocab_size,
        "bos_id": BOS_ID,
        "append_eos": False,
        "shard_tokens": shard_size,
        **({"text_transform": spec.text_transform, "byte_sidecar_style": "caseops"} if caseops else {}),
        "tokenizer": {
            "file": TOKENIZER_FILE,
            "sha256": files[TOKENIZER_FILE]["sha256"],
            "source": "official",
        },
        "splits": splits,
        "files": files,
        "official": {
            "variant": variant,
            "repo_id": repo_id,
            "revision": revision,
            "remote_root": REMOTE_ROOT,
            "dataset": dataset,
            "tokenizer": tokenizer_entry,
        },
    }
    write_json(out / "manifest.json", manifest)
    job.say(
        f"done: {variant} in {out}: {n_val} val + {train_shards} train shards "
        f"({len(job.downloaded)} downloaded, {len(job.skipped)} already present)"
    )
    return {
        "variant": variant,
        "repo_id": repo_id,
        "revision": revision,
        "out_dir": str(out),
        "train_shards": train_shards,
        "val_shards": n_val,
        "train_tokens": splits["train"]["tokens"],
        "val_tokens": splits["val"]["tokens"],
        "downloaded": job.downloaded,
        "skipped": job.skipped,
        "bytes_downloaded": job.bytes_downloaded,
        "extra_train_shards": extra,
        "manifest_path": str(out / "manifest.json"),
    }


class _Fetch:
    """One fetch: the hub, the staging folder, and what was downloaded or skipped."""

    def __init__(self, hub: Hub, repo_id: str, out: Path, progress: bool) -> None:
        self.hub, self.repo_id, self.out, self.progress = hub, repo_id, out, progress
        self.staging = out / STAGING_DIRNAME
        self.downloaded: list[str] = []
        self.skipped: list[str] = []
        self.bytes_downloaded = 0

    def say(self, msg: str) -> None:
        if self.progress:
            print(f"pgolf data fetch: {msg}", file=sys.stderr, flush=True)

    def _download(self, remote: str, force: bool) -> Path:
        try:
            return Path(self.hub.download(remote, self.staging, force=force))
        except DataError:
            raise
        except FileNotFoundError as e:
            raise DataError(f"{self.repo_id}/{remote} not found on the hub") from e
        except (OSError, TimeoutError) as e:  # ConnectionError is an OSError
            raise _unreachable(f"{self.repo_id}/{remote}", e) from e

    def fetch_json(self, remote: str) -> dict[str, Any]:
        """Download a small JSON file (always asked for again: the hub decides if it changed)."""
        path = self._download(remote, force=False)
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            path = self._download(remote, force=True)  # e.g. a zero-byte cache entry
            try:
                obj = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e2:
                raise DataError(f"{self.repo_id}/{remote} is not valid JSON ({_first_line(e2)})") from e
        if not isinstance(obj, dict):
            raise DataError(f"{self.repo_id}/{remote} is not a JSON object")
        return obj

    def fetch(self, remote: str, name: str, check: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
        """Make ``out/name`` a verified copy of ``remote``; ``check(path) -> dict`` raises DataError."""
        dest = self.out / name
        if dest.is_file():
            try:
                info = check(dest)
                self.skipped.append(name)
                return info
            except DataError as e:
                self.say(f"{name}: present but invalid ({e}); downloading again")
                dest.unlink()
        for attempt in range(2):
            self.say(f"downloading {name}" + (" (again)" if attempt else ""))
            path = self._download(remote, force=attempt > 0)
            try:
                info = check(path)
                break
            except DataError as e:
                self._discard(path)
                if attempt == 1:
                    raise DataError(
                        f"{self.repo_id}/{remote} is invalid after downloading it twice: {e}"
                    ) from e
                self.say(f"{name}: download invalid ({e}); retrying once")
        try:
            self._install(path, dest)
        except OSError as e:  # disk full, permissions, a directory in the way
            raise DataError(f"cannot write {dest} ({e.strerror or e})") from e
        self.downloaded.append(name)
        self.bytes_downloaded += dest.stat().st_size
        return info

    def _inside_staging(self, path: Path) -> bool:
        return not path.is_symlink() and path.resolve().is_relative_to(self.staging.resolve())

    def _discard(self, path: Path) -> None:
        if self._inside_staging(path):  # never delete what the hub keeps elsewhere (its cache)
            path.unlink(missing_ok=True)

    def _install(self, path: Path, dest: Path) -> None:
        if self._inside_staging(path):
            os.replace(path, dest)  # same filesystem: atomic, no copy
        else:  # e.g. a symlink into the hub's cache: copy, atomically
            with atomic_path(dest) as tmp:
                shutil.copyfile(path.resolve(), tmp)


def _check_previous_manifest(out: Path, variant: str, repo_id: str) -> None:
    """Refuse to mix this export into a directory that holds another dataset."""
    path = out / "manifest.json"
    if not path.is_file():
        return
    try:
        prev = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(
            f"{path} exists but is not valid JSON ({_first_line(e)}); use an empty directory"
        ) from e
    official = prev.get("official") if isinstance(prev, dict) else None
    if isinstance(official, dict) and prev.get("source") == "official":
        if (official.get("variant"), official.get("repo_id")) == (variant, repo_id):
            return
        what = f"{official.get('variant')} from {official.get('repo_id')}"
    else:
        what = "not an official fetch; e.g. `pgolf data build` output"
    raise DataError(f"{path} describes a different dataset ({what}); fetch {variant} into an empty directory")


def _dataset_entry(remote: dict[str, Any], spec: Variant, where: str) -> tuple[dict, dict, int | None]:
    """Find the variant's dataset and tokenizer entries in the remote manifest and check their types."""
    datasets = remote.get("datasets")
    tokenizers = remote.get("tokenizers")
    if not isinstance(datasets, list) or not isinstance(tokenizers, list):
        raise DataError(f"{where} lacks the 'datasets'/'tokenizers' lists")
    dataset = next((d for d in datasets if isinstance(d, dict) and d.get("name") == spec.dataset), None)
    if dataset is None:
        names = [d.get("name") for d in datasets if isinstance(d, dict)]
        raise DataError(
            f"{where} does not list dataset {spec.dataset} (it has: {', '.join(map(str, names))})"
        )
    stats = dataset.get("stats")
    if not isinstance(stats, dict) or not all(_is_count(stats.get(k)) for k in ("files_val", "files_train")):
        raise DataError(f"{where}: dataset {spec.dataset} lacks stats.files_val / stats.files_train")
    vocab = dataset.get("vocab_size")
    if vocab is not None and vocab != spec.vocab_size:
        raise DataError(f"{where}: dataset {spec.dataset} has vocab_size {vocab}, expected {spec.vocab_size}")
    tok = next(
        (t for t in tokenizers if isinstance(t, dict) and t.get("name") == dataset.get("tokenizer_name")),
        None,
    )
    if tok is None or not isinstance(tok.get("model_path"), str):
        raise DataError(
            f"{where}: no SentencePiece model_path for tokenizer {dataset.get('tokenizer_name')!r}"
        )
    shard_size = remote.get("shard_size")
    return dataset, tok, shard_size if _is_count(shard_size) and shard_size > 0 else None


def _is_count(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _safe_relpath(rel: str, where: str) -> str:
    parts = Path(rel).parts
    if not parts or Path(rel).is_absolute() or ".." in parts:
        raise DataError(f"{where}: unexpected path {rel!r}")
    return Path(rel).as_posix()


def _expected_tokens(stats: dict[str, Any], split: str, i: int, shard_size: int | None) -> int | None:
    """Tokens in shard i of ``split``: S for all but the last, T − (F − 1)·S for the last; None if unknown."""
    files, total = stats.get(f"files_{split}"), stats.get(f"tokens_{split}")
    if shard_size is None or not _is_count(files) or not _is_count(total) or files == 0:
        return None
    return shard_size if i < files - 1 else total - (files - 1) * shard_size


def _listed_meta(dataset: dict[str, Any], name: str) -> dict[str, Any]:
    """Per-file ``bytes``/``size`` and ``sha256`` if the manifest lists them (``dataset.files[name]``)."""
    listed = dataset.get("files")
    meta = listed.get(name) if isinstance(listed, dict) else None
    return meta if isinstance(meta, dict) else {}


def _check_shard(path: Path, expected_tokens: int | None, meta: dict[str, Any]) -> dict[str, Any]:
    n = read_shard_header(path)  # magic, version, size exactly 1024 + 2N (zero bytes included)
    if expected_tokens is not None and n != expected_tokens:
        raise DataError(f"{path.name}: {n} tokens, the manifest implies {expected_tokens}")
    size = path.stat().st_size
    return _check_listed(path, size, meta) | {"bytes": size, "tokens": n}


def _check_sidecar(path: Path, tokens: int) -> dict[str, Any]:
    n = read_byte_sidecar_header(path)  # the caseops name: magic 20240520, version, exact size
    if n != tokens:
        raise DataError(f"{path.name}: {n} byte counts, its val shard has {tokens} tokens")
    return {"bytes": path.stat().st_size, "tokens": n}


def _check_tokenizer(path: Path, vocab_size: int) -> dict[str, Any]:
    import sentencepiece as spm

    size = path.stat().st_size
    if size == 0:
        raise DataError(f"{path.name} is empty (0 bytes)")
    try:
        sp = spm.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError) as e:
        raise DataError(f"{path.name} is not a SentencePiece model ({_first_line(e)})") from e
    if sp.vocab_size() != vocab_size:
        raise DataError(f"{path.name} has vocab_size {sp.vocab_size()}, expected {vocab_size}")
    return {"bytes": size, "sha256": _sha256(path)}


def _check_listed(path: Path, size: int, meta: dict[str, Any]) -> dict[str, Any]:
    listed_size = meta.get("bytes", meta.get("size"))
    if _is_count(listed_size) and size != listed_size:
        raise DataError(f"{path.name}: {size} bytes, the manifest lists {listed_size}")
    sha = meta.get("sha256")
    if not isinstance(sha, str):
        return {}
    got = _sha256(path)
    if got != sha.lower():
        raise DataError(f"{path.name}: sha256 {got[:12]}… differs from the manifest's {sha[:12]}…")
    return {"sha256": got}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    line = text[0] if text else type(e).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def _is_transport_error(e: BaseException) -> bool:
    root = type(e).__module__.split(".")[0]
    return root in {"requests", "urllib3", "httpx", "httpx2", "httpcore", "h11"}


def _unreachable(where: str, e: BaseException) -> DataError:
    repo = "/".join(where.split("/")[:2])
    return DataError(
        f"cannot reach the Hugging Face Hub to download {repo} ({where}: {type(e).__name__}: {_first_line(e)}); "
        "check the network or HF_ENDPOINT, or build local shards with `pgolf data build`"
    )
