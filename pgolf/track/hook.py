"""Recording finished commands: what ``pgolf run/train/eval/export`` call after they succeed.

The registry must never fail a run: when it is switched off (``PGOLF_REGISTRY=off``) nothing happens;
when it cannot be reached or written, one warning line goes to stderr and the command still succeeds.
Only rank 0 records (``RANK`` unset or 0; the process group is already torn down at this point).
Tags come from ``PGOLF_TAGS`` (comma-separated), e.g. set by ``pgolf sweep`` for its trials.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any


def enabled() -> bool:
    return os.environ.get("RANK", "0") == "0" and os.environ.get("PGOLF_REGISTRY", "").strip().lower() != "off"


def record_command(kind: str, run_dir: str | Path, *, metrics: dict[str, Any] | None = None,
                   config: dict[str, Any] | None = None, quiet: bool = False) -> str | None:
    """Record the command ``kind`` that just finished on ``run_dir``; returns the run id, or None when off
    or on failure (after a warning on stderr)."""
    if not enabled():
        return None
    try:
        from pgolf.track.record import build_run_record
        from pgolf.track.registry import open_registry

        rec = build_run_record(run_dir, kind=kind, metrics=metrics, config=config, live=True)
        with open_registry() as reg:
            new = reg.add_run(rec)
            shown = reg.shown_url
        if not quiet:
            print(f"registry: {'recorded' if new else 'already had'} {kind} {rec.run_id} "
                  f"(config {rec.config_hash[:12]}) in {shown}", file=sys.stderr, flush=True)
        return rec.run_id
    except Exception as e:  # noqa: BLE001 - by contract the registry never fails the run
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"pgolf: warning: {kind} not recorded in the registry ({type(e).__name__}: {msg[:300]})",
              file=sys.stderr, flush=True)
        return None
