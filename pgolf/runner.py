"""The main job: train → export → reload the artifact from disk → evaluate → scorecard.

    pgolf run demo                                 # embedded corpus, ≤ 5 min on 2 CPU cores
    pgolf run cpu --set data.path=DIR --out runs/cpu
    torchrun --standalone --nproc_per_node=8 -m pgolf run baseline --out runs/baseline

A run directory holds ``config.json``, ``train.log``, ``metrics.json``, the artifact
``model.pgolf`` and the resumable checkpoint. The score is the evaluation of the artifact as
reloaded from disk (the baseline's "roundtrip"), never of the in-memory weights.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pgolf import dist, fileio, logformat
from pgolf.artifact.budget import ByteReport, check_budget, code_identity, format_table
from pgolf.compile import compile_model
from pgolf.compile import resolve as resolve_compile
from pgolf.config import RunConfig, apply_overrides, load_config, parse_eval_method
from pgolf.data.fingerprint import dataset_of
from pgolf.data.prepare import RunData, prepare_data
from pgolf.errors import ArtifactError, BudgetError, ConfigError, DataError, TrainingError
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
from pgolf.quant import HESSIANS_FILE
from pgolf.switch import needs
from pgolf.train import checkpoint as ckpt_mod
from pgolf.train.log import RunLog
from pgolf.train.loop import Hooks, Trainer, TrainResult, train

ARTIFACT = "model.pgolf"
CONFIG = "config.json"
METRICS = "metrics.json"
LOG = "train.log"


def evaluate_model(model: torch.nn.Module, cfg: RunConfig, data: RunData, device: torch.device) -> EvalResult:
    model.eval()
    if resolve_compile(cfg.eval.compile, device)[0]:
        model = compile_model(model)
    return evaluate(
        model, data.val, data.tables, seq_len=cfg.eval_seq_len,
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
    code, code_sha = code_identity(cfg)  # the bundle of cfg (pgolf bundle), or this bundle's own file
    result = export_model({k: v.detach().cpu() for k, v in model.state_dict().items()}, cfg.export,
                          roles=parameter_roles(model),
                          meta={"config": cfg.to_dict(), "calibration": calib_info}, hessians=hessians,
                          hessian_source=source, loss_fn=loss_fn, code_bytes_=code, log=lambda m: log(m, echo=False))
    size = torch.tensor(float(result.model_bytes if dist.is_main() else 0), dtype=torch.float64,
                        device=next(model.parameters()).device)
    model_bytes = int(dist.all_reduce_(size, "max").item())
    report = ByteReport(model_bytes=model_bytes, code_bytes=code, cap=cfg.export.budget_bytes,
                        rows=result.rows, code_sha256=code_sha)
    if result.search is not None:
        from pgolf.export.solve import format_choices

        log("export: budget search choices\n" + format_choices(result.search), echo=False)
    log(logformat.serialized_line(cfg.export.scheme, report.model_bytes, result.payload_raw_bytes))
    log(logformat.code_line(report.code_bytes))
    log(logformat.total_line(cfg.export.scheme, report.model_bytes, report.code_bytes, report.cap))
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


# --- other stages' work around the training clock (pgolf.train.loop.Hooks) -------------------------

def train_hooks(cfg: RunConfig, *, resume: bool = False) -> Hooks:
    """What the trainer runs before and after its clock for ``cfg`` (``pgolf run`` and ``pgolf train`` pass them to
    :func:`pgolf.train.loop.train`): the data's overlap prescan and the removal of an earlier run's export
    Hessians before, GPTQ calibration in the reserve after."""
    hooks = Hooks()
    if cfg.data.overlap_check and cfg.data.overlap_prescan:
        hooks.before_clock.append(_prescan_overlap)
    if not resume:
        hooks.before_clock.append(_forget_hessians)
    if cfg.train.calib_reserve_seconds > 0:
        hooks.after_clock.append(_calibrate_in_reserve)
    return hooks


def _prescan_overlap(tr: Trainer) -> None:
    """``data.overlap_prescan``: check every train shard against the validation set before the clock, each rank
    its share (the loader then checks nothing); a DataError on every rank alike."""
    overlap = tr.loader.overlap
    if overlap is None:
        return
    t0 = time.perf_counter()

    def reduce(a: np.ndarray, op: str) -> np.ndarray:  # on the training device: NCCL reduces CUDA tensors only
        return dist.all_reduce_(torch.from_numpy(np.asarray(a, dtype=np.float64)).to(tr.device), op).cpu().numpy()

    shards, tokens = overlap.prescan(tr.rank, tr.world, reduce if tr.world > 1 else None)
    tr.log(f"overlap: no validation document in the {len(overlap.files)} train shards; this rank checked {shards} "
           f"({tokens:,} tokens) in {time.perf_counter() - t0:.2f}s before the training clock")


def _forget_hessians(tr: Trainer) -> None:
    """Hessians an earlier run left in this directory belong to other weights: the export must not read them."""
    if tr.rank == 0:
        (tr.run_dir / HESSIANS_FILE).unlink(missing_ok=True)


@needs("train.calib_reserve_seconds > 0")
def _calibrate_in_reserve(tr: Trainer) -> float:
    """GPTQ Hessians of the weights that get exported (after averaging) from the training loader, within what
    is left of ``train.calib_reserve_seconds`` inside the budget (CATALOGUE §2.5 "Calibration data": inside
    the 600 s, never after), saved to ``hessians.safetensors``; returns the seconds spent, which count as
    training time. No time or no batch left: nothing is saved (export then self-generates)."""
    from pgolf.quant.calib import calibrate_from_train, save_hessians

    t = tr.cfg.train
    left = t.calib_reserve_seconds
    if t.max_wallclock_seconds > 0:  # the last step may have run into the reserve
        left = min(left, t.max_wallclock_seconds - tr.train_seconds)
    cal = calibrate_from_train(
        tr.model, tr.loader, batch_tokens=t.batch_tokens, seq_len=t.seq_len, grad_accum=tr.accum,
        reserve_seconds=max(left, 0.0), autocast_dtype=tr.prec.torch_dtype, max_batches=t.calib_batches,
    )
    tr.log(f"calibration: {cal.batches} training batches ({cal.tokens} tokens) in {cal.seconds * 1000:.0f}ms "
           f"of the {t.calib_reserve_seconds}s reserve; {len(cal.hessians)} Hessians")
    if not cal.hessians:  # the same on every rank (all-reduced), unlike the batch count
        tr.log("calibration: no time left in the reserve; no Hessians saved (export will self-generate)")
        return cal.seconds
    if dist.is_main():
        info = {"source": "train", "tokens": cal.tokens, "batches": cal.batches, "seconds": round(cal.seconds, 3),
                "reserve_seconds": t.calib_reserve_seconds}
        save_hessians(tr.run_dir / HESSIANS_FILE, cal.hessians, info)
    dist.barrier()
    return cal.seconds


def run(cfg: RunConfig, out_dir: str | Path, *, resume: bool = False, progress: bool | None = None) -> dict[str, Any]:
    """Run ``cfg`` end to end into ``out_dir`` and return ``metrics.json``'s contents."""
    out = Path(out_dir)
    info = dist.init(cfg.train.device)
    sized: list[str] = []
    if cfg.train.autosize:  # behind its switch: a bundle without autosize leaves it (and the planner) out
        from pgolf.autosize import resolve_for_run

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
    log(f"val_bpb:enabled tokenizer={data.spec.tokenizer_label} data={data.spec.data_dir}")
    log(logformat.kv_line(seed=cfg.train.seed))
    log(logformat.kv_line(tokenizer_path=data.spec.tokenizer_label, vocab_size=cfg.model.vocab_size))
    log(f"val_loader: tokens:{len(data.val.tokens)} raw_bytes:{'yes' if data.val.raw_bytes is not None else 'no'}")
    if data.score == "sidecar":
        log(f"val_bpb:byte_sidecar:enabled (text_transform {data.spec.text_transform}: scored over original bytes)")

    tr: TrainResult = train(cfg, out, data=data, resume=resume, log=log, progress=progress,
                            hooks=train_hooks(cfg, resume=resume))
    log(logformat.trained_line(tr.steps, tr.train_seconds, tr.tokens_per_second, tr.stopped_by))
    if cfg.model.objective != "ar":  # a masked diffusion LM: scored by its variational bound, never val_bpb
        return _run_bound(cfg, out, tr, data, info, log)

    pre = evaluate_model(tr.model, cfg, data, info.device)
    require_finite(pre.val_loss, "pre-quantization val_loss", out)
    log(f"pre_quant val_loss:{pre.val_loss:.6f} val_bpb:{pre.val_bpb:.6f}")
    report = export_and_check(tr.model, cfg, out, log)
    scored = score_artifact(cfg, data, info.device, out, log)

    metrics = {
        **scored,
        "pre_quant_val_loss": pre.val_loss,
        "pre_quant_val_bpb": pre.val_bpb,
        "pre_quant_val_bpb_raw": pre.val_bpb_raw,
        "quant_gap_bpb": scored["round_trip_val_bpb"] - pre.val_bpb,
        **export_metrics(report, cfg),
        **_run_facts(tr, cfg, info, data),
    }
    if dist.is_main():
        fileio.write_json(out / METRICS, metrics)
    log.close()
    return metrics


