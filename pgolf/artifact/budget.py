"""Byte accounting against the challenge's cap (RULES.md "Budgets", CATALOGUE §1.7).

    artifact_bytes = model_bytes + code_bytes ≤ cap = 16,000,000   (decimal bytes, not 16 MiB)
    headroom       = cap − artifact_bytes                           (negative when over)

``model_bytes`` is the whole artifact file (header + checksums + compressed payload), as the baseline
counts its ``final_model.int8.ptz``. ``code_bytes`` is the size of the submission's ``train_gpt.py``:
the single-file bundle ``pgolf bundle`` writes for the configuration, in the form
``export.code_form`` (compact by default: minified, compressed, self-extracting, as the records
shipped; :mod:`pgolf.bundler`). :func:`code_bytes` is the single place that decides it, for
``pgolf run``, ``pgolf export``, ``pgolf eval``, ``pgolf info`` and the byte planner alike; inside a
bundle it is the bundle file's own size, so the bundle prints the number pgolf charged.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from pgolf.config import RunConfig
from pgolf.errors import BudgetError

CAP_BYTES = 16_000_000


def code_identity(cfg: RunConfig | None = None) -> tuple[int, str]:
    """(code bytes, sha256 hex) of the ``train_gpt.py`` charged for ``cfg``: inside a bundle the running
    file itself, otherwise the bundle of ``cfg`` in the form ``cfg.export.code_form``. The hash is the
    code part of a run's identity (:mod:`pgolf.identity`); equal for every seed of one configuration."""
    import hashlib

    import pgolf

    shipped_file = getattr(pgolf, "__bundle_file__", None)  # set by a bundle's importer
    if shipped_file is not None:
        with open(shipped_file, "rb") as f:
            data = f.read()
        return len(data), hashlib.sha256(data).hexdigest()
    from pgolf.bundler import shipped

    return shipped(cfg if cfg is not None else RunConfig())


def code_bytes(cfg: RunConfig | None = None) -> int:
    """The code bytes charged for ``cfg`` (default: :class:`RunConfig`'s defaults): inside a bundle, the
    size of the bundle file that is running; otherwise the size of the bundle of ``cfg`` in the form
    ``cfg.export.code_form`` (:func:`pgolf.bundler.shipped_bytes`, built once per process and
    configuration)."""
    import pgolf

    shipped = getattr(pgolf, "__bundle_file__", None)  # set by a bundle's importer
    if shipped is not None:
        return os.path.getsize(shipped)
    from pgolf.bundler import shipped_bytes

    return shipped_bytes(cfg if cfg is not None else RunConfig())


@dataclass(frozen=True)
class TensorRow:
    """One tensor's bytes at each stage of export."""

    name: str
    shape: tuple[int, ...]
    scheme: str
    raw_bytes: int
    """numel × element size of the tensor handed to export (its training dtype)."""
    quant_bytes: int
    """Bytes of its stored parts in the uncompressed payload."""
    compressed_bytes: int
    """Its estimated share of the compressed payload (see ``pgolf.export.driver``); the rows' sum
    is exactly the compressed payload size."""


@dataclass(frozen=True)
class ByteReport:
    model_bytes: int
    code_bytes: int
    cap: int = CAP_BYTES
    rows: Sequence[TensorRow] = field(default_factory=tuple)
    code_sha256: str | None = None
    """SHA-256 of the ``train_gpt.py`` charged as ``code_bytes`` (:func:`code_identity`)."""

    @property
    def artifact_bytes(self) -> int:
        return self.model_bytes + self.code_bytes

    @property
    def fits(self) -> bool:
        return self.artifact_bytes <= self.cap

    @property
    def headroom(self) -> int:
        return self.cap - self.artifact_bytes

    @property
    def overhead_bytes(self) -> int:
        """Model bytes not attributed to a tensor: container header, checksums (and the payload when
        there are no rows)."""
        return self.model_bytes - sum(r.compressed_bytes for r in self.rows)


def format_table(report: ByteReport) -> str:
    """Per-tensor byte table with aligned columns, totals, and the budget lines under it."""
    head = ("tensor", "shape", "scheme", "raw", "quantized", "compressed", "share")
    model = max(report.model_bytes, 1)
    body = [
        (
            r.name,
            "x".join(map(str, r.shape)) or "scalar",
            r.scheme,
            f"{r.raw_bytes:,}",
            f"{r.quant_bytes:,}",
            f"{r.compressed_bytes:,}",
            f"{100 * r.compressed_bytes / model:.2f}%",
        )
        for r in report.rows
    ]
    tot_c = sum(r.compressed_bytes for r in report.rows)
    total = (
        f"total ({len(report.rows)} tensors)",
        "",
        "",
        f"{sum(r.raw_bytes for r in report.rows):,}",
        f"{sum(r.quant_bytes for r in report.rows):,}",
        f"{tot_c:,}",
        f"{100 * tot_c / model:.2f}%",
    )
    rows = [head, *body, total]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]

    def line(r: tuple[str, ...]) -> str:
        left = [r[i].ljust(widths[i]) for i in range(3)]
        right = [r[i].rjust(widths[i]) for i in range(3, len(r))]
        return "  ".join(left + right).rstrip()

    rule = "-" * len(line(head))
    out = [line(head), rule, *map(line, body), rule, line(total), ""]
    summary = [
        ("container header + checksums", report.overhead_bytes),
        ("model (artifact file)", report.model_bytes),
        ("code", report.code_bytes),
        ("artifact (model + code)", report.artifact_bytes),
        ("cap", report.cap),
        ("headroom" if report.fits else "OVER BUDGET by", abs(report.headroom)),
    ]
    lw = max(len(k) for k, _ in summary)
    vw = max(len(f"{v:,}") for _, v in summary)
    out += [f"{k.ljust(lw)}  {v:>{vw},}" for k, v in summary]
    return "\n".join(out)


def check_budget(report: ByteReport) -> None:
    """Raise :class:`BudgetError` (one line) when the artifact is over the cap. Print
    :func:`format_table` to stderr before calling this: the message refers to it."""
    if not report.fits:
        raise BudgetError(
            f"artifact is {report.artifact_bytes:,} bytes, over the {report.cap:,}-byte cap by "
            f"{-report.headroom:,} (model {report.model_bytes:,} + code {report.code_bytes:,}); "
            "per-tensor table above"
        )
