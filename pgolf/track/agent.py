"""The loop an external coding agent (or a person, or a swarm of both) follows, on one shared registry.

    pgolf task [--preset P] [--dataset D]       what may change, how it is scored, the current best
    pgolf try --set model.mlp_act=leaky_relu2   run a candidate at the best's seeds; keep or discard
    pgolf feed [--post "finding"]               the findings so far

A *scope* is (preset, dataset, machine, tag): training budgets are wallclock, so results compare only on
one kind of machine (default: this one). The *current best* of a scope is its latest kept ``pgolf try``
(the chronological frontier, as the challenge's leaderboard was built), or, before any try, the best
leaderboard group of the scope's runs.

``pgolf try`` builds the candidate from the best's config plus ``--set`` overrides (or a config file),
claims it (unique per scope and config hash: parallel agents never run the same candidate twice; a
finished one reports its recorded result), runs it at the best's seeds — and the best too at any of
those seeds not yet measured on this machine — then keeps it if its mean is lower and the one-sided
Welch p-value (H1: candidate < best) is below ``alpha`` (default 0.25, the final leaderboard's cutoff,
CATALOGUE §4). With one seed no p-value exists and a lower mean keeps. Fields that define the
comparison (seed, budgets, byte cap, validation size) may not change.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgolf.errors import ConfigError
from pgolf.track.leaderboard import label_of, leaderboard, summary, welch_p_less
from pgolf.track.registry import RegistryError, default_author, owner_id

PROTECTED = ("name", "train.seed", "train.iterations", "train.max_wallclock_seconds", "data.val_max_tokens",
             "export.budget_bytes")
"""Fields a candidate may not change: they define what is compared (the seed is set by the loop)."""
LOCATION = ("data.path", "data.tokenizer")
"""Where the data lives on this machine: applied to the best's config and the candidate alike."""
DEFAULT_SEEDS = (1337, 42)
STALE_SECONDS = 600.0
HEARTBEAT_SECONDS = 30.0


@dataclass(frozen=True)
class Scope:
    preset: str | None = None
    dataset: str | None = None
    machine: str | None = None
    tag: str | None = None

    @property
    def key(self) -> str:
        return "try:" + "|".join(v or "*" for v in (self.preset, self.dataset, self.machine, self.tag))

    def filters(self) -> dict[str, Any]:
        return {k: v for k, v in (("preset", self.preset), ("dataset", self.dataset), ("machine", self.machine),
                                  ("tag", self.tag)) if v}


def _group(registry: Any, scope: Scope, config_hash: str) -> list[Any]:
    return [r for r in registry.runs(config_hash=config_hash, **{k: v for k, v in scope.filters().items()
                                                                   if k in ("machine", "dataset")})
            if r.config_hash == config_hash]


def current_best(registry: Any, scope: Scope, metric: str = "val_bpb") -> dict[str, Any] | None:
    """The scope's current best (see the module docstring), with its runs' summary and newest config."""
    kept = [t for t in registry.tries(scope.key) if t["decision"] in ("keep", "baseline")]
    rows = []
    if kept:
        recs = _group(registry, scope, kept[-1]["candidate_hash"])
        rows = leaderboard(recs, metric)
        source = "try"
    if not rows:
        rows = leaderboard(registry.runs(**scope.filters()), metric)
        source = "leaderboard"
    if not rows:
        return None
    best = rows[0]
    newest = registry.get_run(best["run_ids"][-1])
    return {**best, "source": source, "config": newest.config, "dataset": newest.dataset, "machine": newest.machine}


def _overrides_keys(sets: list[str]) -> list[str]:
    from pgolf.config import parse_override

    return [parse_override(s)[0] for s in sets]


