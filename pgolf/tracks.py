"""The challenge's two submission tracks and the budgets each is judged by (``RunConfig.track``).

Source: openai/parameter-golf at 4908dc4, README ("Submission Process", "Non-record Submissions", FAQ) and
the folders of ``records/``:

- ``10min_16mb`` — ``records/track_10min_16mb/``, the leaderboard. Training ≤ 600 s on 8×H100 SXM
  ("Reproducibly run in under 10 minutes on 8xH100s"), evaluation ≤ 600 s more (FAQ: "in addition to the
  10 minutes of training time"), artifact ≤ 16,000,000 bytes, and a new record beats the previous one by
  ≥ 0.005 nats at p < 0.01 (in practice three seeds; as applied, one-sided Welch p < 0.25, PR #1902).
- ``non_record_16mb`` — ``records/track_non_record_16mb/``, the README's "Unlimited Compute Leaderboard &
  Non-record Submissions": "unique and interesting approaches that might not beat the existing SOTA, but
  still satisfy the 16MB artifact limit", and "an unlimited compute track for runs that are not intended
  to meet the 10-minute cutoff. Just note as such in your README file." So: no training-time limit (the
  4-hour baseline ``2026-03-18_Quasi10Bfrom50B_SP1024_9x512_KV4_4h_pgut3`` trained 14,400 s, 1.2074; the
  binary ``106M_Binary_…`` 2.15 h), the same 16,000,000-byte cap, no significance claim (that baseline is
  one run), and the same files as a record ("Non-record submissions should be made in the same fashion as
  SOTA records"). Evaluation: the FAQ's 10-minute limit is written for every submission, yet the track
  lists ``2026-03-29_LLaDA_MDLM_Diffusion`` (1,819 s of evaluation on 2×H100), so on this track an
  evaluation over 600 s is reported, not refused.

The real ``submission.json`` files spell the track ``10min_16mb`` (19 of the 44 records; 25 give none),
``non-record-unlimited-compute-16mb``, ``non-record-16mb`` and ``non_record_16mb``; :func:`from_text` reads
them all. pgolf writes the folder's own suffix.

The track is a declaration about which rules judge a run; it changes no number the run computes
(``pgolf.config.NOT_RESULT_CHANGING``), so ``pgolf submit --track`` may declare runs on either track.
Standard library only; nothing on the training path imports this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from pgolf.errors import ConfigError

RECORD = "10min_16mb"
NON_RECORD = "non_record_16mb"
ARTIFACT_CAP = 16_000_000
"""Bytes of code + compressed model, decimal (README FAQ), on both tracks."""
LIMIT_S = 600.0
"""The 10-minute limit of the record track's training, and of every submission's evaluation as written."""


@dataclass(frozen=True)
class Track:
    """One track's rules (module docstring)."""

    name: str
    title: str
    train_seconds: float | None
    """Training wallclock limit on 8×H100 SXM; None = no limit."""
    eval_seconds: float
    """Evaluation wallclock limit on 8×H100 SXM, as the FAQ writes it."""
    eval_enforced: bool
    """Whether an evaluation over ``eval_seconds`` disqualifies (record) or is only reported (non-record)."""
    significance: bool
    """Whether the track asks for a significance test against the previous record (≥ 0.005 nats, p < 0.01)."""
    seeds: int
    """Seeds the track expects: three for a record (enough runs for p < 0.01), one otherwise."""
    artifact_bytes: int = ARTIFACT_CAP

    @property
    def record(self) -> bool:
        return self.name == RECORD

    @property
    def folder(self) -> str:
        """``records/track_<name>``, where the challenge keeps this track's folders."""
        return f"records/track_{self.name}"


TRACKS: dict[str, Track] = {
    RECORD: Track(RECORD, "record (10 minutes on 8×H100, 16 MB)", train_seconds=LIMIT_S, eval_seconds=LIMIT_S,
                  eval_enforced=True, significance=True, seeds=3),
    NON_RECORD: Track(NON_RECORD, "non-record (unlimited compute, 16 MB)", train_seconds=None, eval_seconds=LIMIT_S,
                      eval_enforced=False, significance=False, seeds=1),
}


def get(name: str) -> Track:
    """The rules of track ``name``; one ConfigError line for an unknown one."""
    if name not in TRACKS:
        raise ConfigError(f"unknown track {name!r} (known: {', '.join(TRACKS)})")
    return TRACKS[name]


def from_text(text: Any) -> str | None:
    """The track a folder name or a ``submission.json`` ``track`` value names (any of the spellings the real
    files use, module docstring), or None when it names neither."""
    if not isinstance(text, str):
        return None
    t = text.lower().replace("-", "_")
    if "non_record" in t or "nonrecord" in t or "unlimited" in t:
        return NON_RECORD
    if "10min" in t or "10_min" in t:
        return RECORD
    return None


def from_path(path: str | PurePath) -> str | None:
    """The track of a records folder by where it lies: the innermost ``track_*`` component of its path."""
    for part in reversed(PurePath(path).parts):
        if part.lower().startswith("track_"):
            return from_text(part)
    return None


ALTERNATIVE = f"declare it on the non-record track (--track {NON_RECORD}, or --set track={NON_RECORD})"


