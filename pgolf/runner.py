"""The main job: train → export → reload the artifact from disk → evaluate → scorecard.

    pgolf run demo                                 # embedded corpus, ≤ 5 min on 2 CPU cores
    pgolf run cpu --set data.path=DIR --out runs/cpu
    torchrun --standalone --nproc_per_node=8 -m pgolf run baseline --out runs/baseline

A run directory holds ``config.json``, ``train.log``, ``metrics.json``, the artifact
``model.pgolf`` and the resumable checkpoint. The score is the evaluation of the artifact as
reloaded from disk (the baseline's "roundtrip"), never of the in-memory weights.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pgolf import dist, fileio
from pgolf.artifact.budget import ByteReport, check_budget, code_bytes, format_table
from pgolf.autosize import resolve_for_run
from pgolf.compile import compile_model
from pgolf.config import RunConfig, apply_overrides, load_config
from pgolf.data.prepare import RunData, prepare_data
from pgolf.errors import ArtifactError, DataError
from pgolf.eval.bpb import EvalResult, evaluate
from pgolf.export.driver import (
    ExportResult,
    calibration_hessians,
    export_model,
    generated_loss_fn,
    get_export_scheme,
    load_model_state,
    write_export,
)
from pgolf.model.gpt import GPT, parameter_roles
from pgolf.precision import agreed_amp
from pgolf.train import checkpoint as ckpt_mod
from pgolf.train.log import RunLog
from pgolf.train.loop import TrainResult, train

ARTIFACT = "model.pgolf"
CONFIG = "config.json"
METRICS = "metrics.json"
LOG = "train.log"


@dataclass
class Scored:
    eval: EvalResult
    report: ByteReport


def evaluate_model(model: torch.nn.Module, cfg: RunConfig, data: RunData, device: torch.device) -> EvalResult:
    model.eval()
    if cfg.eval.compile:
        model = compile_model(model)
    return evaluate(
        model, data.val, data.tables, seq_len=cfg.eval.seq_len or cfg.train.seq_len,
        batch_tokens=cfg.eval.batch_tokens, device=device, amp_dtype=agreed_amp(cfg.train.amp_dtype, device).dtype,
        score=data.score,
    )


def export_artifact(model: torch.nn.Module, cfg: RunConfig, run_dir: Path, log: RunLog) -> tuple[ByteReport, ExportResult]:
    """Export ``model`` with ``cfg.export`` into ``run_dir/model.pgolf`` (rank 0 writes) and check the
    byte budget. Hessians (schemes that need them) come from the run's training-token file or are
    self-generated — a collective step, so every rank exports; the byte decisions use rank 0's size,
    so all ranks raise alike. Over budget: the per-tensor table on stderr, then BudgetError."""
    scheme = get_export_scheme(cfg.export.scheme)
    hessians: dict[str, torch.Tensor] = {}
    source, calib_info, loss_fn = "none", {}, None
    if scheme.needs_hessians:
        hessians, source, calib_info = calibration_hessians(model, cfg.export, seq_len=cfg.train.seq_len,
                                                            run_dir=run_dir, log=log)
        log(f"export: hessians from {source} ({len(hessians)} tensors)")
        if scheme.name == "budget" and (cfg.export.search_weights == "loss" or cfg.export.verify_plans):
            loss_fn = generated_loss_fn(model, cfg.export, seq_len=cfg.train.seq_len)
    code = code_bytes(cfg)  # the bundle of cfg (pgolf bundle), or this bundle's own file
    result = export_model({k: v.detach().cpu() for k, v in model.state_dict().items()}, cfg.export,
                          roles=parameter_roles(model),
                          meta={"config": cfg.to_dict(), "calibration": calib_info}, hessians=hessians,
                          hessian_source=source, loss_fn=loss_fn, code_bytes_=code, log=lambda m: log(m, echo=False))
    size = torch.tensor(float(result.model_bytes if dist.is_main() else 0), dtype=torch.float64,
                        device=next(model.parameters()).device)
    model_bytes = int(dist.all_reduce_(size, "max").item())
    report = ByteReport(model_bytes=model_bytes, code_bytes=code, cap=cfg.export.budget_bytes,
                        rows=result.rows)
    if result.search is not None:
        from pgolf.export.search import format_choices

        log("export: budget search choices\n" + format_choices(result.search), echo=False)
    log(f"Serialized model {cfg.export.scheme}: {report.model_bytes} bytes (payload:{result.payload_raw_bytes})")
    log(f"Code size: {report.code_bytes} bytes")
    log(f"Total submission size {cfg.export.scheme}: {report.artifact_bytes} bytes "
        f"(model {report.model_bytes} + code {report.code_bytes}; cap {report.cap})")
    if not report.fits:
        table = format_table(report)
        log(table, echo=False)
        if dist.is_main():
            print(table, file=sys.stderr, flush=True)
        check_budget(report)
    if dist.is_main():
        write_export(run_dir / ARTIFACT, result)
    dist.barrier()
    return report, result


def export_and_check(model: torch.nn.Module, cfg: RunConfig, run_dir: Path, log: RunLog) -> ByteReport:
    """:func:`export_artifact`, returning the byte report."""
    return export_artifact(model, cfg, run_dir, log)[0]


def reload_model(artifact: Path, cfg: RunConfig, device: torch.device) -> GPT:
    state, _header = load_model_state(artifact)
    model = GPT(cfg.model)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "mismatch"
        raise ArtifactError(f"{artifact}: does not match the model config ({first})") from None
    return model.to(device)


def run(cfg: RunConfig, out_dir: str | Path, *, resume: bool = False, progress: bool | None = None) -> dict[str, Any]:
    """Run ``cfg`` end to end into ``out_dir`` and return ``metrics.json``'s contents."""
    out = Path(out_dir)
    info = dist.init(cfg.train.device)
    cfg, sized = resolve_for_run(cfg, out, resume=resume)
    if dist.is_main():
        out.mkdir(parents=True, exist_ok=True)
        if not resume:
            for stale in (METRICS, ARTIFACT):
                (out / stale).unlink(missing_ok=True)
        fileio.write_text(out / CONFIG, cfg.to_json() + "\n")
    dist.barrier()
    log = RunLog(out / LOG)
    log.header(cfg.to_json())
    for line in sized:
        log(line)
    data = prepare_data(cfg)
    log(f"val_bpb:enabled tokenizer={data.spec.tokenizer_path} data={data.spec.data_dir}")
    log(f"val_loader: tokens:{len(data.val.tokens)} raw_bytes:{'yes' if data.val.raw_bytes is not None else 'no'}")
    if data.score == "sidecar":
        log(f"val_bpb:byte_sidecar:enabled (text_transform {data.spec.text_transform}: scored over original bytes)")

    tr: TrainResult = train(cfg, out, data=data, resume=resume, log=log, progress=progress)
    log(f"trained: steps:{tr.steps} train_time:{tr.train_seconds:.1f}s tok/s:{tr.tokens_per_second:.0f} "
        f"stopped_by:{tr.stopped_by}")

    pre = evaluate_model(tr.model, cfg, data, info.device)
    log(f"pre_quant val_loss:{pre.val_loss:.6f} val_bpb:{pre.val_bpb:.6f}")
    report = export_and_check(tr.model, cfg, out, log)

    model = reload_model(out / ARTIFACT, cfg, info.device)
    t0 = time.perf_counter()
    post = evaluate_model(model, cfg, data, info.device)
    eval_seconds = time.perf_counter() - t0
    log(f"final_{cfg.export.scheme}_roundtrip val_loss:{post.val_loss:.4f} val_bpb:{post.val_bpb:.4f} "
        f"eval_time:{eval_seconds * 1000:.0f}ms")
    log(f"final_{cfg.export.scheme}_roundtrip_exact val_loss:{post.val_loss:.8f} val_bpb:{post.val_bpb:.8f} "
        f"val_bpb_raw:{_fmt(post.val_bpb_raw)} byte_ratio:{_fmt(post.byte_ratio)}")

    metrics = {
        **post.to_metrics(),
        "eval_seconds": eval_seconds,
        "pre_quant_val_loss": pre.val_loss,
        "pre_quant_val_bpb": pre.val_bpb,
        "pre_quant_val_bpb_raw": pre.val_bpb_raw,
        "quant_gap_bpb": post.val_bpb - pre.val_bpb,
        "artifact_bytes": report.artifact_bytes,
        "model_bytes": report.model_bytes,
        "code_bytes": report.code_bytes,
        "budget_bytes": report.cap,
        "params": tr.model.num_params(),
        "steps": tr.steps,
        "train_seconds": tr.train_seconds,
        "ms_per_step": tr.ms_per_step,
        "tokens_per_second": tr.tokens_per_second,
        "train_tokens": tr.tokens_seen,
        "stopped_by": tr.stopped_by,
        "world_size": info.world_size,
        "preset": cfg.name,
    }
    if dist.is_main():
        fileio.write_json(out / METRICS, metrics)
    log.close()
    return metrics


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.8f}"


