"""Run records built from pgolf run directories (``config.json``, ``metrics.json``, ``train.log``).

This is how ``pgolf report --runs DIR...`` works without a registry. A run directory is a directory
holding ``config.json`` (``pgolf.runner.run`` writes it first) and, once the run finished, ``metrics.json``;
a directory without it (a failed or unfinished run) is skipped with a warning, as is one whose files do
not parse, so one bad run never hides the others.

Curves and the header come from :func:`pgolf.logformat.parse_log` (the one reader of the challenge's
lines): ``train.log`` is opened for appending, so one file can hold several runs; a resumed run (``resume:
step:N``) keeps the earlier points up to step N, a run that started over replaces them.

``config_hash`` is the registry's (:func:`pgolf.identity.identity`: the result-changing fields, the dataset's
fingerprint and the code's sha256), so a report of run directories and the registry group runs the same way.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pgolf import identity, logformat
from pgolf.errors import DataError, PgolfError

CONFIG, METRICS, LOG = "config.json", "metrics.json", "train.log"
SEED_KEY = "train.seed"


def config_hash(flat: dict[str, Any], metrics: dict[str, Any] | None = None, data_dir: str | None = None) -> str:
    """The registry's config hash of a run (:func:`pgolf.identity.identity`): the dataset fingerprint and
    code sha256 the run recorded in ``metrics``, else the fingerprint of ``data_dir`` or ``data.path``."""
    return identity.of_run(flat, metrics or {}, data_dir)


def _iso(stamp: str) -> str | None:
    for parse in (lambda s: datetime.strptime(s, "%Y-%m-%dT%H:%M:%S%z"), datetime.fromisoformat):
        try:
            return parse(stamp).isoformat()
        except ValueError:
            continue
    return None


def _machine(hw: dict[str, Any]) -> str:
    gpus = hw.get("gpus") or []
    if gpus:
        return f"{len(gpus)}x{gpus[0]}"
    return f"{hw.get('cpu', '?')} ({hw.get('cpu_count', '?')} cpus)"


def parse_log(text: str) -> dict[str, Any]:
    """``{"curves": {"train": [[step, loss, s]], "val": [[step, bpb, s]]}, "created": iso|None,
    "machine": str|None, "data_dir": str|None}`` of the run the log ends with (earlier runs resumed by it
    included), read by :func:`pgolf.logformat.parse_log`."""
    p = logformat.parse_log(text)
    return {"curves": p.curves(), "created": _iso(p.started) if p.started else None,
            "machine": _machine(p.hardware) if p.hardware else None, "data_dir": p.data_dir}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e.__class__.__name__}: {e})") from None
    except ValueError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Each path is a run directory or a directory of run directories (its children with a config.json)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise DataError(f"{p}: no such directory")
        if (p / CONFIG).is_file():
            found = [p]
        else:
            found = sorted(c for c in p.iterdir() if c.is_dir() and (c / CONFIG).is_file())
            if not found:
                raise DataError(f"{p}: not a pgolf run directory (no {CONFIG}) and holds none")
        out += [d for d in found if d.resolve() not in {o.resolve() for o in out}]
    return out


def record_from_run_dir(path: str | Path, run_id: str | None = None) -> dict[str, Any]:
    """The run record (see ``pgolf.track.summary``) of one run directory."""
    d = Path(path)
    config = _read_json(d / CONFIG)
    metrics = _read_json(d / METRICS) if (d / METRICS).is_file() else {}
    log = parse_log((d / LOG).read_text(encoding="utf-8", errors="replace")) if (d / LOG).is_file() else \
        {"curves": {"train": [], "val": []}, "created": None, "machine": None}
    flat = identity.flat(config)  # the registry's normalised flattening, so both hash alike
    created = log["created"] or datetime.fromtimestamp((d / CONFIG).stat().st_mtime, timezone.utc).isoformat()
    seed = flat.get(SEED_KEY)
    data_path = flat.get("data.path")
    return {
        "run_id": run_id or d.resolve().name,
        "kind": "run" if "val_bpb" in metrics else "train",
        "created": created,
        "preset": config.get("name") or metrics.get("preset"),
        "config_hash": config_hash(flat, metrics, log.get("data_dir")),
        "seed": seed if isinstance(seed, int) else None,
        "tags": [],
        "dataset": data_path or ("embedded" if data_path == "" else None),
        "machine": log["machine"] or "?",
        "git_commit": None,
        "dirty": None,
        "config": flat,
        "metrics": metrics,
        "curves": log["curves"],
        "run_dir": str(d.resolve()),
    }


def records_from_run_dirs(paths: Iterable[str | Path], warn: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Run records of every finished run directory under ``paths`` (see :func:`run_dirs`); run ids are the
    directory names, made unique with ``-2``, ``-3``… when two directories share a name. A directory
    without ``metrics.json`` (a failed or unfinished run) or with an unreadable ``config.json`` /
    ``metrics.json`` is skipped with one ``warn`` line naming it (default: on stderr), so one bad run
    never hides the others."""
    if warn is None:
        def warn(msg: str) -> None:
            print(f"pgolf: warning: {msg}", file=sys.stderr)
    records: list[dict[str, Any]] = []
    used: set[str] = set()
    for d in run_dirs(paths):
        if not (d / METRICS).is_file():
            warn(f"{d}: skipped, no {METRICS} (a failed or unfinished run)")
            continue
        name = run_id = d.resolve().name
        k = 1
        while run_id in used:
            k += 1
            run_id = f"{name}-{k}"
        try:
            rec = record_from_run_dir(d, run_id)
        except PgolfError as e:
            warn(f"skipped: {e}")
            continue
        used.add(run_id)
        records.append(rec)
    return records
