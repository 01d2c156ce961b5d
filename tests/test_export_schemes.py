"""Export schemes (pgolf.export.driver): each round-trips through write/read and loads into the GPT;
each stores exactly the grids its record defines (checked against the quantizers called directly);
Hessians come from the trainer's training-token file or self-generation and the artifact says which;
the training loop's calibration reserve; `pgolf export --budget` end to end."""

import json

import pytest
import torch

from pgolf.artifact.budget import code_bytes
from pgolf.artifact.format import read_artifact
from pgolf.cli import main
from pgolf.config import ExportConfig, ModelConfig, apply_overrides, load_config
from pgolf.errors import DataError
from pgolf.export.driver import (
    EXPORT_SCHEMES,
    calibration_hessians,
    export_model,
    generated_loss_fn,
    load_model_state,
    write_export,
)
from pgolf.model.gpt import GPT, model_roles
from pgolf.presets import get_preset
from pgolf.quant import grid, intgrid
from pgolf.quant.calib import HESSIANS_FILE, HessianCollector, load_hessians, save_hessians
from pgolf.quant.gptq import quantize_gptq
from pgolf.quant.intgrid import QuantSpec

CFG = ModelConfig(vocab_size=64, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1, mlp_mult=2)
ROLES = model_roles(CFG)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_sd_h():
    torch.manual_seed(0)
    model = GPT(CFG)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    with HessianCollector(model) as hc:
        hc.run(torch.randint(0, CFG.vocab_size, (8, 32), generator=g))
        h, _ = hc.hessians()
    return model, {k: v.detach().clone() for k, v in model.state_dict().items()}, h


def _fast_budget_cfg(budget: int, **kw) -> ExportConfig:
    return ExportConfig(scheme="budget", budget_bytes=budget, search_bits=(4, 6, 8), search_k=(8.0, 12.0),
                        search_max_options=3, search_lqer_rank=2, verify_plans=0, search_weights="hessian", **kw)


@pytest.mark.parametrize("scheme", list(EXPORT_SCHEMES))
def test_every_scheme_round_trips_and_loads_into_the_gpt(scheme, model_sd_h, tmp_path):
    model, sd, h = model_sd_h
    cfg = ExportConfig(scheme=scheme) if scheme != "budget" else _fast_budget_cfg(10**6)
    res = export_model(sd, cfg, roles=ROLES, meta={"config": {"x": 1}}, hessians=h, hessian_source="generated",
                       code_bytes_=0)
    path = tmp_path / "model.pgolf"
    assert write_export(path, res) == res.model_bytes == path.stat().st_size
    state, header = load_model_state(path)
    tensors, _ = read_artifact(path)
    assert header["meta"]["export_scheme"] == scheme and header["meta"]["config"] == {"x": 1}
    assert header["meta"]["hessian_source"] == ("generated" if EXPORT_SCHEMES[scheme].needs_hessians else "none")
    net = GPT(CFG)
    net.load_state_dict(state, strict=True)
    for name, t in sd.items():
        assert state[name].shape == t.shape and state[name].dtype == t.dtype
        assert torch.equal(state[name], grid.dequantize_tensor(tensors[name]))
    x = torch.randint(0, CFG.vocab_size, (2, 16))
    with torch.no_grad():
        base, got = model(x, x, reduction="mean"), net(x, x, reduction="mean")
    assert abs(float(got) - float(base)) < 0.05  # a quantized copy of the same model
    assert sum(r.compressed_bytes for r in res.rows) == res.payload_compressed_bytes
    assert [r.name for r in res.rows] == list(sd)


def test_int8_zlib_is_the_baseline_export(model_sd_h):
    _, sd, _ = model_sd_h
    res = export_model(sd, ExportConfig(scheme="int8_zlib", keep_float_max_numel=512), roles=ROLES)
    expected = grid.quantize_state_dict(sd, lambda n, t: grid.int8_policy(n, t, ROLES[n], keep_float_max_numel=512))
    tensors = read_artifact_bytes(res.blob)
    assert res.header["codec"] == "zlib-9" and res.hessian_source == "none"
    for name, qt in expected.items():
        assert tensors[name].scheme == qt.scheme
        for role, p in qt.parts.items():
            assert torch.equal(tensors[name].parts[role], p), (name, role)


def read_artifact_bytes(blob):
    from pgolf.artifact.format import parse_artifact

    return parse_artifact(blob)[0]


