"""Run records from run directories and official-format logs: what the registry stores for each run.

A pgolf run directory gives ``config.json``, ``metrics.json`` (full runs) and ``train.log`` (header with
command, versions and hardware; step lines; export and final-score lines). The same function serves the
CLI's automatic recording and ``pgolf runs import``, so both derive the same ``run_id`` for the same run:

    run_id      = sha256([stage, first "# pgolf run" header line of train.log, metrics])[:16]
    config_hash = pgolf.identity.identity(config, dataset fingerprint, code sha256)

``config_hash`` is the one rule of "the same experiment" (:mod:`pgolf.identity`: result-changing fields,
the dataset's content, the code that ran), shared with ``pgolf submit``, ``stats``, the leaderboard and the
report. The dataset fingerprint and the code's sha256 come from ``metrics.json`` when the run recorded them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pgolf import identity
from pgolf.logformat import ParsedLog, parse_log

CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16",
             "amx_tile", "amx_bf16", "amx_int8")
"""The /proc/cpuinfo flags that decide CPU matmul speed and precision (``pgolf.precision``). The measured
matmul throughput, when ``train.amp_dtype=auto`` probed it, is read from the log's ``precision:`` line
(``hardware["matmul_probe_tflops"]``: bf16 and fp32 TFLOP/s of the probe's square matmul)."""

_TFLOPS = re.compile(r"bf16 ([\d.]+) vs fp32 ([\d.]+) TFLOP/s")
_VOLATILE_OFFICIAL = re.compile(r"seed|run_id|dir$|path$|file$|logfile", re.IGNORECASE)


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def machine_of(hardware: dict[str, Any]) -> str:
    gpus = hardware.get("gpus") or []
    if gpus:
        return ", ".join(f"{n}x {name}" for name, n in Counter(gpus).items())
    return str(hardware.get("cpu") or "unknown")


def cpu_flags(path: str = "/proc/cpuinfo") -> list[str]:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in CPU_FLAGS if f in have]
    except OSError:
        pass
    return []