def scorecard(metrics: dict[str, Any]) -> str:
    """A human-readable summary of ``metrics.json``."""
    def f(k: str, nd: int = 4) -> str:
        v = metrics.get(k)
        return "n/a" if v is None else f"{v:.{nd}f}"

    cap = metrics["budget_bytes"]
    lines = [
        f"pgolf run {metrics.get('preset', '')} — scorecard",
        f"  val_bpb (post-quant, challenge bytes)  {f('val_bpb', 6)}",
        f"  val_bpb pre-quant                      {f('pre_quant_val_bpb', 6)}   gap {metrics['quant_gap_bpb']:+.6f}",
        f"  val_bpb_raw (original UTF-8 bytes)     {f('val_bpb_raw', 6)}   table/raw bytes {f('val_byte_ratio', 5)}",
        f"  val_loss                               {f('val_loss', 6)} nats over {metrics['val_tokens']:,} tokens",
        f"  artifact bytes                         {metrics['artifact_bytes']:,} / {cap:,} "
        f"({100 * metrics['artifact_bytes'] / cap:.2f} % of cap)",
        f"    model / code                         {metrics['model_bytes']:,} / {metrics['code_bytes']:,}",
        f"  params                                 {metrics['params']:,}",
        f"  steps                                  {metrics['steps']:,} ({metrics['stopped_by']})   "
        f"{metrics['ms_per_step']:.1f} ms/step",
        f"  tokens/s                               {metrics['tokens_per_second']:,.0f}",
        f"  train / eval seconds                   {metrics['train_seconds']:.1f} / {metrics['eval_seconds']:.1f}",
    ]
    return "\n".join(lines)


