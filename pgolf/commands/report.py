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
    ) -> None:
        """Write a static HTML report of runs: leaderboard (mean ± std over seeds per config), loss and bpb
        curves, bpb vs artifact bytes with the Pareto front and the cap, bpb vs training time, ablation bars."""
        from pgolf.track.report import records_from_run_dirs, write_report
        from pgolf.track.summary import scored

        if not runs:
            raise PgolfError("pgolf report: give at least one --runs DIR (a run directory or a directory of them)")
        records = records_from_run_dirs(runs)
        index = write_report(records, out, title=title)
        print(f"report {index} ({len(records)} runs, {len(scored(records))} with val_bpb)")
