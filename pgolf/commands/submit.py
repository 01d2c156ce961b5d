"""``pgolf submit`` (the records folder, :mod:`pgolf.submit.record`) and ``pgolf stats`` (is it a record?
:mod:`pgolf.submit.stats`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("submit")
    def submit(
        runs: Annotated[list[Path], typer.Argument(help="Run directories: the seeds of one configuration.")],
        name: Annotated[str, typer.Option("--name", help="Submission name (also the folder name).")],
        author: Annotated[str, typer.Option("--author", help="Author name.")],
        github_id: Annotated[str, typer.Option("--github-id", help="GitHub user name.")],
        blurb: Annotated[str, typer.Option("--blurb", help="One paragraph describing the submission.")] = "",
        out: Annotated[Path | None, typer.Option("--out", help="Records directory (default records/track_<track>).")] = None,
        track: Annotated[str | None, typer.Option("--track", help="10min_16mb (the record track: 600 s training and "
                                                  "evaluation) or non_record_16mb (no training-time limit, no "
                                                  "significance claim); default: the runs' track setting.")] = None,
        reason: Annotated[str | None, typer.Option("--reason", help="Non-record track: why the runs are not a record "
                                                   "(default: what the runs did beyond the record's rules).")] = None,
        date: Annotated[str | None, typer.Option("--date", help="YYYY-MM-DD (default today, UTC).")] = None,
        hardware: Annotated[str | None, typer.Option("--hardware", help="e.g. '8xH100 80GB SXM' (default from the log).")] = None,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing folder of that name.")] = False,
    ) -> None:
        """Write records/track_<track>/<date>_<name>/: README.md, submission.json, each seed's log,
        train_gpt.py and requirements.txt. The track's budgets are checked (pgolf.tracks): the 16,000,000-byte
        artifact on both, 600 s of training and of evaluation on the record track."""
        from pgolf.commands import status
        from pgolf.submit.record import build_record

        with status(f"checking {len(runs)} run(s) and bundling their train_gpt.py"):
            folder = build_record(runs, name=name, author=author, github_id=github_id, blurb=blurb, out_root=out,
                                  date=date, hardware=hardware, overwrite=overwrite, track=track, reason=reason)
        sub = json.loads((folder / "submission.json").read_text())
        print(f"wrote {folder}: val_bpb {sub['val_bpb']:.8f} ± {sub['val_bpb_std']:.8f} over {len(sub['seeds'])} seeds, "
              f"largest artifact {sub['artifact_bytes_max']:,} bytes; track {sub['track']}"
              + (f" ({sub['non_record_reason']})" if "non_record_reason" in sub else ""))

    @app.command("stats")
    def stats(
        runs: Annotated[list[Path], typer.Argument(help="The new runs: seeds of one configuration.")],
        against: Annotated[list[Path] | None, typer.Option(
            "--against", help="The record to beat: its run directories (repeat) or its submission.json.")] = None,
        sota: Annotated[float | None, typer.Option("--sota", help="The record to beat as one val_bpb value.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Significance: the rule as written (beat the record by 0.005 nats at p < 0.01) and as applied
        (one-sided Welch p < 0.25 against the frontier, PR #1902), one verdict line each."""
        from pgolf.submit.stats import format_report, load_scores, significance

        new = load_scores(runs, "new")
        old = load_scores(against, "record") if against else None
        res = significance(new, old=old, sota_bpb=sota)
        print(json.dumps(res.to_dict(), indent=2) if as_json else format_report(res))
