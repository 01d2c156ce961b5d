"""A dataset's content fingerprint: the dataset part of a run's identity (:mod:`pgolf.identity`).

A pgolf dataset is named by its manifest (vocabulary, text transform, validation documents, BOS/EOS, the
documents/tokens/bytes of each split, the tokenizer's sha256); an official export (no manifest) by its
shard names and sizes. Two directories with the same content get the same fingerprint wherever they live.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def dataset_fingerprint(data_dir: str | Path | None) -> str | None:
    """16 hex digits of the sha256 of the dataset's description (module docstring); None when the
    directory is not readable or holds no shards."""
    if not data_dir:
        return None
    d = Path(data_dir).expanduser()
    try:
        manifest = json.loads((d / "manifest.json").read_text())
        splits = {name: {k: s.get(k) for k in ("documents", "tokens", "bytes")}
                  for name, s in sorted((manifest.get("splits") or {}).items())}
        ident = {k: manifest.get(k) for k in ("vocab_size", "text_transform", "val_docs", "bos_id", "append_eos")}
        ident.update(splits=splits, tokenizer=(manifest.get("tokenizer") or {}).get("sha256"))
    except (OSError, ValueError, AttributeError):
        try:
            ident = {"shards": sorted((p.name, p.stat().st_size) for p in d.glob("fineweb_*.bin"))}
        except OSError:
            return None
        if not ident["shards"]:
            return None
    text = json.dumps(ident, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def dataset_label(data_path: str | None) -> str:
    """A short human name of a dataset path (its directory name; ``embedded`` for the default)."""
    return Path(str(data_path).rstrip("/")).name if data_path else "embedded"


def dataset_of(data_path: str | None, tokenizer: str | None = None, data_dir: str | Path | None = None) -> str:
    """The dataset part of an identity: the fingerprint of ``data_dir`` (default ``data_path``, the config's
    ``data.path``), else the directory's name; a separately given tokenizer file (``data.tokenizer``) is
    appended by name."""
    ident = dataset_fingerprint(data_dir or data_path or None) or dataset_label(data_path)
    if tokenizer:
        ident += ":" + Path(str(tokenizer)).name
    return ident