SCORE_KEYS = ("val_loss", "val_bpb", "val_bpb_raw", "val_byte_ratio", "eval_seconds", "eval_method", "eval_within_budget", "eval_actions",
              "eval_method_refused", "plain_val_bpb", "plain_val_bpb_raw", "plain_eval_seconds", "round_trip_val_bpb",
              "quant_gap_bpb", "evals", "val_var_loss", "val_var_bpb", "val_var_bpb_se", "val_var_bpb_raw",
              "val_var_bpb_raw_se", "val_var_samples", "val_var_seed", "val_var_estimator", "val_var_bpb_bytes",
              "val_sequences", "quant_gap_var_bpb")
"""metrics.json keys that describe the artifact's score: a new artifact invalidates them (:func:`export_run`);
``val_tokens``/``val_bytes`` describe the validation set and stay."""


def export_metrics(report: ByteReport, cfg: RunConfig) -> dict[str, Any]:
    """metrics.json keys that describe the artifact's bytes."""
    return {"artifact_bytes": report.artifact_bytes, "model_bytes": report.model_bytes,
            "code_bytes": report.code_bytes, "code_sha256": report.code_sha256, "export_scheme": cfg.export.scheme,
            "budget_bytes": report.cap}


def score_artifact(cfg: RunConfig, data: RunData, device: torch.device, out: Path, log: RunLog) -> dict[str, Any]:
    """The artifact reloaded from disk and scored as ``pgolf run`` scores it, logging the challenge's lines:
    the plain round trip, then ``eval.method`` on its budgeted clock. Returns the score keys of metrics.json
    (the configured method's, with the plain round trip as ``plain_*`` when it differs); a NaN or infinite
    score is a TrainingError (:func:`require_finite`)."""
    if cfg.model.objective != "ar":  # a masked diffusion LM: its variational bound (pgolf.eval.variational)
        return _bound_artifact(cfg, data, device, out, log)
    model = reload_model(out / ARTIFACT, cfg, device)
    t0 = time.perf_counter()
    post = evaluate_model(model, cfg, data, device)
    eval_seconds = time.perf_counter() - t0
    require_finite(post.val_loss, f"final_{cfg.export.scheme}_roundtrip val_loss", out)
    for line in logformat.final_lines(f"final_{cfg.export.scheme}_roundtrip", post.val_loss, post.val_bpb, eval_seconds,
                                      val_bpb_raw=post.val_bpb_raw, byte_ratio=post.byte_ratio):
        log(line)
    scored: dict[str, Any] = {**post.to_metrics(), "eval_seconds": eval_seconds, "round_trip_val_bpb": post.val_bpb}
    if cfg.eval.method != "plain":  # the run's score is its configured method's (the plain line stays above)
        method = _final_method(cfg, data, device, out / ARTIFACT, log)
        if "val_loss" in method:
            require_finite(method["val_loss"], f"val_loss of eval.method={method.get('eval_method')}", out)
        if "eval_method" in method:
            scored = {**method, "plain_val_bpb": post.val_bpb, "plain_val_bpb_raw": post.val_bpb_raw,
                      "plain_eval_seconds": eval_seconds, "round_trip_val_bpb": post.val_bpb}
        else:  # every method refused by its budget: the plain round trip stays the score
            scored.update(method)
    return scored