def test_int6_gptqlite_zstd_grids(model_sd_h):
    _, sd, _ = model_sd_h
    res = export_model(sd, ExportConfig(scheme="int6_gptqlite_zstd"), roles=ROLES)
    t = read_artifact_bytes(res.blob)
    assert res.header["codec"] == "zstd-22"
    spec = QuantSpec(bits=6, clip="gptq_lite", search="matrix")
    for name, w in sd.items():
        g = ROLES[name].value
        if g.startswith(("attn_", "mlp_")):
            q, s = intgrid.quantize_rtn(w, spec)
            assert t[name].scheme == "int6_row" and torch.equal(t[name].parts["q"], q) and torch.equal(t[name].parts["scale"], s)
            assert int(t[name].parts["q"].abs().max()) <= 31
        elif g == "embed":
            assert t[name].scheme == "int8_row"
        else:
            assert t[name].scheme == grid.int8_policy(name, w, ROLES[name])


def test_gptq6_emb7_brotli_grids(model_sd_h):
    _, sd, h = model_sd_h
    res = export_model(sd, ExportConfig(scheme="gptq6_emb7_brotli"), roles=ROLES, hessians=h, hessian_source="train")
    t = read_artifact_bytes(res.blob)
    assert res.header["codec"] == "shuffle2+brotli-11" and res.header["meta"]["hessian_source"] == "train"
    for name, w in sd.items():
        g = ROLES[name].value
        if g.startswith(("attn_", "mlp_", "embed")):
            bits, k = (7, 15.0) if g == "embed" else (6, 12.0 if g.startswith("mlp") else 13.0)
            q, s, _ = quantize_gptq(w, h[name], QuantSpec(bits=bits, clip="sdclip", k=k, gptq=True))
            assert t[name].scheme == f"int{bits}_row", name
            assert torch.equal(t[name].parts["q"], q) and torch.equal(t[name].parts["scale"], s), name
        else:
            assert t[name].scheme == "fp16", name
    # without Hessians the same grids are rounded plainly, and the artifact says so
    res2 = export_model(sd, ExportConfig(scheme="gptq6_emb7_brotli"), roles=ROLES)
    t2 = read_artifact_bytes(res2.blob)
    q, _ = intgrid.quantize_rtn(sd["blocks.0.mlp.fc.weight"], QuantSpec(bits=6, clip="sdclip", k=12.0))
    assert torch.equal(t2["blocks.0.mlp.fc.weight"].parts["q"], q) and res2.hessian_source == "none"


def test_budget_scheme_fits_budget_minus_code(model_sd_h):
    _, sd, h = model_sd_h
    small = export_model(sd, _fast_budget_cfg(10**6), roles=ROLES, hessians=h, code_bytes_=0).model_bytes
    res = export_model(sd, _fast_budget_cfg(small + 5_000), roles=ROLES, hessians=h, hessian_source="generated",
                       code_bytes_=5_000)
    assert res.model_bytes <= small and res.search is not None and res.codec == "streams"
    assert res.header["format_version"] == 2 and res.header["meta"]["export_scheme"] == "budget"
    assert sum(r.compressed_bytes for r in res.rows) == res.payload_compressed_bytes


def test_hessians_file_round_trip_and_sources(model_sd_h, tmp_path):
    model, _, h = model_sd_h
    save_hessians(tmp_path / HESSIANS_FILE, h, {"source": "train", "tokens": 123})
    back, info = load_hessians(tmp_path / HESSIANS_FILE)
    assert info == {"source": "train", "tokens": 123} and set(back) == set(h)
    assert all(torch.equal(back[k], h[k]) for k in h)
    cfg = ExportConfig(calib_seqs=2, calib_seq_len=8)
    got, source, _ = calibration_hessians(model, cfg, seq_len=8, run_dir=tmp_path)
    assert source == "train" and set(got) == set(h)
    got, source, info = calibration_hessians(model, ExportConfig(calib_source="generated", calib_seqs=2), seq_len=8,
                                             run_dir=tmp_path)
    assert source == "generated" and info["tokens"] == 16 and set(got) == set(h)
    with pytest.raises(DataError, match="no training-token Hessians"):
        calibration_hessians(model, ExportConfig(calib_source="train"), seq_len=8, run_dir=tmp_path / "nope")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(DataError, match="bad.safetensors"):
        load_hessians(tmp_path / "bad.safetensors")


