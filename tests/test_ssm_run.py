"""A hybrid SSM + sliding-window model end to end: `pgolf run` trains it (below the uniform distribution's
bpb), exports its SSM tensors by their roles, and `pgolf eval` rescoring the artifact gives the run's exact
val_bpb; the single-file bundle carries the SSM module only when ``model.ssm_layers`` is on, and run without
pgolf installed it reports the run's val_bpb. Presets: ``pgolf info hybrid-ssm`` / ``hybrid-ssm-cpu``."""

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

SSM = ["model.vocab_size=384", "model.num_layers=3", "model.ssm_layers=0,-1", "model.ssm.headdim=16",
       "model.ssm.state=8", "model.ssm.chunk=16", "model.attn.window=24", "model.attn.doc_mask=true",
       "model.attn.doc_kernel=mask", "train.iterations=12", "train.threads=1", "export.keep_float_max_numel=256"]


def _sets(items: list[str]) -> list[str]:
    return [a for s in items for a in ("--set", s)]


@pytest.fixture(scope="module")
def ssm_run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ssm") / "run"
    assert main(["run", "tiny", *_sets(SSM), "--set", f"data.path={tiny_data}", "--out", str(out)]) == 0
    return out


def test_hybrid_trains_exports_and_rescores_exactly(ssm_run, capsys):
    m = json.loads((ssm_run / "metrics.json").read_text())
    assert m["steps"] == 12 and m["artifact_bytes"] == m["model_bytes"] + m["code_bytes"]
    assert math.isclose(m["val_bpb"], m["val_loss"] / math.log(2) * m["val_tokens"] / m["val_bytes"], rel_tol=1e-12)
    uniform = math.log2(384) * m["val_tokens"] / m["val_bytes"]  # bpb of predicting nothing
    assert m["pre_quant_val_bpb"] < uniform and m["val_bpb"] < uniform
    state = load_model_state(ssm_run / "model.pgolf")[0]
    assert {"blocks.0.ssm.in_proj.weight", "blocks.2.ssm.A_log", "blocks.1.attn.c_q.weight"} <= set(state)
    assert not any(k.startswith(("blocks.0.attn.", "blocks.2.attn.")) for k in state)
    capsys.readouterr()
    assert main(["eval", str(ssm_run)]) == 0
    assert json.loads(capsys.readouterr().out)["val_bpb"] == m["val_bpb"]


def test_bundle_carries_the_ssm_module_only_when_on(ssm_run, tmp_path):
    cfg = load_config(str(ssm_run / "config.json"))
    hybrid, plain = tmp_path / "hybrid.py", tmp_path / "plain.py"
    write_bundle(cfg, hybrid, compact=False)
    write_bundle(apply_overrides(cfg, ["model.ssm_layers=", "model.attn.window=0"]), plain, compact=False)
    assert "class Mamba2Mixer" in hybrid.read_text() and "class Mamba2Mixer" not in plain.read_text()
    assert "class Mamba2Mixer" not in _bundle_text(get_preset("baseline"), tmp_path / "baseline.py")


def _bundle_text(cfg, path: Path) -> str:
    write_bundle(cfg, path, compact=False)
    return path.read_text()


def _clean_python(root: Path) -> Path:
    """A venv that sees torch & co. but not pgolf (as tests/test_bundle_clean.py builds it)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "env")], check=True, timeout=120)
    py = root / "env" / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    bases = sorted({str(Path(__import__(m).__file__).resolve().parent.parent) for m in REQUIRED_PACKAGES})
    (Path(purelib) / "challenge-packages.pth").write_text("\n".join(bases) + "\n")
    return py


def test_the_bundle_without_pgolf_reports_the_runs_score(ssm_run, tiny_data, tmp_path):
    cfg = load_config(str(ssm_run / "config.json"))
    script = tmp_path / "dist" / "train_gpt.py"
    script.parent.mkdir()
    write_bundle(cfg, script, compact=True)
    py = _clean_python(tmp_path)
    drop = {"PYTHONPATH", "RANK", "WORLD_SIZE", "LOCAL_RANK", "RUN_ID", "PGOLF_SET", "PGOLF_RUN_DIR", *CHALLENGE_ENV}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(OMP_NUM_THREADS="1", DATA_PATH=str(tiny_data), RUN_ID="seed1337", **run_env(cfg))
    work = tmp_path / "work"
    work.mkdir()
    probe = subprocess.run([str(py), "-c", "import pgolf"], capture_output=True, text=True, env=env, cwd=work)
    assert probe.returncode != 0  # pgolf is not importable: the bundle runs its own copy
    r = subprocess.run([str(py), str(script)], capture_output=True, text=True, env=env, cwd=work, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads((work / "runs" / "seed1337" / "metrics.json").read_text())
    want = json.loads((ssm_run / "metrics.json").read_text())
    assert got["val_bpb"] == want["val_bpb"] and got["params"] == want["params"]


@pytest.mark.parametrize("name", ["hybrid-ssm", "hybrid-ssm-cpu"])
def test_presets_report_params_and_bytes(name, capsys):
    assert main(["info", name, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["params"] > 0 and d["estimated_artifact_bytes"] > 0
    cfg = get_preset(name)
    assert cfg.model.ssm_layers and cfg.model.layers("ssm_layers")
    if name == "hybrid-ssm":  # the Mamba-3 hybrid's logged shape: attention at 2 and 5 of 7
        assert [i for i in range(7) if i not in cfg.model.layers("ssm_layers")] == [2, 5]
        assert (cfg.model.vocab_size, cfg.model.model_dim, cfg.train.seq_len) == (8192, 512, 4096)
    else:
        assert cfg.train.autosize_model_bytes == get_preset("cpu").train.autosize_model_bytes == 1_000_000
