"""The one rule for "the same experiment": which runs are seeds of one configuration.

Every tool that groups or compares runs — the registry's ``config_hash``, ``pgolf leaderboard``,
``pgolf report``, ``pgolf runs compare``, ``pgolf stats``, ``pgolf submit`` (and ``submission.json``'s
``config_sha256``), ``pgolf try`` — asks this module, so they agree on n, mean and std.

Two runs are the same experiment when they agree on

1. **every result-changing config field** — all fields but :data:`pgolf.config.NOT_RESULT_CHANGING`: the seed (runs
   are grouped *across* seeds), the preset's name (a label), where the data and tokenizer live (the data
   enters by its content, 2.), and what only changes how a run reports or where it runs (device, threads,
   how often it logs, validates or checkpoints, the overlap checks, the autosize cache file). Only fields
   that differ from ``RunConfig()`` enter, so a field added later (off by default) leaves older hashes as
   they were;
2. **the dataset**, by a fingerprint of its content (:func:`pgolf.data.fingerprint.dataset_fingerprint`: the manifest's counts
   and tokenizer checksum for a pgolf dataset, the shard names and sizes for an official export);
3. **the code that ran**: the SHA-256 of the ``train_gpt.py`` the run charged as its code bytes
   (``metrics.json`` ``code_sha256``; pgolf's bundle embeds the fields of 1. and the name, never the seed
   or the logging settings, so the seeds of one configuration ship byte-identical scripts and read their
   seed from ``SEED``). A run recorded before
   pgolf wrote ``code_sha256`` has no code part, and its hash is what it was then.

    identity = sha256(canonical JSON {"config": result_fields, "dataset": fingerprint[, "code": sha256]})

Evaluations of a run with another method are other results, not extra seeds: their records carry the
method in ``eval.method`` (a result-changing field), and tools count only ``run``/``import`` records.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pgolf.config import NOT_RESULT_CHANGING
from pgolf.data.fingerprint import dataset_fingerprint, dataset_label, dataset_of

__all__ = ["NOT_RESULT_CHANGING", "canonical", "dataset_fingerprint", "dataset_label", "dataset_of", "differences",
           "explain", "flat", "identity", "of_run", "result_changing", "result_fields", "run_code", "run_dataset",
           "unflatten"]

def canonical(obj: Any) -> str:
    """Sorted, compact JSON: equal values give equal text (tuples as lists)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_jsonable)


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, (tuple, set, frozenset)) else str(v)


def _normal(v: Any) -> Any:
    return [_normal(x) for x in v] if isinstance(v, (list, tuple)) else v


def flat(config: Any) -> dict[str, Any]:
    """``section.key → value`` of a :class:`~pgolf.config.RunConfig` or a nested config dict, normalised
    through ``RunConfig`` when it parses (values coerced to the field types, tuples as lists); a dict
    that does not parse (another pgolf version's) is flattened as it is."""
    from pgolf.config import RunConfig, flatten
    from pgolf.errors import PgolfError

    if isinstance(config, RunConfig):
        out = flatten(config)
    elif isinstance(config, dict) and config and all("." in k for k in config if k != "name"):
        out = dict(config)  # already flat
        try:
            out = flatten(RunConfig.from_dict(unflatten(out)))
        except (PgolfError, TypeError, ValueError, KeyError):
            pass
    else:
        try:
            out = flatten(RunConfig.from_dict(config))
        except (PgolfError, TypeError, ValueError, KeyError, AttributeError):
            out = _flatten_dict(config if isinstance(config, dict) else {})
    return {k: _normal(v) for k, v in out.items()}


def _flatten_dict(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten_dict(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def unflatten(flat_: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat_.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def result_changing(key: str) -> bool:
    """Whether a flat config key is part of the identity (not in :data:`NOT_RESULT_CHANGING`)."""
    return key not in NOT_RESULT_CHANGING


def result_fields(config: Any) -> dict[str, Any]:
    """The fields that enter the identity: result-changing and different from ``RunConfig()``, sorted."""
    from pgolf.config import RunConfig

    f = flat(config)
    defaults = flat(RunConfig())
    return {k: v for k, v in sorted(f.items()) if result_changing(k) and (k not in defaults or defaults[k] != v)}


def differences(a: Any, b: Any) -> list[tuple[str, Any, Any]]:
    """``(key, value in a, value in b)`` for every result-changing field where two configs differ (a
    field absent from one side is its default there), sorted by key."""
    ra, rb = result_fields(a), result_fields(b)
    from pgolf.config import RunConfig

    defaults = flat(RunConfig())
    keys = sorted(set(ra) | set(rb))
    return [(k, ra.get(k, defaults.get(k)), rb.get(k, defaults.get(k))) for k in keys
            if ra.get(k, defaults.get(k)) != rb.get(k, defaults.get(k))]


def identity(config: Any, dataset: str | None, code: str | None = None) -> str:
    """The SHA-256 (hex) that names the experiment ``config`` ran on ``dataset`` with ``code`` (the
    ``code_sha256`` of its ``train_gpt.py``; None for runs recorded before pgolf kept it)."""
    doc: dict[str, Any] = {"config": result_fields(config), "dataset": dataset}
    if code:
        doc["code"] = code
    return hashlib.sha256(canonical(doc).encode()).hexdigest()


def run_dataset(config: Any, metrics: dict[str, Any], data_dir: str | Path | None = None) -> str:
    """The dataset part of a run's identity: the fingerprint its ``metrics.json`` recorded (``dataset``), else
    the fingerprint of ``data_dir`` (the directory its log names) or of the config's ``data.path``."""
    recorded = metrics.get("dataset")
    if isinstance(recorded, str):
        return recorded
    f = flat(config)
    return dataset_of(str(f.get("data.path") or ""), str(f.get("data.tokenizer") or ""), data_dir)


def run_code(metrics: dict[str, Any]) -> str | None:
    """The code part of a run's identity: the sha256 of the ``train_gpt.py`` its ``metrics.json`` says it
    charged (None for a run recorded before pgolf kept it)."""
    code = metrics.get("code_sha256")
    return code if isinstance(code, str) else None


def of_run(config: Any, metrics: dict[str, Any], data_dir: str | Path | None = None) -> str:
    """:func:`identity` of a run: its config, :func:`run_dataset` and :func:`run_code`."""
    return identity(config, run_dataset(config, metrics, data_dir), run_code(metrics))


def explain(a: Any, b: Any, *, dataset: tuple[str | None, str | None] = (None, None),
            code: tuple[str | None, str | None] = (None, None)) -> str | None:
    """Why two runs are not the same experiment, in one line (the first few differing fields, the dataset,
    the code), or None when they are."""
    why = [f"{k} = {va!r} vs {vb!r}" for k, va, vb in differences(a, b)]
    if dataset[0] != dataset[1]:
        why.append(f"dataset {dataset[0]} vs {dataset[1]}")
    if code[0] and code[1] and code[0] != code[1]:
        why.append(f"code (train_gpt.py sha256) {code[0][:12]}… vs {code[1][:12]}…")
    if not why:
        return None
    more = f" (+{len(why) - 3} more)" if len(why) > 3 else ""
    return "; ".join(why[:3]) + more
