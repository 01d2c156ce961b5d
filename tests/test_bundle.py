"""The single-file bundle (pgolf.bundler, pgolf.bundler.minify, pgolf.submit.bundle, pgolf bundle):
which modules a configuration's train_gpt.py holds, that both forms embed exactly those sources (verbatim /
minified to the same program), that the charged code bytes are the shipped file's bytes, and the
challenge's environment variables. The bundle running without pgolf: tests/test_bundle_clean.py."""

from __future__ import annotations

import ast
import dataclasses
import runpy
import shutil
import textwrap
import time
import typing
from pathlib import Path

import pytest

import pgolf
from pgolf import bundler
from pgolf.artifact.budget import code_bytes
from pgolf.bundler import script as bundle_script
from pgolf.bundler.minify import minify, prepare, render, shake, strip
from pgolf.bundler.prune import stub_source
from pgolf.cli import main
from pgolf.config import NOT_RESULT_CHANGING, RunConfig, apply_overrides, field_types, flatten
from pgolf.errors import ConfigError
from pgolf.presets import PRESETS, get_preset
from pgolf.standalone import CHALLENGE_ENV, configure
from pgolf.submit.bundle import build_bundle, resolve_source, write_bundle

ROOT = Path(pgolf.__file__).resolve().parent
EVERYTHING_ON = ["model.embed.bigram_buckets=64", "model.embed.smear=v2", "model.attn.ve_layers=1",
                 "model.attn.doc_mask=true", "optim.parallel_muon=true", "train.qat.kind=ste", "export.scheme=budget",
                 "model.fused_kernels=auto", "eval.method=ttt+mix"]

FAMILIES = {"pgolf.quant.lowbit": ["train.qat.kind=ternary"], "pgolf.model.ssm": ["model.ssm_layers=0"],
            "pgolf.model.mdlm": ["model.objective=mdlm"], "pgolf.eval.variational": ["model.objective=mdlm"],
            "pgolf.model.factored": ["model.embed.factor_dim=16"], "pgolf.data.sampled": ["train.loader=coprime"],
            **{m: ["eval.method=mix", "eval.mix.mode=cm"] for m in ("pgolf.eval.cm", "pgolf.eval.cm.contexts",
                                                                    "pgolf.eval.cm.mixer")}}
"""Optional modules of the model families (issue 26) and a switch that brings each (not all compatible at once)."""


def _sel(cfg_or_preset, sets=()):
    cfg = get_preset(cfg_or_preset) if isinstance(cfg_or_preset, str) else cfg_or_preset
    return bundler.select_modules(apply_overrides(cfg, list(sets)))


# --------------------------------------------------------------------------- selection


SLIDING = ("pgolf.eval.clock", "pgolf.eval.sliding", "pgolf.eval.windows")