def require_finite(value: float | None, what: str, run_dir: Path) -> None:
    """A NaN or infinite score is a failed run, not a result: TrainingError (one line, non-zero exit),
    raised before ``metrics.json`` is written, so nothing is recorded."""
    import math

    if value is not None and not math.isfinite(value):
        raise TrainingError(f"{run_dir}: {what} is {value}: the model diverged (lower the learning rates); "
                            "no metrics.json written, nothing recorded")


@needs("eval.method != 'plain'")
def _final_method(cfg: RunConfig, data: RunData, device: torch.device, artifact: Path, log: RunLog) -> dict[str, Any]:
    """Score the artifact with ``eval.method`` on its budgeted clock (started before it is opened) and log
    the challenge-style lines; returns its metrics (``eval_method``, its seconds and what the budget did).

    A machine too slow for the method must not lose the trained run: when the clock refuses it before it
    scores a token, the refusal is logged and the next cheaper method (:func:`pgolf.eval.methods.cheaper`,
    ``ttt+mix`` → ``mix``) runs on the same clock, its start unchanged, so the refused attempt's seconds
    count. The methods refused are listed under ``eval_method_refused``; when every one is, that is all
    the dict holds and the plain round trip logged above stays the run's score."""
    from pgolf.eval.methods import cheaper

    name: str | None = cfg.eval.method
    start = time.perf_counter()
    refused: list[str] = []
    while name is not None:
        try:
            r = _method_on_artifact(name, artifact, cfg, data, device, start=start)
            break
        except BudgetError as e:
            refused.append(name)
            after = cheaper(name)
            log(f"eval_budget: {name} refused, {f'falling back to {after}' if after else 'the score is the plain round trip'}"
                f": {e}")
            name = after
    if name is None:
        return {"eval_method_refused": refused}
    res, seconds = r.scored.result, r.report["total_seconds"]
    tag = f"final_{cfg.export.scheme}_{name.replace('+', '_')}"
    for line in logformat.final_lines(tag, res.val_loss, res.val_bpb, seconds, val_bpb_raw=res.val_bpb_raw,
                                      byte_ratio=res.byte_ratio):
        log(line)
    if r.report["actions"]:
        log(f"eval_budget: {'; '.join(str(a) for a in r.report['actions'])}")
    out = {**res.to_metrics(), "eval_seconds": seconds, "eval_method": r.name,
           "eval_within_budget": r.report["within_budget"], "eval_actions": r.report["actions"]}
    if refused:
        out["eval_method_refused"] = refused
    return out


