"""Sweeps: specs are validated (one-line errors naming the file), greedy rounds and ablation designs are what
their definitions say, an over-cap unit is infeasible (not just bad), a 3-trial search runs end to end
on the tiny preset, two workers on SQLite and on PostgreSQL never run the same unit, and a killed worker's
sweep resumes where it stopped (its training child dies with it; finished units are not re-run)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from _track_util import BACKENDS, database

from pgolf.errors import ConfigError
from pgolf.track.jobs import JobResult
from pgolf.track.sweep import SweepSpec, evaluate, load_spec, plan

ROOT = Path(__file__).resolve().parents[1]
TINY_SET = ["model.vocab_size=384", "train.iterations=6", "train.threads=1"]  # 1 thread: fast on busy cores
pytestmark = pytest.mark.usefixtures("one_thread")  # in-process runs set torch's threads; restored after


def _spec(tmp_path: Path, **kw) -> Path:
    spec = {"name": "t", "preset": "tiny", "mode": "ablation", "seeds": [1337], "switches": {"leaky": [
        "model.mlp_act=leaky_relu2"]}, "out": str(tmp_path / "out"), "heartbeat_seconds": 1, "poll_seconds": 0.5, **kw}
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def test_spec_errors_are_one_line_naming_the_file(tmp_path):
    cases = [({"mode": "search"}, "mode search needs a space"),
             ({"switches": {"bad": ["model.nope=1"]}}, "switch bad: unknown config key model.nope"),
             ({"seeds": [1, 1]}, "seeds: Value error, seeds repeat"),
             ({"limits": {"artifact_bytes": -5}}, "limits.artifact_bytes"),
             ({"colour": "red"}, "colour: Extra inputs are not permitted"),
             ({"mode": "search", "space": {"train.seed": {"low": 1, "high": 2}}}, "train.seed is set by seeds"),
             ({"mode": "search", "space": {"optim.matrix_lr": {"low": 2, "high": 1}}}, "low must be below high")]
    for extra, msg in cases:
        p = _spec(tmp_path, **extra)
        with pytest.raises(ConfigError) as e:
            load_spec(p)
        assert str(e.value).startswith(f"{p}: ") and msg in str(e.value) and "\n" not in str(e.value), str(e.value)
    with pytest.raises(ConfigError, match="no such sweep spec"):
        load_spec(tmp_path / "missing.yaml")


def _res(mean, feasible=True):
    return {"mean": mean, "feasible": feasible, "status": "done"}


def test_greedy_forward_selection_rounds():
    spec = SweepSpec(name="g", preset="tiny", mode="greedy", switches={"a": ["model.ln_scale=true"],
                     "b": ["model.mlp_act=leaky_relu2"], "c": ["model.skips=gated"]}, min_improvement=0.01)
    units, st = plan(spec, {})
    assert [u.key for u in units] == ["base"] and not st["done"]
    r = {"base": _res(3.0)}
    units, st = plan(spec, r)
    assert [u.key for u in units] == ["+a", "+b", "+c"] and st["round"] == 1
    r |= {"+a": _res(2.9), "+b": _res(2.5, feasible=False), "+c": _res(2.95)}  # b is best but infeasible
    units, st = plan(spec, r)
    assert [u.key for u in units] == ["+a+b", "+a+c"] and st["selected"] == ["a"]
    units, st = plan(spec, r | {"+a+b": _res(2.895), "+a+c": _res(2.80)})
    assert [u.key for u in units] == ["+a+c+b"] and st["selected"] == ["a", "c"]
    _, st = plan(spec, r | {"+a+b": _res(2.895), "+a+c": _res(2.80), "+a+c+b": _res(2.795)})
    assert st == {"done": True, "selected": ["a", "c"], "round": 3}  # 0.005 < min_improvement: stop
    _, st = plan(spec, r | {"+a+b": _res(2.9), "+a+c": _res(2.9)})  # no improvement in round 2
    assert st["done"] and st["selected"] == ["a"]
    _, st = plan(spec, {"base": _res(math.inf, feasible=False)})
    assert st["done"] and st["selected"] == []


def test_ablation_designs():
    sw = {n: ["model.ln_scale=true"] for n in "abc"}
    one = plan(SweepSpec(name="x", preset="tiny", mode="ablation", switches=sw), {})[0]
    assert [u.key for u in one] == ["base", "+a", "+b", "+c"]
    full = plan(SweepSpec(name="x", preset="tiny", mode="ablation", switches=sw, design="full"), {})[0]
    assert len(full) == 8 and len({u.switches for u in full}) == 8


def test_an_over_cap_unit_is_infeasible_not_just_bad():
    from pgolf.config import apply_overrides
    from pgolf.presets import get_preset

    spec = SweepSpec(name="x", preset="tiny", mode="ablation", switches={"a": []}, seeds=[1, 2],
                     limits={"artifact_bytes": 1000})
    cfg = apply_overrides(get_preset("tiny"), ["train.max_wallclock_seconds=10"])
    ok = {"val_bpb": 3.0, "artifact_bytes": 900, "train_seconds": 10.05, "ms_per_step": 100.0, "eval_seconds": 1.0}
    res = evaluate(spec, cfg, [JobResult(1, "ok", ok), JobResult(2, "ok", {**ok, "val_bpb": 3.2})])
    assert res["feasible"] and res["mean"] == pytest.approx(3.1) and res["constraints"] == [-100.0, pytest.approx(-0.05),
                                                                                           -599.0]
    over = evaluate(spec, cfg, [JobResult(1, "ok", ok), JobResult(2, "over_budget", {"artifact_bytes": 1500,
                                                                                     "pre_quant_val_bpb": 2.0})])
    assert not over["feasible"] and over["constraints"][0] == 500.0 and over["mean"] == pytest.approx(2.5)
    slow = evaluate(spec, cfg, [JobResult(1, "ok", {**ok, "train_seconds": 10.2})])  # past budget + one step
    assert not slow["feasible"] and slow["constraints"][1] == pytest.approx(0.1)
    failed = evaluate(spec, cfg, [JobResult(1, "failed", {}, error="pgolf: error: nan")])
    assert failed["error"] == "pgolf: error: nan" and not failed["feasible"]


def test_the_cpu_ablation_spec_validates():
    from pgolf.cli import main

    spec = load_spec(ROOT / "bench" / "sweeps" / "cpu_ablation.yaml")
    units = plan(spec, {})[0]
    assert spec.preset == "cpu-v1" and spec.mode == "ablation" and len(units) >= 6 and len(spec.seeds) >= 2
    assert main(["sweep", str(ROOT / "bench" / "sweeps" / "cpu_ablation.yaml"), "--dry-run"]) == 0


def _study(url: str, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=url)


def test_three_trial_search_sweep_end_to_end(tiny_data, tmp_path, capsys):
    from pgolf.cli import main
    from pgolf.track.registry import open_registry

    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    p = _spec(tmp_path, name="s3", mode="search", trials=3, sampler_seed=0, runner="inprocess",
              set=[f"data.path={tiny_data}", *TINY_SET],
              space={"optim.matrix_lr": {"low": 0.01, "high": 0.08, "log": True},
                     "model.mlp_act": {"choices": ["relu2", "leaky_relu2"]}}, switches={})
    assert main(["sweep", str(p), "--registry", url]) == 0
    assert "sweep s3: done" in capsys.readouterr().out
    trials = _study(url, "s3").trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    with open_registry(url) as reg:
        runs = reg.runs(tag="sweep:s3")
        assert len(runs) == 3
        for t in trials:
            assert 0.01 <= t.params["optim.matrix_lr"] <= 0.08 and t.params["model.mlp_act"] in ("relu2", "leaky_relu2")
            (run,) = [r for r in runs if r.run_id in t.user_attrs["run_ids"]]
            assert run.config["optim.matrix_lr"] == t.params["optim.matrix_lr"]
            assert run.config["model.mlp_act"] == t.params["model.mlp_act"] and run.seed == 1337
            assert t.value == run.metrics["val_bpb"] and t.user_attrs["feasible"]
            assert all(v <= 0 for v in t.user_attrs["constraints"])
        assert [(c["status"], c["attempt"]) for c in reg.claims("sweep:s3")] == [("done", 1)] * 3
    assert main(["sweep", str(p), "--registry", url]) == 0  # finished: nothing more runs
    assert len(_study(url, "s3").trials) == 3
    changed = yaml.safe_load(p.read_text()) | {"seeds": [7]}
    p.write_text(yaml.safe_dump(changed))
    assert main(["sweep", str(p), "--registry", url]) == 2  # same name, other spec: refused
    assert "exists in" in capsys.readouterr().err and len(_study(url, "s3").trials) == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_workers_never_run_the_same_unit(backend, tiny_data, tmp_path):
    with database(backend, tmp_path) as url:
        p = _spec(tmp_path, name="w2", runner="inprocess", set=[f"data.path={tiny_data}", *TINY_SET],
                  switches={"leaky": ["model.mlp_act=leaky_relu2"], "tight": ["export.budget_bytes=1000"]})
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        procs = [subprocess.Popen([sys.executable, "-m", "pgolf", "sweep", str(p), "--registry", url], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
        outs = [pr.communicate(timeout=300)[0] for pr in procs]
        assert [pr.returncode for pr in procs] == [0, 0], outs
        from pgolf.track.registry import open_registry

        with open_registry(url) as reg:
            claims = {c["key"]: c for c in reg.claims("sweep:w2")}
            runs = reg.runs(tag="sweep:w2")
            feed = [f for f in reg.feed(50) if f["kind"] == "sweep"]
        assert sorted(claims) == ["+leaky", "+tight", "base"]
        assert all(c["status"] == "done" and c["attempt"] == 1 for c in claims.values())
        assert sorted(len(c["payload"]["run_ids"]) for c in claims.values()) == [0, 1, 1]  # +tight: no run
        assert len(runs) == 2 and len({r.config_hash for r in runs}) == 2
        trials = [t for t in _study(url, "w2").trials]
        assert sorted(t.user_attrs["unit"] for t in trials) == sorted(claims) and len(feed) == 3
        assert all(t.state.name == "COMPLETE" for t in trials)
        tight = [t for t in trials if t.user_attrs["unit"] == "+tight"][0]
        assert tight.params == {"leaky": False, "tight": True}
        assert not tight.user_attrs["feasible"] and tight.user_attrs["constraints"][0] > 0  # artifact over 1000 bytes
        assert all(t.user_attrs["feasible"] for t in trials if t is not tight)


def _children_of(pid: int) -> list[int]:
    out = []
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"PGOLF_JOB_PARENT={pid}".encode() in env.read_bytes().split(b"\0"):
                out.append(int(env.parent.name))
        except OSError:
            continue
    return out


def test_a_killed_worker_resumes(tiny_data, tmp_path, capsys):
    from pgolf.cli import main
    from pgolf.track.registry import open_registry

    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    p = _spec(tmp_path, name="k", set=[f"data.path={tiny_data}", *TINY_SET],
              switches={"long": ["train.iterations=60", "model.mlp_act=leaky_relu2"]})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen([sys.executable, "-m", "pgolf", "sweep", str(p), "--registry", url], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    with open_registry(url) as reg:
        while time.time() < deadline:  # kill it while the second unit trains
            claims = {c["key"]: c["status"] for c in reg.claims("sweep:k")} if worker.poll() is None else {}
            if claims.get("base") == "done" and claims.get("+long") == "running" and _children_of(worker.pid):
                break
            assert worker.poll() is None, "the worker ended before it could be killed"
            time.sleep(0.2)
        child = _children_of(worker.pid)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        for _ in range(50):  # the training child dies with its parent (PR_SET_PDEATHSIG)
            if not any(Path(f"/proc/{c}").exists() and "Z" not in Path(f"/proc/{c}/stat").read_text().split()[2]
                       for c in child):
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"training children {child} outlived their killed worker")
        base_runs = [r.run_id for r in reg.runs(tag="sweep:k")]
        assert len(base_runs) == 1
        assert main(["sweep", str(p), "--registry", url]) == 0  # resume: takes over the dead worker's unit
        capsys.readouterr()
        claims = {c["key"]: c for c in reg.claims("sweep:k")}
        assert (claims["base"]["attempt"], claims["+long"]["attempt"]) == (1, 2)
        assert all(c["status"] == "done" for c in claims.values())
        runs = reg.runs(tag="sweep:k")
        assert len(runs) == 2 and base_runs[0] in {r.run_id for r in runs}  # base was not re-run
    trials = _study(url, "k").trials
    states = {(t.user_attrs.get("unit") or "?", t.state.name) for t in trials}
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"], states
    assert trials[1].params == trials[2].params == {"long": True}
    assert json.loads(json.dumps(trials[2].user_attrs["run_ids"])) == [r.run_id for r in runs if r.run_id != base_runs[0]]


def test_sigterm_stops_a_worker_like_ctrl_c(tiny_data, tmp_path):
    """A waiting worker (every unit is claimed by a live worker elsewhere) stops on SIGTERM with exit 130."""
    from pgolf.track.registry import open_registry

    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    p = _spec(tmp_path, name="term", set=[f"data.path={tiny_data}", *TINY_SET])
    with open_registry(url) as reg:
        for key in ("base", "+leaky"):
            assert reg.claim("sweep:term", key, "elsewhere:1:x", stale_after=600)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen([sys.executable, "-m", "pgolf", "sweep", str(p), "--registry", url], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    import optuna

    deadline = time.time() + 120
    while time.time() < deadline:  # the worker has joined the study: it is polling now
        try:
            if optuna.study.get_all_study_names(url) == ["term"]:
                break
        except Exception:  # noqa: BLE001 - the tables may not exist yet
            pass
        time.sleep(0.2)
    time.sleep(1.0)
    worker.send_signal(signal.SIGTERM)
    out, err = worker.communicate(timeout=60)
    assert worker.returncode == 130 and err.strip().splitlines()[-1].startswith("pgolf: error: interrupted"), err
