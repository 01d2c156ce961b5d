"""``submission.json`` of a records folder, as pydantic models.

Source: the 44 ``records/track_10min_16mb/*/submission.json`` of openai/parameter-golf at 4908dc46f
(CATALOGUE §1.9). The baseline [03-17b] has the minimal keys ``author, github_id, name, blurb, date,
val_loss, val_bpb, bytes_total, bytes_code``; later records add ``track, seeds, seed_results`` (seed →
``val_loss, val_bpb, artifact_bytes, steps, step_avg_ms, eval_time_s, …``), ``val_loss_std,
val_bpb_std, artifact_bytes_mean/max, hardware, pytorch_version, compliance, attribution`` and test
statistics. No key is in every file and the leaderboard enforces none.

* :class:`RecordSubmission` types every key the records use (strict JSON types: an integer is not a
  string, a byte count is not a float; where records disagree — ``seeds`` as a list or, twice, a
  dict of per-seed results; a ``p_value`` of ``"<0.001"`` — the union), requires none, keeps unknown
  keys. Every file in the records folder validates (``tests/test_submit.py``).
* :class:`Submission` is what ``pgolf submit`` writes: the baseline's keys plus the multi-seed ones,
  all required, narrowed, and consistent — seeds = the keys of ``seed_results``; ``val_loss`` /
  ``val_bpb`` the per-seed means and ``*_std`` the sample standard deviations (n − 1); the artifact
  mean / max and ``bytes_total`` = the max ≤ 16,000,000.

Tracks (:mod:`pgolf.tracks`): ``track`` is ``10min_16mb`` or ``non_record_16mb``, as the folder it lies in. The
non-record folders (``records/track_non_record_16mb/*/submission*.json``) add ``wallclock_seconds`` (training
seconds: the 4-hour baseline 14400.039), ``step_stop``, ``pre_quant_val_loss``, ``gpu`` and, in the MDLM folder,
``non_record_reason``; pgolf writes ``non_record_reason`` (why the run is not a record) and ``wallclock_seconds`` (the
longest seed's training time) on that track, and neither on the record track, whose ``compliance`` must show
training and evaluation within 600 s.
"""

from __future__ import annotations

import math
import statistics
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pgolf.errors import PgolfError

BUDGET_BYTES = 16_000_000
TRACK = "10min_16mb"
"""The record track (``pgolf.tracks.RECORD``); ``TRACKS`` are the values pgolf writes."""
TRACKS = ("10min_16mb", "non_record_16mb")


def _iso_date(v: str | None) -> str | None:
    if v is None:
        return v
    try:
        (datetime.fromisoformat(v.replace("Z", "+00:00")) if "T" in v else date.fromisoformat(v))
    except ValueError:
        raise ValueError(f"{v!r} is not an ISO-8601 date or date-time") from None
    return v


class SeedResult(BaseModel):
    """One seed's entry in ``seed_results`` (the keys records use; others kept)."""

    model_config = ConfigDict(strict=True, extra="allow")

    val_bpb: float
    val_loss: float | None = None
    artifact_bytes: int | None = None
    steps: int | None = None
    step_avg_ms: float | None = None
    train_time_s: float | None = None
    eval_time_s: float | None = None
    pre_quant_val_bpb: float | None = None


class RecordSubmission(BaseModel):
    """Any records folder's ``submission.json``: typed where present, nothing required."""

    model_config = ConfigDict(strict=True, extra="allow")

    author: str | None = None
    github_id: str | None = None
    name: str | None = None
    blurb: str | None = None
    date: str | None = None
    track: str | None = None
    val_loss: float | None = None
    val_bpb: float | None = None
    val_loss_std: float | None = None
    val_bpb_std: float | None = None
    bytes_total: int | None = None
    bytes_code: int | None = None
    seeds: list[int] | dict[str, dict[str, Any]] | None = None
    seed_results: dict[str, SeedResult] | None = None
    artifact_bytes_mean: int | None = None
    artifact_bytes_max: int | None = None
    hardware: str | None = None
    pytorch_version: str | None = None
    pre_quant_val_bpb: float | None = None
    pre_quant_val_loss: float | None = None
    compliance: dict[str, bool | int | float | str] | None = None
    attribution: dict[str, str | list[str]] | None = None
    comparison_baseline_pr: int | None = None
    t_statistic: float | None = None
    p_value: float | str | None = None
    welch_df: float | None = None
    wallclock_seconds: float | None = None
    step_stop: int | None = None
    non_record_reason: str | None = None

    @field_validator("date")
    @classmethod
    def _check_date(cls, v: str | None) -> str | None:
        return _iso_date(v)


