"""Switches declared beside the code (pgolf.switch) as the bundler reads them (pgolf.bundler.switches)."""

from __future__ import annotations

import ast

import pytest

from pgolf import bundler
from pgolf.bundler import prune, switches
from pgolf.config import RunConfig, apply_overrides
from pgolf.presets import PRESETS, get_preset

ROOT = bundler.package_root()


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_declared_condition_evaluates_on_every_preset(preset):
    cfg = get_preset(preset)
    for table in (bundler.optional_modules(), bundler.dead_definitions()):
        for key, sw in table.items():
            assert isinstance(sw.needed(cfg), bool), key


def test_the_declarations_are_where_the_techniques_are():
    mods = bundler.optional_modules()
    assert mods["pgolf.model.hashed"].switch == "model.embed.bigram_buckets > 0"
    assert mods["pgolf.eval.ttt"].switch == "eval.method.startswith('ttt')"
    assert mods["pgolf.model.hashed"].where.endswith("model/hashed.py:" + str(
        next(n.lineno for n in ast.parse((ROOT / "model" / "hashed.py").read_text()).body
             if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "NEEDED_WHEN")))
    dead = bundler.dead_definitions()
    assert dead["pgolf.model.gpt:GPT._gated_skip"].switch == "model.skips == 'gated'"
    # the bundler itself names no technique
    for f in (ROOT / "bundler").glob("*.py"):
        text = f.read_text()
        assert "bigram_buckets" not in text and "_gated_skip" not in text, f


def test_conditions_follow_the_configuration():
    tiny = get_preset("tiny")
    mods, dead = bundler.optional_modules(), bundler.dead_definitions()
    assert not mods["pgolf.model.hashed"].needed(tiny)
    assert mods["pgolf.model.hashed"].needed(apply_overrides(tiny, ["model.embed.bigram_buckets=64"]))
    # the export scheme's own attributes decide (scheme.codec, scheme.quantizes)
    assert not mods["pgolf.export.search"].needed(tiny)
    assert mods["pgolf.export.search"].needed(apply_overrides(tiny, ["export.scheme=budget"]))
    # the budget search (measurements and plan) only for its own scheme, the v2 container for every streams one
    r0427, budget = (apply_overrides(tiny, [f"export.scheme={s}"]) for s in ("record_0427", "budget"))
    for name in ("pgolf.export.search", "pgolf.export.solve"):
        assert mods[name].needed(budget) and not mods[name].needed(r0427)
    assert dead["pgolf.export.driver:_export_budget"].needed(budget)
    assert not dead["pgolf.export.driver:_export_budget"].needed(r0427)
    for name in ("pgolf.artifact.format_v2", "pgolf.quant.lqer_factors"):
        assert mods[name].needed(r0427) and mods[name].needed(budget) and not mods[name].needed(tiny)
    assert dead["pgolf.export.driver:_export_record_streams"].needed(r0427)
    assert not dead["pgolf.export.driver:_export_record_streams"].needed(tiny)
    assert not mods["pgolf.quant.gptq"].needed(apply_overrides(tiny, ["export.scheme=int8_zlib"]))
    assert dead["pgolf.quant.grid:family_scheme"].needed(apply_overrides(tiny, ["export.scheme=record_0322"]))


def test_a_wrong_condition_names_its_declaration():
    with pytest.raises(ValueError, match="here.py:3.*does not evaluate"):
        switches.holds("model.no_such_field > 0", RunConfig(), "here.py:3")
    with pytest.raises(ValueError, match="not an expression"):
        switches.holds("model.x >", RunConfig(), "there.py:1")


def test_a_new_module_declares_itself(tmp_path):
    """Adding a technique edits its own module only: the reader finds the declarations anywhere under the root."""
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "thing.py").write_text(
        '"""A technique."""\nimport math\n\nNEEDED_WHEN = "model.num_layers > 20"\n\n'
        "from pgolf.switch import needs\n\n\nclass A:\n    @needs(\"train.seed == 7\")\n    def f(self):\n"
        "        return 1\n")
    assert {k: v.switch for k, v in switches.optional_modules(tmp_path).items()} == {
        "pgolf.thing": "model.num_layers > 20"}
    assert {k: v.switch for k, v in switches.dead_definitions(tmp_path).items()} == {"pgolf.thing:A.f": "train.seed == 7"}
    assert switches.stubs_for(RunConfig(), "pgolf.thing", tmp_path / "thing.py") == (("A.f", "train.seed == 7"),)


def test_stubbing_removes_the_declarations_and_nothing_else():
    src = ('"""Doc."""\nimport os\nfrom pgolf.switch import needs\n\nNEEDED_WHEN = "train.seed > 0"\n\n\n'
           '@needs("train.seed == 1")\ndef f(x):\n    """F."""\n    return x + 1\n\n\n'
           'class C:\n    @staticmethod\n    @needs("train.seed == 2")\n    def g():\n        return 2\n')
    out = prune.stub_source(src, {})
    assert "needs" not in out and "NEEDED_WHEN" not in out
    assert ast.dump(ast.parse(out)) == ast.dump(ast.parse(
        '"""Doc."""\nimport os\n\ndef f(x):\n    """F."""\n    return x + 1\n\nclass C:\n'
        '    @staticmethod\n    def g():\n        return 2\n'))
    stubbed = prune.stub_source(src, {"f": "train.seed == 1"})
    assert "raise RuntimeError('f is not in this bundle: needs train.seed == 1" in stubbed and "x + 1" not in stubbed


@pytest.mark.parametrize("compact", [True, False])
def test_no_bundle_ships_a_declaration(compact):
    cfg = get_preset("record-0427")
    text = bundler.render(cfg, compact=compact).program
    assert "NEEDED_WHEN =" not in text and "@needs(" not in text and "from pgolf.switch import" not in text
    assert "pgolf.switch" not in bundler.select_modules(cfg).modules
