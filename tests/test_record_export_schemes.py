"""The records' own exports (pgolf.export.driver ``record_*``) on small models with each record preset's
switches: round trip with the exact file size, and each record's defining choices."""

import pytest
import torch

from pgolf.config import ExportConfig, apply_overrides
from pgolf.export.driver import export_model, load_model_state, write_export
from pgolf.model.gpt import GPT, model_roles
from pgolf.presets import get_preset
from pgolf.quant import grid
from pgolf.quant.calib import HessianCollector
from pgolf.quant.gptq import quantize_gptq
from pgolf.quant.intgrid import QuantSpec
from pgolf.quant.lqer_factors import lqer_correction
from pgolf.roles import Role

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = ["model.model_dim=64", "model.num_heads=2", "model.num_kv_heads=1", "model.vocab_size=128"]


def _small(preset: str, extra=()):
    cfg = apply_overrides(get_preset(preset), [*SMALL, *extra])
    torch.manual_seed(0)
    model = GPT(cfg.model)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.05 if p.ndim == 2 else 0.5))
    with HessianCollector(model) as hc:
        hc.run(torch.randint(0, cfg.model.vocab_size, (4, 32), generator=g))
        h, _ = hc.hessians()
    return cfg, model, {k: v.detach().clone() for k, v in model.state_dict().items()}, h


def _round_trip(res, sd, tmp_path):
    path = tmp_path / "m.pgolf"
    assert write_export(path, res) == res.model_bytes == path.stat().st_size == len(res.blob)
    state, header = load_model_state(path)
    assert set(state) == set(sd) and all(state[n].shape == t.shape and state[n].dtype == t.dtype for n, t in sd.items())
    return state, header


def test_record_0322(tmp_path):
    cfg, model, sd, _ = _small("record-0322")
    roles = model_roles(cfg.model)
    proj = [n for n in sd if roles[n] is Role.PROJ]
    assert proj, "record-0322 has a bigram projection"
    keep = max(sd[n].numel() for n in proj)  # the record's 65,536 = its bigram.proj's numel, scaled down
    ecfg = ExportConfig(scheme="record_0322", keep_float_max_numel=keep)
    res = export_model(sd, ecfg, roles=roles)
    state, header = _round_trip(res, sd, tmp_path)
    assert header["codec"] == "zstd-22"
    from pgolf.artifact.format import parse_artifact

    t = parse_artifact(res.blob)[0]
    quantized = 0
    for n, w in sd.items():
        r = roles[n]
        if not w.is_floating_point() or w.numel() <= keep:
            assert t[n].scheme in ("fp16", "raw"), n  # the fp16 bigram.proj and the control tensors
            if w.is_floating_point():
                assert torch.equal(state[n], w.half().to(w.dtype)), n
        elif r.family in ("attn", "mlp") or r is Role.PROJ:
            quantized += 1
            a = w.float().abs()
            # the record's own arithmetic (L885-899): 5 quantiles, floor 1/31, whole-matrix MSE, first of equals
            best = None
            for pct in (0.999, 0.9995, 0.9999, 0.99999, 1.0):
                c = torch.quantile(a, pct, dim=1) if pct < 1 else a.amax(dim=1)
                s = (c / 31).clamp_min(1 / 31).half()
                q = torch.clamp(torch.round(w.float() / s.float()[:, None]), -31, 31).to(torch.int8)
                e = (w.float() - q.float() * s.float()[:, None]).pow(2).mean().item()
                if best is None or e < best[0]:
                    best = (e, q, s)
            assert t[n].scheme == "int6_row" and torch.equal(t[n].parts["q"], best[1]), n
            assert torch.equal(t[n].parts["scale"], best[2]), n
            assert torch.equal(state[n], (best[1].float() * best[2].float()[:, None]).to(w.dtype)), n
        else:
            assert t[n].scheme == grid.int8_policy(n, w, r, keep), n
    assert quantized > 0 and all(t[n].scheme == "fp16" for n in proj)