def _method_on_artifact(name: str, artifact: Path, cfg: RunConfig, data: RunData, device: torch.device,
                        start: float | None = None):
    """Method ``name`` on its own budgeted clock, started before the artifact is opened (its load counts)
    or at ``start`` (a ``time.perf_counter()`` instant), on a freshly reloaded model: a
    ``pgolf.eval.methods.MethodRun``."""
    from pgolf.eval.clock import EvalClock
    from pgolf.eval.methods import run_method

    clock = EvalClock(cfg.eval.budget_seconds, start=start)
    with clock.phase("load"):
        model = reload_model(artifact, cfg, device)
    return run_method(name, model, data.val, data.tables, cfg, device=device,
                      amp_dtype=agreed_amp(cfg.train.amp_dtype, device).dtype, score=data.score, clock=clock)


def scorecard(metrics: dict[str, Any]) -> str:
    """A human-readable summary of ``metrics.json``."""
    def f(k: str, nd: int = 4) -> str:
        v = metrics.get(k)
        return "n/a" if v is None else f"{v:.{nd}f}"

    if "val_var_bpb" in metrics:
        return _bound_scorecard(metrics, f)
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
    if metrics.get("eval_method"):
        lines.insert(2, f"  scored by eval method                  {metrics['eval_method']}   "
                        f"(plain: {metrics['plain_val_bpb']:.6f})")
    if metrics.get("eval_method_refused"):
        lines.insert(3 if metrics.get("eval_method") else 2,
                     f"  {'' if metrics.get('eval_method') else 'scored by plain: '}refused by the eval budget  "
                     f"{', '.join(metrics['eval_method_refused'])} (train.log)")
    return "\n".join(lines)