def build_candidate(best: dict[str, Any] | None, sets: list[str], *, config_file: str | None = None,
                    preset: str | None = None):
    """(base config or None, candidate config) from the best's config, ``--set`` overrides and an optional
    config file; ConfigError for a protected field or a missing base."""
    from pgolf.config import RunConfig, apply_overrides, load_config
    from pgolf.identity import unflatten
    from pgolf.presets import get_preset

    loc = [s for s in sets if _overrides_keys([s])[0] in LOCATION]
    if best is None:
        if config_file is None and preset is None:
            raise ConfigError("no runs in this scope yet: give --preset (and --set data.path=...) for the baseline")
        cand = load_config(config_file) if config_file else get_preset(preset)
        return None, apply_overrides(cand, sets)
    bad = [k for k in _overrides_keys(sets) if k in PROTECTED]
    if bad:
        raise ConfigError(f"--set {bad[0]}: this field defines the comparison and may not change "
                          f"(protected: {', '.join(PROTECTED)})")
    base_cfg = apply_overrides(RunConfig.from_dict(unflatten(best["config"])), loc)
    cand = apply_overrides(load_config(config_file), loc) if config_file else base_cfg
    cand = apply_overrides(cand, [s for s in sets if s not in loc])
    base_flat, cand_flat = base_cfg.to_dict(), cand.to_dict()
    from pgolf.identity import flat as flat_config

    bf, cf = flat_config(base_flat), flat_config(cand_flat)
    changed = [k for k in PROTECTED if k != "name" and bf.get(k) != cf.get(k)]
    if changed:
        raise ConfigError(f"{config_file}: {changed[0]} differs from the current best's; it defines the comparison")
    return base_cfg, cand


def _heartbeat(registry: Any, scope: str, key: str, owner: str, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_SECONDS):
        try:
            registry.heartbeat(scope, key, owner)
        except Exception:  # noqa: BLE001 - a missed beat is retried
            pass


def _no_status(message: str) -> AbstractContextManager[Any]:
    return contextlib.nullcontext()


def try_candidate(registry: Any, scope: Scope, sets: list[str], *, config_file: str | None = None,
                  preset: str | None = None, alpha: float = 0.25, seeds: list[int] | None = None,
                  out: str | Path | None = None, inprocess: bool = False, author: str | None = None,
                  metric: str = "val_bpb", log: Any = print,
                  status: Callable[[str], AbstractContextManager[Any]] = _no_status) -> dict[str, Any]:
    """Run one candidate against the scope's current best and record keep/discard (module docstring).
    ``log`` gets a line as each job ends; ``status(message)`` wraps every step that may take a while (the
    CLI shows a spinner naming it on a terminal)."""
    from pgolf.config import apply_overrides
    from pgolf.track.jobs import planned_identity, run_job

    with status("looking up the current best in the registry"):
        best = current_best(registry, scope, metric)
    with status("building the candidate's config and finding its data"):
        base_cfg, cand = build_candidate(best, sets, config_file=config_file, preset=preset)
        chash, _ = planned_identity(cand)
        base_hash = planned_identity(base_cfg)[0] if best is not None else None
    if best is not None:
        if base_hash != best["config_hash"]:
            raise ConfigError(f"the current best ({best['config_hash'][:12]}) used data not found as such here: "
                              f"give --set data.path=DIR with the same dataset ({best['dataset']})")
        if chash == best["config_hash"]:
            raise ConfigError("the candidate is the current best itself (no result-changing field differs)")
        seeds = list(best["seeds"]) or [1337]
    seeds = list(seeds or DEFAULT_SEEDS)
    owner = owner_id()
    claim = registry.claim(scope.key, chash, owner, stale_after=STALE_SECONDS,
                           payload={"sets": sets, "seeds": seeds})
    if claim is None:
        done = [t for t in registry.tries(scope.key) if t["candidate_hash"] == chash]
        if done:
            return {**done[-1], "duplicate": True}
        holder = next((c for c in registry.claims(scope.key) if c["key"] == chash), {})
        raise RegistryError(f"candidate {chash[:12]} is already being tried by {holder.get('owner', '?')} "
                            f"(since {holder.get('created', '?')}, status {holder.get('status', '?')})")
    out_dir = Path(out or Path("runs") / "tries") / chash[:12]
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(registry, scope.key, chash, owner, stop), daemon=True)
    beat.start()
    tags = [f"try:{scope.key[4:]}"] + ([scope.tag] if scope.tag else [])
    try:
        log(f"try: candidate {chash[:12]} ({' '.join(sets) or 'as given'}) at seeds {seeds}")
        plan = [("candidate", chash, cand, out_dir, s) for s in seeds]
        if base_cfg is not None:
            bdir = Path(out or Path("runs") / "tries") / best["config_hash"][:12]
            plan += [("best", best["config_hash"], base_cfg, bdir, s) for s in seeds]
        by_side: dict[str, list[Any]] = {"candidate": [], "best": []}
        for i, (side, h, cfg, d, s) in enumerate(plan, 1):
            with status(f"try {i}/{len(plan)}: {side} {h[:12]} seed {s}: training, export and eval in {d / f'seed-{s}'}"):
                t0 = time.perf_counter()
                job = run_job(apply_overrides(cfg, [f"train.seed={s}"]), d / f"seed-{s}", registry=registry, tags=tags,
                              inprocess=inprocess, metric=metric)
            by_side[side].append(job)
            got = job.metrics.get(metric)
            log(f"try {i}/{len(plan)}: {side} seed {s}: {job.status}"
                + (f", {metric} {got:.4f}" if isinstance(got, (int, float)) else "")
                + (" (already recorded)" if job.reused else f" ({time.perf_counter() - t0:.0f} s)"))
        cand_jobs, base_jobs = by_side["candidate"], by_side["best"]
    except BaseException:
        stop.set()
        registry.release_claim(scope.key, chash, owner)  # interrupted: anyone may try it again at once
        raise
    finally:
        stop.set()
        beat.join()
    result = _decide(cand_jobs, base_jobs, alpha, metric, first=best is None)
    row = {"author": author or default_author(), "scope": scope.key, "candidate_hash": chash,
           "base_hash": best["config_hash"] if best else None, "overrides": sets, "seeds": seeds,
           "candidate": result["candidate"], "base": result["base"], "p_value": result["p_value"],
           "decision": result["decision"]}
    registry.add_try(**row)
    registry.finish_claim(scope.key, chash, owner, "done", {"decision": result["decision"], "p_value": result["p_value"]})
    c, b = result["candidate"], result["base"]
    text = (f"try {' '.join(sets) or config_file or '(baseline)'}: {_ms(c)}"
            + (f" vs best {_ms(b)}, p={_p(result['p_value'])}" if b else "") + f" → {result['decision']}")
    registry.post("try", text, author=row["author"], data={"scope": scope.key, "candidate_hash": chash,
                                                            "decision": result["decision"]})
    return {**row, "label": label_of(registry.get_run(c["run_ids"][-1])) if c.get("run_ids") else None,
            "duplicate": False, "alpha": alpha}


