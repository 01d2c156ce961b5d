"""pgolf.quant.lqer: the correction strictly reduces ‖W − Ŵ‖_F, its factors sit on their asymmetric
grids with the documented scales, top-k selection, and the parts round-trip through the container."""

import math

import pytest
import torch

from pgolf.artifact.format import read_artifact, write_artifact
from pgolf.quant import grid
from pgolf.quant.lqer import LqerSpec, add_lqer, apply_lqer, top_k_by_error
from pgolf.quant.lqer_factors import lqer_correction, lqer_factors, quantize_lqer_factors


def _w(rows=48, cols=100, seed=0, lowrank=0.02):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * 0.02
    return w + lowrank * torch.randn(rows, 3, generator=g) @ torch.randn(3, cols, generator=g)


def _fro(a):
    return float(a.double().norm())


@pytest.mark.parametrize("scheme", ["int3_row", "int4_g32", "int6_row", "ternary_g64", "int8_row", "int5_g16"])
@pytest.mark.parametrize("rank", [1, 4])
@pytest.mark.parametrize("refit", [True, False])
def test_lqer_strictly_reduces_frobenius_error(scheme, rank, refit):
    for seed in range(3):
        w = _w(seed=seed, lowrank=0.02 * seed)
        qt = grid.quantize_tensor(w, scheme)
        before = _fro(w - grid.dequantize_tensor(qt))
        new = add_lqer(w, qt, LqerSpec(rank=rank, refit=refit))
        assert new is not None
        assert new.scheme == f"{scheme}+lqer{rank}"
        after = _fro(w - grid.dequantize_tensor(new))
        assert after < before
        # the base parts are untouched; only factor parts were added
        assert all(torch.equal(new.parts[k], v) for k, v in qt.parts.items())


def test_factor_grids_and_scales():
    g = torch.Generator().manual_seed(1)
    err = torch.randn(40, 100, generator=g) * 0.01
    parts = lqer_factors(err, rank=4, group_size=64)
    qa, sa, qb, sb = parts["lqer_a"], parts["lqer_a_scale"], parts["lqer_b"], parts["lqer_b_scale"]
    assert (qa.dtype, qa.shape, sa.dtype, sa.shape) == (torch.int8, (40, 4), torch.float16, ())
    assert (qb.dtype, qb.shape, sb.dtype, sb.shape) == (torch.int8, (4, 100), torch.float16, (4, math.ceil(100 / 64)))
    assert -2 <= int(qa.min()) and int(qa.max()) <= 1 and int(qa.min()) == -2  # sign flip uses the −2 side
    assert -8 <= int(qb.min()) and int(qb.max()) <= 7
    # B's scales: each group's max |B| / 7.5, so every group reaches |q| ≥ 7 (8 when its max is negative)
    for r in range(4):
        for k, sl in enumerate((slice(0, 64), slice(64, 100))):
            assert int(qb[r, sl].abs().max()) in (7, 8)
            assert float(sb[r, k]) > 0
    corr = lqer_correction(parts)
    ref = (qa.double() * float(sa)) @ (qb.double() * sb.double().repeat_interleave(64, dim=1)[:, :100])
    torch.testing.assert_close(corr.double(), ref, rtol=1e-6, atol=1e-9)


def test_record_scale_rules_without_refit_or_gain():
    """quantize_lqer_factors alone is [04-27a]'s packing: sA = max|A|/1.5, sB = max|B_g|/7.5."""
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(10, 4, generator=g), torch.randn(4, 128, generator=g)
    p = quantize_lqer_factors(a, b, 64)
    assert p["lqer_a_scale"] == (a.abs().max() / 1.5).half()
    ref_sb = (b.reshape(4, 2, 64).abs().amax(dim=-1) / 7.5).half()
    assert torch.equal(p["lqer_b_scale"], ref_sb)
    assert torch.equal(p["lqer_a"], torch.round(a / p["lqer_a_scale"].float()).clamp(-2, 1).to(torch.int8))