def test_a_switch_that_is_off_brings_no_code():
    off = _sel("tiny")
    # named as left out where a bundled function imports them (lqer only the left-out gptq / search do)
    # (the eval methods only from the runner's method path, which a plain bundle ships stubbed: pgolf.runner:_final_method is @needs;
    # the budget search and the streams only from the driver's export paths for their schemes, stubbed too; the LQER
    # factors only from the low-bit families, which int8_zlib stubs)
    assert set(bundler.optional_modules()) - set(off.left_out) == {"pgolf.quant.lqer", "pgolf.preflight", "pgolf.export.planner",
                                                          "pgolf.eval.methods", "pgolf.eval.mix", "pgolf.eval.ttt",
                                                          "pgolf.eval.variational", "pgolf.quant.selective_prune",
                                                          "pgolf.export.search", "pgolf.artifact.streams",
                                                          "pgolf.quant.lqer_factors", "pgolf.eval.cm", "pgolf.eval.cm.contexts",
                                                          "pgolf.eval.cm.mixer", "pgolf.eval.cm.reference"}
    assert not set(bundler.optional_modules()) & set(off.modules)
    assert not any(m == k or m.startswith(k + ".") for k in bundler.NEVER for m in off.modules)
    on = _sel("tiny", [*EVERYTHING_ON, "train.autosize=true"])
    never = {m for m, sw in bundler.optional_modules().items() if sw.switch == "False"}  # tests-only references
    assert set(bundler.optional_modules()) - set(FAMILIES) - never <= set(on.modules)
    for m, sets in FAMILIES.items():  # the model families' modules, each behind its own switch
        assert m in _sel("tiny", sets).modules, m
    assert all(m in FAMILIES or any(m == k or m.startswith(k + ".") for k in bundler.NEVER) for m in on.left_out), \
        on.left_out
    gptq, calib = "pgolf.quant.gptq", "pgolf.quant.calib"  # calib imports gptq when it loads
    fit = "pgolf.quant.selective_prune"  # export.fit = prune over the cap: a quantizing one-payload scheme
    for sets, brings in [(["model.embed.smear=v3"], {"pgolf.model.smear"}),
                         (["model.embed.bigram_buckets=8"], {"pgolf.model.hashed"}),
                         (["model.attn.ve_layers=0"], {"pgolf.model.value"}),
                         (["model.attn.doc_mask=true"], {"pgolf.model.varlen"}),
                         (["model.attn.doc_mask=true", "model.attn.doc_kernel=mask"], set()),
                         (["optim.parallel_muon=true"], {"pgolf.optim.parallel_muon"}),
                         (["model.fused_kernels=auto"], {"pgolf.model.fused"}),
                         (["eval.method=sliding"], {"pgolf.eval.methods", *SLIDING}),
                         (["eval.method=mix"], {"pgolf.eval.methods", "pgolf.eval.mix", *SLIDING}),  # tilt: windows
                         (["eval.method=ttt"], {"pgolf.eval.methods", "pgolf.eval.ttt", "pgolf.eval.lora",
                                                "pgolf.eval.work", *SLIDING}),
                         (["train.autosize=true"], {"pgolf.preflight", "pgolf.autosize", "pgolf.export.planner",
                                                    "pgolf.model.flops"}),
                         (["train.qat.kind=soft_round"], {"pgolf.quant.qat"}),
                         (["export.scheme=int6_gptqlite_zstd"], {gptq, fit}),
                         (["export.scheme=gptq6_emb7_brotli"], {gptq, calib, fit}),
                         (["train.calib_reserve_seconds=0.5", "train.max_wallclock_seconds=10"], {gptq, calib}),
                         (["export.scheme=budget"], {gptq, calib, "pgolf.export.search", "pgolf.artifact.streams",
                                                     "pgolf.artifact.format_v2", "pgolf.quant.lqer",
                                                     "pgolf.quant.lqer_factors", "pgolf.quant.selective_prune",
                                                     "pgolf.export.solve"})]:
        assert set(_sel("tiny", sets).modules) - set(off.modules) == brings, sets
    # a scheme pgolf does not know (a new one) keeps everything a scheme could need
    unknown = dataclasses.replace(get_preset("tiny"), export=dataclasses.replace(RunConfig().export, scheme="new"))
    assert {"pgolf.quant.gptq", "pgolf.quant.calib", "pgolf.export.search", "pgolf.artifact.streams"} <= set(
        bundler.select_modules(unknown).modules)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_selection_is_closed_ordered_and_on_the_training_path(preset):
    sel = _sel(preset)
    mods = list(sel.modules)
    assert mods[-1] == bundler.ENTRY and len(set(mods)) == len(mods)
    pos = {m: i for i, m in enumerate(mods)}
    for m in mods:  # as bundled: switch-dead bodies stubbed, definitions nothing refers to removed
        s = bundler.scan(m, ROOT, bundler.stubs_for(get_preset(preset), m), sel.shaken.get(m, ()))
        for d in s.eager:  # imported when m loads: bundled, and placed before m (no eager cycle exists)
            assert d in pos and pos[d] < pos[m], (m, d)
        for d in s.lazy:  # imported inside a function: bundled or named as left out
            assert d in pos or d in sel.left_out, (m, d)
        assert m == "pgolf" or m.rsplit(".", 1)[0] in pos  # its package (placed after it if it imports it)
    tools = ("submit", "track", "cli", "commands", "presets") + (() if get_preset(preset).train.autosize else ("preflight",))
    assert not [m for m in mods if m.split(".")[1:2] and m.split(".")[1] in tools]  # autosize probes with preflight
    assert set(bundler.third_party_imports(sel.modules)) <= set(bundler.REQUIRED_PACKAGES)


