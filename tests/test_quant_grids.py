"""pgolf.quant.grid: low-bit grids against float64 references — half-step round trips, bit-exact
survival of grid values, ternary levels, every clip strategy restated independently, the scheme
names the container stores, and container round trips."""

import math

import numpy as np
import pytest
import torch

from pgolf.artifact.format import read_artifact, write_artifact
from pgolf.errors import ConfigError
from pgolf.quant import grid, intgrid
from pgolf.quant.grid import parse_scheme_name
from pgolf.quant.intgrid import (
    GPTQ_LITE_CANDIDATES,
    QuantSpec,
    compute_scale,
    dequantize_grid,
    expand_scale,
    quantize_rtn,
    quantize_with_scale,
    row_importance,
)

BITS = range(2, 9)


def _w(rows=12, cols=70, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g, dtype=torch.float64) * torch.logspace(-2, 0.5, rows, dtype=torch.float64)[:, None]
    w[1, 3] = 9.0  # an outlier the percentile clips
    return w.to(dtype)


def _groups_np(x: np.ndarray, g: int) -> list[np.ndarray]:
    """Reference grouping: per row (g = 0) or consecutive slices of g columns, last one shorter."""
    cols = x.shape[1]
    if g == 0:
        return [x]
    return [x[:, i : i + g] for i in range(0, cols, g)]


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("group", [0, 16, 24])
@pytest.mark.parametrize("clip", ["percentile", "max", "gptq_lite", "sdclip"])
def test_round_trip_within_half_step(bits, group, clip):
    w = _w()
    spec = QuantSpec(bits=bits, group_size=group, clip=clip, k=3.0)
    q, s = quantize_rtn(w, spec)
    m = 2 ** (bits - 1) - 1
    assert q.dtype == torch.int8 and s.dtype == torch.float16
    assert s.shape == ((12,) if group == 0 else (12, math.ceil(70 / group)))
    assert int(q.abs().max()) <= m
    step = expand_scale(s, 70, group).double()
    w64 = w.double()
    deq = dequantize_grid(q, s, group, torch.float64)
    assert torch.equal(deq, q.double() * step)
    inside = w64.abs() <= m * step
    assert bool(((w64 - deq).abs() <= step * (0.5 + 1e-5))[inside].all())
    # Clipped entries land on the outermost level of their sign.
    assert bool((q.abs() == m)[~inside].all())


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("group", [0, 8, 12])
@pytest.mark.parametrize("clip", ["max", "gptq_lite"])
def test_grid_values_survive_bit_exactly(bits, group, clip):
    g = torch.Generator().manual_seed(bits)
    m = 2 ** (bits - 1) - 1
    rows, cols = 6, 40
    ng = 1 if group == 0 else math.ceil(cols / group)
    s16 = (torch.rand(rows, ng, generator=g) * 0.1 + 1e-3).half()
    q = torch.randint(-m, m + 1, (rows, cols), generator=g)
    gi = torch.zeros(cols, dtype=torch.long) if group == 0 else torch.arange(cols) // group
    first = torch.tensor([int((gi == k).nonzero()[0]) for k in range(ng)])
    q[:, first] = m  # every group reaches qmax, so its max clip is exactly qmax·s
    w = (q.float() * s16.float()[:, gi]).to(torch.float32)
    spec = QuantSpec(bits=bits, group_size=group, clip=clip)
    q2, s2 = quantize_rtn(w, spec)
    assert torch.equal(q2, q.to(torch.int8))
    assert torch.equal(s2, s16[:, 0] if group == 0 else s16)
    assert torch.equal(dequantize_grid(q2, s2, group), w)


@pytest.mark.parametrize("group", [0, 16, 30])
def test_ternary_levels_and_absmean_scale(group):
    w = _w(rows=8, cols=64, seed=3)
    spec = QuantSpec.ternary(group)
    assert spec.scheme == ("ternary_row" if group == 0 else f"ternary_g{group}")
    q, s = quantize_rtn(w, spec)
    assert set(q.unique().tolist()) <= {-1, 0, 1} and set(q.unique().tolist()) == {-1, 0, 1}
    a = w.double().numpy()
    ref = np.stack([np.abs(x).mean(axis=1) for x in _groups_np(a, group)], axis=1)
    ref16 = torch.from_numpy(ref).float().half()
    got = s if group else s[:, None]
    # fp32 absmean vs float64 absmean: the fp16 step may differ by at most one fp16 ulp.
    assert bool(((got.float() - ref16.float()).abs() <= ref16.float() * 2**-10).all())
    step = expand_scale(s, 64, group).double()
    inside = w.double().abs() <= step
    assert bool(((w.double() - q.double() * step).abs() <= step * (0.5 + 1e-6))[inside].all())


