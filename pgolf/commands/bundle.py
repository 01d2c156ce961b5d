"""``pgolf bundle``: the single-file ``train_gpt.py`` of a run or preset (:mod:`pgolf.submit.bundle`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("bundle")
    def bundle(
        source: Annotated[str, typer.Argument(help="Run directory (with config.json) or preset name.")],
        out: Annotated[Path, typer.Option("--out", help="Output file, e.g. train_gpt.py (its directory must exist).")],
        compact: Annotated[bool, typer.Option("--compact", help="Minified, compressed, self-extracting form.")] = False,
        readable: Annotated[bool, typer.Option("--readable", help="Every module's source under a banner.")] = False,
        set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config field: section.key=value.")] = None,
    ) -> None:
        """Write a standalone train_gpt.py (needs torch, numpy, sentencepiece, safetensors and the compressors,
        not pgolf) holding only the modules the configuration uses. Default form: the config's
        export.code_form (the form whose size pgolf charges as code bytes)."""
        from pgolf.errors import PgolfError
        from pgolf.submit.bundle import resolve_source, write_bundle

        if compact and readable:
            raise PgolfError("--compact and --readable exclude each other")
        src = resolve_source(source, set_)
        form = "compact" if compact else "readable" if readable else src.cfg.export.code_form
        b = write_bundle(src.cfg, out, compact=form == "compact")
        print(f"wrote {out}: {b.nbytes:,} bytes ({b.form}), {len(b.modules)} modules")
        switched_off = {m: why for m, why in b.left_out.items() if why.startswith("needs")}
        if switched_off:
            print("left out (switch off): " + ", ".join(f"{m} ({why})" for m, why in switched_off.items()))
        if form != src.cfg.export.code_form:
            print(f"note: the configuration charges the {src.cfg.export.code_form} form as code bytes, not this one "
                  f"(set export.code_form={form} to charge it)")
        elif src.charged_code_bytes is not None and src.charged_code_bytes != b.nbytes:
            print(f"note: the run was charged {src.charged_code_bytes:,} code bytes; this bundle is {b.nbytes:,} "
                  "(pgolf's sources changed since the run)")
