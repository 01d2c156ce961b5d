"""The records folder of a submission (``pgolf submit RUN_DIR... --name NAME --author A --github-id G``).

Layout, as the challenge's records are (openai/parameter-golf ``records/track_10min_16mb/<date>_<name>/``,
or ``records/track_non_record_16mb/<date>_<name>/`` on the non-record track; CATALOGUE §0, §1.9)::

    README.md           results per seed, mean ± std, the settings and where each comes from, hardware,
                        the exact commands (each run's own, from its train.log, and the bundled script's)
    submission.json     the official keys (:class:`pgolf.submit.schema.Submission`, validated)
    train_seed<S>.log   each seed's train.log
    train_gpt.py        the single-file bundle of the configuration (``pgolf.submit.bundle``)
    requirements.txt    the libraries the bundle imports, at the versions the runs logged

The runs must be seeds of one configuration (:func:`pgolf.submit.runs.check_seeds`), scored on one
validation set, each artifact within 16,000,000 bytes, and ``train_gpt.py`` must be exactly the code
the runs charged (``code_bytes``), so that ``bytes_total`` is honest. The folder is written into a
hidden temporary directory beside its final place and renamed into place only when complete: a
failure leaves nothing behind.

The track (:mod:`pgolf.tracks`: ``--track``, else the runs' ``track`` setting) decides the budgets checked
and what the folder says. Record track (``10min_16mb``): every seed trained ≤ 600 s (less than two steps
over when its wallclock cap stopped it) under a ``train.max_wallclock_seconds`` ≤ 600, and evaluated
≤ 600 s; otherwise one line naming the run and the non-record track. Non-record track (``non_record_16mb``,
"an unlimited compute track for runs that are not intended to meet the 10-minute cutoff. Just note as
such in your README file"): no time is refused; submission.json adds ``non_record_reason`` (``--reason``,
else what makes the runs non-record: the training budget or time, the evaluation time, the hardware) and
``wallclock_seconds`` (the longest seed's training, as the 4-hour baseline's ``wallclock_seconds``), and
the README opens by saying it is a non-record submission and why. Both tracks refuse an artifact over
16,000,000 bytes, and neither asks ``pgolf submit`` for a significance test (``pgolf stats`` does that for a
record; a non-record submission makes no claim to beat one).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import re
import shlex
import shutil
import statistics
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pgolf import __version__, fileio, tracks
from pgolf.config import RunConfig, flatten
from pgolf.errors import BudgetError, PgolfError
from pgolf.submit.runs import PER_SEED, Run, check_seeds, load_run, log_command, log_json
from pgolf.submit.schema import BUDGET_BYTES, TRACK, Submission, one_line
from pgolf.submit.stats import scores_of_runs

RECORDS_DIR = Path("records") / f"track_{TRACK}"
REQUIREMENTS = ("torch", "numpy", "sentencepiece", "safetensors", "zstandard", "brotli")
"""What the training path (and so the bundle) imports (DESIGN "Dependencies")."""

PathLike = str | os.PathLike[str]
ScriptFn = Callable[[RunConfig], bytes]


def bundle_script(cfg: RunConfig) -> bytes:
    """``train_gpt.py`` for ``cfg``: ``pgolf.submit.bundle.build_bundle`` in the form the runs charged
    (``export.code_form``, compact when the field is absent)."""
    try:
        from pgolf.submit.bundle import build_bundle  # type: ignore[import-not-found]
    except ImportError:
        raise PgolfError("this pgolf has no pgolf.submit.bundle, so it cannot write train_gpt.py") from None
    compact = getattr(cfg.export, "code_form", "compact") == "compact"
    return build_bundle(cfg, compact=compact).data


def check_code(runs: Sequence[Run], script: bytes) -> None:
    """``script`` must be the ``train_gpt.py`` every run charged: the same sha256 (``code_sha256`` in
    metrics.json) or, for runs from before pgolf recorded it, the same size. Otherwise one line saying
    which run charged what, and why it differs (another pgolf version or code form)."""
    import hashlib

    sha = hashlib.sha256(script).hexdigest()
    for r in runs:
        m = r.metrics
        theirs = m.get("code_sha256")
        same = theirs == sha if isinstance(theirs, str) else m["code_bytes"] == len(script)
        if same:
            continue
        ran = log_json(r.log, "versions").get("pgolf", "?")
        what = (f"sha256 {theirs[:12]}…, {m['code_bytes']:,} bytes" if isinstance(theirs, str)
                else f"{m['code_bytes']:,} bytes")
        raise PgolfError(
            f"{r.path / 'metrics.json'}: the run charged a train_gpt.py of {what}, but this pgolf {__version__} "
            f"bundles its configuration as sha256 {sha[:12]}…, {len(script):,} bytes (form "
            f"{r.cfg.export.code_form}; the run logged pgolf {ran}): the code changed since the run — "
            "re-run the seeds with this pgolf, or submit with the pgolf that ran them")


def run_track(runs: Sequence[Run], track: str | None = None) -> tracks.Track:
    """The track of the submission: ``track`` when given (``--track``), else the one every run declares
    (``RunConfig.track``); one line when the runs declare different ones."""
    if track is not None:
        return tracks.get(track)
    names = {r.cfg.track for r in runs}
    if len(names) > 1:
        by = ", ".join(f"{r.path}: {r.cfg.track}" for r in runs)
        raise PgolfError(f"the runs declare different tracks ({by}): choose one with --track")
    return tracks.get(names.pop())


def check_budgets(runs: Sequence[Run], track: tracks.Track) -> None:
    """Every run within ``track``'s budgets (:mod:`pgolf.tracks`): the artifact (both tracks), the training and
    evaluation times (record track); else one BudgetError line naming the run's metrics.json."""
    for r in runs:
        m, where = r.metrics, r.path / "metrics.json"
        if m["artifact_bytes"] > track.artifact_bytes:
            raise BudgetError(f"{where}: artifact {m['artifact_bytes']:,} bytes is over the {track.artifact_bytes:,}-byte "
                              "cap" + ("" if track.record else f" (the {track.name} track keeps the cap)"))
        why = tracks.train_problem(track, r.cfg.train.max_wallclock_seconds, m["train_seconds"], m["steps"]) \
            or tracks.eval_problem(track, m["eval_seconds"])
        if why:
            raise BudgetError(f"{where}: {why}")