def test_ternary_is_int2_storage():
    assert QuantSpec(bits=2).qmax == 1
    p = parse_scheme_name("ternary_g64")
    assert (p.bits, p.group_size, p.ternary) == (2, 64, True)
    w = _w(rows=4, cols=64)
    qt = grid.quantize_tensor(w, "ternary_g64")
    assert set(qt.parts["q"].unique().tolist()) <= {-1, 0, 1}
    assert torch.equal(grid.dequantize_tensor(qt), dequantize_grid(qt.parts["q"], qt.parts["scale"], 64))


def _np_quantile(x: np.ndarray, q: float) -> np.ndarray:
    return np.quantile(x, q, axis=1, method="linear")


@pytest.mark.parametrize("group", [0, 16])
def test_percentile_and_max_clips_match_reference(group):
    w = _w(rows=10, cols=48, seed=5)
    a = np.abs(w.double().numpy())
    for clip, qq in (("percentile", 0.9), ("max", 1.0)):
        spec = QuantSpec(bits=5, group_size=group, clip=clip, clip_q=qq)
        s = compute_scale(w, spec)
        ref = np.stack([_np_quantile(x, qq) if clip == "percentile" else x.max(axis=1) for x in _groups_np(a, group)], axis=1)
        ref16 = torch.from_numpy(ref / 15).float().half().float()
        got = (s if group else s[:, None]).float()
        assert bool(((got - ref16).abs() <= ref16 * 2**-10).all())


def _rtn_err(w64: np.ndarray, clip: np.ndarray, m: int) -> np.ndarray:
    s = torch.from_numpy(clip / m).float().clamp(2**-24, 65504).half().double().numpy()
    q = np.clip(np.round(w64 / s[:, None]), -m, m)
    return ((w64 - q * s[:, None]) ** 2).sum(axis=1)


@pytest.mark.parametrize("search", ["scale", "matrix"])
def test_gptq_lite_keeps_least_error_candidate(search):
    w = _w(rows=16, cols=40, seed=6)
    w64 = w.double().numpy()
    m = 31
    spec = QuantSpec(bits=6, clip="gptq_lite", search=search)
    s = compute_scale(w, spec)
    q = quantize_with_scale(w.float(), s, 6, 0)
    got_err = ((w64 - q.double().numpy() * s.double().numpy()[:, None]) ** 2).sum(axis=1)
    a = np.abs(w64)
    cand = [_rtn_err(w64, a.max(axis=1) if p == 1.0 else _np_quantile(a, p), m) for p in GPTQ_LITE_CANDIDATES]
    cand = np.stack(cand)  # [K, rows]
    if search == "scale":
        assert np.all(got_err <= cand.min(axis=0) * (1 + 1e-6) + 1e-12)
    else:  # one candidate for the whole matrix, the one of least total error ([03-22])
        assert got_err.sum() <= cand.sum(axis=1).min() * (1 + 1e-6)
        assert any(np.allclose(got_err, c, rtol=1e-5) for c in cand)


def test_sdclip_matches_reference():
    w = _w(rows=9, cols=50, seed=7)
    a = w.double().numpy()
    for k, bits, group in ((12.85, 6, 0), (3.0, 4, 16), (20.0, 8, 0)):
        s = compute_scale(w, QuantSpec(bits=bits, group_size=group, clip="sdclip", k=k))
        m = 2 ** (bits - 1) - 1
        ref = np.stack([k * x.std(axis=1, ddof=1) for x in _groups_np(a, group)], axis=1) / m
        ref16 = torch.from_numpy(ref).float().half().float()
        got = (s if group else s[:, None]).float()
        assert bool(((got - ref16).abs() <= ref16 * 2**-10).all())


def test_sdclip_hessian_reference_and_lambda_zero():
    g = torch.Generator().manual_seed(8)
    w = _w(rows=10, cols=32, seed=8)
    hd = torch.rand(32, generator=g, dtype=torch.float64) * 5
    hd[4] = 0.0  # a dead column counts as 1
    # Reference r_i (float64): d = diag with dead → 1, + 0.01·mean; u = d/mean d; r = mean|w|u, mean 1.
    d = hd.clone()
    d[d == 0] = 1
    d = d + 0.01 * d.mean()
    r = (w.double().abs() * (d / d.mean())).mean(dim=1)
    r = r / r.mean()
    assert torch.allclose(row_importance(w, hd.float()).double(), r, rtol=1e-5)
    k, lam = 12.85, 0.175
    ref = k * w.double().std(dim=1) * (1 + lam * (r - 1)) / 31
    s = compute_scale(w, QuantSpec(bits=6, clip="sdclip_hessian", k=k, hessian_lambda=lam), hd)
    assert bool(((s.float().double() - ref).abs() <= ref * 2**-10).all())
    s0 = compute_scale(w, QuantSpec(bits=6, clip="sdclip_hessian", k=k, hessian_lambda=0.0), hd)
    assert torch.equal(s0, compute_scale(w, QuantSpec(bits=6, clip="sdclip", k=k)))
    with pytest.raises(ConfigError, match="Hessian"):
        compute_scale(w, QuantSpec(bits=6, clip="sdclip_hessian"))


