"""``pgolf review RECORD_DIR [--data DIR] [--against DIR | --sota BPB] [--json]``: compliance triage of a records folder.

    pgolf review records/track_10min_16mb/2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611
    pgolf review my_record --data data/datasets/fineweb10B_sp8192 --against records/.../previous_record --json
    pgolf review my_record --sota 1.0611

Nothing of the submission is executed. Exit 0 when no check fails, 1 when one fails (``needs-proof`` and
``cannot-tell`` do not fail; a folder without what a submission must ship fails); a RECORD_DIR that is not a
directory is a ``pgolf: error`` (exit 2). The table wraps to the terminal's width (``COLUMNS``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("review")
    def review_cmd(
        record_dir: Annotated[Path, typer.Argument(help="The records folder (README.md, submission.json, logs, train_gpt.py).")],
        data: Annotated[Path | None, typer.Option("--data", help="Shards directory: check validation documents against training shards.")] = None,
        against: Annotated[Path | None, typer.Option("--against", help="The previous record's folder: test significance as applied (Welch p < 0.25).")] = None,
        sota: Annotated[float | None, typer.Option("--sota", help="The record to beat as one val_bpb (the rule as written only).")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON (schema: pgolf.submit.review.ReviewReport).")] = False,
    ) -> None:
        """Compliance review of a records folder: verdict and evidence per check; never runs its code."""
        from pgolf.submit.review import review, summary

        rep = review(record_dir, data=data, against=against, sota=sota)
        typer.echo(rep.model_dump_json(indent=2) if as_json else summary(rep))
        if rep.exit_code:
            raise typer.Exit(rep.exit_code)