# --- the stages alone (pgolf export / pgolf eval) --------------------------------------------

def export_run(
    run_dir: str | Path, cfg: RunConfig | None = None, *, scheme: str | None = None, budget: int | None = None
) -> tuple[ByteReport, ExportResult]:
    """Export the final checkpoint of ``run_dir`` into its artifact (``pgolf export``). ``budget`` sets
    ``export.budget_bytes`` and, unless ``scheme`` is given, selects the ``budget`` scheme."""
    run_dir = Path(run_dir)
    cfg = cfg or load_config(str(run_dir / CONFIG))
    if budget is not None or scheme is not None:
        sets = [] if budget is None else [f"export.budget_bytes={int(budget)}"]
        sets.append(f"export.scheme={scheme or ('budget' if budget is not None else cfg.export.scheme)}")
        cfg = apply_overrides(cfg, sets)
    get_export_scheme(cfg.export.scheme)  # unknown names fail before the checkpoint is read
    if not ckpt_mod.has_checkpoint(run_dir):
        raise DataError(f"{run_dir}: no checkpoint to export (run `pgolf train` first)")
    info = dist.init(cfg.train.device)
    ck = ckpt_mod.load_checkpoint(run_dir)
    model = GPT(cfg.model)
    model.load_state_dict(ck.model_state)
    model.to(info.device)
    log = RunLog(run_dir / LOG)
    try:
        return export_artifact(model, cfg, run_dir, log)
    finally:
        log.close()


def eval_run(run_dir: str | Path, cfg: RunConfig | None = None, artifact: str | Path | None = None) -> dict[str, Any]:
    """Reload the artifact of ``run_dir`` and evaluate it (``pgolf eval``)."""
    run_dir = Path(run_dir)
    cfg = cfg or load_config(str(run_dir / CONFIG))
    info = dist.init(cfg.train.device)
    path = Path(artifact) if artifact else run_dir / ARTIFACT
    if not path.exists():
        raise ArtifactError(f"{path}: no such artifact (run `pgolf export` first)")
    data = prepare_data(cfg)
    model = reload_model(path, cfg, info.device)
    t0 = time.perf_counter()
    res = evaluate_model(model, cfg, data, info.device)
    out = {**res.to_metrics(), "eval_seconds": time.perf_counter() - t0,
           "artifact_bytes": path.stat().st_size + code_bytes(cfg)}
    return out
