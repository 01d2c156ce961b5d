"""Checks a review makes from the numbers: sizes, times, claims, seeds and significance.

Sources (CATALOGUE §1.7–1.9, §4, §5; RULES.md):

- ``artifact_size``: compressed model bytes + code bytes ≤ 16,000,000, with code counted *as shipped*: the
  script file(s) in the folder and the local code they import, not a hypothetical minified form the log
  may count ([04-27a] logs 31,999 compressed code bytes and ships a 158,429-byte train_gpt.py). Over the cap
  outright: [04-06a] 16,054,963…16,059,704, the 03-19 int6 folder 16,186,500.
- ``train_time``: the stop line's train_time ≤ 600 s; the root script checks the cap after each step, so an
  overshoot below two steps is what the accepted records show (baseline 600,038 ms at 43.5 ms/step; [03-23]
  600,128 ms at 83.6 ms/step).
- Sizes and times are read from the logs the claim rests on (``chosen_scores``); other logs in the folder
  (earlier runs, longer experiments) are not the submission.
- ``eval_time``: the scored evaluation's timer ≤ 600 s.
- On the non-record track (:mod:`pgolf.tracks`, ``record_track`` False): training is not limited — a run over
  600 s passes when its README notes it (the rules: "an unlimited compute track for runs that are not intended to
  meet the 10-minute cutoff. Just note as such in your README file"), else ``needs-proof``; an evaluation over
  600 s is ``needs-proof``, not ``fail`` (the FAQ writes the limit for every submission, the track lists MDLM at
  1,819 s on 2×H100); work after the training stop breaks no training budget; one seed suffices and there is no
  significance test (no record claim).
- ``outside_timers``: Hessians collected on training data after the stop must fit in the 600 s (the
  [04-29] 8 s-reserve re-run of #1851); compile warm-up and precompute outside the eval timer count
  towards the 600 s "to be safe" (RULES).
- ``claims``: submission.json and README numbers against the logs (per seed, within the printed precision).
- ``seeds`` and ``significance``: ≥ 3 seeds; the rule as written (≥ 0.005 nats better at p < 0.01, one-sided
  one-sample t-test as [03-18b]) and, against a previous record's seeds, as applied (one-sided Welch
  p < 0.25 vs the frontier, PR #1902). Both through ``significance_tests``, i.e. ``pgolf.submit.stats``
  (the code of ``pgolf stats``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean

from pgolf import tracks
from pgolf.logformat import Metric, ParsedLog
from pgolf.submit.review_static import Finding

CAP_BYTES = 16_000_000
TRAIN_CAP_MS = 600_000.0
EVAL_CAP_S = 600.0
MARGIN_NATS = 0.005
P_AS_WRITTEN = 0.01
P_AS_APPLIED = 0.25
HESSIAN_SLACK_S = 1.0
"""Train + post-stop Hessian seconds within this much above 600 s are ``needs-proof``, beyond it ``fail``."""


@dataclass
class PgolfHeader:
    """What a ``pgolf run`` log opens with (``pgolf.train.log.RunLog.header`` and the runner's first lines): the
    ``# hardware:`` and ``# config:`` JSON, ``val_bpb:enabled tokenizer=PATH data=DIR`` and the device. Lines
    are 1-based; a key missing from the log is None."""

    config: dict | None = None
    hardware: dict | None = None
    tokenizer: str | None = None
    data: str | None = None
    device: str | None = None
    calibration: list[tuple[int, str]] = field(default_factory=list)
    """(line, text) of ``export: hessians from SOURCE`` and ``calibration: …`` lines."""
    trained: tuple[int, float, str, int] | None = None
    """``trained: steps:N train_time:Ss … stopped_by:WHY`` (the runner's total after the last step): (N, S, WHY, line)."""
    where: dict[str, int] = field(default_factory=dict)

    def setting(self, dotted: str):
        """A configuration value by its dotted name (``train.seed``), or None."""
        cur: object = self.config
        for part in dotted.split("."):
            if not isinstance(cur, dict) or part not in cur:
                return None
            cur = cur[part]
        return cur


def pgolf_header(parsed: ParsedLog, text: str) -> PgolfHeader | None:
    """The :class:`PgolfHeader` of a pgolf run log, or None for a log without ``# config:`` or ``# hardware:``.
    Everything comes from the parser (:mod:`pgolf.logformat`: ``config``, ``hardware``, ``tokenizer``,
    ``data_dir``, the ``device`` setting, ``trained``, the ``calibration`` events and the lines in ``where``);
    this adds the line of ``train.seed`` inside the config's JSON."""
    config, hardware = parsed.config, parsed.hardware or None
    if config is None and hardware is None:
        return None
    out = PgolfHeader(config=config, hardware=hardware, tokenizer=parsed.tokenizer, data=parsed.data_dir,
                      device=parsed.settings.get("device"))
    out.calibration = [(e.line, e.text) for e in parsed.events_of("calibration")]
    if parsed.trained is not None:
        steps, seconds, by = parsed.trained
        out.trained = (steps, seconds, by, parsed.where["trained"])
    for key in ("hardware", "config", "tokenizer"):
        if key in parsed.where:
            out.where[key] = parsed.where[key]
    if "device" in parsed.settings and "model_params" in parsed.where:
        out.where["device"] = parsed.where["model_params"]  # the kv_line that states model_params … device
    lines = text.replace("\r\n", "\n").split("\n")
    start = out.where.get("config")
    if start is not None:  # train.seed's line inside the config's JSON
        in_train = False
        for no in range(start + 1, len(lines) + 1):
            ln = lines[no - 1]
            if ln.rstrip() == "}":
                break
            if re.match(r'^\s*"train":\s*\{', ln):
                in_train = True
            elif in_train and re.match(r'^\s*"seed":\s*\d+', ln):
                out.where["train.seed"] = no
                break
    return out


@dataclass
class LogEntry:
    path: str
    parsed: ParsedLog
    seed: int | None
    name_seed: int | None
    seed_from: str = ""
    """Where ``seed`` was read: ``seed:N line L``, ``config train.seed line L`` or ``the file name``."""
    pgolf: PgolfHeader | None = None


def log_entry(path: str, parsed: ParsedLog, text: str) -> LogEntry:
    """A log with its seed: the log's ``seed:N`` line, else a pgolf log's configuration (``train.seed``), else
    the file name (``train_seed1337.log``)."""
    pg = pgolf_header(parsed, text)
    name_seed = seed_from_name(path)
    if parsed.seed is not None:
        return LogEntry(path, parsed, parsed.seed, name_seed, f"seed:{parsed.seed} line {parsed.where.get('seed')}", pg)
    cfg_seed = pg.setting("train.seed") if pg else None
    if isinstance(cfg_seed, int) and not isinstance(cfg_seed, bool):
        return LogEntry(path, parsed, cfg_seed, name_seed, f"config train.seed line {pg.where.get('train.seed')}", pg)
    if name_seed is not None:
        return LogEntry(path, parsed, name_seed, name_seed, "the file name", pg)
    return LogEntry(path, parsed, None, None, "", pg)


@dataclass
class Numbers:
    """What the numeric checks read: logs, submission.json (dict), README text, shipped code bytes."""

    logs: list[LogEntry]
    submission: dict | None
    readme: str
    shipped_code: dict[str, int]
    """File → bytes of the code as shipped (the script, files its wrapper reads, local modules)."""
    decoded_code: str | None = None
    record_track: bool = True
    against: list[tuple[int | None, float, float | None]] = field(default_factory=list)
    """The previous record's (seed, val_bpb, val_loss) per seed, for the test as applied."""
    against_name: str = ""
    sota: float | None = None
    """The record to beat as one val_bpb (``--sota``), when no previous record's seeds are given."""


def _close(a: float, b: float, digits: int | None = None) -> bool:
    """Equal to the printed precision: within one unit of the last printed digit (a mean of rounded
    per-seed values may round differently from the mean of the logged values)."""
    tol = 10.0 ** -digits + 1e-9 if digits is not None else 1e-5
    return abs(a - b) <= tol


def _digits(x: float | int | str) -> int:
    """Decimal places printed (at least 4 for a JSON float: 1.1 in submission.json may stand for 1.1000)."""
    s = repr(x) if not isinstance(x, str) else x
    d = len(s.split(".")[1]) if "." in s and "e" not in s.lower() else 0
    return max(d, 4) if isinstance(x, float) else d


def logged_digits(m: Metric, key: str = "val_bpb") -> int | None:
    """Decimal places the log printed for ``key`` on the line of ``m`` (8 in pgolf's
    ``…_exact val_loss:5.61459283 val_bpb:3.04168719``); None when it is not printed in plain decimals."""
    mm = re.search(rf"\b{key}[:=]\s*([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)(?![\w.])", m.text)
    if mm is None or "e" in mm.group(1).lower():
        return None
    return _digits(mm.group(1))


def _tolerance(claim_digits: int, logged: int | None) -> float:
    """How far a claim printed with ``claim_digits`` decimals may lie from a value the log printed with ``logged``
    decimals and still be that value: half a unit of the logged value's last printed digit, plus the claim's own
    rounding — a full unit of it when the claim is the shorter (a mean of rounded per-seed values may round
    differently), half a unit otherwise (nothing, in effect, for a float written at full precision)."""
    if logged is None:  # printed with an exponent: the claim's own precision, at most 8 decimals
        return 10.0 ** -min(claim_digits, 8) + 1e-9
    own = 10.0 ** -claim_digits if claim_digits < logged else 0.5 * 10.0 ** -claim_digits
    return 0.5 * 10.0 ** -logged + own + 1e-12


def agrees(claim: float | int | str, logged: float, logged_digits: int | None) -> bool:
    """A claim (its printed form decides its precision) is the logged value at the precision both are printed."""
    return abs(float(claim) - logged) <= _tolerance(_digits(claim), logged_digits)


def _coarsest(ms: list[Metric], key: str = "val_bpb") -> int | None:
    ds = [logged_digits(m, key) for m in ms]
    return None if any(d is None for d in ds) or not ds else min(ds)  # type: ignore[type-var]


# -- artifact ---------------------------------------------------------------------------------------
def artifact(n: Numbers) -> list[Finding]:
    out: list[Finding] = []
    claimed = claim_paths(n)
    shipped = sum(n.shipped_code.values())
    shipped_txt = " + ".join(f"{k} {v:,}" for k, v in n.shipped_code.items())
    seen = 0
    for e in n.logs:
        p = e.parsed
        tot = p.artifact_bytes()
        if tot is None or e.path not in claimed:
            continue
        label, total = tot
        seen += 1
        line = p.where.get(f"total_bytes:{label}")
        model = p.model_bytes.get(label)
        logged_code = p.code_bytes.get("compressed", p.code_bytes.get("plain"))
        if total > CAP_BYTES:
            out.append(Finding("artifact_size", "fail", e.path, line,
                               f"the log prints a total of {total:,} bytes > {CAP_BYTES:,}"))
            continue
        if model is None:
            out.append(Finding("artifact_size", "pass", e.path, line, f"logged total {total:,} ≤ {CAP_BYTES:,} (model "
                               "bytes not printed separately, so the shipped code could not be re-added)"))
            continue
        as_shipped = model + shipped
        if as_shipped <= CAP_BYTES:
            out.append(Finding("artifact_size", "pass", e.path, line,
                               f"model {model:,} + code as shipped ({shipped_txt}) = {as_shipped:,} ≤ {CAP_BYTES:,}"))
        elif "compressed" in p.code_bytes:
            out.append(Finding("artifact_size", "needs-proof", e.path, line,
                               f"the log counts {logged_code:,} bytes of compressed code, but the code as shipped is "
                               f"{shipped_txt}: model {model:,} + {shipped:,} = {as_shipped:,} > {CAP_BYTES:,}; ship "
                               "the self-extracting form the log counts, or prove the count"))
        else:
            out.append(Finding("artifact_size", "fail", e.path, line,
                               f"model {model:,} + code as shipped ({shipped_txt}) = {as_shipped:,} > {CAP_BYTES:,}"))
    sub = n.submission or {}
    for key in ("bytes_total", "artifact_bytes", "artifact_bytes_max"):
        v = sub.get(key)
        if isinstance(v, int | float) and v > CAP_BYTES:
            out.append(Finding("artifact_size", "fail", "submission.json", None, f"{key} = {int(v):,} > {CAP_BYTES:,}"))
    for seed, r in (sub.get("seed_results") or {}).items() if isinstance(sub.get("seed_results"), dict) else []:
        v = r.get("artifact_bytes") if isinstance(r, dict) else None
        if isinstance(v, int | float) and v > CAP_BYTES:
            out.append(Finding("artifact_size", "fail", "submission.json", None,
                               f"seed_results[{seed}].artifact_bytes = {int(v):,} > {CAP_BYTES:,}"))
    if not seen and not out:
        out.append(Finding("artifact_size", "cannot-tell", "", None, "no log prints a submission size"))
    return out


# -- times ------------------------------------------------------------------------------------------
def _trained(e: LogEntry) -> tuple[float | None, int | None, bool, str]:
    """(train ms, its line, stopped by the wallclock, how it was read) of a log: its last ``train_time``, or
    pgolf's ``trained:`` total when that is later (its last step line may be earlier)."""
    p = e.parsed
    train_ms, line, stopped, how = p.train_ms, p.where.get("train_ms"), p.stopped_early, "train_time"
    if e.pgolf is not None and e.pgolf.trained is not None:
        steps, seconds, by, tline = e.pgolf.trained
        if train_ms is None or seconds * 1000 > train_ms:
            train_ms, line, how = seconds * 1000, tline, f"trained: train_time (steps {steps}, stopped by {by})"
        stopped = stopped or by == "wallclock"
    return train_ms, line, stopped, how


def _eval_seconds(p: ParsedLog) -> tuple[float | None, Metric | None]:
    """The scored evaluation's seconds (its line's eval_time, else the log's eval seconds) and its line."""
    fin = p.final()
    if fin is None:
        return None, None
    ev = fin.eval_ms / 1000 if fin.eval_ms is not None else \
        p.eval_seconds.get(fin.name.removesuffix("_exact"), p.eval_seconds.get("total"))
    return ev, fin


def times_non_record(n: Numbers) -> list[Finding]:
    """``train_time``, ``eval_time`` and ``outside_timers`` on the non-record track (module docstring)."""
    out: list[Finding] = []
    claimed = claim_paths(n)
    noted = tracks.readme_notes_non_record(n.readme)
    for e in (x for x in n.logs if x.path in claimed):
        p = e.parsed
        train_ms, line, stopped, how = _trained(e)
        if train_ms is not None:
            s = train_ms / 1000
            step = train_ms / max(p.steps, 1) if p.steps else 0.0
            if s <= TRAIN_CAP_MS / 1000 or (stopped and train_ms <= TRAIN_CAP_MS + 2 * step):
                out.append(Finding("train_time", "pass", e.path, line, f"{how} {s:,.3f} s: within 600 s; the non-record "
                                   "track has no training limit"))
            elif noted:
                out.append(Finding("train_time", "pass", e.path, line, f"{how} {s:,.3f} s > 600 s: no training limit on "
                                   "the non-record track (unlimited compute), and the README notes it"))
            else:
                out.append(Finding("train_time", "needs-proof", e.path, line, f"{how} {s:,.3f} s > 600 s: allowed on the "
                                   "non-record track, but the rules ask an unlimited-compute run to say so in its README "
                                   "(\"Just note as such in your README file\")"))
        ev, fin = _eval_seconds(p)
        if ev is not None and fin is not None:
            verdict = "pass" if ev <= EVAL_CAP_S else "needs-proof"
            out.append(Finding("eval_time", verdict, e.path, fin.line, f"{fin.name}: eval {ev:.1f} s " + (
                "≤ 600 s" if verdict == "pass" else "> 600 s: the FAQ's evaluation limit is written for every "
                "submission; the non-record track listed MDLM at 1,819 s on 2×H100: say in the README why")))
    if not [f for f in out if f.check == "train_time"]:
        out.append(Finding("train_time", "pass", "", None, "non-record track: no training limit (no log prints a "
                           "training time)"))
    if not [f for f in out if f.check == "eval_time"]:
        out.append(Finding("eval_time", "cannot-tell", "", None, "no log prints the scored evaluation's time"))
    out.append(Finding("outside_timers", "pass", "", None, "non-record track: training time is not limited, so work "
                       "after the training stop (e.g. Hessians on training data) breaks no training budget"))
    return out


def times(n: Numbers) -> list[Finding]:
    if not n.record_track:
        return times_non_record(n)
    out: list[Finding] = []
    claimed = claim_paths(n)
    for e in n.logs:
        p = e.parsed
        if e.path not in claimed:
            continue
        train_ms, line, stopped, how = _trained(e)
        if train_ms is not None:
            step = (train_ms / max(p.steps, 1)) if p.steps else 0.0
            cap, cap_line = p.max_wallclock_seconds, p.where.get("max_wallclock_seconds")
            pg_cap = e.pgolf.setting("train.max_wallclock_seconds") if e.pgolf is not None else None
            if cap is None and isinstance(pg_cap, int | float) and not isinstance(pg_cap, bool):
                cap, cap_line = float(pg_cap), e.pgolf.where.get("config")  # type: ignore[union-attr]
            if cap is not None and cap > 600:
                out.append(Finding("train_time", "fail", e.path, cap_line,
                                   f"max_wallclock_seconds = {cap:g} > 600 on the record track (a longer run belongs on "
                                   f"the non-record track, {tracks.get(tracks.NON_RECORD).folder}/)"))
            if train_ms <= TRAIN_CAP_MS:
                out.append(Finding("train_time", "pass", e.path, line, f"{how} {train_ms / 1000:.3f} s ≤ 600 s"))
            elif stopped and train_ms <= TRAIN_CAP_MS + 2 * step:
                out.append(Finding("train_time", "pass", e.path, line,
                                   f"{how} {train_ms / 1000:.3f} s: over 600 s by {train_ms - TRAIN_CAP_MS:.0f} ms,"
                                   f" under two steps ({step:.1f} ms each; the root script checks the cap after a step, "
                                   "and the accepted records overshoot like this)"))
            else:
                out.append(Finding("train_time", "fail", e.path, line,
                                   f"{how} {train_ms / 1000:.3f} s > 600 s" + ("" if stopped else
                                                                              " (no wallclock stop line)")))
            speed = hardware_speed(e)
            if speed is not None and train_ms <= TRAIN_CAP_MS:
                verdict, why = speed
                out.append(Finding("train_time", verdict, e.path, e.pgolf.where.get("hardware") if e.pgolf else None,
                                   why + (f": its {train_ms / 1000:.3f} s stay within 600 s there" if verdict == "pass"
                                          else "")))
            elif p.world_size is not None and p.world_size != 8:
                out.append(Finding("train_time", "needs-proof", e.path, p.where.get("world_size"),
                                   f"world_size {p.world_size}: the limit is 600 s on 8×H100"))
            _hessians(e, out)
        ev, fin = _eval_seconds(p)
        if fin is not None:
            if ev is None:
                continue
            verdict = "pass" if ev <= EVAL_CAP_S else "fail"
            out.append(Finding("eval_time", verdict, e.path, fin.line, f"{fin.name}: eval {ev:.1f} s "
                               + ("≤" if verdict == "pass" else ">") + " 600 s"))
            extra = {k: v for k, v in p.eval_seconds.items() if k in ("compile_warmup", "precompute")}
            if extra:
                total = ev + sum(extra.values())
                parts = " + ".join(f"{k} {v:.1f} s" for k, v in extra.items())
                verdict = "pass" if total <= EVAL_CAP_S else "needs-proof"
                out.append(Finding("outside_timers", verdict, e.path, p.where.get("eval_seconds:compile_warmup"),
                                   f"eval timer {ev:.1f} s + {parts} outside it = {total:.1f} s "
                                   + ("≤ 600 s" if verdict == "pass" else "> 600 s: the rules count compile warm-up "
                                      "and precompute to be safe; the maintainers accepted timers that exclude them")))
            for w in p.events_of("compile_warmup_start"):
                if "no val" in w.text.lower() or "random tokens" in w.text.lower():
                    out.append(Finding("outside_timers", "pass", e.path, w.line, f"compile warm-up: {w.text.strip()}"))
    if not [f for f in out if f.check == "train_time"]:
        out.append(Finding("train_time", "cannot-tell", "", None, "no log prints a training time"))
    timed = [e for e in n.logs if e.path in claimed and (e.parsed.train_ms is not None or e.parsed.final() is not None)]
    if timed and not [f for f in out if f.check == "outside_timers"]:
        out.append(Finding("outside_timers", "pass", "", None, f"nothing outside the timers in {len(timed)} log(s): no "
                           "Hessians or calibration on training data after the training stop, no compile warm-up or "
                           "precompute logged outside the evaluation timer" + _pgolf_clocks(timed)))
    if not [f for f in out if f.check == "eval_time"]:
        out.append(Finding("eval_time", "cannot-tell", "", None, "no log prints the scored evaluation's time"))
    return out


FASTER_GPU = re.compile(r"H200|B100|B200|B300|GB\d00|MI3\d\d", re.I)
NO_FASTER_GPU = re.compile(r"H100|H800|\bH20\b|A100|A800|\bA10G?\b|A30|A40|A6000|\bL4\b|L40|\bL20\b|\bT4\b|V100|"
                           r"P100|P40|K80|RTX|GeForce|Quadro|TITAN", re.I)
"""GPUs no faster than an H100 SXM for training (the same model, its PCIe/NVL/export variants, older and smaller
cards); ``FASTER_GPU`` are faster. Any other name is not ranked."""


def hardware_speed(e: LogEntry) -> tuple[str, str] | None:
    """Whether a pgolf run's hardware (its log's ``# hardware:`` line and device) is no faster than 8×H100 — then a
    training time within 600 s on it is within 600 s on 8×H100: (``pass``, why) — or may be faster
    (``needs-proof``, why). None without a pgolf header (the records' logs: judged by world_size)."""
    pg = e.pgolf
    if pg is None or pg.hardware is None:
        return None
    hw = pg.hardware
    world = e.parsed.world_size or hw.get("world_size") or 1
    gpus = [str(g) for g in hw.get("gpus") or []]
    device = (pg.device or ("cuda" if gpus else "cpu")).lower()
    if device.startswith(("cpu", "mps")):
        cpu = f"{hw.get('cpu', '?')}, {hw.get('cpu_count', '?')} cores" if device.startswith("cpu") else "Apple GPU"
        return "pass", (f"world_size {world} on {device.split(':')[0]} ({cpu}): no faster than 8×H100 (a CPU or an "
                        "Apple GPU trains far slower than one H100)")
    used = gpus[:world] if len(gpus) >= world else gpus
    if not used:
        return "needs-proof", f"world_size {world} on {device}: the log names no GPU to compare with 8×H100"
    names = ", ".join(f"{n}× {g}" for g, n in _counts(used).items())
    if any(FASTER_GPU.search(g) for g in used):
        return "needs-proof", f"world_size {world} on {names}: faster than H100; the limit is 600 s on 8×H100"
    if world > 8:
        return "needs-proof", f"world_size {world} on {names}: more than 8 GPUs; the limit is 600 s on 8×H100"
    if all(NO_FASTER_GPU.search(g) for g in used):
        return "pass", f"world_size {world} on {names}: no more than 8 GPUs, none faster than an H100 SXM"
    return "needs-proof", f"world_size {world} on {names}: this review cannot rank these GPUs against the H100"


def _counts(xs: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in xs:
        out[x] = out.get(x, 0) + 1
    return out


def _pgolf_clocks(logs: list[LogEntry]) -> str:
    """What pgolf's configuration says about work around the clocks (its logs only)."""
    pgs = [e.pgolf for e in logs if e.pgolf is not None and e.pgolf.config is not None]
    if not pgs:
        return ""
    schemes = sorted({str(pg.setting("export.scheme")) for pg in pgs})
    lines = [t for pg in pgs for _, t in pg.calibration]
    sources = sorted({t.split("from", 1)[1].split()[0] for t in lines if t.startswith("export: hessians from")})
    if not lines:
        calib = "no calibration logged"
    elif set(sources) <= {"generated"}:
        calib = "Hessians from self-generated tokens (no training data after the stop)"
    else:  # pgolf collects training-token Hessians only in train.calib_reserve_seconds, inside the training clock
        calib = f"Hessians from {'/'.join(sources) or '?'}: training tokens only inside the training clock's reserve (" \
            + next((t for t in lines if "reserve" in t), "no reserve line") + ")"
    return f"; pgolf: export.scheme {'/'.join(schemes)}, {calib}"


def _hessians(e: LogEntry, out: list[Finding]) -> None:
    p = e.parsed
    stop = next((ev for ev in p.events if ev.kind == "stop"), None)
    hs = [ev for ev in p.events_of("hessians") if stop is None or ev.line > stop.line]
    if not hs or p.train_ms is None:
        return
    h = hs[0]
    if p.events_of("calib_selfgen"):
        out.append(Finding("outside_timers", "pass", e.path, h.line,
                           f"calibration after the stop uses self-generated data ({h.seconds:.1f} s), no training data"))
        return
    total = p.train_ms / 1000 + (h.seconds or 0.0)
    cap = TRAIN_CAP_MS / 1000
    verdict = "pass" if total <= cap else "needs-proof" if total <= cap + HESSIAN_SLACK_S else "fail"
    why = {"pass": "≤ 600 s",
           "needs-proof": f"> 600 s by {total - cap:.1f} s: within {HESSIAN_SLACK_S:g} s the printed figures (0.1 s "
                          "steps, timed around set-up) cannot decide",
           "fail": "> 600 s: training data used after the training window (issue #677, PR #634; the [04-29] re-run "
                   "with an 8 s reserve)"}[verdict]
    out.append(Finding("outside_timers", verdict, e.path, h.line, f"Hessians on training data after the stop: train "
                       f"{p.train_ms / 1000:.1f} s + {h.seconds:.1f} s = {total:.1f} s {why}"))


# -- seeds, claims ----------------------------------------------------------------------------------
def per_seed(n: Numbers) -> dict[int | None, list[LogEntry]]:
    out: dict[int | None, list[LogEntry]] = {}
    for e in n.logs:
        if e.parsed.final() is not None:
            out.setdefault(e.seed, []).append(e)
    return out


def _claimed_seeds(sub: dict) -> list[int]:
    seeds: list[int] = []
    for s in sub.get("seeds") or []:  # a list, or a dict keyed by seed
        if isinstance(s, int) or (isinstance(s, str) and s.isdigit()):
            seeds.append(int(s))
    sr = sub.get("seed_results")
    if isinstance(sr, dict):
        seeds += [int(k) for k in sr if str(k).isdigit() and int(k) not in seeds]
    return seeds


def seeds(n: Numbers) -> list[Finding]:
    out: list[Finding] = []
    by = per_seed(n)
    for e in n.logs:
        if e.seed is not None and e.name_seed is not None and e.seed != e.name_seed:
            out.append(Finding("seeds", "fail", e.path, e.parsed.where.get("seed"),
                               f"the file name says seed {e.name_seed}, the log says seed {e.seed}"))
    claimed = _claimed_seeds(n.submission or {})
    for s in claimed:
        if s not in by:
            out.append(Finding("seeds", "fail", "submission.json", None, f"seed {s} is claimed but no log of it is present"))
    known = sorted(s for s in by if s is not None)
    count = len(known) + (1 if None in by and not known else 0)
    if count == 0:
        out.append(Finding("seeds", "cannot-tell", "", None, "no log with a final score"))
    elif count >= 3:
        srcs = "; ".join(f"{e.path}: {e.seed_from}" for es in by.values() for e in es if e.seed_from)
        out.append(Finding("seeds", "pass", "", None, f"{count} seeds with a final score: {known}"
                           + (f" (seed read from {srcs})" if srcs else "")))
    elif n.record_track:
        srcs = "; ".join(f"{e.path}: {e.seed_from}" for es in by.values() for e in es if e.seed_from)
        out.append(Finding("seeds", "needs-proof", "", None, f"{count} seed(s) with a final score {known}: records "
                           "need enough runs for p < 0.01 (usually 3)" + (f" (seed read from {srcs})" if srcs else "")))
    else:
        out.append(Finding("seeds", "pass", "", None, f"{count} seed(s); non-record track"))
    return out


def precise_lines(p: ParsedLog) -> list[Metric]:
    """The log's metric lines without the rounded twin of an ``_exact`` line (``final_x val_bpb:3.0417`` beside
    ``final_x_exact val_bpb:3.04168719``): a claim is held to the most precise figure the log prints."""
    exact = {m.name for m in p.metric_lines if m.name.endswith("_exact")}
    return [m for m in p.metric_lines if f"{m.name}_exact" not in exact]


def _matching_metric(p: ParsedLog, bpb: float | int | str) -> Metric | None:
    cands = [m for m in precise_lines(p) if agrees(bpb, m.val_bpb, logged_digits(m))]
    return min(cands, key=lambda m: abs(m.val_bpb - float(bpb))) if cands else None


def chosen_scores(n: Numbers) -> list[tuple[int | None, Metric, LogEntry]]:
    """The runs the claim rests on, one scored metric each: per seed the log whose metric matches
    ``seed_results`` best; else the last log of each seed, or every log when their mean is the claim
    (several runs of one seed, as [03-17a])."""
    sub = n.submission or {}
    sr = sub.get("seed_results") if isinstance(sub.get("seed_results"), dict) else {}
    groups = per_seed(n)
    out = []
    for seed, entries in groups.items():
        want = sr.get(str(seed), {}) if seed is not None else {}
        best = None
        if isinstance(want, dict) and isinstance(want.get("val_bpb"), int | float):
            target = float(want["val_bpb"])
            for e in entries:
                m = _matching_metric(e.parsed, want["val_bpb"])
                loss = want.get("val_loss")
                if m is not None:
                    err = abs(m.val_bpb - target) + (abs((m.val_loss or 0) - loss) if isinstance(loss, int | float) else 0)
                    if best is None or err < best[0]:
                        best = (err, (seed, m, e))
        out.append(best[1] if best else (seed, entries[-1].parsed.final(), entries[-1]))
    bpb = sub.get("val_bpb")
    everyone = [(e.seed, e.parsed.final(), e) for es in groups.values() for e in es]
    if isinstance(bpb, int | float) and not sr and len(everyone) > len(out) and out:
        ms, ms_all = [m for _, m, _ in out], [m for _, m, _ in everyone]
        if not agrees(bpb, mean(m.val_bpb for m in ms), _coarsest(ms)) and \
                agrees(bpb, mean(m.val_bpb for m in ms_all), _coarsest(ms_all)):
            return everyone
    return out


def claim_paths(n: Numbers) -> set[str]:
    """Paths of the logs the claim rests on (all logs when there is no claim to match). A chosen log that is
    an evaluation-only re-run (no training time, no sizes; [04-23]'s ttt_pr1767/) brings the training logs of
    its seed along."""
    chosen = [e for _, _, e in chosen_scores(n)]
    paths = {e.path for e in chosen}
    for e in chosen:
        if e.parsed.train_ms is None and e.parsed.artifact_bytes() is None:
            paths |= {o.path for o in n.logs if o.seed == e.seed and o is not e
                      and (o.parsed.train_ms is not None or o.parsed.artifact_bytes() is not None)}
    return paths or {e.path for e in n.logs}


def claims(n: Numbers) -> list[Finding]:
    out: list[Finding] = []
    sub = n.submission
    scores = chosen_scores(n)
    if sub is not None and scores:
        bpb = sub.get("val_bpb")
        if isinstance(bpb, int | float):
            ms = [m for _, m, _ in scores]
            vals = [m.val_bpb for m in ms]
            avg, ld = mean(vals), _coarsest(ms)
            prec = f"the logs' {ld} decimals" if ld is not None else "the printed precision"
            direct = [(e, m) for e in n.logs for m in precise_lines(e.parsed) if agrees(bpb, m.val_bpb, logged_digits(m))]
            if agrees(bpb, avg, ld):
                out.append(Finding("claims", "pass", "submission.json", None,
                                   f"val_bpb {bpb} = mean of {len(vals)} logged score(s) {avg:.{ld or 8}f} "
                                   f"(to {prec})"))
            elif direct:
                e, m = direct[0]
                verdict = "fail" if m.diagnostic else "pass"
                out.append(Finding("claims", verdict, e.path, m.line,
                                   f"val_bpb {bpb} is the logged `{m.name}`" + (" — a diagnostic, not the score" if
                                                                                m.diagnostic else "")))
            else:
                out.append(Finding("claims", "fail", "submission.json", None,
                                   f"val_bpb {bpb} matches neither the mean of the logged scores ({avg:.{ld or 8}f} over "
                                   f"{len(vals)} log(s); off by {abs(float(bpb) - avg):.2g}, more than "
                                   f"{_tolerance(_digits(bpb), ld):.2g} allowed by {prec}) nor any logged metric"))
        loss = sub.get("val_loss")
        ms = [m for _, m, _ in scores]
        bpb_is_mean = isinstance(bpb, int | float) and agrees(bpb, mean(m.val_bpb for m in ms), _coarsest(ms))
        if isinstance(loss, int | float) and bpb_is_mean and all(m.val_loss is not None for m in ms):
            avg_l, ld_l = mean(m.val_loss for m in ms), _coarsest(ms, "val_loss")  # type: ignore[misc]
            lines = [m for _, _, e in scores for m in precise_lines(e.parsed) if m.val_loss is not None]
            if not agrees(loss, avg_l, ld_l) and not any(agrees(loss, m.val_loss, logged_digits(m, "val_loss"))
                                                         for m in lines):  # type: ignore[arg-type]
                out.append(Finding("claims", "needs-proof", "submission.json", None,
                                   f"val_loss {loss} is not the mean of the logged val_loss ({avg_l:.{ld_l or 8}f} "
                                   f"over {len(ms)} log(s); off by {abs(float(loss) - avg_l):.2g}) nor any logged "
                                   "val_loss: correct it or show where it comes from (the score is val_bpb)"))
        sr = sub.get("seed_results")
        if isinstance(sr, dict):
            by = {s: (m, e) for s, m, e in scores}
            for k, r in sr.items():
                if not isinstance(r, dict) or not str(k).isdigit() or int(k) not in by:
                    continue
                m, e = by[int(k)]
                p = e.parsed
                steps = e.pgolf.trained[0] if e.pgolf is not None and e.pgolf.trained is not None else p.steps
                checks: list[tuple[str, float | int | None]] = [("val_bpb", m.val_bpb), ("val_loss", m.val_loss),
                                                                 ("steps", steps)]
                tot = p.artifact_bytes()
                checks.append(("artifact_bytes", tot[1] if tot else None))
                for key, logged in checks:
                    v = r.get(key)
                    if not isinstance(v, int | float) or logged is None:
                        continue
                    d = logged_digits(m, key) if key.startswith("val") else None
                    ok = (v == logged) if key in ("steps", "artifact_bytes") else agrees(v, float(logged), d)
                    if not ok:
                        why = f" (off by {abs(float(v) - float(logged)):.2g}; the log prints {d} decimals)" if d else ""
                        out.append(Finding("claims", "fail", e.path, m.line if key.startswith("val") else None,
                                           f"seed_results[{k}].{key} = {v}, the log says {logged}{why}"))
                ev = r.get("eval_time_s")
                if isinstance(ev, int | float) and m.eval_ms is not None and abs(ev - m.eval_ms / 1000) > 1.0:
                    out.append(Finding("claims", "fail", e.path, m.line,
                                       f"seed_results[{k}].eval_time_s = {ev}, the log says {m.eval_ms / 1000:.1f}"))
        claimed = claim_paths(n)
        totals = [e.parsed.artifact_bytes()[1] for e in n.logs if e.parsed.artifact_bytes() and e.path in claimed]
        bt = sub.get("bytes_total")
        if isinstance(bt, int | float) and totals and int(bt) not in totals and abs(int(bt) - mean(totals)) > 1:
            out.append(Finding("claims", "fail" if max(totals) > CAP_BYTES >= bt else "needs-proof", "submission.json",
                               None, f"bytes_total {int(bt):,} is neither a logged total nor their mean "
                               f"(logged {min(totals):,}…{max(totals):,})"))
    out += _readme(n, scores)
    out += _code_in_logs(n)
    if not [f for f in out if f.check == "claims"]:
        out.append(Finding("claims", "cannot-tell", "", None, "no claim to compare (submission.json without val_bpb, "
                           "or no log with a score)"))
    return out


_BPB = re.compile(r"(?<![\d.])(\d\.\d{4,8})(?![\d])")
_BYTES = re.compile(r"(?<![\d,.])(1[0-9],\d{3},\d{3}|1[0-9]\d{6})(?![\d,])")


def _table_rows(readme: str):
    """(line number, {header: cell}) for each row of each markdown table."""
    header: list[str] | None = None
    for no, line in enumerate(readme.splitlines(), 1):
        t = line.strip()
        if not t.startswith("|"):
            header = None
            continue
        cells = [c.strip().strip("*`_ ") for c in t.strip("|").split("|")]
        if header is None:
            header = [c.lower() for c in cells]
        elif all(set(c) <= set("-: ") for c in cells):
            continue
        else:
            yield no, dict(zip(header, cells, strict=False))


def _readme(n: Numbers, scores) -> list[Finding]:
    out: list[Finding] = []
    if not n.readme:
        return out
    sub = n.submission or {}
    bpb = sub.get("val_bpb")
    if isinstance(bpb, int | float):
        stated = [float(x) for x in _BPB.findall(n.readme)]
        if stated and not any(_close(x, float(bpb), min(_digits(x), _digits(bpb))) for x in stated):
            out.append(Finding("claims", "needs-proof", "README.md", None,
                               f"the README never states the claimed val_bpb {bpb}"))
    by_seed: dict[int, list[LogEntry]] = {}
    for e in n.logs:
        if e.seed is not None:
            by_seed.setdefault(e.seed, []).append(e)
    skip = re.compile(r"δ|delta|diff|gain|vs|std|pre|quant|sliding|loss|nats|improv", re.I)
    for no, row in _table_rows(n.readme):
        seed = next((int(v) for k, v in row.items() if "seed" in k and v.isdigit()), None)
        if seed is None or seed not in by_seed:
            continue
        logged = [(m.val_bpb, logged_digits(m)) for e in by_seed[seed] for m in e.parsed.metric_lines]
        sizes = {}
        for e in by_seed[seed]:
            tot = e.parsed.artifact_bytes()
            if tot:
                sizes[tot[1]] = e.parsed.model_bytes.get(tot[0])
        for head, cell in row.items():
            if "bpb" in head and not skip.search(head.replace("bpb", "")):
                for x in _BPB.findall(cell):
                    if not any(agrees(x, v, d) for v, d in logged):
                        out.append(Finding("claims", "needs-proof", "README.md", no,
                                           f"seed {seed}: README {head} {x} matches no val_bpb in its log(s)"))
            if re.search(r"artifact|bytes|size", head):
                for x in _BYTES.findall(cell):
                    b = int(x.replace(",", ""))
                    for total, model in sizes.items():
                        if b == model and total > CAP_BYTES:
                            out.append(Finding("claims", "fail", "README.md", no, f"seed {seed}: README {head} {b:,} "
                                               f"is the model alone; the log's total is {total:,} > {CAP_BYTES:,}"))
    return out


def _code_in_logs(n: Numbers) -> list[Finding]:
    if not n.decoded_code:
        return []
    norm = lambda t: [ln.rstrip() for ln in t.strip().splitlines()]  # noqa: E731
    shipped = norm(n.decoded_code)
    out = []
    for e in n.logs:
        if e.parsed.code:
            logged = norm(e.parsed.code)
            if logged != shipped:
                import difflib

                ops = difflib.SequenceMatcher(None, logged, shipped, autojunk=False).get_opcodes()
                diff = sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in ops if tag != "equal")
                out.append(Finding("claims", "needs-proof", e.path, 1, f"the source this log ran ({len(logged)} lines) "
                                   f"differs from the shipped script ({len(shipped)} lines; ~{diff} lines differ)"))
    return out


# -- significance -----------------------------------------------------------------------------------
def significance_tests(values: list[float], baseline: float, bpb_per_nat: float,
                       frontier: list[float] | None = None) -> dict[str, float | None]:
    """Both rules through :func:`pgolf.submit.stats.significance` (the same code as ``pgolf stats``): the
    rule as written against ``baseline`` (the frontier's mean when ``frontier`` is given), and the one-sided
    Welch test against the ``frontier`` seeds. ``bpb_per_nat`` = the records' val_bpb / val_loss."""
    import math

    from pgolf.submit.stats import Scores
    from pgolf.submit.stats import significance as stats_significance

    res: dict[str, float | None] = {"p_written": None, "t_written": None, "p_applied": None, "t_applied": None}
    if len(values) < 2:
        return res
    new = Scores("submission", [str(i) for i in range(len(values))], list(values), None, bpb_per_nat * math.log(2))
    old = Scores("frontier", [str(i) for i in range(len(frontier))], list(frontier), None, None) if frontier else None
    r = stats_significance(new, old=old, sota_bpb=None if old else baseline)
    res["p_written"], res["t_written"] = r.written.p, r.written.t
    if r.applied.passed is not None or r.applied.p is not None:
        res["p_applied"], res["t_applied"] = r.applied.p, r.applied.t
    return res


def significance(n: Numbers) -> list[Finding]:
    if not n.record_track:
        return [Finding("significance", "pass", "", None, "non-record track: no record claim to test")]
    scores = [(s, m) for s, m, _ in chosen_scores(n)]
    if not scores:
        return [Finding("significance", "cannot-tell", "", None, "no logged score")]
    bpbs = [m.val_bpb for _, m in scores]
    per_nat = [m.val_bpb / m.val_loss for _, m in scores if m.val_loss]
    ratio = mean(per_nat) if per_nat else None  # bpb per nat of this tokenization (bytes/token × 1/ln 2)
    sub = n.submission or {}
    baseline, source = None, ""
    if n.against:
        baseline, source = mean(b for _, b, _ in n.against), f"{n.against_name} (mean of {len(n.against)} seeds)"
    elif n.sota is not None:
        baseline, source = float(n.sota), "--sota"
    else:
        for key in ("comparison_baseline_bpb", "baseline_bpb", "sota_bpb", "previous_record_bpb"):
            if isinstance(sub.get(key), int | float):
                baseline, source = float(sub[key]), f"submission.json {key}"
                break
    if baseline is None:
        return [Finding("significance", "cannot-tell", "", None, "no baseline to test against: pass --against "
                        "PREVIOUS_RECORD_DIR or --sota BPB, or state comparison_baseline_bpb in submission.json")]
    if ratio is None:
        return [Finding("significance", "cannot-tell", "", None, "the logs give no val_loss to convert 0.005 nats")]
    frontier = [b for _, b, _ in n.against] if n.against else None
    r = significance_tests(bpbs, baseline, ratio, frontier)
    delta_nats = (mean(bpbs) - baseline) / ratio
    head = f"{len(bpbs)} seed(s), mean {mean(bpbs):.5f} vs {source} {baseline:.5f}: Δ {delta_nats:+.5f} nats"
    out = []
    pw = r["p_written"]
    if pw is None:
        out.append(Finding("significance", "needs-proof", "", None, f"{head}; a t-test needs ≥ 2 distinct seeds"))
    elif pw < P_AS_WRITTEN:
        out.append(Finding("significance", "pass", "", None, f"{head}; as written (≥ 0.005 nats, p < 0.01): "
                           f"t = {r['t_written']:.2f}, p = {pw:.2g}"))
    elif r["p_applied"] is None:
        out.append(Finding("significance", "needs-proof", "", None, f"{head}; as written: p = {pw:.2g} ≥ 0.01 "
                           "(pass --against the previous record to test the rule as applied, p < 0.25)"))
    pa = r["p_applied"]
    if pa is not None and (pw is None or pw >= P_AS_WRITTEN):
        verdict = "pass" if pa < P_AS_APPLIED else "fail"
        out.append(Finding("significance", verdict, "", None, f"{head}; as applied (Welch one-sided vs {n.against_name}"
                           f"): t = {r['t_applied']:.2f}, p = {pa:.3g} " + ("< 0.25" if verdict == "pass" else "≥ 0.25")
                           + (f" (as written p = {pw:.2g} ≥ 0.01)" if pw is not None else "")))
    claimed_p = sub.get("p_value")
    if isinstance(claimed_p, int | float):
        cands = [v for v in (pw, pa) if v is not None]
        if cands and not any(math.isclose(float(claimed_p), c, rel_tol=0.5, abs_tol=1e-4) for c in cands):
            out.append(Finding("significance", "needs-proof", "submission.json", None,
                               f"claimed p_value {claimed_p} is not reproduced (recomputed: "
                               + ", ".join(f"{c:.3g}" for c in cands) + ")"))
    return out


def seed_from_name(path: str) -> int | None:
    m = re.search(r"seed[_-]?(\d+)", Path(path).name)
    return int(m.group(1)) if m else None