@needs("model.objective == 'mdlm'")
def _run_bound(cfg: RunConfig, out: Path, tr: TrainResult, data: RunData, info: Any, log: RunLog) -> dict[str, Any]:
    """:func:`run` after training for a masked diffusion LM (``model.objective=mdlm``): the same export and
    reload, scored by the variational bound (:mod:`pgolf.eval.variational`, same masks before and after
    quantization): metrics.json holds ``val_var_*`` (with its standard error and sample count) and no
    ``val_loss``/``val_bpb``, which only an exact score carries."""
    from pgolf.eval.variational import score_bound

    pre = score_bound(tr.model, cfg, data, info.device, agreed_amp(cfg.train.amp_dtype, info.device).dtype)
    require_finite(pre.val_var_loss, "pre-quantization val_var_loss", out)
    log(pre.line("pre_quant_variational"))
    report = export_and_check(tr.model, cfg, out, log)
    scored = score_artifact(cfg, data, info.device, out, log)
    metrics = {
        **scored,
        "pre_quant_val_var_loss": pre.val_var_loss,
        "pre_quant_val_var_bpb": pre.val_var_bpb,
        "pre_quant_val_var_bpb_se": pre.val_var_bpb_se,
        "quant_gap_var_bpb": scored["val_var_bpb"] - pre.val_var_bpb,
        **export_metrics(report, cfg),
        **_run_facts(tr, cfg, info, data),
    }
    if dist.is_main():
        fileio.write_json(out / METRICS, metrics)
    log.close()
    return metrics


def _run_facts(tr: TrainResult, cfg: RunConfig, info: dist.DistInfo, data: RunData) -> dict[str, Any]:
    """The training run's own facts in metrics.json (what it trained, where, on which data), whatever scored it."""
    return {
        "params": tr.model.num_params(),
        "steps": tr.steps,
        "train_seconds": tr.train_seconds,
        "ms_per_step": tr.ms_per_step,
        "tokens_per_second": tr.tokens_per_second,
        "train_tokens": tr.tokens_seen,
        "stopped_by": tr.stopped_by,
        "world_size": info.world_size,
        "preset": cfg.name,
        "seed": cfg.train.seed,
        "dataset": dataset_of(cfg.data.path, cfg.data.tokenizer, data.spec.data_dir),
    }


@needs("model.objective == 'mdlm'")
def _bound_artifact(cfg: RunConfig, data: RunData, device: torch.device, out: Path, log: RunLog) -> dict[str, Any]:
    """:func:`score_artifact` for a masked diffusion LM: the reloaded artifact's variational bound and its log line."""
    from pgolf.eval.variational import score_bound

    model = reload_model(out / ARTIFACT, cfg, device)
    r = score_bound(model, cfg, data, device, agreed_amp(cfg.train.amp_dtype, device).dtype)
    require_finite(r.val_var_loss, f"final_{cfg.export.scheme}_roundtrip val_var_loss", out)
    log(r.line(f"final_{cfg.export.scheme}_roundtrip_variational"))
    return r.to_metrics()


