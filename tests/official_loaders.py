"""Stand-ins for the official loaders, written (not copied) from what they do, to test pgolf's layout.

Read from openai/parameter-golf at 4908dc46f (CATALOGUE §1.1, §2.7):

* root ``train_gpt.py`` (and the records that copy it, up to [04-16]): ``train_files =
  DATA_PATH/fineweb_train_*.bin``, ``val_files = DATA_PATH/fineweb_val_*.bin``; each pattern is
  ``sorted(glob.glob(...))``; every file goes through ``load_data_shard``, which raises ValueError
  unless the first 256 int32 are there with ``[0] == 20240520`` and ``[1] == 1`` and the size is
  exactly ``1024 + 2·[2]``; validation is the concatenation of the val files. No sidecar.
* CaseOps records [04-19], [04-22], [04-23], [04-27a], [04-27b], [04-29]: the same train/val
  patterns, but validation skips names containing ``_bytes_``; with ``CASEOPS_ENABLED=1`` the
  per-token byte sidecar is ``sorted(glob(DATA_PATH/fineweb_val_bytes_*.bin))`` through the same
  ``load_data_shard`` (so magic 20240520), FileNotFoundError when there is none, ValueError when it
  is shorter than the validation tokens, cut to their length otherwise.
* CaseOps record [04-18]: validation ``fineweb_val_[0-9]{6}.bin``; the sidecar pattern is that
  one with ``fineweb_val_`` replaced by ``fineweb_val_bytes_``, optional (none found: the byte
  tables score), read by ``load_data_shard``, ValueError when shorter, cut to length.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np


def load_data_shard(file: Path) -> np.ndarray:
    header = np.fromfile(file, dtype="<i4", count=256)
    if header.size != 256 or int(header[0]) != 20240520 or int(header[1]) != 1:
        raise ValueError(f"Unexpected shard header for {file}")
    n = int(header[2])
    if file.stat().st_size != 1024 + 2 * n:
        raise ValueError(f"Shard size mismatch for {file}")
    tokens = np.fromfile(file, dtype="<u2", count=n, offset=1024)
    if tokens.size != n:
        raise ValueError(f"Short read for {file}")
    return tokens


def _files(pattern: str) -> list[Path]:
    return [Path(p) for p in sorted(glob.glob(pattern))]


def root_train_gpt(data_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(train stream, validation tokens) as the root ``train_gpt.py`` reads them."""
    train = _files(os.path.join(data_path, "fineweb_train_*.bin"))
    val = _files(os.path.join(data_path, "fineweb_val_*.bin"))
    if not train or not val:
        raise FileNotFoundError(f"No files found in {data_path}")
    return np.concatenate([load_data_shard(f) for f in train]), np.concatenate([load_data_shard(f) for f in val])


def caseops_train_gpt(data_path: Path, caseops_enabled: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(train stream, validation tokens, byte sidecar or None) as the [04-19]…[04-29] scripts read them."""
    train = _files(os.path.join(data_path, "fineweb_train_*.bin"))
    val = [f for f in _files(os.path.join(data_path, "fineweb_val_*.bin")) if "_bytes_" not in f.name]
    if not train or not val:
        raise FileNotFoundError(f"No files found in {data_path}")
    tokens = np.concatenate([load_data_shard(f) for f in val])
    sidecar = None
    if caseops_enabled:
        files = _files(os.path.join(data_path, "fineweb_val_bytes_*.bin"))
        if not files:
            raise FileNotFoundError(f"No byte sidecar files for pattern in {data_path}")
        full = np.concatenate([load_data_shard(f) for f in files])
        if full.size < tokens.size:
            raise ValueError(f"Byte sidecar too short: {full.size} < val_tokens {tokens.size}")
        sidecar = full[: tokens.size]
    return np.concatenate([load_data_shard(f) for f in train]), tokens, sidecar


def caseops_0418_train_gpt(data_path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(train stream, validation tokens, byte sidecar or None) as the [04-18] script reads them."""
    train = _files(os.path.join(data_path, "fineweb_train_*.bin"))
    pattern = os.path.join(data_path, "fineweb_val_[0-9][0-9][0-9][0-9][0-9][0-9].bin")
    val = _files(pattern)
    if not train or not val:
        raise FileNotFoundError(f"No files found in {data_path}")
    tokens = np.concatenate([load_data_shard(f) for f in val])
    files = _files(pattern.replace("fineweb_val_", "fineweb_val_bytes_"))
    sidecar = None
    if files:
        full = np.concatenate([load_data_shard(f) for f in files])
        if full.size < tokens.size:
            raise ValueError(f"Validation byte sidecar is too short: expected at least {tokens.size}, got {full.size}")
        sidecar = full[: tokens.size]
    return np.concatenate([load_data_shard(f) for f in train]), tokens, sidecar