def test_the_walker_reads_imports_the_way_python_runs_them(tmp_path):
    """A synthetic package: module level, class bodies and top-level ifs are eager; function bodies lazy;
    TYPE_CHECKING blocks never run; an optional module behind a switch that is off is left out."""
    files = {
        "__init__.py": "",
        "standalone.py": """
            from typing import TYPE_CHECKING
            import pgolf.a
            if TYPE_CHECKING:
                from pgolf import never
            def main():
                from pgolf.model.hashed import BigramHash
                import pgolf.b
            """,
        "a.py": """
            class K:
                from pgolf.d import x
            try:
                from pgolf.e import y
            except ImportError:
                pass
            """,
        "b.py": "", "d.py": "x = 1", "e.py": "y = 2", "never.py": "", "unused.py": "",
        "model/__init__.py": "",
        "model/hashed.py": 'NEEDED_WHEN = "model.embed.bigram_buckets > 0"\nclass BigramHash: pass',  # declared beside it
    }
    for rel, src in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(textwrap.dedent(src))
    sel = bundler.select_modules(RunConfig(), tmp_path)
    assert set(sel.modules) == {"pgolf", "pgolf.standalone", "pgolf.a", "pgolf.b", "pgolf.d", "pgolf.e"}
    assert sel.left_out == {"pgolf.model.hashed": "needs model.embed.bigram_buckets > 0"}
    on = bundler.select_modules(apply_overrides(RunConfig(), ["model.embed.bigram_buckets=8"]), tmp_path)
    assert {"pgolf.model", "pgolf.model.hashed"} <= set(on.modules) and on.left_out == {}
    assert on.modules.index("pgolf.model") < on.modules.index("pgolf.model.hashed")


def test_bundler_is_standard_library_only():
    mine = {"pgolf.bundler", *(f"pgolf.bundler.{f.stem}" for f in (ROOT / "bundler").glob("[a-z]*.py"))}
    for m in sorted(mine):
        s = bundler.scan(m, ROOT)
        assert set(s.eager) <= {"pgolf", "pgolf.config", "pgolf.errors", *mine}, s.eager
        assert bundler.third_party_imports((m,)) == ()


# --------------------------------------------------------------------------- minify and shake


def test_strip_keeps_what_runs_and_drops_what_does_not():
    src = textwrap.dedent('''
        """module doc"""
        from __future__ import annotations
        import dataclasses, typing
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            import nonexistent_module
        @dataclasses.dataclass
        class C:
            """class doc"""
            x: int = 3
            """field doc"""
            y: tuple[int, ...] = (1, 2)
        class E(Exception):
            """only a docstring"""
        def f(a: nonexistent_module.T, *args: int, b: "str" = "s", **kw: float) -> nonexistent_module.U:
            """function doc"""
            s = """multi
        line""" + 'x'   # a string that is not a statement stays
            return (a, args, b, kw, s)
        ''')
    out = minify(src)
    ns: dict = {}
    exec(compile(out, "m", "exec"), ns)
    assert typing.get_type_hints(ns["C"]) == {"x": int, "y": tuple[int, ...]}  # class annotations kept
    assert ns["C"]().x == 3 and ns["C"].__doc__ != "class doc" and issubclass(ns["E"], Exception)
    assert ns["f"](1, 2, b="q", z=1.0) == (1, (2,), "q", {"z": 1.0}, "multi\nline" + "x")
    assert ns["f"].__annotations__ == {} and "nonexistent_module" not in out
    for gone in ("module doc", "class doc", "field doc", "function doc", "#", "    "):
        assert gone not in out
    assert out.startswith("from __future__ import annotations\n")


@pytest.mark.parametrize("preset", ["baseline", "record-0427"])
def test_every_bundled_module_minifies_to_the_same_program(preset):
    for m in _sel(preset, EVERYTHING_ON if preset == "baseline" else ()).modules:
        path = bundler.module_path(m, ROOT)
        src = path.read_text()
        mini = minify(src, str(path))
        assert ast.dump(ast.parse(mini)) == ast.dump(ast.parse(ast.unparse(strip(src)))), m
        assert len(mini) <= len(src)


