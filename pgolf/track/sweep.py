"""Sweeps over configurations, shared by any number of workers through the registry database.

    pgolf sweep SPEC.yaml [--registry URL]     start (or join, or resume) the sweep's workers
    pgolf sweep SPEC.yaml --dry-run            validate the spec and list the units it runs now
    pgolf sweep SPEC.yaml --status             units, their claims and results

A spec (:class:`SweepSpec`, validated with pydantic) names a preset, fixed ``--set`` overrides, seeds and
a mode:

- ``search``: an Optuna study (TPE) over ``space``; ``trials`` units, each a sampled configuration.
- ``greedy``: forward selection of ``switches`` (each a list of overrides): round 0 runs the base; each
  round tries every remaining switch on top of the current selection and keeps the best if its mean
  beats the current one by more than ``min_improvement``; it stops when none does.
- ``ablation``: the base and each switch alone (``design: one_at_a_time``) or every subset (``full``).

A unit (one configuration) runs at every seed (:func:`pgolf.track.jobs.run_job`), and its objective is the
mean post-export ``metric`` (val_bpb) over the seeds. It is feasible only if every seed's artifact fits
``limits.artifact_bytes`` (default: the config's ``export.budget_bytes``) and its training and evaluation
times fit ``limits.train_seconds`` (default: the training budget plus one mean step, since the loop checks
the budget after each step) and ``limits.eval_seconds`` (default 600 s). Constraint values
(``max over seeds of measured − limit``, ≤ 0 feasible) go to TPE's ``constraints_func``, so an over-cap
trial is infeasible, not merely bad; greedy and ablation never select an infeasible unit.

Coordination: each unit is a claim (scope ``sweep:NAME``) in the registry, so two workers never run the
same unit; the Optuna study lives in the same database. A worker refreshes its claim's heartbeat while it
runs; a claim whose heartbeat is older than ``stale_seconds`` (or whose process is gone, on this host) is
taken over by one other worker, which re-runs the same parameters (the stale Optuna trial is failed and
asked again with those parameters) and reuses every seed already recorded. Greedy rounds are derived
from the finished units alone, so every worker computes the same next round.
"""

from __future__ import annotations

import itertools
import math
import re
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pgolf.errors import ConfigError, PgolfError