def git_state(path: str | Path | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git checkout holding ``path`` (default: the pgolf package); untracked files
    (run directories, data) do not count as dirty. (None, None) outside a checkout."""
    import pgolf

    where = str(path or Path(pgolf.__file__).resolve().parent)
    try:
        head = subprocess.run(["git", "-C", where, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None, None
        st = subprocess.run(["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
                            capture_output=True, text=True, timeout=10)
        return head.stdout.strip(), (bool(st.stdout.strip()) if st.returncode == 0 else None)
    except (OSError, subprocess.SubprocessError):
        return None, None


def _parse_ts(value: str) -> datetime | None:
    for fmt in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"):
        try:
            ts = datetime.strptime(value, fmt)
            return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)
        except ValueError:
            continue
    return None


class PgolfLog:
    """What a pgolf ``train.log`` says, for the registry: :func:`pgolf.logformat.parse_log`'s header fields,
    the data directory, precision, curves and the training figures."""

    def __init__(self, text: str):
        self.parsed: ParsedLog = parse_log(text)
        p = self.parsed
        self.origin = p.pgolf_origin
        self.started = _parse_ts(p.started) if p.started else None
        self.versions: dict[str, Any] = dict(p.versions)
        self.hardware: dict[str, Any] = dict(p.hardware)
        self.data_dir = p.data_dir.strip() if p.data_dir else None
        self.precision = p.precision.strip() if p.precision else None

    def curves(self) -> dict[str, list[list[float]]]:
        """Training and validation points of the last training (a resumed one continues its curve)."""
        return self.parsed.curves()  # type: ignore[return-value]

    def train_metrics(self) -> dict[str, Any]:
        p = self.parsed
        train = p.curves()["train"]
        seconds = p.train_ms / 1000 if p.train_ms is not None else None
        out: dict[str, Any] = {"steps": p.steps, "train_seconds": seconds,
                               "stopped_by": "wallclock" if p.stopped_early else ("iterations" if train else None)}
        if p.params is not None:
            out["params"] = p.params
        return {k: v for k, v in out.items() if v is not None}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        v = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        from pgolf.errors import DataError

        raise DataError(f"{path}: not readable JSON ({e})") from None
    return v if isinstance(v, dict) else None


def build_run_record(run_dir: str | Path, *, kind: str, metrics: dict[str, Any] | None = None,
                     config: dict[str, Any] | None = None, live: bool = False, tags: tuple[str, ...] | list[str] = ()):
    """The :class:`~pgolf.track.registry.RunRecord` of a run directory. ``kind`` is the command (``run``,
    ``train``, ``export``, ``eval``) or ``import``; ``metrics``/``config`` replace what the directory holds
    (``pgolf eval`` prints its metrics instead of writing them; its ``--set`` changes the config). ``live``:
    recorded on the machine right after the command, so the git state and CPU flags of this machine apply."""
    from pgolf.errors import DataError
    from pgolf.track.registry import RunRecord

    d = Path(run_dir)
    cfg = config if config is not None else _read_json(d / "config.json")
    if cfg is None:
        raise DataError(f"{d}: not a run directory (no config.json)")
    log_path = d / "train.log"
    log = PgolfLog(log_path.read_text(errors="replace")) if log_path.exists() else PgolfLog("")
    if kind in ("train", "export", "eval"):
        stage = kind
    else:
        stage = "run" if (metrics is not None or (d / "metrics.json").exists()) else "train"
    if metrics is None:
        metrics = _read_json(d / "metrics.json") if stage == "run" else None
    if metrics is None:
        metrics = log.train_metrics()
    # `pgolf eval` merges its per-method results into metrics.json under "evals" later; they are eval
    # records of their own, and the run keeps the identity (run_id) it was recorded with
    metrics = {k: v for k, v in metrics.items() if k != "evals"}
    flat = identity.flat(cfg)
    data_path = str(flat.get("data.path") or "")
    hardware = dict(log.hardware)
    if log.precision:
        hardware["precision"] = log.precision
        if m := _TFLOPS.search(log.precision):
            hardware["matmul_probe_tflops"] = {"bf16": float(m.group(1)), "fp32": float(m.group(2))}
    git_commit, dirty = None, None
    if live:
        from pgolf.precision import cpu_model

        hardware.setdefault("cpu", cpu_model())
        if hardware.get("cpu") == cpu_model():
            hardware["cpu_flags"] = cpu_flags()
        git_commit, dirty = git_state()
    origin = log.origin or identity.canonical(cfg)
    if stage in ("run", "train") and log.started is not None:
        created = log.started
    elif live:
        created = now_utc()
    else:
        src = d / "metrics.json" if (d / "metrics.json").exists() else (log_path if log_path.exists() else d / "config.json")
        created = datetime.fromtimestamp(src.stat().st_mtime, timezone.utc)
    env_tags = [t.strip() for t in os.environ.get("PGOLF_TAGS", "").split(",") if t.strip()]
    seed = flat.get("train.seed")
    return RunRecord(
        run_id=hashlib.sha256(identity.canonical([stage, origin, metrics]).encode()).hexdigest()[:16],
        kind=kind, created=created.isoformat(), preset=str(flat.get("name")) if flat.get("name") else None,
        config_hash=identity.of_run(flat, metrics, log.data_dir),
        seed=int(seed) if isinstance(seed, int) else None,
        tags=sorted(set(tags) | set(env_tags)), dataset=identity.dataset_label(data_path),
        machine=machine_of(hardware) if hardware else "unknown", git_commit=git_commit, dirty=dirty,
        config=flat, metrics=metrics, curves=log.curves(), run_dir=str(d.resolve()),
        hardware=hardware, versions=log.versions,
    )


def _date_from_path(path: Path) -> datetime | None:
    for part in reversed(path.resolve().parts):
        if m := re.match(r"^(\d{4}-\d{2}-\d{2})", part):
            try:
                return datetime.strptime(m.group(1), "%Y-%m-%d").replace(tzinfo=timezone.utc)
            except ValueError:
                continue
    return None


def build_official_record(path: str | Path, text: str | None = None, tags: tuple[str, ...] | list[str] = ()):
    """The RunRecord of a challenge-format log (kind ``import``); None when the text is not a training log.
    The log is read by :func:`pgolf.logformat.parse_log`; its identity is its settings (the volatile ones —
    seed, run id, paths — left out), its script's sha256 and its dataset."""
    from pgolf.track.registry import RunRecord

    p = Path(path)
    text = p.read_text(errors="replace") if text is None else text
    log = parse_log(text)
    if not log.recognized or not (log.train_loss or log.final() is not None):
        return None
    source = p.parent.name or p.stem
    config: dict[str, Any] = {f"official.{k}": v for k, v in sorted(log.settings.items())}
    config["official.source"] = source
    if log.code_sha256:
        config["official.code_sha256"] = log.code_sha256
    stable = {k: v for k, v in config.items() if not _VOLATILE_OFFICIAL.search(k.split(".", 1)[1])}
    final = log.final()
    art = log.artifact_bytes()
    model = log.model_bytes.get(art[0]) if art and art[0] in log.model_bytes else \
        (list(log.model_bytes.values())[-1] if log.model_bytes else None)
    train = log.curves()["train"]
    train_seconds = log.train_ms / 1000 if log.train_ms is not None else None
    metrics: dict[str, Any] = {
        "val_bpb": final.val_bpb if final else None, "val_loss": final.val_loss if final else None,
        "final_label": final.name if final else None,
        "eval_seconds": final.eval_ms / 1000 if final and final.eval_ms is not None else None,
        "artifact_bytes": art[1] if art else None, "model_bytes": model,
        "code_bytes": log.code_bytes.get("compressed", log.code_bytes.get("plain")),
        "steps": log.steps, "train_seconds": train_seconds, "params": log.params,
        "stopped_by": "wallclock" if log.stopped_early else "iterations",
    }
    world = log.world_size
    gpu = log.gpu
    hardware: dict[str, Any] = {"world_size": world}
    if gpu:
        hardware["gpus"] = [gpu[0]] * gpu[1]
    created = _date_from_path(p) or datetime.fromtimestamp(p.stat().st_mtime, timezone.utc)
    seed = log.seed if log.seed is not None else (int(log.settings["seed"]) if log.settings.get("seed", "").isdigit() else None)
    return RunRecord(
        run_id=hashlib.sha256(("official\n" + text).encode()).hexdigest()[:16], kind="import",
        created=created.isoformat(), preset=None,
        config_hash=identity.identity(stable, log.dataset),  # the settings stand for the config, the script's sha256 among them
        seed=seed, tags=sorted(set(tags) | {"official"}), dataset=log.dataset,
        machine=(f"{world or gpu[1]}x {gpu[0]}" if gpu
                 else f"{world}x unknown GPU" if world else "unknown"), git_commit=None, dirty=None,
        config=config, metrics={k: v for k, v in metrics.items() if v is not None},
        curves={"train": train, "val": log.curves()["val"]}, run_dir=str(p.resolve()),
        hardware=hardware, versions=dict(log.versions),
    )


def discover(paths: list[str | Path], tags: tuple[str, ...] | list[str] = ()) -> tuple[list[Any], list[str]]:
    """Records for ``pgolf runs import``: each path is a run directory, a log file, or a directory searched
    recursively for finished run directories (``config.json`` and ``metrics.json``) and logs (``*.log``,
    ``*.txt`` with training lines). Returns (records, what was skipped and why). A named file that is not a
    training log, or a named run directory without ``metrics.json`` (a failed run), is an error."""
    from pgolf.errors import DataError

    records: list[Any] = []
    skipped: list[str] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise DataError(f"{p}: no such file or directory")
        if p.is_file():
            rec = build_official_record(p, tags=tags)
            if rec is None:
                raise DataError(f"{p}: not a training log (no step or final val_bpb lines)")
            records.append(rec)
            continue
        for root, dirs, files in os.walk(p):
            dirs.sort()
            if "config.json" in files and ("train.log" in files or "metrics.json" in files):
                dirs[:] = []
                if "metrics.json" not in files:  # a failed or unfinished run: not a result
                    if Path(root) == p:
                        raise DataError(f"{p}: no metrics.json (a failed or unfinished run); nothing to import")
                    skipped.append(f"{root} (no metrics.json: a failed or unfinished run)")
                    continue
                records.append(build_run_record(root, kind="import", tags=tags))
                continue
            for name in sorted(files):
                if name.endswith((".log", ".txt")):
                    rec = build_official_record(Path(root) / name, tags=tags)
                    (records.append(rec) if rec is not None else skipped.append(str(Path(root) / name)))
    return records, skipped