def test_shake_drops_only_what_nothing_refers_to():
    mods = {
        "a": prepare(textwrap.dedent("""
            def used(): return helper()
            def helper(): return 1
            def dead(): return dead_helper() + dead()
            def dead_helper(): return 2
            def named_in_a_string(): return 3
            def __getattr__(name): return 4
            @decorator
            def registered(): return 5
            class Dead: pass
            @dataclass(frozen=True)
            class DeadRecord: x: int = 0
            @dataclasses.dataclass
            class DeadRecord2: y: int = 0
            class WithMeta(metaclass=type): pass
            TABLE = {"k": "named_in_a_string"}
            """)),
        "b": prepare("from a import used\ndef dead(): pass\n"),
    }
    removed = shake(mods, roots=[])
    assert {m: sorted(v) for m, v in removed.items()} == {"a": ["Dead", "DeadRecord", "DeadRecord2", "dead", "dead_helper"],
                                                          "b": ["dead"]}  # @dataclass registers nothing
    text = render(mods["a"].tree, "a", removed["a"])
    assert "def used" in text and "def helper" in text and "def dead" not in text and "class Dead" not in text
    assert "registered" in text and "WithMeta" in text and "__getattr__" in text


# --------------------------------------------------------------------------- the two forms


def _program_globals(path: Path) -> dict:
    return runpy.run_path(str(path), run_name="not_main")  # defines FILES, CONFIG, ...; runs nothing


def test_readable_form_holds_each_module_verbatim_under_its_banner(tmp_path):
    cfg = get_preset("record-0322")
    b = write_bundle(cfg, tmp_path / "train_gpt.py", compact=False)
    g = _program_globals(tmp_path / "train_gpt.py")
    rels = ["pgolf/" + bundler.module_path(m, ROOT).relative_to(ROOT).as_posix() for m in b.modules]
    assert list(g["FILES"]) == rels
    stubbed = 0
    for m, rel in zip(b.modules, rels, strict=True):  # verbatim, but for the switch-dead bodies (one raise each)
        stubs = dict(bundler.stubs_for(cfg, m))
        assert g["FILES"][rel] == stub_source((ROOT.parent / rel).read_text(), stubs)
        stubbed += len(stubs)
    assert stubbed and "is not in this bundle: needs model.parallel_start != 0" in g["FILES"]["pgolf/model/gpt.py"]
    text = b.text
    banners = [line[len("# ==== "):-len(" ====")] for line in text.splitlines() if line.startswith("# ==== ")]
    assert banners == rels
    assert text.count("\nFILES[") == len(rels) and "FILES[" + repr(rels[0]) + "] = r'''" in text  # raw literals
    assert g["CONFIG"] == bundler.bundle_config(cfg) and g["LEFT_OUT"] == b.left_out
    assert b.nbytes == len(text.encode()) == (tmp_path / "train_gpt.py").stat().st_size


def test_source_literal_round_trips_any_source():
    for src in ["x = 1\n", "s = '''a'''\n", "p = r'\\\\'\n", "tail \\", "é ≈ ×\n", 'q = """x"""\n']:
        lit = bundle_script._source_literal(src)
        assert ast.literal_eval(lit) == src


def test_compact_form_is_the_minified_program_self_extracting(tmp_path):
    cfg = get_preset("record-0427")
    b = write_bundle(cfg, tmp_path / "train_gpt.py", compact=True)
    coding, head, body = b.text.split("\n", 2)
    assert coding == "# coding: latin-1" and head == f"import {bundler.CODEC} as Z"
    assert body.startswith('exec(Z.decompress("') and body.endswith('".encode(\'latin-1\')))\n')
    blob = ast.literal_eval(body[len("exec(Z.decompress("):-len(".encode('latin-1')))\n")]).encode("latin-1")
    # only the five bytes a literal cannot hold are escaped: the file is ~2 % over the compressed program
    assert len(b.data) < 1.03 * len(blob) + 100
    import brotli

    program = brotli.decompress(blob).decode()
    assert program == bundler.render(cfg, compact=True).program
    g: dict = {"__name__": "not_main", "__file__": str(tmp_path / "train_gpt.py")}
    exec(compile(program, "p", "exec"), g)
    readable = build_bundle(cfg, compact=False)
    assert list(g["FILES"]) == list(_readable_files(readable))
    assert g["CONFIG"] == bundler.bundle_config(cfg)
    for rel, mini in g["FILES"].items():  # each the minified module, less only what nothing refers to
        m = rel[:-3].replace("/", ".").removesuffix(".__init__")
        src = stub_source((ROOT.parent / rel).read_text(), dict(bundler.stubs_for(cfg, m)))
        assert mini == render(strip(src), rel, b.pruned.get(m, ()))
    assert b.pruned and all(isinstance(n, str) for v in b.pruned.values() for n in v)
    assert b.nbytes < readable.nbytes / 4 and b.text.split("\n", 1)[1].startswith("import ")


