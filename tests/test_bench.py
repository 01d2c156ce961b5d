"""bench/compressors.py and bench/matmul_flops.py: exact byte accounting, round trips, FLOP counts."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from pgolf.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", REPO / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


comp = _load("compressors")
mm = _load("matmul_flops")

TEXTS = ["Anarchism\n\nAnarchism is a political philosophy.", "Ünïcödé — 日本語 ✓", "", "x" * 3000]


def _jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    return path


# --- compressors ----------------------------------------------------------------------------------


def test_stream_and_denominator_are_exact():
    data, raw = comp.build_stream(TEXTS)
    utf8 = [t.encode("utf-8") for t in TEXTS]
    assert raw == sum(len(b) for b in utf8)  # separators not counted
    assert data == utf8[0] + b"\n" + utf8[1] + b"\n" + utf8[2] + b"\n" + utf8[3]
    assert len(data) == raw + len(TEXTS) - 1
    assert comp.bits_per_byte(3, 8) == 3.0


def test_load_texts_round_trip_and_errors(tmp_path):
    assert comp.load_texts(_jsonl(tmp_path / "a.jsonl", TEXTS)) == TEXTS
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"txt": "no"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: no string field 'text'"):
        comp.load_texts(bad)
    bad.write_text('{"text": "ok"}\n{oops\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: not valid JSON"):
        comp.load_texts(bad)
    with pytest.raises(DataError, match="no such file"):
        comp.load_texts(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match="no documents"):
        comp.load_texts(tmp_path / "empty.jsonl")


def test_every_codec_round_trips_and_reports_its_size():
    data, raw = comp.build_stream(TEXTS * 5)
    for name, cmd, c, d in comp.standard_codecs():
        r = comp.run_codec(data, raw, name, cmd, c, d)
        assert r.compressed_bytes == len(c(data))  # deterministic codecs
        assert r.bpb == pytest.approx(8 * r.compressed_bytes / raw)
        assert r.bpb_total == r.bpb and r.side_bytes == 0


def test_run_codec_rejects_a_lossy_codec():
    with pytest.raises(RuntimeError, match="round trip"):
        comp.run_codec(b"abc", 3, "lossy", "", lambda d: d, lambda c: c[:-1])


def test_zstd_dictionary_is_charged_and_round_trips():
    rng = torch.Generator().manual_seed(0)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa"]
    docs = [" ".join(words[i] for i in torch.randint(0, 8, (400,), generator=rng).tolist()) for _ in range(60)]
    samples = comp.dictionary_samples(docs, 512)
    assert all(len(s) <= 512 for s in samples) and b"".join(samples) == "".join(docs).encode()
    dictionary = comp.train_zstd_dictionary(samples, 4096)
    assert 0 < len(dictionary) <= 4096
    c, d = comp.zstd_dict_codec(dictionary)
    data, raw = comp.build_stream(docs[:3])
    r = comp.run_codec(data, raw, "zd", "", c, d, side_bytes=len(dictionary))
    assert r.bpb_total == pytest.approx(8 * (r.compressed_bytes + len(dictionary)) / raw)


@pytest.mark.skipif(comp.find_7z() is None, reason="7z not installed")
def test_ppmd_sweep_picks_the_smallest_and_round_trips():
    data, raw = comp.build_stream(TEXTS * 20)
    runs, results = comp.ppmd_sweep(comp.find_7z(), data, raw, [2, 6], [16])
    assert [r.order for r in runs] == [2, 6]
    best = min(runs, key=lambda r: r.archive_bytes)
    archive, bare = results
    assert archive.compressed_bytes == best.archive_bytes
    assert bare.compressed_bytes == best.packed_bytes < best.archive_bytes
    assert best.method.startswith(f"PPMD:o{best.order}:mem24")  # 16 MiB kept, not capped


def test_run_all_on_a_small_corpus(tmp_path):
    val = _jsonl(tmp_path / "val.jsonl", TEXTS)
    _jsonl(tmp_path / "train_0.jsonl", [t * 3 for t in TEXTS] * 20)
    out = comp.run_all(val, str(tmp_path / "train_*.jsonl"), ppmd_orders=[4], ppmd_mems_mb=[16],
                       dict_sizes=[2048], log=lambda s: None)
    assert out["raw_bytes"] == sum(len(t.encode()) for t in TEXTS)
    names = [r["name"] for r in out["results"]]
    assert "zlib -9" in names and any("dict" in n for n in names)
    assert "| compressor |" in comp.format_table(out["results"])


def test_enwiki_val_denominator():
    val = SHARED / "data" / "enwiki" / "val.jsonl"
    if not val.is_file():
        pytest.skip("shared enwiki data absent")
    texts = comp.load_texts(val)
    data, raw = comp.build_stream(texts)
    assert len(texts) == 147
    assert raw == sum(len(t.encode("utf-8")) for t in texts)
    assert len(data) == raw + 146


# --- matmul FLOPs ---------------------------------------------------------------------------------


def test_flop_count_and_result_consistency():
    assert mm.matmul_flops(3, 5, 7) == 2 * 3 * 5 * 7
    r = mm.time_matmul(64, 32, 48, torch.float32, "cpu", warmup=1, reps=3, min_rep_seconds=0.001)
    assert (r.m, r.k, r.n, r.dtype, r.device) == (64, 32, 48, "fp32", "cpu")
    assert r.flops_per_second == pytest.approx(2 * 64 * 32 * 48 / r.seconds)
    assert r.tflops == pytest.approx(r.flops_per_second / 1e12)
    assert r.inner >= 1 and math.isfinite(r.seconds) and r.seconds > 0


def test_benchmarked_op_is_linear_layout():
    """The timed op is out = a @ w.T (nn.Linear); check it against float64 for both dtypes."""
    g = torch.Generator().manual_seed(0)
    a, w = torch.randn(16, 8, generator=g), torch.randn(12, 8, generator=g)
    ref = a.double() @ w.double().T
    for dt, tol in ((torch.float32, 1e-5), (torch.bfloat16, 5e-2)):
        out = torch.empty(16, 12, dtype=dt)
        torch.mm(a.to(dt), w.to(dt).t(), out=out)
        torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol * 4)


def test_measure_peak_is_the_max_and_cached():
    shapes = [(32, 16, 16), (64, 32, 32)]
    peak = mm.measure_peak_flops(torch.float32, "cpu", shapes)
    assert peak > 0
    key = ("fp32", "cpu", tuple(shapes))
    assert mm._PEAK_CACHE[key] == peak
    mm._PEAK_CACHE[key] = 123.0  # a second call must not re-measure
    assert mm.measure_peak_flops(torch.float32, "cpu", shapes) == 123.0
    del mm._PEAK_CACHE[key]
    results = [mm.MatmulResult(1, 1, 1, "fp32", "cpu", 1.0, f, 1, 1) for f in (1.0, 5.0, 3.0)]
    assert mm.peaks(results)["cpu/fp32"]["flops_per_second"] == 5.0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_request_without_cuda_is_a_config_error():
    with pytest.raises(ConfigError, match="CUDA is not available"):
        mm.measure_peak_flops(torch.float32, "cuda", [(8, 8, 8)])


def test_cli_json(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(mm, "TRANSFORMER_SHAPES", ((64, 32, 32), (128, 32, 64)))
    out = tmp_path / "mm.json"
    assert mm.main(["--dtypes", "fp32", "--devices", "cpu", "--quick", "--reps", "1", "--warmup", "1",
                    "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["machine"]["torch_num_threads"] == torch.get_num_threads()
    assert len(doc["results"]) == len(mm.TRANSFORMER_SHAPES)
    assert doc["peak"]["cpu/fp32"]["flops_per_second"] == max(r["flops_per_second"] for r in doc["results"])
    assert mm.main(["--dtypes", "int3"]) == 2
    assert "unknown dtype" in capsys.readouterr().err


# --- cpu_presets ----------------------------------------------------------------------------------


def test_cpu_presets_table_scales_the_eval_clock_and_falls_back_like_pgolf_run():
    """The 10×-slower mimic scales the evaluation clock like training's; the table's Δ are against the
    first preset, per column; a refused ``ttt+mix`` shows what ``pgolf run`` scores instead (the mixer)."""
    cp = _load("cpu_presets")
    assert (cp.eval_budget(60), cp.eval_budget(600), cp.eval_budget(1200)) == (60, 600, 600)

    def row(preset, plain, mix, ttt_mix, configured=None):
        return {"preset": preset, "data": "enwiki", "seconds": 60.0, "seed": 1, "shape": "2L×128 b8k", "params": 10,
                "steps": 5, "method": "ttt+mix" if configured else "plain", "val_bpb_raw": configured or plain,
                "plain_val_bpb_raw": plain, "rescore:mix": {"val_bpb_raw": mix},
                "rescore:ttt+mix": {"refused": "pgolf: error: eval budget"} if ttt_mix is None else {"val_bpb_raw": ttt_mix}}

    rows = [row("a", 2.5, 2.0, 1.9, configured=1.9), row("b", 2.75, 2.25, None)]
    text = cp.table(rows, ["a", "b"], [60.0], ["enwiki"], ["mix", "ttt+mix"], "val_bpb_raw")
    lines = text.splitlines()
    assert lines[2].endswith("| ttt+mix | 1.9000 | +0.0000 | 2.5000 | +0.0000 | 2.0000 | +0.0000 | 1.9000 | +0.0000 |")
    assert lines[3].endswith("| plain | 2.7500 | +0.8500 | 2.7500 | +0.2500 | 2.2500 | +0.2500 | 2.2500† | +0.3500 |")
    assert "† refused by the evaluation clock" in text


def test_export_compare_runs_every_row_on_a_tiny_run(tiny_data, tmp_path, capsys):
    """A smoke run of bench/export_compare.py (it crashed after its third row when the search fields became
    tuples): every row is scored, and each budget row fits the model bytes it was given."""
    from pgolf.cli import main

    run = tmp_path / "run"
    assert main(["run", "tiny", "--set", "model.vocab_size=384", "--set", "train.iterations=2", "--set",
                 f"data.path={tiny_data}", "--out", str(run)]) == 0
    ec = _load("export_compare")
    out = tmp_path / "rows.json"
    assert ec.main([str(run), "--json", str(out), "--set", "export.search_bits=5,6", "--set", "export.search_max_options=2",
                    "--set", "export.calib_seqs=2", "--set", "export.verify_seqs=2", "--set", "export.verify_plans=1"]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 12 and rows[0]["row"] == "(a) int8_zlib" and rows[5]["row"] == "(r3) record_0427"
    for r in rows:
        assert r["artifact_bytes"] == r["model_bytes"] + json.loads(out.read_text())["code_bytes"]
        if "budget_model_bytes" in r:
            assert r["model_bytes"] <= r["budget_model_bytes"]


def test_preflight_fit_reproduces_the_constants_preflight_ships():
    """bench/preflight_fit.py refits the 8xH100 entry from the records' logs: the table in pgolf.preflight must
    be what it computes today (a changed FLOP count or log figure shows up here, not in a stale constant)."""
    from pgolf.preflight import HARDWARE, TTT_RATE_8XH100

    pf = _load("preflight_fit")
    overhead, rate = pf.fit(list(pf.STEPS))
    hw = HARDWARE["8xH100"]
    assert overhead == pytest.approx(hw.overhead_ms, abs=0.01) and rate == pytest.approx(hw.flops, rel=1e-3)
    assert pf.ttt_rate(list(pf.TTT)) == pytest.approx(TTT_RATE_8XH100, rel=1e-3)


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "bench").glob("*.py")))
def test_every_bench_script_imports_and_parses_its_arguments(name, capsys, monkeypatch):
    """Each bench script still imports against today's pgolf (renamed functions, moved modules) and its CLI
    parses: ``--help`` exits 0 and prints the usage line. (A script without arguments is run by its own test.)"""
    import inspect

    mod = _load(name)
    main = getattr(mod, "main", None)
    if main is None or "argparse" not in (REPO / "bench" / f"{name}.py").read_text():
        pytest.skip(f"bench/{name}.py takes no command-line arguments")
    if inspect.signature(main).parameters:
        call = lambda: main(["--help"])  # noqa: E731
    else:  # its argparse reads sys.argv
        monkeypatch.setattr("sys.argv", [name, "--help"])
        call = main
    with pytest.raises(SystemExit) as e:
        call()
    assert e.value.code in (0, None), name
    assert "usage" in capsys.readouterr().out.lower()
