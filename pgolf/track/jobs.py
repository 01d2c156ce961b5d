"""One training job for a sweep or ``pgolf try``: a config at a seed, run end to end and recorded.

    run_job(cfg, out_dir, registry=reg)              a child process (default): python -m pgolf.track.jobs
    run_job(cfg, out_dir, registry=reg, inprocess=True)

The child runs ``pgolf.runner.run`` (train → export → reload → eval) and records the run like ``pgolf run``
does. It asks the kernel to kill it when its parent dies (``PR_SET_PDEATHSIG``), so killing a sweep
worker leaves no orphan training. Before a job runs, the registry is asked for a run of the same config
hash and seed on this machine: a finished result is reused, so a resumed sweep or a repeated try loses
nothing already measured; a job killed during training continues from its last checkpoint.

Outcomes: ``ok`` (metrics.json), ``over_budget`` (the export did not fit its byte cap: BudgetError,
exit 3; the artifact bytes and the pre-quantization val_bpb come from train.log), ``failed`` (any other
error; its last ``pgolf: error:`` line is kept).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pgolf.config import RunConfig

_PRE_QUANT = re.compile(r"^pre_quant val_loss:\S+ val_bpb:(\S+)", re.MULTILINE)
_TOTAL = re.compile(r"^Total submission size [^:]*: (\d+) bytes", re.MULTILINE)
BUDGET_EXIT = 3


@dataclass
class JobResult:
    seed: int
    status: str
    """``ok``, ``over_budget`` or ``failed``."""
    metrics: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    run_dir: str | None = None
    reused: bool = False
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def planned_identity(cfg: RunConfig) -> tuple[str, str]:
    """(config hash, dataset name) a run of ``cfg`` will be recorded with: :func:`pgolf.identity.identity` of
    its fields, its dataset's fingerprint and the sha256 of the ``train_gpt.py`` it will charge."""
    from pgolf import identity
    from pgolf.artifact.budget import code_identity

    data_dir = cfg.data.path
    if not data_dir:
        from pgolf.data.embedded import embedded_data_dir

        data_dir = str(embedded_data_dir())
    dataset_id = identity.dataset_of(cfg.data.path, cfg.data.tokenizer, data_dir)
    return identity.identity(cfg, dataset_id, code_identity(cfg)[1]), identity.dataset_label(cfg.data.path)