def _readable_files(b):
    g: dict = {"__name__": "not_main", "__file__": "x"}
    exec(compile(b.text, "r", "exec"), g)
    return g["FILES"]


def test_bundles_are_deterministic_and_the_charge_is_the_shipped_size():
    for preset in ("cpu",):
        cfg = get_preset(preset)
        for form in bundler.FORMS:
            c = apply_overrides(cfg, [f"export.code_form={form}"])
            a, b = build_bundle(c, compact=form == "compact"), build_bundle(c, compact=form == "compact")
            assert a.data == b.data
            assert code_bytes(c) == bundler.shipped_bytes(c) == a.nbytes
    # data paths are the machine's, not the configuration's: they change nothing
    base = get_preset("baseline")
    moved = apply_overrides(base, ["data.path=/elsewhere", "data.tokenizer=/t.model"])
    assert build_bundle(moved, compact=True).data == build_bundle(base, compact=True).data
    # a preset's int 600 for a float field embeds as the 600.0 every loaded config.json holds
    assert build_bundle(get_preset("tiny"), compact=False).data == build_bundle(
        apply_overrides(get_preset("tiny"), []), compact=False).data


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_embedded_config_rebuilds_the_configuration(preset):
    cfg = get_preset(preset)
    emb = bundler.bundle_config(cfg)
    back = flatten(RunConfig.from_dict(emb))
    want = flatten(cfg)
    # every result-changing field comes back; the rest (seed, name, paths, logging) is the run's, not the code's
    assert {k: v for k, v in back.items() if k not in NOT_RESULT_CHANGING} == \
        {k: v for k, v in want.items() if k not in NOT_RESULT_CHANGING}
    assert not [k for k in _leaves(emb) if k in NOT_RESULT_CHANGING - {"name"}] and back["name"] == cfg.name
    seeded = bundler.bundle_config(apply_overrides(cfg, ["train.seed=7", "train.log_every=3", "train.threads=1"]))
    assert seeded == emb  # every seed of a configuration embeds the same text
    default = flatten(RunConfig())
    assert not [k for k, v in _leaves(emb).items() if v == default[k]]  # only what differs from the defaults