def test_record_0414(tmp_path):
    cfg, model, sd, h = _small("record-0414")
    roles = model_roles(cfg.model)
    keep = 2048
    res = export_model(sd, ExportConfig(scheme="record_0414", keep_float_max_numel=keep), roles=roles, hessians=h,
                       hessian_source="train")
    state, header = _round_trip(res, sd, tmp_path)
    from pgolf.artifact.format import parse_artifact

    t = parse_artifact(res.blob)[0]
    assert header["codec"] == "shuffle2+brotli-11"
    n_q = 0
    for n, w in sd.items():
        r = roles[n]
        if not w.is_floating_point() or w.numel() <= keep:
            assert t[n].scheme in ("fp16", "raw"), n
            continue
        bits, k = (7, 15.0) if r is Role.EMBED else (6, {"mlp": 12.0, "attn": 13.0}.get(r.family, 12.85))
        q, s, _ = quantize_gptq(w, h[n], QuantSpec(bits=bits, clip="sdclip", k=k, gptq=True))
        assert t[n].scheme == f"int{bits}_row" and torch.equal(t[n].parts["q"], q), n
        assert torch.equal(state[n], (q.float() * s.float()[:, None]).to(w.dtype)), n
        n_q += 1
    assert n_q > 0


def test_record_0427(tmp_path):
    from pgolf.artifact.format import parse_artifact

    cfg, model, sd, h = _small("record-0427", ["model.num_heads=4", "model.num_kv_heads=2"])  # gate 4×12 ≥ 32
    roles = model_roles(cfg.model)
    keep = 2048
    res = export_model(sd, ExportConfig(scheme="record_0427", keep_float_max_numel=keep), roles=roles, hessians=h,
                       hessian_source="train")
    state, header = _round_trip(res, sd, tmp_path)
    assert header["format_version"] == 2 and res.codec == "streams"
    t = parse_artifact(res.blob)[0]
    gates = [n for n in sd if roles[n] is Role.GATE and sd[n].ndim == 2 and 32 <= sd[n].numel() <= 8192]
    assert gates
    for n in gates:  # int8 rows, s = fp16(max|w|/127)
        w = sd[n].float()
        s = (w.abs().amax(dim=1) / 127).half()
        assert t[n].scheme == "int8_row" and torch.equal(t[n].parts["scale"], s), n
        assert torch.equal(t[n].parts["q"], torch.round(w / s.float()[:, None]).clamp(-127, 127).to(torch.int8)), n
    gptq = {n for n, w in sd.items() if w.is_floating_point() and w.numel() > keep and n not in gates}
    errs = {}
    for n in gptq:
        r = roles[n]
        bits, k = (7, 14.0) if r is Role.EMBED else (6, {"mlp": 11.5, "attn": 13.0}.get(r.family, 12.85))
        q, s, _ = quantize_gptq(w := sd[n], h[n], QuantSpec(bits=bits, clip="sdclip", k=k, gptq=True))
        assert torch.equal(t[n].parts["q"], q) and torch.equal(t[n].parts["scale"], s), n
        errs[n] = float((w.float() - q.float() * s.float()[:, None]).norm())
    lq = {n for n, qt in t.items() if "lqer_a" in qt.parts}
    assert len(lq) == 3 and lq == set(sorted(errs, key=lambda n: -errs[n])[:3]) == set(header["meta"]["lqer"])
    for n in lq:  # the factors are part of the dequantized tensor
        base = t[n].parts["q"].float() * t[n].parts["scale"].float()[:, None]
        assert torch.allclose(state[n].float(), base + lqer_correction(t[n].parts), atol=1e-6), n
    hot = [s for s in res.pack_report.streams if s.group in ("embed", "attn_q", "mlp_up")]
    assert hot and all(s.transform in ("T", "perm+T") for s in hot)
    assert any(e["perm"] is not None for qt in header["tensors"].values() for e in qt["parts"].values()) or \
        all(s.transform == "T" for s in hot)
