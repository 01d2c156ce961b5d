"""The bundle without pgolf: in a virtual environment that sees torch, numpy, sentencepiece, safetensors
and the compressors but not pgolf (asserted), run from a directory outside the repository, train_gpt.py
trains the tiny configuration on the CPU — in one process and under 2-process gloo torchrun — and reports
exactly what `pgolf run` reports for the same configuration and seed: the same log lines (timings aside),
metrics, and byte-identical artifact; its "Code size" is its own file's size, the code bytes pgolf charged.

The environment: ``python -m venv`` (no system site packages) plus a ``.pth`` naming the base
interpreter's site-packages, which adds torch & co. to ``sys.path`` without running that directory's own
``.pth`` files — so the editable install's finder for pgolf is never loaded."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pgolf.bundler import REQUIRED_PACKAGES
from pgolf.config import apply_overrides, load_config
from pgolf.export.driver import load_model_state
from pgolf.presets import get_preset
from pgolf.standalone import CHALLENGE_ENV, run_env
from pgolf.submit.bundle import write_bundle
from pgolf.train.checkpoint import has_checkpoint

LINES = ("step:", "stopping_early:", "Serialized model", "Code size:", "Total submission size", "final_")
TIMING = re.compile(r"(train_time|step_avg|eval_time):[0-9.]+m?s|tok/s:[0-9]+")


def _sets(data_dir) -> list[str]:
    return [f"data.path={data_dir}", "model.vocab_size=384", "train.iterations=6", "train.log_every=2",
            "train.threads=1", "train.warmup_steps=1", "train.val_every=3", "train.val_tokens_during_training=4096"]


def _clean_env(**extra: str) -> dict[str, str]:
    drop = {"PYTHONPATH", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "RUN_ID", "PGOLF_SET",
            "PGOLF_RUN_DIR", *CHALLENGE_ENV}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


@pytest.fixture(scope="module")
def clean_python(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "env")], check=True, timeout=120)
    py = root / "env" / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    bases = sorted({str(Path(__import__(m).__file__).resolve().parent.parent) for m in REQUIRED_PACKAGES})
    (Path(purelib) / "challenge-packages.pth").write_text("\n".join(bases) + "\n")
    probe = "import " + ", ".join(REQUIRED_PACKAGES) + "\ntry:\n import pgolf\nexcept ModuleNotFoundError:\n print('no pgolf')"
    r = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, env=_clean_env(),
                       cwd=root, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "no pgolf", (  # e.g. pgolf installed non-editable beside torch
        "the clean environment must see the challenge's packages but not pgolf: " + r.stdout + r.stderr)
    return py


def _pgolf(args: list[str], cwd: Path, torchrun: bool = False) -> subprocess.CompletedProcess:
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "pgolf"] \
        if torchrun else [sys.executable, "-m", "pgolf"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("RANK", None)
    r = subprocess.run([*launch, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _bundle(py: Path, script: Path, cwd: Path, torchrun: bool = False, **env: str) -> subprocess.CompletedProcess:
    launch = [str(py), "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"] if torchrun else [str(py)]
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([*launch, str(script)], capture_output=True, text=True, env=_clean_env(**env), cwd=cwd,
                          timeout=600)


def _challenge_lines(log: str) -> list[str]:
    return [TIMING.sub(r"\1:<t>", line) for line in log.splitlines() if line.startswith(LINES)]


def _shift_code(lines: list[str], delta: int) -> list[str]:
    """The lines as they read when the code is ``delta`` bytes longer (the readable form)."""
    def total(m: re.Match) -> str:
        return f"{m[1]}{int(m[2]) + delta} bytes (model {m[3]} + code {int(m[4]) + delta};"

    out = []
    for line in lines:
        line = re.sub(r"^Code size: (\d+)", lambda m: f"Code size: {int(m[1]) + delta}", line)
        out.append(re.sub(r"^(Total submission size [^:]+: )(\d+) bytes \(model (\d+) \+ code (\d+);", total, line))
    return out


def _same_run(ref_dir: Path, run_dir: Path, stdout: str, script: Path, *, code_delta: int = 0,
              timed_header: bool = False) -> dict:
    """The bundle's stdout and run directory against the reference run's train.log (rank 0's lines, in
    order), metrics and artifact; ``code_delta``: the bundle's code is that many bytes longer (readable).
    ``timed_header``: the artifact's header records calibration seconds, so only its tensors are compared
    (exactly) and its size within a few digits."""
    lines = _challenge_lines(stdout)
    assert lines == _challenge_lines((run_dir / "train.log").read_text())
    ref_lines = _shift_code(_challenge_lines((ref_dir / "train.log").read_text()), code_delta)
    if timed_header:
        def mask(xs: list[str]) -> list[str]:
            return [re.sub(r"model \d+|: \d+ bytes", "N", x) if x.startswith(("Serialized", "Total")) else x for x in xs]

        lines, ref_lines = mask(lines), mask(ref_lines)
    assert lines == ref_lines
    scheme = load_config(str(ref_dir / "config.json")).export.scheme
    assert any(x.startswith(f"final_{scheme}_roundtrip_exact val_loss:") for x in lines)
    assert f"Code size: {script.stat().st_size} bytes" in lines
    m, ref = (json.loads((d / "metrics.json").read_text()) for d in (run_dir, ref_dir))
    for k in ("val_loss", "val_bpb", "val_bpb_raw", "pre_quant_val_loss", "params", "steps", "val_tokens",
              "world_size") + (() if timed_header else ("model_bytes",)):
        assert m[k] == ref[k], k
    assert m["code_bytes"] == ref["code_bytes"] + code_delta == script.stat().st_size  # the bundle charges itself
    assert m["artifact_bytes"] == m["model_bytes"] + m["code_bytes"]
    a, b = (run_dir / "model.pgolf").read_bytes(), (ref_dir / "model.pgolf").read_bytes()
    if not timed_header:
        assert a == b
    else:
        assert abs(len(a) - len(b)) <= 64  # the compressed header holds the seconds
        sa, sb = load_model_state(run_dir / "model.pgolf")[0], load_model_state(ref_dir / "model.pgolf")[0]
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    return m


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory):
    """`pgolf run` of the tiny configuration (periodic validation on, 6 steps), and its config."""
    out = tmp_path_factory.mktemp("ref") / "run"
    sets = [a for s in _sets(tiny_data) for a in ("--set", s)]
    _pgolf(["run", "tiny", *sets, "--out", str(out)], cwd=out.parent)
    return out, load_config(str(out / "config.json"))


@pytest.mark.parametrize("form", ["compact", "readable"])
def test_bundle_reproduces_pgolf_run_without_pgolf(reference, tiny_data, tmp_path, clean_python, form):
    """pgolf run charged the compact form: the compact bundle matches it to the byte; the readable one
    differs exactly by its longer code in "Code size", "Total submission size" and artifact_bytes."""
    ref_dir, cfg = reference
    script = tmp_path / "dist" / "train_gpt.py"
    script.parent.mkdir()
    write_bundle(cfg, script, compact=form == "compact")
    # the seed, logging and validation cadence are the run's, passed as a submission's README says
    r = _bundle(clean_python, script, tmp_path / "work", DATA_PATH=str(tiny_data), RUN_ID="seed1337", **run_env(cfg))
    assert r.returncode == 0, r.stderr[-3000:]
    delta = script.stat().st_size - json.loads((ref_dir / "metrics.json").read_text())["code_bytes"]
    assert (delta == 0) == (form == "compact")
    _same_run(ref_dir, tmp_path / "work" / "runs" / "seed1337", r.stdout, script, code_delta=delta)
    assert sum(x.startswith("step:") and "val_loss:" in x for x in _challenge_lines(r.stdout)) == 2  # steps 3, 6


EVERYTHING = ["model.vocab_size=384", "model.num_layers=6", "model.model_dim=32", "model.num_heads=2",
              "model.num_kv_heads=1", "model.attn.xsa_layers=0,1,2,3,4,5", "model.parallel_start=4",
              "model.recur.start=2", "model.recur.end=3", "model.recur.loops=1", "model.recur.start_frac=0.5",
              "model.attn.ve_layers=4,5", "model.attn.ve_dim=16", "model.embed.bigram_buckets=64",
              "model.embed.bigram_dim=16", "optim.parallel_muon=true", "train.qat.kind=ste", "train.qat.start_frac=0.5",
              "train.batch_tokens=2048", "train.seq_len=64", "eval.seq_len=64", "eval.batch_tokens=4096",
              "train.iterations=4", "train.max_wallclock_seconds=0", "train.warmup_steps=1", "train.threads=1",
              "train.val_every=0", "train.log_every=1", "data.val_max_tokens=8192", "train.calib_reserve_seconds=0",
              "export.calib_seqs=2",
              "export.verify_seqs=2", "export.search_max_options=2", "export.verify_plans=1", "export.search_k=12",
              "export.search_bits=5,6", "export.search_lqer_rank=2", "eval.method=sliding", "eval.sliding.stride=32",
              "train.compile=false", "eval.compile=false"]  # the record compiles; inductor on this CPU takes minutes
"""record-0427 (smear v3, gates, XSA, recurrence, parallel lanes, MuonEq-R, Polar Express, EMA, the budget
search with GPTQ and LQER) shrunk, plus every other optional technique (BigramHash, value embeddings, QAT,
parallel Muon), scored by its sliding-window evaluation (``eval.method``): every optional module is in
the bundle, minified and shaken. Hessians are self-generated
(seeded): calibration on training tokens stops on the clock, so two runs would calibrate on different
batch counts."""


def test_bundle_with_every_technique_matches_pgolf_run(tiny_data, tmp_path, clean_python):
    from pgolf.bundler import optional_modules

    ref_dir = tmp_path / "ref"
    _pgolf(["run", "record-0427", *[a for s in [f"data.path={tiny_data}", *EVERYTHING] for a in ("--set", s)],
            "--out", str(ref_dir)], cwd=tmp_path)
    script = tmp_path / "train_gpt.py"
    b = write_bundle(load_config(str(ref_dir / "config.json")), script, compact=True)
    # preflight, autosize, the planner: only train.autosize's probe; the fused kernels: CUDA + triton only; the mixer and TTT: other
    # eval methods (this one scores by sliding windows)
    not_here = {"pgolf.preflight", "pgolf.autosize", "pgolf.export.planner", "pgolf.model.fused", "pgolf.eval.mix",
                "pgolf.eval.ttt",
                # the model families (issue 26), each its own configuration: tests/test_bundle.py FAMILIES
                "pgolf.quant.lowbit", "pgolf.model.ssm", "pgolf.model.mdlm", "pgolf.eval.variational",
                "pgolf.model.factored",
                # the budget search (export.scheme=budget; the record exports with its own record_0427), the context
                # mixer (eval.mix.mode=cm), the records' sampled loaders (train.loader)
                "pgolf.export.search", "pgolf.export.solve", "pgolf.eval.cm", "pgolf.eval.cm.contexts",
                "pgolf.eval.cm.mixer", "pgolf.eval.cm.reference", "pgolf.data.sampled"}
    assert set(optional_modules()) - not_here <= set(b.modules) and not not_here & set(b.modules)
    r = _bundle(clean_python, script, tmp_path / "work", DATA_PATH=str(tiny_data), RUN_ID="all",
                **run_env(load_config(str(ref_dir / "config.json"))))
    assert r.returncode == 0, r.stderr[-3000:]
    m = _same_run(ref_dir, tmp_path / "work" / "runs" / "all", r.stdout, script, timed_header=True)
    log = (tmp_path / "work" / "runs" / "all" / "train.log").read_text()
    assert "late_qat:enabled" in log and "layer_loop:enabled" in log and "hessians from generated" in log
    assert m["artifact_bytes"] == m["model_bytes"] + script.stat().st_size


def test_bundle_under_two_process_gloo_torchrun(tiny_data, tmp_path, clean_python):
    ref_dir = tmp_path / "ref"
    sets = [a for s in _sets(tiny_data) for a in ("--set", s)]
    ref = _pgolf(["run", "tiny", *sets, "--out", str(ref_dir)], cwd=tmp_path, torchrun=True)
    assert ref.stdout.count("— scorecard") == 1  # rank 0 alone prints it
    script = tmp_path / "train_gpt.py"
    write_bundle(load_config(str(ref_dir / "config.json")), script, compact=True)
    work = tmp_path / "work"
    r = _bundle(clean_python, script, work, torchrun=True, DATA_PATH=str(tiny_data),  # no RUN_ID: rank 0 draws one
                **run_env(load_config(str(ref_dir / "config.json"))))
    assert r.returncode == 0, r.stderr[-3000:]
    (run_dir,) = list((work / "runs").iterdir())  # one directory, shared by both ranks
    assert re.fullmatch(r"[0-9a-f]{12}", run_dir.name)
    assert has_checkpoint(run_dir, ".rank1")  # rank 1 wrote its optimizer state there
    _same_run(ref_dir, run_dir, r.stdout, script)
    assert json.loads((run_dir / "metrics.json").read_text())["world_size"] == 2


def test_bundle_honours_the_challenge_variables_and_its_errors_are_one_line(tiny_data, tmp_path, clean_python):
    script = tmp_path / "train_gpt.py"
    write_bundle(apply_overrides(get_preset("tiny"), ["model.vocab_size=384"]), script, compact=True)
    # the wallclock cap stops a run of 100,000 iterations; the variables land in the run's config
    r = _bundle(clean_python, script, tmp_path / "w0", DATA_PATH=str(tiny_data), RUN_ID="capped", SEED="7",
                ITERATIONS="100000", MAX_WALLCLOCK_SECONDS="0.5", TRAIN_LOG_EVERY="1", VAL_BATCH_SIZE="8192")
    assert r.returncode == 0, r.stderr[-3000:]
    stop = [x for x in r.stdout.splitlines() if x.startswith("stopping_early: wallclock_cap train_time:")]
    assert len(stop) == 1 and re.fullmatch(r"stopping_early: wallclock_cap train_time:\d+ms step:\d+/100000", stop[0])
    cfg = load_config(str(tmp_path / "w0" / "runs" / "capped" / "config.json"))
    assert (cfg.train.seed, cfg.train.iterations, cfg.train.max_wallclock_seconds, cfg.eval.batch_tokens) == (
        7, 100000, 0.5, 8192)
    assert cfg.data.path == str(tiny_data) and cfg.data.tokenizer == ""  # tokenizer.model beside the shards
    r = _bundle(clean_python, script, tmp_path / "w1", DATA_PATH=str(tmp_path / "nowhere"))
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and err[-1].startswith("train_gpt.py: error: ") and "does not exist" in err[-1], r.stderr
    assert "Traceback" not in r.stderr
    # a switch whose code the bundle left out: named, with the way out
    r = _bundle(clean_python, script, tmp_path / "w2", DATA_PATH=str(tiny_data), PGOLF_SET="train.qat.kind=ste")
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "pgolf.quant.qat is not in this bundle: needs train.qat.kind != 'off'" in err[-1]