def non_record_reason(runs: Sequence[Run], hardware: str) -> str:
    """Why runs are not a record, from what they did (the record track's rules, :mod:`pgolf.tracks`)."""
    limit = tracks.LIMIT_S
    why = []
    cap = max(r.cfg.train.max_wallclock_seconds for r in runs)
    longest = max(r.metrics["train_seconds"] for r in runs)
    if cap > limit:
        why.append(f"unlimited compute: a training budget of {cap:g} s (train.max_wallclock_seconds), beyond the "
                   "10-minute cutoff")
    elif not all(tracks.trained_within(limit, r.cfg.train.max_wallclock_seconds, r.metrics["train_seconds"],
                                       r.metrics["steps"]) for r in runs):
        why.append(f"unlimited compute: trained up to {longest:,.1f} s, beyond the 10-minute cutoff")
    slowest = max(r.metrics["eval_seconds"] for r in runs)
    if slowest > limit:
        why.append(f"evaluated in up to {slowest:,.1f} s, over the {limit:g} s evaluation limit")
    if not re.match(r"8x.*H100", hardware):
        why.append(f"run on {hardware}, not 8×H100 SXM")
    return "; ".join(why) or "declared non-record: no claim to beat the record"


def folder_name(date: str, name: str) -> str:
    """``<date>_<name>`` with every run of characters other than letters, digits, ``.``, ``-`` as ``_``."""
    safe = re.sub(r"[^A-Za-z0-9.\-]+", "_", name).strip("_.")
    if not safe:
        raise PgolfError(f"--name {name!r} has no letters or digits for the folder name")
    return f"{date}_{safe}"


# --------------------------------------------------------------------------------------- contents


def _hardware(runs: Sequence[Run]) -> str:
    hw = log_json(runs[0].log, "hardware")
    gpus = hw.get("gpus")
    if isinstance(gpus, list) and gpus:
        return f"{len(gpus)}x{gpus[0]}"
    cpu, n = hw.get("cpu"), hw.get("cpu_count")
    return f"CPU: {cpu or 'unknown'}" + (f", {n} cores" if n else "")