def _ms(s: dict[str, Any]) -> str:
    if s.get("mean") is None:
        return "n/a"
    return f"{s['mean']:.4f}" + (f" ± {s['std']:.4f}" if s.get("std") is not None else "") + f" (n={s['n']})"


def _p(p: float | None) -> str:
    return "n/a" if p is None else f"{p:.3g}"


def _side(jobs: list[Any], metric: str) -> dict[str, Any]:
    ok = [j for j in jobs if j.status == "ok" and isinstance(j.metrics.get(metric), (int, float))]
    values = [float(j.metrics[metric]) for j in ok]
    return {**summary(values), "values": {str(j.seed): float(j.metrics[metric]) for j in ok},
            "run_ids": [j.run_id for j in ok], "errors": [f"seed {j.seed}: {j.status} {j.error or ''}".strip()
                                                          for j in jobs if j.status != "ok"]}


def _decide(cand_jobs: list[Any], base_jobs: list[Any], alpha: float, metric: str, first: bool) -> dict[str, Any]:
    c = _side(cand_jobs, metric)
    if c["errors"]:
        over = any(j.status == "over_budget" for j in cand_jobs)
        return {"candidate": c, "base": _side(base_jobs, metric) if base_jobs else None, "p_value": None,
                "decision": "infeasible" if over else "failed"}
    if first:
        return {"candidate": c, "base": None, "p_value": None, "decision": "baseline"}
    b = _side(base_jobs, metric)
    if b["errors"] or not b["values"]:
        raise RegistryError(f"the current best could not be measured at the same seeds: {'; '.join(b['errors'])}")
    p = welch_p_less(list(c["values"].values()), list(b["values"].values()))
    lower = c["mean"] < b["mean"]
    keep = lower and (p < alpha if p is not None else c["n"] < 2)
    return {"candidate": c, "base": b, "p_value": p, "decision": "keep" if keep else "discard"}