def test_generated_loss_fn_is_the_models_own_loss(model_sd_h):
    from pgolf.quant.calib import generate_tokens

    model, sd, _ = model_sd_h
    fn = generated_loss_fn(model, ExportConfig(verify_seqs=3, calib_seed=5), seq_len=8)
    toks = generate_tokens(model, n_seqs=3, seq_len=9, temperature=1.0, seed=6)  # calib_seed + 1
    with torch.no_grad():
        ref = float(model(toks[:, :-1], toks[:, 1:], reduction="mean"))
    assert fn(sd) == pytest.approx(ref, rel=1e-6) and fn(sd) == fn(sd)
    noisy = {k: (v + 0.5 * torch.randn_like(v) if v.ndim == 2 else v) for k, v in sd.items()}
    assert fn(noisy) > fn(sd)  # a very different model explains the model's own samples worse


def test_training_reserve_collects_hessians_on_training_tokens(tiny_data, tmp_path):
    from pgolf.data.prepare import prepare_data
    from pgolf.runner import train_hooks  # the calibration is the runner's hook after the clock
    from pgolf.train.loop import train

    cfg = apply_overrides(get_preset("tiny"), [f"data.path={tiny_data}", "model.vocab_size=384", "train.iterations=3",
                                               "train.calib_reserve_seconds=0.3"])
    res = train(cfg, tmp_path, data=prepare_data(cfg), progress=False, hooks=train_hooks(cfg))
    h, info = load_hessians(tmp_path / HESSIANS_FILE)
    assert info["source"] == "train" and info["batches"] >= 1 and info["tokens"] == info["batches"] * 2048
    names = {n for n, p in res.model.named_parameters() if n.endswith(".weight")}
    assert set(h) == names  # every linear + the tied embedding (final-norm output)
    for v in h.values():
        assert torch.linalg.eigvalsh(v.double()).min() > -1e-5  # a second moment: PSD
    assert info["seconds"] <= 0.3 + 0.5 and res.train_seconds >= info["seconds"]  # counted as training time
    with pytest.raises(Exception, match="calib_reserve_seconds must be smaller"):
        apply_overrides(cfg, ["train.max_wallclock_seconds=10", "train.calib_reserve_seconds=10"])


def test_cli_export_budget_end_to_end(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    sets = ["--set", f"data.path={tiny_data}", "--set", "model.vocab_size=384", "--set", "export.calib_seqs=4",
            "--set", "export.verify_seqs=2", "--set", "export.search_bits=4,6,8", "--set", "export.search_k=8,12",
            "--set", "export.search_max_options=3"]
    assert main(["run", "tiny", *sets, "--out", str(run)]) == 0
    capsys.readouterr()
    int8_model = (run / "model.pgolf").stat().st_size

    def charged(b: int) -> int:  # the code bytes `pgolf export --budget b` charges: its config's bundle
        return code_bytes(apply_overrides(load_config(str(run / "config.json")),
                                          ["export.scheme=budget", f"export.budget_bytes={b}"]))

    budget = charged(16_000_000) + int8_model * 3 // 4
    code = charged(budget)
    assert main(["export", str(run), "--budget", str(budget)]) == 0
    out = capsys.readouterr().out
    assert "group" in out and "GPTQ" in out and "headroom" in out and "budget" in out
    size = (run / "model.pgolf").stat().st_size
    assert size + code <= budget
    _, header = load_model_state(run / "model.pgolf")
    assert header["scheme"] == "budget" and header["meta"]["hessian_source"] == "generated"
    assert main(["eval", str(run)]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["artifact_bytes"] <= budget and ev["val_bpb"] > 0
    # a budget nothing fits: one line, non-zero exit, the last artifact left as it was
    before = (run / "model.pgolf").read_bytes()
    assert main(["export", str(run), "--budget", str(code + 500)]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("pgolf: error: ") and "unreachable" in err[-1]
    assert (run / "model.pgolf").read_bytes() == before
    # a fixed scheme over the cap: the per-tensor table, then one line
    assert main(["export", str(run), "--scheme", "gptq6_emb7_brotli", "--budget", str(code + 1000)]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert any("compressed" in line for line in err[:-1]) and "over the" in err[-1]
    assert main(["export", str(run), "--scheme", "nope"]) == 2
    assert "unknown export.scheme" in capsys.readouterr().err
