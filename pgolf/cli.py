"""The ``pgolf`` command. Thin: it parses arguments and calls the functions of the package.

    pgolf run demo                                   # the main job on the embedded corpus
    pgolf info baseline --json                       # params and estimated artifact bytes
    pgolf data build --input a.jsonl --out DIR --vocab-size 1024 [--caseops]
    pgolf data fetch --variant sp1024 --train-shards 10 --out DIR
    pgolf train cpu --set data.path=DIR --out runs/cpu [--resume]
    pgolf export runs/cpu [--budget 16000000] [--scheme gptq6_emb7_brotli]
    pgolf eval runs/cpu [--method plain --method sliding --method mix] [--data DIR]
    torchrun --standalone --nproc_per_node=8 -m pgolf run baseline --out runs/baseline
    pgolf runs list|show|compare|import, pgolf leaderboard, pgolf sweep SPEC.yaml, pgolf task|try|feed

Finished run/train/export/eval commands are recorded in the run registry (``pgolf.track``; rank 0
only; ``PGOLF_REGISTRY=off`` switches it off; an unreachable registry prints a warning, never an error).

User errors (bad path, corrupt file, unknown key, over budget) print one line
``pgolf: error: ...`` on stderr and exit non-zero; tracebacks mean a bug in pgolf.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import click
import typer

try:  # typer ≥ 0.24 vendors its own copy of click; its exceptions are not click's
    from typer import _click as _tclick  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - older typer uses click itself
    _tclick = click

from pgolf.data.fetch import VARIANTS as _VARIANTS  # the help texts list every variant and preset
from pgolf.errors import PgolfError
from pgolf.presets import PRESETS as _PRESETS

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, help="pgolf: parameter-constrained language modelling (OpenAI Parameter Golf).")
data_app = typer.Typer(no_args_is_help=True, help="Build or fetch token shards.")
app.add_typer(data_app, name="data")

SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a config field: section.key=value (repeatable).")]


def _config(preset: str, sets: list[str] | None):
    from pgolf.config import apply_overrides
    from pgolf.presets import get_preset

    return apply_overrides(get_preset(preset), sets or [])


def _record(kind: str, run_dir: Path, **kw) -> None:
    """Record a finished command in the run registry (``pgolf.track.hook``: rank 0 only, off with
    PGOLF_REGISTRY=off, a warning line instead of a failure when the registry is unreachable)."""
    from pgolf.track.hook import record_command

    record_command(kind, run_dir, **kw)


def _default_out(name: str) -> Path:
    import time

    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


@app.command()
def info(
    preset: Annotated[str, typer.Argument(help="Preset name: " + ", ".join(_PRESETS) + ".")],
    set_: SetOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    hardware: Annotated[str | None, typer.Option("--hardware", help="Preflight on 8xH100, 1xH100 or cpu (measured here): "
                                                 "ms/step, steps, tokens, artifact bytes, eval time.")] = None,
) -> None:
    """Show a configuration: parameter count, estimated artifact bytes, every field with its source, and
    with --hardware a preflight prediction of the run."""
    from pgolf.config import field_docs
    from pgolf.export.planner import estimate_artifact_bytes
    from pgolf.model.gpt import count_params
    from pgolf.presets import provenance

    cfg = _config(preset, set_)
    prov = provenance(preset, set_ or [])
    est = estimate_artifact_bytes(cfg)
    out = {
        "preset": cfg.name,
        "params": count_params(cfg.model),
        "estimated_artifact_bytes": est.artifact_bytes,
        "estimated_model_bytes": est.model_bytes,
        "estimate": {"scheme": cfg.export.scheme, "method": est.method, "groups": est.groups},
        "code_bytes": est.code_bytes,
        "budget_bytes": cfg.export.budget_bytes,
        "fits": est.artifact_bytes <= cfg.export.budget_bytes,
        "config": cfg.to_dict(),
        "fields": {k: {"value": list(v) if isinstance(v, tuple) else v, "source": src} for k, (v, src) in prov.items()},
    }
    if hardware is not None:
        from pgolf.preflight import preflight
        from pgolf.tracks import preflight_verdicts

        pre = preflight(cfg, hardware, artifact_bytes=est.artifact_bytes)
        out["preflight"] = {**pre.to_json(), "track": {"name": cfg.track, "verdicts": preflight_verdicts(cfg, pre)}}
    if as_json:
        print(json.dumps(out, indent=2))
        return
    print(f"preset {cfg.name}: {out['params']:,} params; estimated artifact {est.artifact_bytes:,} bytes "
          f"(model {est.model_bytes:,} + code {est.code_bytes:,}) of {cfg.export.budget_bytes:,}"
          f" [{est.method}]")
    if hardware is not None:
        pf = out["preflight"]
        phases = ", ".join(f"{k} {v:.1f}" for k, v in pf["ms_per_step_phases"].items())
        ev = "n/a" if pf["eval_seconds"] is None else f"{pf['eval_seconds']:.1f} s over {pf['eval_tokens']:,} tokens"
        print(f"preflight on {hardware}: {pf['ms_per_step']:.1f} ms/step ({phases}); {pf['steps']:,} steps in the budget, "
              f"{pf['tokens']:,} tokens; artifact ≈{pf['artifact_bytes']:,} bytes; plain eval ≈{ev}")
        print(f"  [{pf['method']}]")
        print(f"track {cfg.track}: " + "; ".join(f"{v['verdict'].upper()} {v['line']}" for v in pf["track"]["verdicts"]))
    docs = field_docs()
    width = max(len(k) for k in prov)
    for k, (v, src) in prov.items():
        shown = ",".join(map(str, v)) if isinstance(v, tuple) else repr(v) if isinstance(v, str) else str(v)
        doc = docs.get(k, "")
        doc = (doc[:70] + "…") if len(doc) > 71 else doc
        print(f"  {k:<{width}}  {shown:<14} [{src}]" + (f"  {doc}" if doc else ""))


@app.command()
def run(
    preset: Annotated[str, typer.Argument(help="Preset name: " + ", ".join(_PRESETS) + ".")],
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="Run directory (default runs/PRESET-TIME).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue training from the run's checkpoint.")] = False,
) -> None:
    """Train → export → reload the artifact → evaluate → scorecard (the main job)."""
    from pgolf import dist
    from pgolf.runner import run as run_fn
    from pgolf.runner import scorecard

    cfg = _config(preset, set_)
    out = out or _default_out(cfg.name)
    with dist.group_scope():
        metrics = run_fn(cfg, out, resume=resume)
        is_main = dist.is_main()  # before cleanup: afterwards every rank reads as rank 0
    if is_main:
        print(scorecard(metrics))
        print(f"run directory: {out}")
    _record("run", out)


@app.command()
def train(
    preset: Annotated[str, typer.Argument(help="Preset name: " + ", ".join(_PRESETS) + ".")],
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="Run directory.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run's checkpoint.")] = False,
) -> None:
    """Train only; writes config.json, train.log and a resumable checkpoint."""
    from pgolf import dist, fileio
    from pgolf.autosize import resolve_for_run
    from pgolf.runner import train_hooks
    from pgolf.train.log import RunLog
    from pgolf.train.loop import train as train_fn

    cfg = _config(preset, set_)
    out = out or _default_out(cfg.name)
    info_ = dist.init(cfg.train.device)
    cfg, sized = resolve_for_run(cfg, out, resume=resume)
    if info_.is_main:
        out.mkdir(parents=True, exist_ok=True)
        fileio.write_text(out / "config.json", cfg.to_json() + "\n")
    log = RunLog(out / "train.log")
    log.header(cfg.to_json())
    for line in sized:
        log(line)
    with dist.group_scope():
        try:
            res = train_fn(cfg, out, resume=resume, log=log, hooks=train_hooks(cfg, resume=resume))  # prescan, calibration
        finally:
            log.close()
    if info_.is_main:
        print(f"trained {res.steps} steps in {res.train_seconds:.1f} s ({res.tokens_per_second:,.0f} tok/s); "
              f"checkpoint in {out}")
    _record("train", out)


@app.command("export")
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run directory with a checkpoint.")],
    budget: Annotated[int | None, typer.Option("--budget", help="Artifact byte budget (code + model); implies --scheme budget.")] = None,
    scheme: Annotated[str | None, typer.Option("--scheme", help="Export scheme (default: the run's export.scheme).")] = None,
    rescore: Annotated[bool, typer.Option("--rescore/--no-rescore", help="Score the new artifact as `pgolf run` does "
                                          "(default); --no-rescore marks the old score stale in metrics.json.")] = True,
) -> None:
    """Export a run's checkpoint into RUN_DIR/model.pgolf and check the byte budget; with --budget, search
    bits/clip/GPTQ/LQER per tensor group for the lowest loss that fits and print the choices. The run
    directory stays true to the new artifact: config.json takes the export settings, metrics.json the new
    bytes and (unless --no-rescore) the new score."""
    from pgolf import dist
    from pgolf.artifact.budget import format_table
    from pgolf.export.solve import format_choices
    from pgolf.runner import export_run

    if not run_dir.is_dir():
        raise PgolfError(f"{run_dir}: no such run directory")
    if budget is not None and budget <= 0:
        raise PgolfError(f"--budget must be a positive number of bytes, got {budget}")
    from pgolf.commands import status

    with dist.group_scope(), status(f"exporting {run_dir} ({'budget search' if budget else scheme or 'its scheme'})"):
        rep, res = export_run(run_dir, scheme=scheme, budget=budget, rescore=rescore)
        is_main = dist.is_main()  # before cleanup: afterwards every rank reads as rank 0
    if not is_main:
        return
    if res.search is not None:
        print(format_choices(res.search))
        print()
    print(format_table(rep))
    print(f"artifact {run_dir / 'model.pgolf'} ({res.scheme}, hessians: {res.hessian_source}): "
          f"{rep.artifact_bytes:,} bytes (model {rep.model_bytes:,} + code {rep.code_bytes:,}) of {rep.cap:,}")
    metrics_file = run_dir / "metrics.json"
    if metrics_file.exists():
        m = json.loads(metrics_file.read_text())
        if "stale" in m:
            print(f"metrics.json: the previous score is marked stale; `pgolf eval {run_dir}` scores the new artifact")
        elif isinstance(m.get("val_bpb"), (int, float)):
            print(f"scored: val_bpb {m['val_bpb']:.8f} ({m.get('eval_method', 'plain')}); metrics.json updated")
    _record("export", run_dir, metrics={"artifact_bytes": rep.artifact_bytes, "model_bytes": rep.model_bytes,
                                        "code_bytes": rep.code_bytes, "code_sha256": rep.code_sha256,
                                        "budget_bytes": rep.cap, "scheme": res.scheme})


@data_app.command("build")
def data_build(
    input_: Annotated[list[Path], typer.Option("--input", help="JSONL (field `text`) or .txt corpus; repeatable.")],
    out: Annotated[Path, typer.Option("--out", help="Output directory for shards, tokenizer and manifest.")],
    tokenizer: Annotated[Path | None, typer.Option("--tokenizer", help="Use this SentencePiece model instead of training one, or `byte260` (one id per UTF-8 byte, no model).")] = None,
    vocab_size: Annotated[int | None, typer.Option("--vocab-size", help="Vocabulary of the tokenizer to train (default 1024; 260 with --tokenizer byte260).")] = None,
    val_docs: Annotated[int | None, typer.Option("--val-docs", help="The first N documents form the validation split.")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Encoding processes (default: CPU count).")] = None,
    caseops: Annotated[bool, typer.Option("--caseops", help="Lossless CaseOps capitalization transform before the tokenizer ([04-18]).")] = False,
) -> None:
    """Corpus → SentencePiece tokenizer (or byte260) → train/val shards + val byte sidecar + manifest."""
    from pgolf.data.corpus import build_dataset

    kwargs = {} if val_docs is None else {"val_docs": val_docs}
    manifest = build_dataset([str(p) for p in input_], str(out), tokenizer=str(tokenizer) if tokenizer else None,
                             vocab_size=vocab_size, workers=workers, caseops=caseops, **kwargs)
    print(json.dumps({k: v for k, v in manifest.items() if k in ("splits", "vocab_size", "tokenizer_report")}, indent=2))
    print(f"wrote {out}")


@data_app.command("fetch")
def data_fetch(
    variant: Annotated[str, typer.Option("--variant", help="One of pgolf.data.fetch.VARIANTS: " + ", ".join(_VARIANTS)
                                         + ".")] = "sp1024",
    train_shards: Annotated[int, typer.Option("--train-shards", help="Number of train shards (1e8 tokens each).")] = 80,
    out: Annotated[Path | None, typer.Option("--out", help="Output directory (default data/datasets/fineweb10B_VARIANT).")] = None,
) -> None:
    """Download the official cached FineWeb export (Hugging Face dataset willdepueoai/parameter-golf)."""
    from pgolf.data.fetch import fetch_dataset

    summary = fetch_dataset(variant, train_shards, str(out or Path("data/datasets") / f"fineweb10B_{variant}"))
    print(json.dumps(summary, indent=2, default=str))


from pgolf.commands import register_all  # noqa: E402  (after the core commands: their order in --help)

register_all(app)


def _exc(name: str) -> tuple[type[BaseException], ...]:
    """The click exception class ``name`` from click and from typer's vendored click, if present."""
    found = {getattr(m.exceptions, name) for m in (click, _tclick) if hasattr(m.exceptions, name)}
    return tuple(found)


# "no arguments: help was shown" (click ≥ 8.2 names it NoArgsIsHelpError)
_NO_ARGS_IS_HELP = _exc("NoArgsIsHelpError") + _exc("NoArgsIsHelp")
_EXIT = _exc("Exit")
_CLICK_ERROR = _exc("ClickException")
_ABORT = _exc("Abort")


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning user errors into one line and a non-zero exit."""
    try:
        rc = app(args=argv, standalone_mode=False, prog_name="pgolf")  # a command's typer.Exit(code) returns code
    except PgolfError as e:
        print("pgolf: error: " + " ".join(str(e).split()), file=sys.stderr)
        return e.exit_code
    except _NO_ARGS_IS_HELP:
        return 0
    except _EXIT as e:
        return e.exit_code
    except _CLICK_ERROR as e:
        print("pgolf: error: " + " ".join(e.format_message().split()), file=sys.stderr)
        return e.exit_code
    except _ABORT:
        print("pgolf: error: aborted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        rc = 130
    if rc == 130:  # typer ≥ 0.24 turns Ctrl-C into Exit(130) and, not standalone, returns the code
        print("pgolf: error: interrupted (the last checkpoint, if any, is intact; rerun with --resume)", file=sys.stderr)
        return 130
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