def train_problem(track: Track, cap_seconds: float, seconds: float, steps: int) -> str | None:
    """Why a run does not meet ``track``'s training limit, in one line, or None when it does (or the track has
    none). ``cap_seconds``: its ``train.max_wallclock_seconds`` (0 = iterations only), ``seconds`` and ``steps``
    what it trained. A wallclock-stopped run may overshoot the limit by less than two steps: the challenge's
    script checks the cap after a step, and the accepted records overshoot so (baseline 600,038 ms at
    43.5 ms/step; ``pgolf.submit.review_numbers``)."""
    limit = track.train_seconds
    if limit is None:
        return None
    if cap_seconds > limit:
        return (f"train.max_wallclock_seconds = {cap_seconds:g} > {limit:g}: the {track.name} track trains at most "
                f"{limit:g} s on 8×H100; {ALTERNATIVE}")
    if not trained_within(limit, cap_seconds, seconds, steps):
        return (f"trained {seconds:.3f} s > {limit:g} s: the {track.name} track trains at most {limit:g} s on "
                f"8×H100; {ALTERNATIVE}")
    return None


def trained_within(limit: float, cap_seconds: float, seconds: float, steps: int) -> bool:
    """Whether ``seconds`` of training over ``steps`` steps is within ``limit``: a run with a wallclock cap
    (``cap_seconds`` > 0) may overshoot it by less than two of its average steps (:func:`train_problem`)."""
    slack = 2 * seconds / max(steps, 1) if cap_seconds > 0 else 0.0
    return seconds <= limit + slack


def eval_problem(track: Track, seconds: float) -> str | None:
    """Why an evaluation of ``seconds`` breaks ``track``'s limit (one line), or None (within it, or the track only
    reports it)."""
    if not track.eval_enforced or seconds <= track.eval_seconds:
        return None
    return (f"evaluated in {seconds:.1f} s > {track.eval_seconds:g} s: the {track.name} track evaluates in at most "
            f"{track.eval_seconds:g} s on 8×H100; {ALTERNATIVE}")


def preflight_verdicts(cfg: Any, pf: Any) -> list[dict[str, str]]:
    """What ``pgolf info --hardware`` says about ``cfg``'s track budgets, from its preflight ``pf``
    (:class:`pgolf.preflight.Preflight`): ``[{budget, verdict, line}]`` for training, evaluation and the artifact,
    verdict ``ok``, ``over`` or ``n/a`` (no limit on this track, or nothing predicted). The training verdict is the
    budget the run will stop at (``train.max_wallclock_seconds``) or, without one, the predicted time of its
    ``train.iterations``; predictions on hardware other than 8×H100 are that hardware's, while the rule is judged on
    8×H100."""
    track = get(cfg.track)
    t = cfg.train
    cap = t.max_wallclock_seconds
    on = "" if pf.hardware == "8xH100" else f" (predicted on {pf.hardware}; the rule is judged on 8×H100)"
    predicted = pf.steps * pf.ms_per_step / 1000.0
    if track.train_seconds is None:
        budget = f"budget {cap:g} s" if cap > 0 else f"iterations only, {t.iterations:,} steps ≈ {predicted:,.0f} s{on}"
        train = {"verdict": "n/a", "line": f"training: no limit on the {track.name} track ({budget})"}
    elif cap > track.train_seconds:
        train = {"verdict": "over", "line": f"training: train.max_wallclock_seconds = {cap:g} > {track.train_seconds:g} s; "
                 + ALTERNATIVE}
    elif cap > 0:
        train = {"verdict": "ok", "line": f"training: stops at train.max_wallclock_seconds = {cap:g} ≤ "
                 f"{track.train_seconds:g} s"}
    else:
        ok = predicted <= track.train_seconds
        train = {"verdict": "ok" if ok else "over",
                 "line": f"training: iterations only, {t.iterations:,} steps ≈ {predicted:,.1f} s{on} "
                 + (f"≤ {track.train_seconds:g} s" if ok else f"> {track.train_seconds:g} s; set "
                    f"train.max_wallclock_seconds ≤ {track.train_seconds:g}, or {ALTERNATIVE}")}
    if pf.eval_seconds is None:
        ev = {"verdict": "n/a", "line": f"evaluation: not predicted on {pf.hardware}"}
    else:
        ok = pf.eval_seconds <= track.eval_seconds
        note = "" if ok or track.eval_enforced else " (written for every submission; this track reports it, " \
            "not refuses)"
        ev = {"verdict": "ok" if ok else "over",
              "line": f"evaluation: ≈{pf.eval_seconds:,.1f} s{on} " + ("≤" if ok else ">") +
              f" {track.eval_seconds:g} s{note}"}
    ok = pf.artifact_bytes <= track.artifact_bytes
    art = {"verdict": "ok" if ok else "over",
           "line": f"artifact: ≈{pf.artifact_bytes:,} bytes " + ("≤" if ok else ">") + f" {track.artifact_bytes:,}"}
    return [{"budget": k, **v} for k, v in (("train", train), ("eval", ev), ("artifact", art))]


_README_NOTE = re.compile(r"non[-_ ]?record|unlimited[-_ ]compute|unconstrained|not intended to (?:meet|satisfy)|"
                          r"extended (?:run|training)|\b\d+(?:\.\d+)?\s*(?:h|hrs?|hours?)\b|\b\d+-hour", re.I)


def readme_notes_non_record(text: str) -> bool:
    """Whether a README says its run is a non-record / unlimited-compute one (the rules: "Just note as such in
    your README file"): it says non-record, unlimited compute, unconstrained, not intended to meet the cutoff, an
    extended run, or a training time in hours — the phrasings of every merged non-record folder whose training
    exceeded 600 s (the 4-hour baseline, 106M binary, LeWM, H-Net, ByteJEPA, LegendreGPT's "~27 hours", XNOR-Net's
    "Extended training"; ``bench/review_non_record.py``)."""
    return bool(_README_NOTE.search(text or ""))
