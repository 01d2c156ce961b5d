"""Run directories as the submission side reads them: ``config.json``, ``metrics.json``, ``train.log``.

A submission's seeds are runs of one configuration: :func:`config_hash` is the SHA-256 of the
configuration's sections (``data, model, optim, train, export, eval``) as canonical JSON, without the
fields that may differ between seeds — :data:`PER_SEED` (the seed and the data paths). The preset
name is a label and is not part of it. :func:`check_seeds` refuses runs that differ elsewhere
(naming the first field that differs) or repeat a seed.

Every problem is one :class:`~pgolf.errors.PgolfError` line naming the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgolf.config import RunConfig, flatten
from pgolf.errors import ConfigError, DataError, PgolfError

PER_SEED = frozenset({"train.seed", "data.path", "data.tokenizer"})
"""Fields that may differ between the seeds of one submission."""
METRIC_KEYS = {"val_loss": float, "val_bpb": float, "val_tokens": int, "val_bytes": int, "artifact_bytes": int,
               "code_bytes": int, "steps": int, "train_seconds": float, "eval_seconds": float}
"""``metrics.json`` keys the submission side needs, with their JSON types."""

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class Run:
    """One finished run directory."""

    path: Path
    cfg: RunConfig
    metrics: dict[str, Any]

    @property
    def seed(self) -> int:
        return self.cfg.train.seed

    @property
    def log(self) -> Path:
        return self.path / "train.log"

    @property
    def tokens_per_byte(self) -> float:
        return tokens_per_byte(self.metrics)


def score_bytes(m: dict[str, Any]) -> int:
    """The bytes ``val_bpb`` divides by: ``val_bytes``, or the original bytes ``val_bytes_raw`` for a
    sidecar-scored (CaseOps) run (``val_bpb_bytes == "sidecar"``)."""
    raw = m.get("val_bytes_raw")
    return int(raw) if m.get("val_bpb_bytes") == "sidecar" and isinstance(raw, int) else int(m["val_bytes"])


def tokens_per_byte(m: dict[str, Any]) -> float:
    """``val_tokens / bytes`` of a run's metrics: val_bpb = val_loss / ln 2 × this (nats ↔ bpb)."""
    return m["val_tokens"] / score_bytes(m)


def _json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: no {what} (not a finished run directory?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not readable JSON ({e})") from None


def check_metrics(m: Any, where: Path) -> dict[str, Any]:
    """``m`` if it is a metrics object with :data:`METRIC_KEYS` of the right types and consistent
    (val_bpb = val_loss / ln 2 × tokens / bytes); else one DataError line."""
    if not isinstance(m, dict):
        raise DataError(f"{where}: metrics must be a JSON object, got {type(m).__name__}")
    for key, kind in METRIC_KEYS.items():
        v = m.get(key)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) if kind is float else isinstance(v, int) and not isinstance(v, bool)
        if not ok:
            got = "missing" if key not in m else f"{v!r} ({type(v).__name__})"
            raise DataError(f"{where}: {key} must be a{'n integer' if kind is int else ' number'}, got {got}")
        if kind is float and not math.isfinite(v):
            raise DataError(f"{where}: {key} is {v}")
    if m["val_tokens"] <= 0 or m["val_bytes"] <= 0:
        raise DataError(f"{where}: val_tokens and val_bytes must be positive")
    expect = m["val_loss"] / math.log(2) * tokens_per_byte(m)
    if not math.isclose(m["val_bpb"], expect, rel_tol=1e-9, abs_tol=1e-12):
        raise DataError(f"{where}: val_bpb {m['val_bpb']} is not val_loss / ln 2 × tokens / bytes = {expect}")
    return m


def load_run(path: PathLike) -> Run:
    """A run directory with ``config.json``, ``metrics.json`` and ``train.log``."""
    p = Path(path)
    if not p.is_dir():
        raise DataError(f"{p}: no such run directory")
    raw = _json(p / "config.json", "config.json")
    if not isinstance(raw, dict):
        raise ConfigError(f"{p / 'config.json'}: must be a JSON object")
    try:
        cfg = RunConfig.from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{p / 'config.json'}: {e}") from None
    metrics = check_metrics(_json(p / "metrics.json", "metrics.json"), p / "metrics.json")
    if not (p / "train.log").is_file():
        raise DataError(f"{p / 'train.log'}: no train.log")
    return Run(p, cfg, metrics)


def _shared(cfg: RunConfig) -> dict[str, Any]:
    return {k: v for k, v in flatten(cfg).items() if k not in PER_SEED and k != "name"}


def config_hash(cfg: RunConfig) -> str:
    """SHA-256 of the configuration minus :data:`PER_SEED` (and the preset name), as canonical JSON."""
    text = json.dumps(_shared(cfg), sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(text.encode()).hexdigest()


def check_seeds(runs: Sequence[Run]) -> str:
    """The common :func:`config_hash` of ``runs``; PgolfError if a configuration differs or a seed repeats."""
    if not runs:
        raise PgolfError("no runs given")
    first = runs[0]
    base = _shared(first.cfg)
    seen: dict[int, Path] = {}
    for r in runs:
        if r.seed in seen:
            raise PgolfError(f"{r.path}: seed {r.seed} is also the seed of {seen[r.seed]}; seeds must differ")
        seen[r.seed] = r.path
        if r is first:
            continue
        cur = _shared(r.cfg)
        for k in base:
            if cur[k] != base[k]:
                raise PgolfError(f"{r.path / 'config.json'}: {k} = {cur[k]!r} but {first.path} has {base[k]!r}: the "
                                 "seeds of one submission must share their configuration (all but "
                                 f"{', '.join(sorted(PER_SEED))})")
    return config_hash(first.cfg)


def log_json(log: Path, key: str) -> dict[str, Any]:
    """The JSON of a ``# key: {...}`` header line of ``train.log`` (``versions``, ``hardware``), or {}."""
    prefix = f"# {key}: "
    try:
        with open(log, encoding="utf-8", errors="replace") as f:
            for i, line in enumerate(f):
                if line.startswith(prefix):
                    try:
                        v = json.loads(line[len(prefix):])
                    except json.JSONDecodeError:
                        return {}
                    return v if isinstance(v, dict) else {}
                if i > 200:
                    break
    except OSError:
        pass
    return {}


def log_command(log: Path) -> str | None:
    """The ``# command:`` line of ``train.log`` (the command that ran), or None."""
    try:
        with open(log, encoding="utf-8", errors="replace") as f:
            for i, line in enumerate(f):
                if line.startswith("# command: "):
                    return line[len("# command: "):].rstrip("\n")
                if i > 200:
                    break
    except OSError:
        pass
    return None