def _versions(runs: Sequence[Run]) -> dict[str, str]:
    v = log_json(runs[0].log, "versions")
    out = {k: str(v[k]) for k in REQUIREMENTS if isinstance(v.get(k), str) and v[k] not in ("?", "missing")}
    from importlib import metadata

    for k in REQUIREMENTS:
        if k not in out:
            with contextlib.suppress(metadata.PackageNotFoundError):
                out[k] = metadata.version(k)
    return out


def submission_dict(runs: Sequence[Run], *, name: str, author: str, github_id: str, blurb: str,
                    date: str, hardware: str, pytorch: str, config_sha256: str, code_bytes: int,
                    track: str = TRACK, reason: str | None = None) -> dict[str, Any]:
    """The ``submission.json`` content (validated by the caller); ``reason``: the non-record track's
    ``non_record_reason`` (default :func:`non_record_reason`)."""
    rules = tracks.get(track)
    seeds = [r.seed for r in runs]
    results = {}
    for r in runs:
        m = r.metrics
        results[str(r.seed)] = {
            "val_loss": m["val_loss"], "val_bpb": m["val_bpb"], "artifact_bytes": m["artifact_bytes"],
            "steps": m["steps"], "step_avg_ms": m["train_seconds"] * 1000 / max(m["steps"], 1),
            "train_time_s": m["train_seconds"], "eval_time_s": m["eval_seconds"],
            "pre_quant_val_bpb": m.get("pre_quant_val_bpb", m["val_bpb"]),
        }
        for extra in ("val_bpb_raw", "model_bytes", "code_bytes", "params", "tokens_per_second"):
            if m.get(extra) is not None:
                results[str(r.seed)][extra] = m[extra]
    bpb = [results[str(s)]["val_bpb"] for s in seeds]
    loss = [results[str(s)]["val_loss"] for s in seeds]
    art = [results[str(s)]["artifact_bytes"] for s in seeds]

    def sd(x: list[float]) -> float:
        return statistics.stdev(x) if len(x) > 1 else 0.0

    limit = tracks.LIMIT_S
    out = {
        "author": author, "github_id": github_id, "name": name, "blurb": blurb, "date": date, "track": rules.name,
        "val_loss": statistics.fmean(loss), "val_bpb": statistics.fmean(bpb),
        "val_loss_std": sd(loss), "val_bpb_std": sd(bpb),
        "bytes_total": max(art), "bytes_code": code_bytes,
        "seeds": seeds, "seed_results": results,
        "artifact_bytes_mean": round(statistics.fmean(art)), "artifact_bytes_max": max(art),
        "hardware": hardware, "pytorch_version": pytorch,
        "pre_quant_val_bpb": statistics.fmean(results[str(s)]["pre_quant_val_bpb"] for s in seeds),
        "compliance": {
            "artifact_under_16mb": max(art) <= BUDGET_BYTES,
            "train_under_600s": all(tracks.trained_within(limit, r.cfg.train.max_wallclock_seconds,
                                                          r.metrics["train_seconds"], r.metrics["steps"]) for r in runs),
            "eval_under_600s": all(r.metrics["eval_seconds"] <= limit for r in runs),
        },
        "pgolf": {"version": __version__, "preset": runs[0].cfg.name, "config_sha256": config_sha256,
                  "tokens_per_byte": runs[0].tokens_per_byte},
    }
    if not rules.record:
        out["non_record_reason"] = reason or non_record_reason(runs, hardware)
        out["wallclock_seconds"] = max(r.metrics["train_seconds"] for r in runs)
    return out


def settings(cfg: RunConfig) -> list[tuple[str, Any, str]]:
    """``(field, value, source)`` for every field that differs from pgolf's defaults: the source is the
    preset layer that set it (``pgolf.presets.preset_layers``) or ``run`` when the run changed it
    (``--set``); seed and data paths are per seed and left out."""
    from pgolf.presets import PRESETS, preset_layers

    layers = preset_layers(cfg.name) if cfg.name in PRESETS else [("default", RunConfig())]
    layers.append(("run (--set)", cfg))
    flat = [(src, flatten(c)) for src, c in layers]
    rows = []
    for path, value in flat[-1][1].items():
        if path in PER_SEED or path == "name":
            continue
        source = "default"
        for (_, prev), (src, cur) in zip(flat, flat[1:], strict=False):
            if cur[path] != prev[path]:
                source = src
        if source != "default":
            rows.append((path, value, source))
    return rows


