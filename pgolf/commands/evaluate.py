"""``pgolf eval``: evaluate any artifact on any dataset with one or more methods, each inside its budget.

    pgolf eval runs/cpu                                       # its eval.method, as the run scored itself
    pgolf eval runs/cpu --method plain --method sliding --method mix --scorecard
    pgolf eval runs/cpu --method ttt --set eval.ttt.mode=phased --data data/other --dump-losses losses.npy
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pgolf.errors import PgolfError


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_cmd(
        run_dir: Annotated[Path, typer.Argument(help="Run directory (config.json + model.pgolf).")],
        method: Annotated[list[str] | None, typer.Option("--method", help="plain, sliding, ttt, mix, sliding+mix or "
                                                         "ttt+mix; repeatable (default: the run's eval.method).")] = None,
        data: Annotated[Path | None, typer.Option("--data", help="Score this dataset directory instead of the run's.")] = None,
        artifact: Annotated[Path | None, typer.Option("--artifact", help="Artifact instead of RUN_DIR/model.pgolf.")] = None,
        budget: Annotated[float | None, typer.Option("--budget", help="Seconds per method (eval.budget_seconds; 0 = none).")] = None,
        dump_losses: Annotated[Path | None, typer.Option("--dump-losses", help="Write every scored target's loss and "
                                                         "byte counts (.npy; FILE.METHOD.npy for several methods).")] = None,
        metrics: Annotated[Path | None, typer.Option("--metrics", help="Merge the results into this JSON file "
                                                     "(default RUN_DIR/metrics.json).")] = None,
        set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config field: section.key=value.")] = None,
        card: Annotated[bool, typer.Option("--scorecard", help="Print a table (method, val_bpb, val_bpb_raw, seconds, "
                                           "tokens/s, phases, budget actions) instead of JSON.")] = False,
    ) -> None:
        """Reload an artifact from disk and evaluate it exactly (val_bpb and val_bpb_raw per method, with seconds)."""
        from pgolf import dist
        from pgolf.config import apply_overrides, load_config
        from pgolf.runner import eval_run, eval_scorecard

        if not (run_dir / "config.json").exists():
            raise PgolfError(f"{run_dir}: not a run directory (no config.json)")
        sets = list(set_ or []) + ([] if budget is None else [f"eval.budget_seconds={budget}"])
        cfg = apply_overrides(load_config(str(run_dir / "config.json")), sets)
        method = list(method or [cfg.eval.method])  # as the run scored itself
        from pgolf.commands import status

        with dist.group_scope(), status(f"scoring {run_dir} with {', '.join(method)} (each on its own "
                                        f"{cfg.eval.budget_seconds:g} s clock)"):
            m = eval_run(run_dir, cfg, artifact, methods=method, data_dir=data, dump_losses=dump_losses,
                         metrics_path=metrics)
            is_main = dist.is_main()  # before cleanup: afterwards every rank reads as rank 0
        if is_main:
            print(eval_scorecard(m) if card else json.dumps(m, indent=2))
            from pgolf.track.hook import record_command

            scored = cfg.to_dict()  # the record is the first method's result: its identity names that method
            scored["eval"]["method"] = method[0]
            record_command("eval", run_dir, metrics=m, config=scored)