def task(registry: Any, scope: Scope, *, alpha: float = 0.25, metric: str = "val_bpb") -> dict[str, Any]:
    """Everything ``pgolf task`` prints, as data."""
    best = current_best(registry, scope, metric)
    tries = registry.tries(scope.key)
    preset = scope.preset or (best or {}).get("preset")
    overrides = []
    if best is not None and best.get("preset"):
        overrides = label_of({"config": best["config"], "preset": best["preset"]}).split(" ")[1:]
    return {"scope": scope.key, "registry": registry.shown_url, "metric": metric, "alpha": alpha,
            "preset": preset, "protected": list(PROTECTED),
            "best": None if best is None else {k: best[k] for k in ("config_hash", "label", "n", "mean", "std",
                                                                     "seeds", "run_ids", "source", "dataset",
                                                                     "machine")} | {"overrides": overrides},
            "tried": [{"overrides": t["overrides"], "decision": t["decision"], "p_value": t["p_value"],
                       "mean": t["candidate"].get("mean"), "author": t["author"]} for t in tries],
            "feed": registry.feed(10)}


def task_markdown(t: dict[str, Any]) -> str:
    """The task description an external agent can follow."""
    b = t["best"]
    import shlex

    scope_opts = " ".join(f"--{k} {shlex.quote(v)}" for k, v in zip(("preset", "dataset", "machine", "tag"),
                                                      t["scope"][4:].split("|"), strict=True) if v != "*")
    lines = [
        "# pgolf task: lower the post-export bits per byte",
        "",
        f"Registry: {t['registry']} — scope {t['scope']}",
        "",
        "## How it is scored",
        f"- Score: `{t['metric']}` of the artifact after export and reload from disk (lower is better), "
        "the mean over the current best's seeds.",
        "- A candidate must fit the byte cap (`export.budget_bytes`, code + compressed model) and the "
        "training budget; an over-cap candidate is infeasible.",
        f"- Kept if its mean is lower than the best's and the one-sided Welch p-value < {t['alpha']} "
        "(n = 1: a lower mean keeps). A kept candidate becomes the new best.",
        "",
        "## Current best",
    ]
    if b is None:
        lines.append(f"None yet. Start the baseline: `pgolf try --preset {t['preset'] or 'PRESET'} "
                     "--set data.path=DIR` (runs seeds 1337 and 42).")
    else:
        std = "" if b["std"] is None else f" ± {b['std']:.4f}"
        lines += [f"- `{b['label']}` (config {b['config_hash'][:12]}, from {b['source']})",
                  f"- {t['metric']} {b['mean']:.4f}{std}, n = {b['n']}, seeds {b['seeds']}; dataset {b['dataset']}, "
                  f"machine {b['machine']}; runs {', '.join(b['run_ids'])}",
                  f"- Its overrides of the preset: {' '.join(b['overrides']) or '(none)'}"]
    lines += [
        "",
        "## What you may change",
        f"- Any config field with `--set section.key=value` (`pgolf info {t['preset'] or 'PRESET'}` lists every "
        "field with its documentation), or a whole config file with `--config FILE`.",
        f"- Not: {', '.join('`' + p + '`' for p in t['protected'])} (they define the comparison). "
        "`data.path` only says where the same data lives on your machine.",
        "",
        "## How to submit",
        f"    pgolf try {scope_opts + ' ' if scope_opts else ''}--set KEY=VALUE [--set ...]",
        "It prints keep or discard with the p-value and records it; a candidate someone already tried prints "
        "that result instead. Share findings: `pgolf feed --post \"...\"`.",
        "",
        "## Already tried (do not repeat)",
    ]
    lines += [f"- {' '.join(x['overrides']) or '(baseline)'} → {x['decision']}"
              + (f", mean {x['mean']:.4f}" if x["mean"] is not None else "") + f", p={_p(x['p_value'])} ({x['author']})"
              for x in t["tried"]] or ["- nothing yet"]
    lines += ["", "## Latest findings"]
    lines += [f"- {f['created'][:19]} {f['author']}: {f['message']}" for f in t["feed"]] or ["- none yet"]
    return "\n".join(lines)