class Param(BaseModel):
    """A search dimension: ``choices`` (categorical) or ``low``/``high`` (float; ``int: true`` for integers)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    choices: list[str | bool | int | float] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    integer: bool = Field(False, alias="int")

    @model_validator(mode="after")
    def _one_kind(self) -> Param:
        if (self.choices is None) == (self.low is None or self.high is None):
            raise ValueError("give either choices or low and high")
        if self.low is not None and self.high is not None and not self.low < self.high:
            raise ValueError("low must be below high")
        return self


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")
    artifact_bytes: int | None = Field(None, gt=0)
    train_seconds: float | None = Field(None, gt=0)
    eval_seconds: float | None = Field(600.0, gt=0)


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    preset: str
    set: list[str] = Field(default_factory=list)
    mode: Literal["search", "greedy", "ablation"]
    seeds: list[int] = Field(default_factory=lambda: [1337], min_length=1)
    switches: dict[str, list[str]] = Field(default_factory=dict)
    design: Literal["one_at_a_time", "full"] = "one_at_a_time"
    space: dict[str, Param] = Field(default_factory=dict)
    trials: int = Field(20, ge=1)
    min_improvement: float = Field(0.0, ge=0)
    limits: Limits = Field(default_factory=Limits)
    metric: Literal["val_bpb", "val_bpb_raw"] = "val_bpb"
    out: str | None = None
    runner: Literal["subprocess", "inprocess"] = "subprocess"
    heartbeat_seconds: float = Field(30.0, gt=0)
    stale_seconds: float | None = Field(None, gt=0)
    poll_seconds: float = Field(5.0, gt=0)
    sampler_seed: int | None = None
    tags: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][\w.\-]{0,99}", v):
            raise ValueError("use letters, digits, '.', '_' or '-' (at most 100)")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("seeds repeat")
        return v

    @field_validator("switches")
    @classmethod
    def _switches(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for name in v:
            if not re.fullmatch(r"[A-Za-z0-9][\w.\-]*", name):
                raise ValueError(f"switch name {name!r}: use letters, digits, '.', '_' or '-'")
        return v

    @model_validator(mode="after")
    def _mode(self) -> SweepSpec:
        if self.mode == "search" and not self.space:
            raise ValueError("mode search needs a space")
        if self.mode in ("greedy", "ablation") and not self.switches:
            raise ValueError(f"mode {self.mode} needs switches")
        if self.mode == "ablation" and self.design == "full" and len(self.switches) > 10:
            raise ValueError("design full over more than 10 switches is over 1024 units")
        return self

    @property
    def scope(self) -> str:
        return f"sweep:{self.name}"

    def fingerprint(self) -> str:
        """What the sweep's results depend on; workers refuse to join a study made with another one. The
        number of trials, the output directory and the worker settings may change between runs."""
        import hashlib
        import json

        keep = self.model_dump(include={"preset", "set", "mode", "seeds", "switches", "design", "space",
                                        "min_improvement", "limits", "metric", "sampler_seed"})
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def stale_after(self) -> float:
        return self.stale_seconds or 4 * self.heartbeat_seconds

    @property
    def out_dir(self) -> Path:
        return Path(self.out or Path("runs") / "sweeps" / self.name)

    def base_config(self):
        from pgolf.config import apply_overrides
        from pgolf.presets import get_preset

        return apply_overrides(get_preset(self.preset), self.set)


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "spec"
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return f"{where}: {err['msg']}{more}"


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep spec; every override is checked against the config (one-line errors)."""
    import yaml

    from pgolf.config import apply_overrides, field_types

    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such sweep spec") from None
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{p}: not readable YAML ({' '.join(str(e).split())})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: a sweep spec is a mapping (name, preset, mode, ...)")
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{p}: {_first_error(e)}") from None
    try:
        base = spec.base_config()
    except PgolfError as e:
        raise ConfigError(f"{p}: preset/set: {e}") from None
    for name, sets in spec.switches.items():
        try:
            apply_overrides(base, sets)
        except PgolfError as e:
            raise ConfigError(f"{p}: switch {name}: {e}") from None
    types = field_types()
    for key in spec.space:
        if key not in types:
            raise ConfigError(f"{p}: space: unknown config key {key}")
        if key == "train.seed":
            raise ConfigError(f"{p}: space: train.seed is set by seeds, not searched")
    return spec


@dataclass(frozen=True)
class Unit:
    key: str
    round: int
    switches: tuple[str, ...] = ()

    def overrides(self, spec: SweepSpec) -> list[str]:
        return [s for name in self.switches for s in spec.switches[name]]


def _combo_key(switches: tuple[str, ...]) -> str:
    return "base" if not switches else "+" + "+".join(switches)


def plan(spec: SweepSpec, results: dict[str, dict[str, Any]]) -> tuple[list[Unit], dict[str, Any]]:
    """The units to run now given the finished units' results (claim key → payload), and the state of the
    sweep (``done``, and for greedy the ``selected`` switches). Pure: every worker gets the same answer."""
    names = list(spec.switches)
    if spec.mode == "search":
        return [Unit(f"t{i:04d}", 0) for i in range(spec.trials)], {"done": all(f"t{i:04d}" in results
                                                                                  for i in range(spec.trials))}
    if spec.mode == "ablation":
        combos = ([()] + [(n,) for n in names] if spec.design == "one_at_a_time"
                  else [c for r in range(len(names) + 1) for c in itertools.combinations(names, r)])
        units = [Unit(_combo_key(c), 0, c) for c in combos]
        return units, {"done": all(u.key in results for u in units)}
    selected: tuple[str, ...] = ()
    current = results.get("base")
    round_ = 0
    units = [Unit("base", 0)]
    while True:
        if any(u.key not in results for u in units):
            return units, {"done": False, "selected": list(selected), "round": round_}
        if round_ == 0 and not (current and current.get("feasible")):
            return units, {"done": True, "selected": [], "round": 0, "note": "the base unit failed or is infeasible"}
        if round_ > 0:
            ok = [u for u in units if results[u.key].get("feasible")]
            best = min(ok, key=lambda u: (results[u.key]["mean"], units.index(u)), default=None)
            if best is None or not results[best.key]["mean"] < current["mean"] - spec.min_improvement:
                return units, {"done": True, "selected": list(selected), "round": round_}
            selected, current = best.switches, results[best.key]
        remaining = [n for n in names if n not in selected]
        if not remaining:
            return units, {"done": True, "selected": list(selected), "round": round_}
        round_ += 1
        units = [Unit(_combo_key(selected + (n,)), round_, selected + (n,)) for n in remaining]