@needs("model.objective == 'mdlm'")
def _bound_scorecard(m: dict[str, Any], f: Any) -> str:
    """:func:`scorecard` of a masked diffusion LM's run: its variational bound, with the standard error."""
    cap = m["budget_bytes"]
    return "\n".join([
        f"pgolf run {m.get('preset', '')} — scorecard (masked diffusion LM: a variational upper bound, not val_bpb)",
        f"  val_var_bpb (post-quant, bound)        {f('val_var_bpb', 6)} ± {f('val_var_bpb_se', 6)} s.e. "
        f"({m['val_var_samples']} masking samples per sequence)",
        f"  val_var_bpb pre-quant                  {f('pre_quant_val_var_bpb', 6)}   gap {m['quant_gap_var_bpb']:+.6f}",
        f"  val_var_bpb_raw (original UTF-8 bytes) {f('val_var_bpb_raw', 6)}",
        f"  val_var_loss                           {f('val_var_loss', 6)} nats over {m['val_tokens']:,} tokens "
        f"({m['val_sequences']:,} sequences, each scored alone)",
        f"  artifact bytes                         {m['artifact_bytes']:,} / {cap:,} ({100 * m['artifact_bytes'] / cap:.2f} % of cap)",
        f"    model / code                         {m['model_bytes']:,} / {m['code_bytes']:,}",
        f"  params                                 {m['params']:,}",
        f"  steps                                  {m['steps']:,} ({m['stopped_by']})   {m['ms_per_step']:.1f} ms/step",
        f"  tokens/s                               {m['tokens_per_second']:,.0f}",
        f"  train / eval seconds                   {m['train_seconds']:.1f} / {m['eval_seconds']:.1f}",
    ])


# --- the stages alone (pgolf export / pgolf eval) --------------------------------------------

def export_run(
    run_dir: str | Path, cfg: RunConfig | None = None, *, scheme: str | None = None, budget: int | None = None,
    rescore: bool = True,
) -> tuple[ByteReport, ExportResult]:
    """Export the final checkpoint of ``run_dir`` into its artifact (``pgolf export``). ``budget`` sets
    ``export.budget_bytes`` and, unless ``scheme`` is given, selects the ``budget`` scheme.

    The run directory stays true to its artifact: ``config.json`` takes the export settings used (so
    ``pgolf eval``, ``info``, ``bundle`` and ``submit`` charge the same code bytes for it), and
    ``metrics.json`` takes the new bytes and code hash. With ``rescore`` (default) the new artifact is
    scored as ``pgolf run`` scores it (:func:`score_artifact`, the challenge's lines appended to
    ``train.log``) and its score replaces the old; without it the old score keys (:data:`SCORE_KEYS`) move
    under ``stale`` with the reason, so no command reports them as this artifact's."""
    run_dir = Path(run_dir)
    cfg = cfg or load_config(str(run_dir / CONFIG))
    if budget is not None or scheme is not None:
        sets = [] if budget is None else [f"export.budget_bytes={int(budget)}"]
        sets.append(f"export.scheme={scheme or ('budget' if budget is not None else cfg.export.scheme)}")
        cfg = apply_overrides(cfg, sets)
    get_export_scheme(cfg.export.scheme)  # unknown names fail before the checkpoint is read
    if not ckpt_mod.has_checkpoint(run_dir):
        raise DataError(f"{run_dir}: no checkpoint to export (run `pgolf train` first)")
    mpath = run_dir / METRICS
    old = fileio.read_json_object(mpath, "metrics")
    info = dist.init(cfg.train.device)
    ck = ckpt_mod.load_checkpoint(run_dir)
    model = GPT(cfg.model)
    model.load_state_dict(ck.model_state)
    model.to(info.device)
    log = RunLog(run_dir / LOG)
    try:
        log(f"export: {cfg.export.scheme} (pgolf export; the artifact is replaced)")
        report, result = export_artifact(model, cfg, run_dir, log)
        if dist.is_main():
            fileio.write_text(run_dir / CONFIG, cfg.to_json() + "\n")
        if old is None:  # `pgolf train` + `pgolf export`: no run metrics to keep true
            return report, result
        metrics = {**old, **export_metrics(report, cfg)}
        metrics.pop("stale", None)
        if rescore:
            data = prepare_data(cfg)
            scored = score_artifact(cfg, data, info.device, run_dir, log)
            metrics = {k: v for k, v in metrics.items() if k not in SCORE_KEYS}
            metrics.update(scored)
            if isinstance(old.get("pre_quant_val_bpb"), (int, float)):
                metrics["quant_gap_bpb"] = scored["round_trip_val_bpb"] - old["pre_quant_val_bpb"]
        else:
            gone = {k: metrics.pop(k) for k in SCORE_KEYS if k in metrics}
            metrics["stale"] = {"reason": f"`pgolf export` replaced the artifact ({cfg.export.scheme}, "
                                          f"{report.artifact_bytes:,} bytes) without scoring it: run `pgolf eval "
                                          f"{run_dir}`", "values": gone}
        if dist.is_main():
            fileio.write_json(mpath, metrics)
        return report, result
    finally:
        log.close()