def test_zero_rows_and_constant_groups():
    w = torch.zeros(3, 20)
    w[1] = 7 * 2**-5  # constant row: std 0 → falls back to max|w| = qmax·2^-5, stored exactly
    for clip in ("sdclip", "percentile", "max", "gptq_lite"):
        q, s = quantize_rtn(w, QuantSpec(bits=4, clip=clip))
        assert s[0] == torch.tensor(2**-24, dtype=torch.float16) and not q[0].any()
        assert torch.equal(dequantize_grid(q, s, 0)[1], w[1])
    q, s = quantize_rtn(torch.zeros(4, 0), QuantSpec(bits=4))
    assert q.shape == (4, 0) and s.shape == (4,)
    q, s = quantize_rtn(torch.zeros(4, 0), QuantSpec(bits=4, group_size=8))
    assert q.shape == (4, 0) and s.shape == (4, 0)


def test_spec_validation_and_names():
    assert QuantSpec(bits=6).scheme == "int6_row" and QuantSpec(bits=5, group_size=64).scheme == "int5_g64"
    assert QuantSpec(bits=8).scheme == "int8_row"  # the baseline's storage format
    for bad in (dict(bits=1), dict(bits=9), dict(clip="nope"), dict(clip="absmean", bits=3), dict(group_size=-1),
                dict(k=0), dict(clip_q=0.0), dict(search="row")):
        with pytest.raises(ConfigError):
            QuantSpec(**bad)
    cache = {QuantSpec(bits=5): "five"}  # a cache key: equal specs built apart find one entry, others none
    assert cache[QuantSpec(bits=5)] == "five" and QuantSpec(bits=5, group_size=64) not in cache
    assert QuantSpec(bits=6) not in cache and QuantSpec(bits=5, clip="sdclip", k=12.0) not in cache
    ok = ["int2_row", "int7_g128", "int8_g32", "ternary_row", "ternary_g64", "int6_row+lqer4", "int6_g64+lqer2g32",
          "int8_row+lqer4"]
    for n in ok:
        assert grid.get_scheme(n).name == n
    for n in ("int9_row", "int1_row", "int6_g0", "int6_g064", "int6_row+lqer0", "int6_row+lqer4g64", "ternary",
              "int6", "int6_row+", "Int6_row"):
        with pytest.raises(ValueError, match="unknown quant scheme"):
            grid.get_scheme(n)
    assert "int6_row" not in grid.SCHEMES  # families resolve by name, the registry keeps its fixed entries


@pytest.mark.parametrize("name", ["int6_row", "int3_g16", "ternary_g32", "int8_g64"])
def test_schemes_quantize_dequantize_restore_dtype(name, tmp_path):
    w = _w(rows=20, cols=100, seed=9).bfloat16()
    qt = grid.quantize_tensor(w, name)
    grid.check_parts(name, qt.parts, qt.shape, qt.dtype)
    out = grid.dequantize_tensor(qt)
    assert out.dtype == torch.bfloat16 and out.shape == w.shape
    p = parse_scheme_name(name)
    assert torch.equal(out, dequantize_grid(qt.parts["q"], qt.parts["scale"], p.group_size, torch.bfloat16))
    # the container stores it (scheme + named parts) and gives it back bit for bit
    n = write_artifact(tmp_path / "a.pgolf", {"w": qt, "plain": torch.arange(3)}, codec="zlib-9")
    assert n == (tmp_path / "a.pgolf").stat().st_size
    back, header = read_artifact(tmp_path / "a.pgolf")
    assert header["tensors"]["w"]["scheme"] == name
    assert back["w"].scheme == name and back["w"].shape == qt.shape and back["w"].dtype == qt.dtype
    for role, t in qt.parts.items():
        assert torch.equal(back["w"].parts[role], t)
    assert torch.equal(grid.dequantize_tensor(back["w"]), out)


def test_check_parts_rejects_wrong_group_shapes():
    w = _w(rows=4, cols=70)
    qt = grid.quantize_tensor(w, "int5_g32")
    assert qt.parts["scale"].shape == (4, 3)
    with pytest.raises(ValueError, match="scale"):
        grid.check_parts("int5_g64", qt.parts, qt.shape, qt.dtype)
    with pytest.raises(ValueError, match="2-D"):
        grid.check_parts("int5_g32", qt.parts, (4, 70, 1), qt.dtype)
    with pytest.raises(ValueError):
        grid.check_parts("int5_g32", qt.parts, qt.shape, torch.int32)


def test_entropy():
    q = torch.tensor([-1, 0, 0, 1] * 8, dtype=torch.int8)
    assert intgrid.entropy_bits(q) == pytest.approx(1.5)
    assert intgrid.entropy_bits(torch.zeros(10, dtype=torch.int8)) == 0.0