class PgolfInfo(BaseModel):
    """How pgolf made the submission (an extra key; the leaderboard ignores it)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    version: str
    preset: str
    config_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    tokens_per_byte: float
    """``val_tokens / val_bytes`` of the validation set the seeds were scored on (nats ↔ bpb)."""


class Submission(RecordSubmission):
    """What ``pgolf submit`` writes: every key required and consistent with ``seed_results``."""

    model_config = ConfigDict(strict=True, extra="forbid")

    author: str = Field(min_length=1)
    github_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    blurb: str
    date: str
    track: str
    val_loss: float
    val_bpb: float
    val_loss_std: float
    val_bpb_std: float
    bytes_total: int = Field(gt=0, le=BUDGET_BYTES)
    bytes_code: int = Field(gt=0)
    seeds: list[int] = Field(min_length=1)
    seed_results: dict[str, SeedResult]
    artifact_bytes_mean: int
    artifact_bytes_max: int
    hardware: str
    pytorch_version: str
    pre_quant_val_bpb: float
    compliance: dict[str, bool]
    pgolf: PgolfInfo

    @model_validator(mode="after")
    def _consistent(self) -> Submission:
        if sorted(self.seed_results) != sorted(str(s) for s in self.seeds) or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds {self.seeds} are not the distinct keys of seed_results {sorted(self.seed_results)}")
        rs = [self.seed_results[str(s)] for s in self.seeds]
        for key in ("val_loss", "artifact_bytes", "steps", "train_time_s", "eval_time_s", "pre_quant_val_bpb"):
            if any(getattr(r, key) is None for r in rs):
                raise ValueError(f"every seed_results entry needs {key}")
        bpb, loss = [r.val_bpb for r in rs], [r.val_loss for r in rs]
        art = [r.artifact_bytes for r in rs]

        def close(a: float, b: float) -> bool:
            return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)

        std = (lambda x: statistics.stdev(x) if len(x) > 1 else 0.0)
        checks = [("val_bpb", self.val_bpb, statistics.fmean(bpb)), ("val_loss", self.val_loss, statistics.fmean(loss)),
                  ("val_bpb_std", self.val_bpb_std, std(bpb)), ("val_loss_std", self.val_loss_std, std(loss)),
                  ("pre_quant_val_bpb", self.pre_quant_val_bpb, statistics.fmean(r.pre_quant_val_bpb for r in rs))]
        for key, got, want in checks:
            if not close(got, want):
                raise ValueError(f"{key} {got} is not the seeds' {'standard deviation' if 'std' in key else 'mean'} {want}")
        if self.artifact_bytes_max != max(art) or self.artifact_bytes_mean != round(statistics.fmean(art)):
            raise ValueError(f"artifact_bytes_mean/max {self.artifact_bytes_mean}/{self.artifact_bytes_max} are not the "
                             f"seeds' {round(statistics.fmean(art))}/{max(art)}")
        if self.bytes_total != self.artifact_bytes_max:
            raise ValueError(f"bytes_total {self.bytes_total} is not the largest artifact {self.artifact_bytes_max}")
        if self.track not in TRACKS:
            raise ValueError(f"track must be one of {', '.join(map(repr, TRACKS))}")
        if self.track == TRACK:
            late = [k for k in ("train_under_600s", "eval_under_600s") if self.compliance.get(k) is not True]
            if late:
                raise ValueError(f"the {TRACK} track needs compliance.{late[0]} true")
            if self.non_record_reason is not None or self.wallclock_seconds is not None:
                raise ValueError(f"the {TRACK} track has no non_record_reason or wallclock_seconds (non-record keys)")
        elif not self.non_record_reason or self.wallclock_seconds is None:
            raise ValueError(f"a {self.track} submission says why it is not a record (non_record_reason) and how long "
                             "it trained (wallclock_seconds)")
        if self.compliance.get("artifact_under_16mb") is not True:
            raise ValueError("compliance.artifact_under_16mb must be true: both tracks cap the artifact at 16,000,000 bytes")
        return self


def one_line(e: ValidationError, where: str) -> PgolfError:
    """A pydantic error as one line naming the file and the first problem."""
    errs = e.errors()
    first = errs[0]
    loc = ".".join(str(x) for x in first["loc"]) or "(top level)"
    more = f" (and {len(errs) - 1} more problems)" if len(errs) > 1 else ""
    msg = first["msg"].removeprefix("Value error, ")
    return PgolfError(f"{where}: {loc}: {msg}{more}")


def load_record_submission(data: Any, where: str) -> RecordSubmission:
    """Validate a records folder's ``submission.json`` content; one PgolfError line if it is malformed."""
    try:
        return RecordSubmission.model_validate(data)
    except ValidationError as e:
        raise one_line(e, where) from None