def eval_run(run_dir: str | Path, cfg: RunConfig | None = None, artifact: str | Path | None = None, *,
             methods: tuple[str, ...] | list[str] = ("plain",), data_dir: str | Path | None = None,
             dump_losses: str | Path | None = None, metrics_path: str | Path | None = None) -> dict[str, Any]:
    """Reload the artifact of ``run_dir`` and evaluate it with each of ``methods`` (``pgolf eval``), each on
    its own budgeted clock started when the artifact is opened (:mod:`pgolf.eval.methods`).

    ``data_dir``: score another dataset (its tokenizer must match the artifact's vocabulary and, when
    both manifests say, the run's tokenizer file). ``dump_losses``: write each method's per-target losses
    (``FILE``, or ``FILE`` with ``.METHOD`` before the suffix when several). The results are merged into
    ``metrics_path`` (default ``RUN_DIR/metrics.json``) under ``evals``; every file is written only after
    every method finished. Returns the first method's metrics, its artifact bytes, and ``methods``."""
    from pgolf.eval.scoring import gathered, loss_table, write_losses

    run_dir = Path(run_dir)
    cfg = cfg or load_config(str(run_dir / CONFIG))
    if cfg.model.objective != "ar":
        raise ConfigError(f"{run_dir}: a masked diffusion LM (model.objective={cfg.model.objective}) has no exact val_bpb "
                          "for pgolf eval's methods; its score is the variational bound val_var_bpb that `pgolf run` "
                          "and `pgolf export` report")
    methods = list(methods) or ["plain"]
    for m in methods:
        parse_eval_method(m)
    if len(set(methods)) != len(methods):
        raise ConfigError(f"eval methods listed twice: {', '.join(methods)}")
    run_manifest = _manifest_tokenizer(Path(cfg.data.path)) if cfg.data.path else None
    if data_dir is not None:
        cfg = apply_overrides(cfg, [f"data.path={data_dir}", "data.tokenizer="])
    info = dist.init(cfg.train.device)
    path = Path(artifact) if artifact else run_dir / ARTIFACT
    if not path.exists():
        raise ArtifactError(f"{path}: no such artifact (run `pgolf export` first)")
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    data = prepare_data(cfg)  # checks the tokenizer's vocabulary against the artifact's
    if data_dir is not None:
        theirs = _manifest_tokenizer(Path(data_dir))
        if run_manifest and theirs and run_manifest != theirs:
            raise DataError(f"{data_dir}: its tokenizer (sha256 {theirs[:12]}…) is not the one the run was trained "
                            f"with (sha256 {run_manifest[:12]}…)")
    mpath = Path(metrics_path) if metrics_path else run_dir / METRICS
    merged: dict[str, Any] = fileio.read_json_object(mpath, "metrics") or {}
    runs = [_method_on_artifact(name, path, cfg, data, info.device) for name in methods]  # one model at a time
    for r in runs:  # before anything is written
        require_finite(r.scored.result.val_loss, f"val_loss of method {r.name}", path)
    entries = []
    for r in runs:
        entry = {**r.scored.result.to_metrics(), "method": r.name, "data": str(data.spec.data_dir),
                 "eval_seconds": r.report["total_seconds"], "tokens_per_second": r.report["tokens_per_second"],
                 **{k: r.report[k] for k in ("settings", "phases", "actions", "within_budget", "budget_seconds")},
                 "details": r.report["details"]}
        entries.append(entry)
    full = [gathered(r.scored, info.device) for r in runs] if dump_losses is not None else []
    if dist.is_main():
        for r, scored in zip(runs, full, strict=False):  # empty without --dump-losses
            target = _dump_path(Path(dump_losses), r.name, len(runs))
            write_losses(target, loss_table(scored, data.val.tokens, data.tables, data.val.raw_bytes))
        evals = merged.get("evals", {}) if isinstance(merged.get("evals"), dict) else {}
        suffix = "" if data_dir is None else f"@{Path(data_dir).name}"
        for entry in entries:
            evals[entry["method"] + suffix] = entry
        merged["evals"] = evals
        stale = merged.get("stale")
        own = next((e for e in entries if e["method"] == cfg.eval.method), None)
        if isinstance(stale, dict) and own is not None and data_dir is None and artifact is None:
            # the artifact `pgolf export` left unscored, scored now as its run would: the run's score again
            merged.pop("stale")
            merged.update({k: own[k] for k in runs[0].scored.result.to_metrics()})
            merged["eval_seconds"] = own["eval_seconds"]
            if cfg.eval.method != "plain":
                merged["eval_method"] = own["method"]
        fileio.write_json(mpath, merged)
    first = entries[0]
    code, code_sha = code_identity(cfg)
    return {**{k: first[k] for k in runs[0].scored.result.to_metrics()}, "eval_seconds": first["eval_seconds"],
            "artifact_bytes": path.stat().st_size + code, "code_bytes": code, "code_sha256": code_sha,
            "methods": entries}