def _leaves(d, prefix=""):
    out = {}
    for k, v in d.items():
        out.update(_leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def test_the_size_cache_sees_edited_sources(tmp_path):
    root = tmp_path / "pgolf"
    shutil.copytree(ROOT, root, ignore=shutil.ignore_patterns("__pycache__"))
    cfg = get_preset("tiny")
    first = bundler.shipped_bytes(cfg, "readable", root)
    assert first == bundler.shipped_bytes(cfg, "readable", root)
    t0 = time.perf_counter()
    bundler.shipped_bytes(cfg, "readable", root)
    assert time.perf_counter() - t0 < 0.5  # cached: no rebuild
    with (root / "errors.py").open("a") as f:
        f.write("# ten more\n")
    assert bundler.shipped_bytes(cfg, "readable", root) == first + len("# ten more\n")
    with pytest.raises(ConfigError, match="code form"):
        bundler.shipped_bytes(cfg, "tiny", root)


# --------------------------------------------------------------------------- the challenge's environment


def test_every_challenge_variable_sets_its_field(tmp_path):
    types = field_types()
    assert set(CHALLENGE_ENV.values()) <= set(types) and len(set(CHALLENGE_ENV.values())) == len(CHALLENGE_ENV)
    base = get_preset("baseline")
    emb = bundler.bundle_config(base)
    env = {}
    for var, path in CHALLENGE_ENV.items():  # a value different from the baseline's for every field
        t, v = types[path], flatten(base)[path]
        env[var] = {bool: "0", int: str(v + 2 if isinstance(v, int) else 3), float: "0.125", str: str(tmp_path / var)}[t]
    env["NUM_HEADS"], env["NUM_KV_HEADS"], env["MODEL_DIM"] = "4", "2", "256"  # shapes that fit together
    env["TRAIN_SEQ_LEN"], env["TRAIN_BATCH_TOKENS"] = "512", "8192"
    env["MUON_MOMENTUM"] = "0.5"
    cfg = configure(emb, env)
    got = flatten(cfg)
    parse = {bool: lambda s: s == "1", int: int, float: float, str: str}
    for var, path in CHALLENGE_ENV.items():
        assert got[path] == parse[types[path]](env[var]) != flatten(base)[path], (var, path)


def test_challenge_defaults_for_data_and_bad_values(tmp_path):
    emb = bundler.bundle_config(get_preset("record-0427"))
    cfg = configure(emb, {})
    assert cfg.data.path == "./data/datasets/fineweb10B_sp8192"
    assert cfg.data.tokenizer == "./data/tokenizers/fineweb_8192_bpe.model"
    (tmp_path / "tokenizer.model").write_bytes(b"")  # pgolf data build's layout: the tokenizer beside the shards
    cfg = configure(emb, {"DATA_PATH": str(tmp_path), "PGOLF_SET": "train.seed=7 model.attn.gate_scale=0.25"})
    assert (cfg.data.path, cfg.data.tokenizer, cfg.train.seed, cfg.model.attn.gate_scale) == (str(tmp_path), "", 7, 0.25)
    with pytest.raises(ConfigError, match="variable ITERATIONS='many': train.iterations: cannot parse"):
        configure(emb, {"ITERATIONS": "many", "SEED": "3"})
    # applied together: each alone would break the head layout, the three together do not
    base = bundler.bundle_config(get_preset("baseline"))
    cfg = configure(base, {"NUM_HEADS": "6", "NUM_KV_HEADS": "3", "MODEL_DIM": "384"})
    assert (cfg.model.num_heads, cfg.model.num_kv_heads, cfg.model.head_dim) == (6, 3, 64)
    with pytest.raises(ConfigError, match="variables NUM_KV_HEADS='5', NUM_HEADS='6': .*divisible"):
        configure(base, {"NUM_HEADS": "6", "NUM_KV_HEADS": "5", "MODEL_DIM": "384"})
    with pytest.raises(ConfigError, match="unknown config key"):
        configure(emb, {"PGOLF_SET": "train.nope=1"})


# --------------------------------------------------------------------------- pgolf bundle


def _err(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code != 0 and err.splitlines()[-1].startswith("pgolf: error: ") and "Traceback" not in err, err
    return err.splitlines()[-1]


def test_cli_writes_the_bundle_atomically_and_reports_its_bytes(tmp_path, capsys):
    out = tmp_path / "train_gpt.py"
    assert main(["bundle", "tiny", "--set", "model.vocab_size=384", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    cfg = apply_overrides(get_preset("tiny"), ["model.vocab_size=384"])
    assert out.read_bytes() == build_bundle(cfg, compact=True).data
    assert f"{out.stat().st_size:,} bytes (compact)" in said and "left out" in said
    assert out.stat().st_size == code_bytes(cfg)
    assert main(["bundle", "tiny", "--readable", "--out", str(out)]) == 0
    assert "charges the compact form" in capsys.readouterr().out
    assert out.read_bytes() == build_bundle(get_preset("tiny"), compact=False).data
    assert [p.name for p in tmp_path.iterdir()] == ["train_gpt.py"]  # no temporary file left


def test_cli_bundles_a_run_directory(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    cfg = apply_overrides(get_preset("cpu"), ["train.seed=5"])
    (run / "config.json").write_text(cfg.to_json())
    (run / "metrics.json").write_text('{"code_bytes": 1}')
    src = resolve_source(str(run))
    assert src.cfg == cfg and src.run_dir == run and src.charged_code_bytes == 1
    assert main(["bundle", str(run), "--out", str(tmp_path / "t.py")]) == 0
    assert "was charged 1 code bytes" in capsys.readouterr().out
    assert (tmp_path / "t.py").read_bytes() == build_bundle(cfg, compact=True).data


def test_cli_user_errors_are_one_line(tmp_path, capsys):
    assert "not a run directory and not a preset" in _err(capsys, ["bundle", "nope", "--out", str(tmp_path / "t.py")])
    assert "output directory does not exist" in _err(capsys, ["bundle", "tiny", "--out", str(tmp_path / "no" / "t.py")])
    assert "is a directory" in _err(capsys, ["bundle", "tiny", "--out", str(tmp_path)])
    (tmp_path / "empty").mkdir()
    assert "no config.json" in _err(capsys, ["bundle", str(tmp_path / "empty"), "--out", str(tmp_path / "t.py")])
    assert "exclude each other" in _err(capsys, ["bundle", "tiny", "--compact", "--readable", "--out", str(tmp_path / "t.py")])
    assert "unknown config key" in _err(capsys, ["bundle", "tiny", "--set", "train.nope=1", "--out", str(tmp_path / "t.py")])
    assert not (tmp_path / "t.py").exists()
