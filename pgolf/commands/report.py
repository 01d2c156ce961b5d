"""``pgolf report``: the static HTML report (leaderboard, plots, run details) of run directories.

    pgolf report --runs runs/ --out report/            # every run directory under runs/
    pgolf report --runs runs/a --runs runs/b --out r/  # chosen run directories

The page opens from disk (``file://``) with no server and no network (``pgolf.track.report``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pgolf.errors import PgolfError


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        out: Annotated[Path, typer.Option("--out", help="Directory for index.html and the plots (PNG + SVG).")],
        runs: Annotated[list[Path] | None, typer.Option("--runs", help="A run directory, or a directory of run "
                                                        "directories (repeatable).")] = None,
        title: Annotated[str, typer.Option("--title", help="Page title.")] = "pgolf report",
        registry: Annotated[str | None, typer.Option("--registry", help="Also every run in this registry (SQLAlchemy "
                                                     "URL or SQLite file; 'default' = $PGOLF_REGISTRY or the user one).")] = None,
        tag: Annotated[str | None, typer.Option("--tag", help="With --registry: only runs with this tag.")] = None,
    ) -> None:
        """Write a static HTML report of runs: leaderboard (mean ± std over seeds per config), loss and bpb
        curves, bpb vs artifact bytes with the Pareto front and the cap, bpb vs training time, ablation bars."""
        import sys

        from pgolf.track.report import records_from_run_dirs, write_report
        from pgolf.track.summary import scored

        if not runs and registry is None:
            raise PgolfError("pgolf report: give --runs DIR (a run directory or a directory of them) and/or --registry URL")
        warned: list[str] = []

        def warn(line: str) -> None:
            warned.append(line)
            print(f"pgolf: warning: {line}", file=sys.stderr)

        records = records_from_run_dirs(runs, warn) if runs else []
        if registry is not None:
            from pgolf.track.registry import open_registry

            reg = open_registry(None if registry == "default" else registry)
            seen = {r["run_id"] for r in records}
            records += [r.model_dump() for r in reg.runs(**({"tag": tag} if tag else {})) if r.run_id not in seen]
        index = write_report(records, out, title=title)
        print(f"report {index} ({len(records)} runs, {len(scored(records))} with val_bpb"
              + (f"; {len(warned)} run directories skipped" if warned else "") + ")")
