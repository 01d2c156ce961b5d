"""Crash-safe file writes: write to a temporary file in the same directory, then rename.

A reader therefore sees either the old file or the complete new one, never half of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; give the final file normal permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text(path: str | os.PathLike[str], text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def read_json_object(path: str | os.PathLike[str], what: str) -> dict[str, Any] | None:
    """The JSON object ``path`` holds, None when the file does not exist; a DataError naming the file and
    ``what`` it should be (``metrics``, ``manifest``) when it is unreadable or not an object."""
    from pgolf.errors import DataError

    p = Path(path)
    if not p.exists():
        return None
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{p}: unreadable {what} file ({e})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{p}: {what} must be a JSON object, got {type(obj).__name__}")
    return obj


def cache_root() -> Path:
    """pgolf's user cache: ``$PGOLF_CACHE`` or ``~/.cache/pgolf`` (the embedded corpus, autosize choices)."""
    env = os.environ.get("PGOLF_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pgolf"
