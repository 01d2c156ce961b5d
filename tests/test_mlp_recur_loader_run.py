"""SwiGLU at a non-integer MLP width, progressive recurrence and the coprime-stride loader end to end: `pgolf run`
trains a tiny model with all three (both loop phases switch on, logged), exports the gate matrices by their role,
`pgolf eval` rescoring the artifact gives the run's exact val_bpb; the single-file bundle carries the switches'
code only when they are on, and run without pgolf installed it reports the run's val_bpb."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pgolf.bundler import REQUIRED_PACKAGES
from pgolf.cli import main
from pgolf.config import apply_overrides, load_config
from pgolf.export.driver import load_model_state
from pgolf.presets import get_preset
from pgolf.standalone import CHALLENGE_ENV, run_env
from pgolf.submit.bundle import write_bundle

SETS = ["model.vocab_size=384", "model.num_layers=3", "model.mlp_act=swiglu", "model.mlp_hidden=40",
        "model.recur.loops=2", "model.recur.start=1", "model.recur.end=1", "model.recur.untie_mlp=true",
        "model.recur.start_frac=0.25", "model.recur.progressive_frac=0.5", "train.loader=coprime",
        "train.iterations=12", "train.threads=1", "export.keep_float_max_numel=256"]
OFF = ["model.mlp_act=relu2", "model.mlp_hidden=0", "model.recur.loops=0", "model.recur.start_frac=0",
       "model.recur.progressive_frac=0", "train.loader=stream"]


def _sets(items: list[str]) -> list[str]:
    return [a for s in items for a in ("--set", s)]


@pytest.fixture(scope="module")
def run_dir(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("fam5") / "run"
    assert main(["run", "tiny", *_sets(SETS), "--set", f"data.path={tiny_data}", "--out", str(out)]) == 0
    return out


def test_trains_switches_both_phases_exports_and_rescores_exactly(run_dir, capsys):
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["steps"] == 12 and m["artifact_bytes"] == m["model_bytes"] + m["code_bytes"]
    assert math.isclose(m["val_bpb"], m["val_loss"] / math.log(2) * m["val_tokens"] / m["val_bytes"], rel_tol=1e-12)
    uniform = math.log2(384) * m["val_tokens"] / m["val_bytes"]
    assert m["pre_quant_val_bpb"] < uniform and m["val_bpb"] < uniform
    log = (run_dir / "train.log").read_text().splitlines()
    switched = [ln.split()[1] for ln in log if ln.startswith("layer_loop:enabled")]
    assert switched == ["step:3", "step:6"]  # 12 iterations: one extra pass from 0.25, both from 0.5
    state = load_model_state(run_dir / "model.pgolf")[0]
    assert tuple(state["blocks.0.mlp.gate.weight"].shape) == (40, 32)
    assert tuple(state["recur_mlps.1.gate.weight"].shape) == (40, 32)  # the second pass's untied SwiGLU
    cfg = load_config(str(run_dir / "config.json"))
    assert cfg.train.loader == "coprime" and cfg.model.recur.progressive_frac == 0.5
    capsys.readouterr()
    assert main(["eval", str(run_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["val_bpb"] == m["val_bpb"]


def test_the_bundle_carries_the_switches_code_only_when_on(run_dir, tmp_path):
    cfg = load_config(str(run_dir / "config.json"))
    on, off = tmp_path / "on.py", tmp_path / "off.py"
    write_bundle(cfg, on, compact=False)
    write_bundle(apply_overrides(cfg, OFF), off, compact=False)
    on_text, off_text = on.read_text(), off.read_text()
    assert "class SampledLoader" in on_text and "class SampledLoader" not in off_text
    for body in ("F.silu(self.gate(x))", "self.partial_plans[self.loop_passes]"):
        assert body in on_text and body not in off_text  # stubbed where the switch is off
    write_bundle(get_preset("baseline"), tmp_path / "baseline.py", compact=False)
    assert "class SampledLoader" not in (tmp_path / "baseline.py").read_text()


def _clean_python(root: Path) -> Path:
    """A venv that sees torch & co. but not pgolf (as tests/test_bundle_clean.py builds it)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "env")], check=True, timeout=120)
    py = root / "env" / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    bases = sorted({str(Path(__import__(m).__file__).resolve().parent.parent) for m in REQUIRED_PACKAGES})
    (Path(purelib) / "challenge-packages.pth").write_text("\n".join(bases) + "\n")
    return py


def test_the_bundle_without_pgolf_reports_the_runs_score(run_dir, tiny_data, tmp_path):
    cfg = load_config(str(run_dir / "config.json"))
    script = tmp_path / "dist" / "train_gpt.py"
    script.parent.mkdir()
    write_bundle(cfg, script, compact=True)
    py = _clean_python(tmp_path)
    drop = {"PYTHONPATH", "RANK", "WORLD_SIZE", "LOCAL_RANK", "RUN_ID", "PGOLF_SET", "PGOLF_RUN_DIR", *CHALLENGE_ENV}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(OMP_NUM_THREADS="1", DATA_PATH=str(tiny_data), RUN_ID="seed1337", **run_env(cfg))
    work = tmp_path / "work"
    work.mkdir()
    r = subprocess.run([str(py), str(script)], capture_output=True, text=True, env=env, cwd=work, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads((work / "runs" / "seed1337" / "metrics.json").read_text())
    want = json.loads((run_dir / "metrics.json").read_text())
    assert got["val_bpb"] == want["val_bpb"] and got["params"] == want["params"]
