"""Intra-module pruning of the bundle (pgolf.bundler.prune, the @needs declarations, the shake-aware selection):
every switch-dead declaration matches what the code calls (traced), a stub fails loudly with its switch,
and a switch that is off leaves its code — and the modules only it imports — out of the bundle."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import pgolf
from pgolf import bundler
from pgolf.bundler.prune import definitions, stub_source
from pgolf.config import ModelConfig, RunConfig, apply_overrides
from pgolf.presets import get_preset

ROOT = Path(pgolf.__file__).resolve().parent
GPT_FILE = str(ROOT / "model" / "gpt.py")
TINY = ModelConfig(vocab_size=64, num_layers=4, model_dim=32, num_heads=4, num_kv_heads=2, mlp_mult=2)

SWITCHES = {
    "off": [],
    "xsa": ["model.attn.xsa_layers=1,3"],
    "doc_mask": ["model.attn.doc_mask=true"],
    "gate out": ["model.attn.gate=out"],
    "gate dense": ["model.attn.gate=dense"],
    "gate sparse": ["model.attn.gate=sparse", "model.attn.gate_window=8"],
    "gated skips": ["model.skips=gated"],
    "no skips": ["model.skips=none"],
    "parallel": ["model.parallel_start=2"],
    "chunked ce": ["model.ce_chunk_tokens=16"],
    "resid schedule": ["model.resid_mix_init=schedule"],
    "overtone": ["model.embed_init=overtone"],
    "orthogonal": ["model.init=orthogonal"],
    "orthogonal records": ["model.init=orthogonal_records"],
    "recurrence": ["model.recur.loops=1", "model.recur.start=1", "model.recur.end=2", "model.recur.untie_mlp=true"],
    "everything": ["model.attn.xsa_layers=0,1,2,3", "model.attn.doc_mask=true", "model.attn.gate=sparse",
                   "model.attn.gate_window=8", "model.skips=gated", "model.parallel_start=2",
                   "model.ce_chunk_tokens=16", "model.resid_mix_init=schedule", "model.embed_init=overtone",
                   "model.init=orthogonal"],
}


def _calls(filename: str, fn) -> set[str]:
    """Qualified names of the functions of source file ``filename`` that run during ``fn()``."""
    called: set[str] = set()

    def prof(frame, event, arg):
        if event == "call" and frame.f_code.co_filename == filename:
            called.add(frame.f_code.co_qualname)

    sys.setprofile(prof)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return called


def _called_in_gpt(cfg: RunConfig) -> set[str]:
    """Qualified names of the pgolf.model.gpt functions that run while the model is built, trained one
    step (loss, backward) and evaluated (logits, per-token losses)."""
    from pgolf.model.gpt import GPT

    torch.manual_seed(0)
    idx = torch.randint(0, 64, (2, 24))
    idx[:, 7] = cfg.model.embed.bos_id

    def build_train_eval() -> None:
        model = GPT(cfg.model)
        model(idx[:, :-1], idx[:, 1:]).backward()
        with torch.no_grad():
            model(idx[:, :-1])
            model(idx[:, :-1], idx[:, 1:], reduction="none")

    return _calls(GPT_FILE, build_train_eval)


@pytest.mark.parametrize("name", sorted(SWITCHES))
def test_every_switch_dead_declaration_matches_what_the_model_calls(name):
    cfg = apply_overrides(RunConfig(model=TINY), SWITCHES[name])
    called = _called_in_gpt(cfg)
    declared = {k.partition(":")[2]: sw for k, sw in bundler.dead_definitions().items() if k.startswith("pgolf.model.gpt:")}
    dead = {q for q, sw in declared.items() if not sw.needed(cfg)}
    assert not called & dead, f"{name}: the bundle would stub {sorted(called & dead)}, which this config calls"
    # and the declarations have teeth: every live one is called here (so "not needed" is not vacuous)
    assert {q for q in declared if q not in dead} <= called, name


def test_every_declaration_is_a_definition_of_its_module():
    for key in bundler.dead_definitions():
        mod, _, qual = key.partition(":")
        path = bundler.module_path(mod, ROOT)
        assert path is not None, key
        import ast

        assert qual in definitions(ast.parse(path.read_text())), key
    # the model's declarations between them are the whole switch-only surface of gpt.py: each is off in `tiny`
    assert {q for q, _ in bundler.stubs_for(get_preset("tiny"), "pgolf.model.gpt")} == {
        k.partition(":")[2] for k in bundler.dead_definitions() if k.startswith("pgolf.model.gpt:")}


def test_calibration_in_the_reserve_runs_only_when_reserved(tiny_data, tmp_path):
    from pgolf.runner import train_hooks
    from pgolf.train.loop import train

    runner_file = str(ROOT / "runner.py")
    for reserve, expect in ((0.0, False), (0.5, True)):
        cfg = apply_overrides(get_preset("tiny"), [f"data.path={tiny_data}", "model.vocab_size=384", "train.iterations=3",
                                                   "train.max_wallclock_seconds=60", f"train.calib_reserve_seconds={reserve}"])
        assert bundler.dead_definitions()["pgolf.runner:_calibrate_in_reserve"].needed(cfg) is expect
        called = _calls(runner_file, lambda cfg=cfg, reserve=reserve: train(cfg, tmp_path / f"r{reserve}", progress=False,
                                                                            hooks=train_hooks(cfg)))
        assert ("_calibrate_in_reserve" in called) is expect


def test_a_stub_keeps_signature_and_docstring_and_names_its_switch():
    src = (
        "import os\n"
        "def f(a, b=2):\n"
        "    '''doc'''\n"
        "    import json  # only f needs it\n"
        "    return json.dumps([a, b])\n"
        "\n"
        "class K:\n"
        "    def m(self, x):\n"
        "        return x + 1\n"
        "\n"
        "    def n(self):\n"
        "        return 3\n"
    )
    out = stub_source(src, {"f": "model.x != off", "K.m": "model.y"})
    assert "import json" not in out and "'''doc'''" in out and "def f(a, b=2):" in out and "return 3" in out
    g: dict = {}
    exec(compile(out, "s", "exec"), g)
    assert g["f"].__doc__ == "doc" and g["K"]().n() == 3
    with pytest.raises(RuntimeError, match=r"f is not in this bundle: needs model.x != off"):
        g["f"](1)
    with pytest.raises(RuntimeError, match=r"K.m is not in this bundle: needs model.y"):
        g["K"]().m(1)
    assert stub_source(src, {}) == src
    with pytest.raises(ValueError, match="stale"):
        stub_source(src, {"gone": "x"})
    with pytest.raises(ValueError, match="def line"):
        stub_source("def g(): return 1\n", {"g": "x"})


def test_an_off_switch_leaves_its_code_and_its_modules_out():
    scored_by = set(bundler.select_modules(get_preset("cpu")).modules)  # cpu scores itself with the mixer
    cpu = apply_overrides(get_preset("cpu"), ["eval.method=plain"])
    sel = bundler.select_modules(cpu)
    # with plain evaluation, the round trip of `pgolf run` is all a bundle runs: pgolf eval's methods are not
    # bundled; with the preset's own method, the modules it runs are
    evals = {"pgolf.eval.methods", "pgolf.eval.ttt", "pgolf.eval.lora", "pgolf.eval.mix", "pgolf.eval.sliding",
             "pgolf.eval.windows", "pgolf.eval.clock"}
    assert not evals & set(sel.modules) and "eval_run" in sel.shaken["pgolf.runner"]
    assert {"pgolf.eval.methods", "pgolf.eval.mix", "pgolf.eval.clock"} <= scored_by
    program = bundler.render(cpu, compact=True).program
    for word in ("F.normalize(v", "(idx == bos_id)", "orthogonal_(", "s[0] * k.rsqrt()", "checkpoint.checkpoint"):
        assert word.replace(" ", "") not in program.replace(" ", ""), word
    assert "exclusive is not in this bundle: needs len(model.attn.xsa_layers) > 0" in program
    on = apply_overrides(cpu, ["model.attn.xsa_layers=0,1,2", "model.init=orthogonal", "model.attn.doc_mask=true"])
    program_on = bundler.render(on, compact=True).program
    assert "exclusive is not in this bundle" not in program_on and "orthogonal_(" in program_on
    assert len(bundler.render(on, compact=True).data) > len(bundler.render(cpu, compact=True).data)


def test_an_int8_run_never_reaches_the_low_bit_families(tiny_data, tmp_path):
    """export.scheme int8_zlib writes and reads only registered schemes (the bundle stubs family_scheme);
    an int6 scheme does reach it."""
    from pgolf.runner import run

    grid_file = str(ROOT / "quant" / "grid.py")
    for scheme, expect in (("int8_zlib", False), ("int6_gptqlite_zstd", True)):
        cfg = apply_overrides(get_preset("tiny"), [f"data.path={tiny_data}", "model.vocab_size=384", "train.iterations=2",
                                                   f"export.scheme={scheme}", "data.val_max_tokens=4096"])
        assert bundler.dead_definitions()["pgolf.quant.grid:family_scheme"].needed(cfg) is expect
        called = _calls(grid_file, lambda cfg=cfg, scheme=scheme: run(cfg, tmp_path / scheme, progress=False))
        assert ("family_scheme" in called) is expect, scheme
