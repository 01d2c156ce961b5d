"""Run directories as the submission side reads them: ``config.json``, ``metrics.json``, ``train.log``.

A submission's seeds are runs of one experiment as :mod:`pgolf.identity` defines it (the registry,
leaderboard, report and stats use the same rule): the same result-changing config fields, the same
dataset and the same code. :func:`check_seeds` refuses runs that differ (naming what differs) or
repeat a seed, and returns the identity, which ``submission.json`` records as ``config_sha256``.

Every problem is one :class:`~pgolf.errors.PgolfError` line naming the file.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgolf import identity
from pgolf.config import RunConfig
from pgolf.errors import ConfigError, DataError, PgolfError
from pgolf.identity import NOT_RESULT_CHANGING
from pgolf.logformat import parse_log

PER_SEED = NOT_RESULT_CHANGING
"""Fields that may differ between the seeds of one submission (the identity's rule)."""
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

    @functools.cached_property
    def data_dir(self) -> str | None:
        """The data directory its ``train.log`` names (:func:`pgolf.logformat.parse_log`'s ``data_dir``)."""
        try:
            return parse_log(self.log.read_text(encoding="utf-8", errors="replace")).data_dir
        except OSError:
            return None


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
    if "val_bpb" not in m and isinstance(m.get("val_var_bpb"), (int, float)):  # model.objective=mdlm
        raise DataError(f"{where}: no exact val_bpb: this run's score is val_var_bpb {m['val_var_bpb']:.6f}, a variational "
                        "upper bound of a masked diffusion LM (model.objective=mdlm), which the challenge does not score")
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
    raw_metrics = _json(p / "metrics.json", "metrics.json")
    if isinstance(raw_metrics, dict) and isinstance(raw_metrics.get("stale"), dict):
        raise DataError(f"{p / 'metrics.json'}: no score for the current artifact: "
                        f"{raw_metrics['stale'].get('reason', 'marked stale')}")
    metrics = check_metrics(raw_metrics, p / "metrics.json")
    if not (p / "train.log").is_file():
        raise DataError(f"{p / 'train.log'}: no train.log")
    return Run(p, cfg, metrics)


def _fingerprint(run: Run) -> str | None:
    """The run's dataset fingerprint when it has one (recorded, or its data directory is readable here);
    runs without one are compared by their validation set alone (``stats.scores_of_runs``)."""
    if isinstance(run.metrics.get("dataset"), str):
        return run.metrics["dataset"]
    return identity.dataset_fingerprint(run.data_dir or run.cfg.data.path or None)


def run_identity(run: Run) -> str:
    """:func:`pgolf.identity.of_run` of a run directory (its data directory as its log names it)."""
    return identity.of_run(run.cfg, run.metrics, run.data_dir)


def check_seeds(runs: Sequence[Run]) -> str:
    """The common identity of ``runs`` (:func:`run_identity`); PgolfError naming what differs when they
    are not seeds of one experiment (a config field, the dataset, the code) or when a seed repeats."""
    if not runs:
        raise PgolfError("no runs given")
    first = runs[0]
    seen: dict[int, Path] = {}
    for r in runs:
        if r.seed in seen:
            raise PgolfError(f"{r.path}: seed {r.seed} is also the seed of {seen[r.seed]}; seeds must differ")
        seen[r.seed] = r.path
        if r is first:
            continue
        fa, fb = _fingerprint(first), _fingerprint(r)
        if fa is None or fb is None:
            fa = fb = None
        why = identity.explain(first.cfg, r.cfg, dataset=(fa, fb),
                               code=(identity.run_code(first.metrics), identity.run_code(r.metrics)))
        if why is None and (identity.run_code(first.metrics) is None) != (identity.run_code(r.metrics) is None):
            why = "one run recorded its code's sha256 and the other did not (made by another pgolf version)"
        if why is not None:
            raise PgolfError(f"{r.path}: not a seed of the same experiment as {first.path}: {why} (seeds may "
                             "differ only in what does not change results: "
                             f"{', '.join(sorted(k for k in NOT_RESULT_CHANGING if k != 'name'))})")
    return run_identity(first)


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