def test_no_error_no_correction():
    w = torch.zeros(8, 64)
    w[:, 0] = 7 * 2**-5
    qt = grid.quantize_tensor(w, "int4_row")
    assert torch.equal(grid.dequantize_tensor(qt), w)
    assert add_lqer(w, qt) is None
    parts = lqer_factors(torch.zeros(8, 64), rank=4)
    assert not any(bool(p.any()) for p in parts.values())
    assert add_lqer(w, grid.quantize_tensor(w, "fp16")) is None  # not eligible
    qt_l = add_lqer(_w(), grid.quantize_tensor(_w(), "int4_row"))
    assert add_lqer(_w(), qt_l) is None  # already corrected


def test_apply_lqer_corrects_the_top_k():
    sd = {f"m{i}": _w(rows=32, cols=64, seed=i) * (1 + i) for i in range(5)}
    sd["small"] = torch.randn(8)
    qsd = grid.quantize_state_dict(sd, lambda n, t: "int4_row" if t.ndim == 2 else "fp16")
    errs = {n: _fro(sd[n] - grid.dequantize_tensor(qsd[n])) for n in sd if n != "small"}
    top = top_k_by_error(errs, 3)
    assert top == sorted(errs, key=lambda n: -errs[n])[:3]
    out = apply_lqer(sd, qsd, LqerSpec(top_k=3, rank=2))
    assert list(out) == list(sd)
    for n in sd:
        if n in top:
            assert out[n].scheme == "int4_row+lqer2"
            assert _fro(sd[n] - grid.dequantize_tensor(out[n])) < errs[n]
        else:
            assert out[n] is qsd[n]
    assert apply_lqer(sd, qsd, LqerSpec(top_k=0)) == qsd


@pytest.mark.parametrize("spec", [LqerSpec(), LqerSpec(rank=3, group_size=32)])
def test_lqer_parts_round_trip_through_the_container(spec, tmp_path):
    sd = {"a": _w(rows=40, cols=100).bfloat16(), "b": _w(rows=24, cols=64, seed=3)}
    qsd = {"a": grid.quantize_tensor(sd["a"], "int5_g64"), "b": grid.quantize_tensor(sd["b"], "ternary_row")}
    out = apply_lqer(sd, qsd, LqerSpec(top_k=2, rank=spec.rank, group_size=spec.group_size))
    suffix = f"+lqer{spec.rank}" + ("" if spec.group_size == 64 else f"g{spec.group_size}")
    assert out["a"].scheme == "int5_g64" + suffix and out["b"].scheme == "ternary_row" + suffix
    path = tmp_path / "m.pgolf"
    write_artifact(path, out, codec="zlib-9")
    back, header = read_artifact(path)
    for n, qt in out.items():
        assert header["tensors"][n]["scheme"] == qt.scheme
        assert set(header["tensors"][n]["parts"]) == {"q", "scale", "lqer_a", "lqer_a_scale", "lqer_b", "lqer_b_scale"}
        assert back[n].scheme == qt.scheme and back[n].dtype == qt.dtype and back[n].shape == qt.shape
        for role, t in qt.parts.items():
            assert torch.equal(back[n].parts[role], t)
        deq = grid.dequantize_tensor(back[n])
        assert torch.equal(deq, grid.dequantize_tensor(qt)) and deq.dtype == sd[n].dtype
    # a mismatched rank in the name is refused by the part check
    bad = grid.QuantTensor("int5_g64+lqer7", out["a"].parts, out["a"].shape, out["a"].dtype)
    with pytest.raises(ValueError, match="lqer_a"):
        grid.dequantize_tensor(bad)


def test_default_scheme_quantizer_adds_factors():
    w = _w()
    qt = grid.quantize_tensor(w, "int4_row+lqer4")
    base = grid.quantize_tensor(w, "int4_row")
    assert torch.equal(qt.parts["q"], base.parts["q"])
    assert _fro(w - grid.dequantize_tensor(qt)) < _fro(w - grid.dequantize_tensor(base))
    qt8 = grid.quantize_tensor(w, "int8_row+lqer2")  # the baseline grid plus a correction
    assert torch.equal(qt8.parts["q"], grid.quantize_tensor(w, "int8_row").parts["q"])