def this_machine() -> str:
    from pgolf.precision import cpu_model

    try:
        import torch

        if torch.cuda.is_available():
            from pgolf.track.record import machine_of

            return machine_of({"gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]})
    except ImportError:  # pragma: no cover
        pass
    return cpu_model()


def find_result(registry: Any, chash: str, seed: int, machine: str, metric: str = "val_bpb") -> Any | None:
    """The newest full run of (config hash, seed) on ``machine`` with a finite ``metric``."""
    for rec in registry.runs(config_hash=chash, seed=seed, machine=machine):
        v = rec.metrics.get(metric)
        if rec.config_hash == chash and rec.kind in ("run", "import") and isinstance(v, (int, float)) and v == v:
            return rec
    return None


def _outcome_from_log(run_dir: Path) -> dict[str, Any]:
    try:
        text = (run_dir / "train.log").read_text(errors="replace")
    except OSError:
        return {}
    out: dict[str, Any] = {}
    if m := _TOTAL.findall(text):
        out["artifact_bytes"] = int(m[-1])
    if m := _PRE_QUANT.findall(text):
        out["pre_quant_val_bpb"] = float(m[-1])
    return out


def run_job(cfg: RunConfig, out_dir: str | Path, *, registry: Any, tags: list[str] | tuple[str, ...] = (),
            inprocess: bool = False, reuse: bool = True, metric: str = "val_bpb") -> JobResult:
    """Run ``cfg`` (its ``train.seed``) into ``out_dir`` unless the registry already has the result."""
    out = Path(out_dir)
    seed = cfg.train.seed
    chash, _ = planned_identity(cfg)
    if reuse:
        found = find_result(registry, chash, seed, this_machine(), metric)
        if found is not None:
            return JobResult(seed, "ok", dict(found.metrics), found.run_id, found.run_dir, reused=True)
    env_tags = ",".join(sorted(set(tags)))
    if inprocess:
        code, error = _run_here(cfg, out, registry.url, env_tags)
    else:
        code, error = _run_child(cfg, out, registry.url, env_tags)
    if code == 0 and (out / "metrics.json").exists():
        from pgolf.track.record import build_run_record

        metrics = json.loads((out / "metrics.json").read_text())
        rec = build_run_record(out, kind="run", tags=list(tags), live=True)
        registry.add_run(rec)  # a no-op when the job recorded itself; covers a registry write that failed
        return JobResult(seed, "ok", metrics, rec.run_id, str(out))
    info = _outcome_from_log(out)
    status = "over_budget" if code == BUDGET_EXIT else "failed"
    return JobResult(seed, status, info, None, str(out), error=error)


def _run_child(cfg: RunConfig, out: Path, url: str, tags: str) -> tuple[int, str | None]:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix=".job-", dir=out, delete=False) as f:
        f.write(cfg.to_json())
        cfg_path = f.name
    env = {**os.environ, "PGOLF_REGISTRY": url, "PGOLF_TAGS": tags, "PGOLF_JOB_PARENT": str(os.getpid())}
    env.pop("RANK", None)
    try:
        with open(out / "job.log", "a", encoding="utf-8") as log:
            proc = subprocess.Popen([sys.executable, "-m", "pgolf.track.jobs", cfg_path, str(out)], env=env,
                                    stdout=log, stderr=subprocess.STDOUT)
            try:
                code = proc.wait()
            except BaseException:
                proc.kill()
                proc.wait()
                raise
    finally:
        Path(cfg_path).unlink(missing_ok=True)
    return code, _last_error(out / "job.log") if code else None


def _last_error(path: Path) -> str | None:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    errs = [line for line in lines if line.startswith("pgolf: error: ")]
    return errs[-1] if errs else (lines[-1][:300] if lines else None)


def _run_here(cfg: RunConfig, out: Path, url: str, tags: str) -> tuple[int, str | None]:
    from pgolf.errors import PgolfError

    old = {k: os.environ.get(k) for k in ("PGOLF_REGISTRY", "PGOLF_TAGS")}
    os.environ.update(PGOLF_REGISTRY=url, PGOLF_TAGS=tags)
    try:
        return _execute(cfg, out, quiet=True), None
    except PgolfError as e:
        return e.exit_code, "pgolf: error: " + " ".join(str(e).split())
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _execute(cfg: RunConfig, out: Path, quiet: bool = False) -> int:
    from pgolf import dist
    from pgolf.runner import run
    from pgolf.track.hook import record_command

    if cfg.train.compile or cfg.eval.compile:
        import torch

        torch._dynamo.reset()  # a fresh graph cache per job (docs/benchmarks.md: recompile limit)
    from pgolf.train.checkpoint import has_checkpoint

    resume = has_checkpoint(out) and not (out / "metrics.json").exists()  # a killed job continues
    with dist.group_scope():
        run(cfg, out, resume=resume, progress=False)
    record_command("run", out, quiet=quiet)
    return 0


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the parent exits; exit now if it already has."""
    parent = os.environ.get("PGOLF_JOB_PARENT")
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if parent and os.getppid() != int(parent):
        os._exit(1)


def main(argv: list[str] | None = None) -> int:
    from pgolf.config import load_config
    from pgolf.errors import PgolfError

    _die_with_parent()
    args = sys.argv[1:] if argv is None else argv
    try:
        cfg = load_config(args[0])
        return _execute(cfg, Path(args[1]))
    except PgolfError as e:
        print("pgolf: error: " + " ".join(str(e).split()), file=sys.stderr, flush=True)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