def _fmt(v: Any) -> str:
    if isinstance(v, tuple):
        return ",".join(str(x) for x in v) if v else "()"
    if isinstance(v, bool):
        return str(v).lower()
    return str(v)


def track_note(sub: dict[str, Any]) -> list[str]:
    """The README's opening lines on a non-record track (none on the record track): what the track is, why
    the run is on it, and — for a run outside 10 minutes — the note the rules ask for ("not intended to meet
    the 10-minute cutoff"; the 4-hour baseline's README: "This run is not intended to satisfy the 10-minute
    cutoff for the main leaderboard")."""
    rules = tracks.get(sub["track"])
    if rules.record:
        return []
    unlimited = not sub["compliance"]["train_under_600s"] or "unlimited compute" in sub["non_record_reason"]
    return [f"**Non-record submission** (track `{rules.name}`, `{rules.folder}/`): {sub['non_record_reason']}. "
            + ("This run is not intended to meet the 10-minute training cutoff of the record track (unlimited compute "
               f"track; the longest seed trained {sub['wallclock_seconds']:,.1f} s). " if unlimited else "")
            + "It makes no claim to beat the record, so no significance test is given; the artifact is within the "
            f"{rules.artifact_bytes:,}-byte cap, as on the record track.", ""]


def readme(sub: dict[str, Any], runs: Sequence[Run], script_bytes: int) -> str:
    seeds = [str(s) for s in sub["seeds"]]
    res = sub["seed_results"]
    lines = [
        f"# {sub['name']}", "", *track_note(sub),
        f"**val_bpb {sub['val_bpb']:.8f}** (mean of {len(seeds)} seeds, std {sub['val_bpb_std']:.8f}); "
        f"val_loss {sub['val_loss']:.8f} nats (std {sub['val_loss_std']:.8f}); largest artifact "
        f"{sub['artifact_bytes_max']:,} bytes of {BUDGET_BYTES:,}. By {sub['author']} (@{sub['github_id']}), {sub['date']}.",
        "",
    ]
    if sub["blurb"]:
        lines += [sub["blurb"], ""]
    lines += ["## Results", "",
              "| seed | val_bpb | val_loss (nats) | pre-quant val_bpb | artifact bytes | steps | train s | eval s |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in seeds:
        r = res[s]
        lines.append(f"| {s} | {r['val_bpb']:.8f} | {r['val_loss']:.8f} | {r['pre_quant_val_bpb']:.8f} | "
                     f"{r['artifact_bytes']:,} | {r['steps']:,} | {r['train_time_s']:.1f} | {r['eval_time_s']:.1f} |")
    lines.append(f"| mean ± std | {sub['val_bpb']:.8f} ± {sub['val_bpb_std']:.8f} | {sub['val_loss']:.8f} ± "
                 f"{sub['val_loss_std']:.8f} | {sub['pre_quant_val_bpb']:.8f} | {sub['artifact_bytes_mean']:,} (max "
                 f"{sub['artifact_bytes_max']:,}) | | | |")
    pg = sub["pgolf"]
    lines += ["", f"Code: `train_gpt.py`, {script_bytes:,} bytes (the code bytes every artifact above counts). "
              f"Validation: {runs[0].metrics['val_tokens']:,} tokens, tokens/bytes {pg['tokens_per_byte']:.6f}.", "",
              "## Settings", "",
              f"pgolf {pg['version']}, preset `{pg['preset']}`, experiment sha256 `{pg['config_sha256']}` (the same "
              "for every seed: the result-changing settings, the dataset's fingerprint and train_gpt.py's sha256, "
              f"as `pgolf.identity` defines them; not {', '.join(sorted(k for k in PER_SEED if k != 'name'))}). "
              "Every setting that differs from "
              "pgolf's defaults, and where it comes from:", "", "| setting | value | source |", "|---|---|---|"]
    for path, value, source in settings(runs[0].cfg):
        lines.append(f"| `{path}` | `{_fmt(value)}` | {source} |")
    lines += ["", "## Hardware", "", f"{sub['hardware']}; PyTorch {sub['pytorch_version']}.", "",
              "## Commands", "", "Each seed as it ran (the `# command:` line of its log):", "", "```"]
    for r in runs:
        lines.append(log_command(r.log) or f"(seed {r.seed}: its log has no command line)")
    lines += ["```", "", "With the script in this folder (8×H100; `DATA_PATH` is the dataset directory):", "", "```"]
    from pgolf.standalone import run_env

    for r in runs:  # the seed (and any logging setting of the run) is data: the script is the same for every seed
        env = {"RUN_ID": f"seed{r.seed}", **run_env(r.cfg)}
        text = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        lines.append(f"{text} DATA_PATH=./data/datasets/<dataset> torchrun --standalone --nproc_per_node=8 train_gpt.py")
    lines += ["```", "", "## Files", "",
              "`submission.json`, `train_gpt.py`, `requirements.txt`, "
              + ", ".join(f"`train_seed{s}.log`" for s in seeds) + ".", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ write


def build_record(run_dirs: Sequence[PathLike], *, name: str, author: str, github_id: str, blurb: str = "",
                 out_root: PathLike | None = None, date: str | None = None, hardware: str | None = None,
                 overwrite: bool = False, script: ScriptFn | None = None, track: str | None = None,
                 reason: str | None = None) -> Path:
    """Write ``out_root/<date>_<name>/`` for the seeds ``run_dirs``; return its path.

    ``track``: ``10min_16mb`` or ``non_record_16mb`` (default: the runs' ``track`` setting); ``out_root``
    defaults to ``records/track_<track>`` and may not lie in the other track's folder. ``reason``: the
    non-record track's ``non_record_reason`` (default: derived from the runs).
    ``script``: how to make ``train_gpt.py`` from the configuration (default :func:`bundle_script`).
    ``date``: ``YYYY-MM-DD`` (default today, UTC); submission.json's ``date`` is that day, or now when
    it is today."""
    runs = [load_run(d) for d in run_dirs]
    config_sha = check_seeds(runs)
    scores_of_runs(runs, "submission")  # one validation set
    rules = run_track(runs, track)
    if reason is not None and rules.record:
        raise PgolfError(f"--reason is the non-record track's non_record_reason; these runs are on {rules.name} "
                         f"(add --track {tracks.NON_RECORD})")
    root = Path(out_root) if out_root is not None else Path(rules.folder)
    placed = tracks.from_path(root.resolve())
    if placed is not None and placed != rules.name:
        raise PgolfError(f"--out {root} lies in the {placed} track's folder, but the submission is on the {rules.name} "
                         f"track (write it under {rules.folder}/, or give --track {placed})")
    check_budgets(runs, rules)
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    day = date or now.date().isoformat()
    try:
        _dt.date.fromisoformat(day)
    except ValueError:
        raise PgolfError(f"--date {day!r} is not YYYY-MM-DD") from None
    stamp = now.isoformat().replace("+00:00", "Z") if day == now.date().isoformat() else day
    data = (script or bundle_script)(runs[0].cfg)
    check_code(runs, data)
    versions = _versions(runs)
    sub = submission_dict(runs, name=name, author=author, github_id=github_id, blurb=blurb, date=stamp,
                          hardware=hardware or _hardware(runs), pytorch=versions.get("torch", "unknown"),
                          config_sha256=config_sha, code_bytes=len(data), track=rules.name, reason=reason)
    try:
        Submission.model_validate(sub)
    except ValidationError as e:
        raise one_line(e, "submission.json") from None

    target = root / folder_name(day, name)
    if target.exists() and not overwrite:
        raise PgolfError(f"{target}: already exists (choose another --name or --date, or --overwrite)")
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    try:
        fileio.write_json(tmp / "submission.json", sub)
        fileio.write_text(tmp / "README.md", readme(sub, runs, len(data)))
        fileio.write_bytes(tmp / "train_gpt.py", data)
        fileio.write_text(tmp / "requirements.txt", "".join(f"{k}=={versions[k]}\n" for k in REQUIREMENTS if k in versions))
        for r in runs:
            fileio.write_bytes(tmp / f"train_seed{r.seed}.log", r.log.read_bytes())
        os.chmod(tmp, 0o777 & ~_umask())
        if target.exists():  # --overwrite: move the old folder aside first, remove it once the new one is in place
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=root))
            os.replace(target, old / target.name)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