def _manifest_tokenizer(data_dir: Path) -> str | None:
    """The tokenizer sha256 a dataset's manifest records, or None."""
    p = data_dir / "manifest.json"
    try:
        m = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    tok = m.get("tokenizer") if isinstance(m, dict) else None
    return tok.get("sha256") if isinstance(tok, dict) else None


def _dump_path(path: Path, method: str, n_methods: int) -> Path:
    if n_methods == 1:
        return path
    tag = method.replace("+", "_")
    return path.with_name(f"{path.stem}.{tag}{path.suffix or '.npy'}")


def eval_scorecard(result: dict[str, Any]) -> str:
    """One line per method: val_bpb, val_bpb_raw, seconds, tokens/s, settings and budget actions."""
    def f(v: Any, nd: int = 6) -> str:
        return "n/a" if v is None else f"{v:.{nd}f}"

    rows = [f"{'method':<12} {'val_bpb':>9} {'val_bpb_raw':>11} {'seconds':>8} {'tok/s':>8}  settings"]
    for e in result["methods"]:
        st = " ".join(f"{k}={v}" for k, v in e["settings"].items())
        rows.append(f"{e['method']:<12} {f(e['val_bpb']):>9} {f(e['val_bpb_raw']):>11} {e['eval_seconds']:>8.1f} "
                    f"{e['tokens_per_second']:>8,.0f}  {st}")
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in e["phases"].items())
        rows.append(f"{'':<12} phases: {phases}" + ("" if e["within_budget"] else "   OVER BUDGET"))
        for a in e["actions"]:
            rows.append(f"{'':<12} budget: {a}")
    return "\n".join(rows)