def _storage(registry: Any):
    import optuna

    from pgolf.track.registry import _retry, init_lock

    kwargs: dict[str, Any] = {}
    if registry.url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60, "isolation_level": "IMMEDIATE"}}
    with init_lock(registry.engine):
        return _retry(lambda: optuna.storages.RDBStorage(registry.url, **kwargs))


class _ForcedSampler:
    """TPE, except that the parameters of a re-run (or of a fixed unit) are imposed."""

    def __init__(self, base: Any):
        self.base = base
        self.forced: dict[str, Any] | None = None

    def infer_relative_search_space(self, study, trial):  # noqa: ANN001
        return {} if self.forced is not None else self.base.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):  # noqa: ANN001
        return {} if self.forced is not None else self.base.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, name, distribution):  # noqa: ANN001
        if self.forced is not None and name in self.forced:
            return self.forced[name]
        return self.base.sample_independent(study, trial, name, distribution)

    def before_trial(self, study, trial):  # noqa: ANN001
        self.base.before_trial(study, trial)

    def after_trial(self, study, trial, state, values):  # noqa: ANN001
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()


def _make_sampler(spec: SweepSpec):
    import optuna

    class Forced(_ForcedSampler, optuna.samplers.BaseSampler):
        pass

    kw: dict[str, Any] = {}
    if not hasattr(optuna.trial.Trial, "set_constraint"):  # optuna < 5: constraints through a function
        kw["constraints_func"] = lambda ft: ft.user_attrs.get("constraints", [0.0, 0.0, 0.0])
    tpe = optuna.samplers.TPESampler(seed=spec.sampler_seed, n_startup_trials=min(10, max(1, spec.trials // 3)), **kw)
    return Forced(tpe)


CONSTRAINTS = ("artifact_bytes", "train_seconds", "eval_seconds")


def _constrain(trial: Any, values: list[float]) -> None:
    """Give TPE the constraint values (≤ 0 feasible): ``Trial.set_constraint`` (optuna ≥ 5), else the
    ``constraints`` user attribute its ``constraints_func`` reads."""
    from pgolf.track.registry import _retry

    if hasattr(trial, "set_constraint"):
        for name, v in zip(CONSTRAINTS, values, strict=True):
            _retry(lambda name=name, v=v: trial.set_constraint(name, float(v)))


def _suggest(trial: Any, spec: SweepSpec, unit: Unit) -> dict[str, Any]:
    if spec.mode != "search":
        return {name: trial.suggest_categorical(name, [False, True]) for name in spec.switches}
    out: dict[str, Any] = {}
    for key, p in spec.space.items():
        if p.choices is not None:
            out[key] = trial.suggest_categorical(key, p.choices)
        elif p.integer:
            out[key] = trial.suggest_int(key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            out[key] = trial.suggest_float(key, p.low, p.high, step=p.step, log=p.log)
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v))
    return str(v)


def evaluate(spec: SweepSpec, cfg: Any, jobs: list[Any]) -> dict[str, Any]:
    """A unit's result from its per-seed job results: mean, std, constraints, feasibility."""
    cap = spec.limits.artifact_bytes or cfg.export.budget_bytes
    values, cons, failed = {}, [-math.inf, -math.inf, -math.inf], None
    for j in jobs:
        m = j.metrics
        if j.status == "failed":
            failed = j.error or "failed"
            continue
        if j.status == "over_budget":
            cons[0] = max(cons[0], float(m.get("artifact_bytes", cap + 1)) - cap)
            values[j.seed] = m.get("pre_quant_val_bpb", math.inf)
            continue
        values[j.seed] = m.get(spec.metric)
        cons[0] = max(cons[0], float(m.get("artifact_bytes", 0)) - cap)
        if spec.limits.train_seconds is not None:
            cons[1] = max(cons[1], m.get("train_seconds", 0.0) - spec.limits.train_seconds)
        elif cfg.train.max_wallclock_seconds > 0:
            limit = cfg.train.max_wallclock_seconds + m.get("ms_per_step", 0.0) / 1000
            cons[1] = max(cons[1], m.get("train_seconds", 0.0) - limit)
        if spec.limits.eval_seconds is not None:
            cons[2] = max(cons[2], m.get("eval_seconds", 0.0) - spec.limits.eval_seconds)
    cons = [0.0 if c == -math.inf else c for c in cons]
    vals = [float(v) if isinstance(v, (int, float)) and v is not None else math.inf for v in values.values()]
    mean = statistics.fmean(vals) if vals and all(math.isfinite(v) for v in vals) else math.inf
    return {"values": {str(k): v for k, v in values.items()}, "mean": mean,
            "std": statistics.stdev(vals) if len(vals) >= 2 and math.isfinite(mean) else None,
            "constraints": cons, "feasible": failed is None and all(c <= 0 for c in cons) and math.isfinite(mean),
            "run_ids": [j.run_id for j in jobs if j.run_id], "reused": sum(j.reused for j in jobs), "error": failed}


class Worker:
    """One sweep worker (see the module docstring); ``run()`` returns when the sweep is done, or after
    ``max_units`` units run here."""

    def __init__(self, spec: SweepSpec, registry: Any, *, log: Callable[[str], None] = print):
        import optuna

        from pgolf.track.registry import owner_id

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.spec, self.registry, self.log = spec, registry, log
        self.owner = owner_id()
        self.sampler = _make_sampler(spec)
        storage = _storage(registry)
        from pgolf.track.registry import _retry

        self.study = _retry(lambda: optuna.create_study(study_name=spec.name, storage=storage, direction="minimize",
                                                        sampler=self.sampler, load_if_exists=True))
        mine = spec.fingerprint()
        theirs = self.study.user_attrs.get("pgolf_spec")
        if theirs is None:
            _retry(lambda: self.study.set_user_attr("pgolf_spec", mine))
        elif theirs != mine:
            raise ConfigError(f"sweep {spec.name!r} exists in {registry.shown_url} with a different spec (preset, "
                              "set, mode, seeds, switches, space or limits changed): give the new spec another name")
        self.base = spec.base_config()

    def results(self) -> dict[str, dict[str, Any]]:
        return {c["key"]: {**(c["payload"] or {}), "status": c["status"]}
                for c in self.registry.claims(self.spec.scope) if c["status"] in ("done", "failed")}

    def run(self, max_units: int | None = None) -> dict[str, Any]:
        ran = 0
        while True:
            units, state = plan(self.spec, self.results())
            if state["done"]:
                return state
            claimed = None
            finished = self.results()
            for u in (u for u in units if u.key not in finished):
                c = self.registry.claim(self.spec.scope, u.key, self.owner, stale_after=self.spec.stale_after)
                if c is not None:
                    claimed = (u, c)
                    break
            if claimed is None:  # every unit of this round is running elsewhere (or finished just now)
                time.sleep(self.spec.poll_seconds)
                continue
            self.run_unit(*claimed)
            ran += 1
            if max_units is not None and ran >= max_units:
                return {**plan(self.spec, self.results())[1], "stopped": f"ran {ran} units"}

    def run_unit(self, unit: Unit, claim: dict[str, Any]) -> dict[str, Any]:
        import optuna

        from pgolf.config import apply_overrides
        from pgolf.track.jobs import run_job
        from pgolf.track.registry import _retry

        spec, scope, prev = self.spec, self.spec.scope, claim.get("payload") or {}
        if claim["attempt"] > 1 and prev.get("trial") is not None:
            try:
                _retry(lambda: self.study.tell(prev["trial"], state=optuna.trial.TrialState.FAIL))
            except (ValueError, RuntimeError):
                pass  # already finished
        self.sampler.forced = prev.get("params") if spec.mode == "search" else {n: n in unit.switches
                                                                                for n in spec.switches}
        try:
            trial = _retry(self.study.ask)
            params = _suggest(trial, spec, unit)
        finally:
            self.sampler.forced = None
        payload = {"trial": trial.number, "params": params, "round": unit.round, "switches": list(unit.switches)}
        self.registry.heartbeat(scope, unit.key, self.owner, payload)
        sets = unit.overrides(spec) + ([f"{k}={_fmt(v)}" for k, v in params.items()] if spec.mode == "search" else [])
        cfg = apply_overrides(self.base, sets)
        self.log(f"sweep {spec.name}: unit {unit.key} (round {unit.round}, trial {trial.number}, attempt "
                 f"{claim['attempt']}): {' '.join(sets) or '(base)'}")
        stop = threading.Event()
        beat = threading.Thread(target=self._beat, args=(unit.key, stop), daemon=True)
        beat.start()
        try:
            jobs = [run_job(apply_overrides(cfg, [f"train.seed={s}"]), spec.out_dir / unit.key / f"seed-{s}",
                            registry=self.registry, tags=[f"sweep:{spec.name}", *spec.tags],
                            inprocess=spec.runner == "inprocess", metric=spec.metric) for s in spec.seeds]
        except BaseException:  # interrupted: the unit goes back to the pool at once
            stop.set()
            self.registry.release_claim(scope, unit.key, self.owner)
            _retry(lambda: self.study.tell(trial, state=optuna.trial.TrialState.FAIL))
            raise
        finally:
            stop.set()
            beat.join()
        res = evaluate(spec, cfg, jobs)
        for k, v in {"unit": unit.key, "round": unit.round, "overrides": sets, **res}.items():
            _retry(lambda k=k, v=v: trial.set_user_attr(k, v))
        if res["error"]:
            _retry(lambda: self.study.tell(trial, state=optuna.trial.TrialState.FAIL))
        else:
            _constrain(trial, res["constraints"])
            _retry(lambda: self.study.tell(trial, res["mean"]))
        status = "failed" if res["error"] else "done"
        if not self.registry.finish_claim(scope, unit.key, self.owner, status, {**payload, **res}):
            self.log(f"sweep {spec.name}: unit {unit.key}: the claim was taken over meanwhile; result kept in the study")
        std = "" if res["std"] is None else f" ± {res['std']:.4f}"
        verdict = res["error"] or ("feasible" if res["feasible"] else f"infeasible (constraints {res['constraints']})")
        line = f"sweep {spec.name}: {unit.key} → {spec.metric} {res['mean']:.4f}{std} over seeds {spec.seeds}: {verdict}"
        self.log(line)
        self.registry.post("sweep", line, data={"sweep": spec.name, "unit": unit.key, **res})
        return res

    def _beat(self, key: str, stop: threading.Event) -> None:
        while not stop.wait(self.spec.heartbeat_seconds):
            try:
                self.registry.heartbeat(self.spec.scope, key, self.owner)
            except Exception as e:  # noqa: BLE001 - a missed beat is retried; the run goes on
                self.log(f"sweep {self.spec.name}: heartbeat failed ({type(e).__name__})")


def status(spec: SweepSpec, registry: Any) -> dict[str, Any]:
    claims = {c["key"]: c for c in registry.claims(spec.scope)}
    results = {k: {**(c["payload"] or {}), "status": c["status"]} for k, c in claims.items()
               if c["status"] in ("done", "failed")}
    units, state = plan(spec, results)
    rows = []
    for key, c in claims.items():
        p = c["payload"] or {}
        rows.append({"unit": key, "status": c["status"], "owner": c["owner"], "attempt": c["attempt"],
                     "round": p.get("round"), "mean": p.get("mean"), "std": p.get("std"),
                     "feasible": p.get("feasible"), "run_ids": p.get("run_ids", [])})
    return {"sweep": spec.name, "mode": spec.mode, **state, "pending": [u.key for u in units if u.key not in claims],
            "units": rows}
