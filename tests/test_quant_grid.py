"""pgolf.quant.grid: the baseline int8 grid, against hand-computed values, an independent
re-statement of the baseline formula (torch.quantile), half-step round-trip bounds, and the
passthrough rules by name, dtype and size."""

import math

import pytest
import torch

from pgolf.errors import ConfigError
from pgolf.quant import grid
from pgolf.quant.grid import (
    QuantTensor,
    check_parts,
    dequantize_int8_per_row,
    dequantize_int8_per_tensor,
    dequantize_state_dict,
    dequantize_tensor,
    int8_policy,
    quantize_int8_per_row,
    quantize_int8_per_tensor,
    quantize_state_dict,
    quantize_tensor,
)
from pgolf.quant.intgrid import INT8_CLIP_Q, quantile_linear
from pgolf.roles import Role


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


@pytest.mark.parametrize("q", [INT8_CLIP_Q, 0.0, 0.1, 0.5, 0.999, 1.0])
def test_quantile_matches_torch_bitwise(q):
    g = torch.Generator().manual_seed(0)
    for n in (1, 2, 3, 7, 64, 511, 1000):
        x = (torch.randn(5, n, generator=g) * 3).abs()
        assert _bits_equal(quantile_linear(x, q, dim=1), torch.quantile(x, q, dim=1))
        assert _bits_equal(quantile_linear(x.T.contiguous(), q, dim=0), torch.quantile(x.T, q, dim=0))
        flat = x.flatten()
        assert _bits_equal(quantile_linear(flat, q, dim=0), torch.quantile(flat, q))


def test_quantile_nan_row_is_nan_like_torch():
    x = torch.tensor([[1.0, float("nan"), 2.0], [1.0, 2.0, 3.0]])
    ours, ref = quantile_linear(x, 0.5, dim=1), torch.quantile(x, 0.5, dim=1)
    assert math.isnan(ours[0]) and math.isnan(ref[0]) and ours[1] == ref[1]


def test_per_row_hand_computed():
    # Row 0: top two |w| tie at 2.54, so the 99.99984th percentile is exactly 2.54 and
    # scale = 2.54/127 = 0.02. Row 1: clip 0.1 < 1, so the scale is floored at 1/127.
    w = torch.tensor([[2.54, -2.54, 1.0, 0.0, -0.3], [0.1, -0.05, 0.0, 0.1, 0.02]])
    q, s = quantize_int8_per_row(w)
    assert q.dtype == torch.int8 and s.dtype == torch.float16
    assert q.tolist() == [[127, -127, 50, 0, -15], [13, -6, 0, 13, 3]]  # 12.7→13, −6.35→−6, 2.54→3
    assert s.tolist() == [float(torch.tensor(2.54 / 127).half()), float(torch.tensor(1 / 127).half())]
    deq = dequantize_int8_per_row(q, s)
    assert torch.equal(deq, q.float() * s.float()[:, None])


def test_per_row_equals_baseline_formula():
    """The baseline's formula restated with torch.quantile (q computed with the fp32 scale)."""
    g = torch.Generator().manual_seed(1)
    w = torch.randn(48, 700, generator=g) * torch.rand(48, 1, generator=g) * 3
    w[3, 17] = 40.0  # an outlier that gets clipped
    clip = torch.quantile(w.abs(), INT8_CLIP_Q, dim=1)
    scale = (clip / 127.0).clamp_min(1.0 / 127.0)
    clipped = torch.maximum(torch.minimum(w, clip[:, None]), -clip[:, None])
    q_ref = torch.clamp(torch.round(clipped / scale[:, None]), -127, 127).to(torch.int8)
    q, s = quantize_int8_per_row(w)
    assert torch.equal(q, q_ref)
    assert _bits_equal(s, scale.half())
    assert q[3, 17] == 127 and clip[3] < 40.0


def test_per_row_round_trip_half_step():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(64, 300, generator=g, dtype=torch.float64) * torch.logspace(-3, 1, 64, dtype=torch.float64)[:, None]
    w[5, 0] = 1e3
    q, s16 = quantize_int8_per_row(w)
    w32 = w.float()
    clip32 = quantile_linear(w32.abs(), INT8_CLIP_Q, dim=1)
    clip, s32 = clip32.double(), (clip32 / 127).clamp_min(1 / 127).double()
    unclipped = w32.double().abs() <= clip[:, None]
    # The quantizer's own step: q is the nearest grid point of the fp32 scale.
    err_grid = (w32.double() - q.double() * s32[:, None]).abs()
    assert bool((err_grid <= s32[:, None] * (0.5 + 1e-5))[unclipped].all())
    # The stored fp16 scale moves every point by at most |q|·|s16 − s32| on top of that.
    deq = dequantize_int8_per_row(q, s16, torch.float64)
    bound = s32[:, None] * 0.5 * (1 + 1e-5) + q.double().abs() * (s16.double() - s32).abs()[:, None]
    assert bool(((w32.double() - deq).abs() <= bound)[unclipped].all())
    assert bool((~unclipped).any()), "the outlier must be clipped"
    assert int(q.abs().max()) <= 127


def test_per_tensor_hand_computed_no_floor():
    # clip = 0.5 (tie at the top): scale = 0.5/127 < 1/127 (per-tensor has no floor).
    w = torch.tensor([[[0.5, -0.2], [0.125, 0.5]]])
    q, s = quantize_int8_per_tensor(w)
    assert s.dtype == torch.float32 and s.ndim == 0
    assert s.item() == pytest.approx(0.5 / 127, rel=1e-7)
    assert q.tolist() == [[[127, -51], [32, 127]]]  # −50.8 → −51, 31.75 → 32
    assert torch.equal(dequantize_int8_per_tensor(q, s), q.float() * s)
    q0, s0 = quantize_int8_per_tensor(torch.zeros(4, 2, 3))
    assert s0.item() == 1.0 and not q0.any()


def test_empty_and_zero_rows():
    q, s = quantize_int8_per_row(torch.zeros(3, 0))
    assert q.shape == (3, 0) and s.shape == (3,)
    q, s = quantize_int8_per_row(torch.zeros(2, 5))
    assert not q.any() and torch.equal(s, torch.full((2,), 1 / 127).half())


@pytest.mark.parametrize("role", list(Role))
def test_policy_small_floats_fp32_exactly_for_control_role(role):
    """The baseline keeps control tensors fp32: here the declared role decides, whatever the name."""
    for dt in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        got = int8_policy("blocks.0.attn_scale", torch.ones(4, 8, dtype=dt), role)
        if role is Role.CONTROL:
            assert got == "fp32"
        else:
            assert got == ("fp16" if dt in (torch.float32, torch.bfloat16) else "raw")


def test_policy_rules_by_size_dtype_role():
    big = grid.KEEP_FLOAT_MAX_NUMEL + 1
    P = Role.PROJ
    assert grid.KEEP_FLOAT_MAX_NUMEL == 65_536
    assert int8_policy("w", torch.zeros(256, 256), P) == "fp16"  # exactly 65,536: kept
    assert int8_policy("w", torch.zeros(256, 256, dtype=torch.bfloat16), P) == "fp16"
    assert int8_policy("w", torch.zeros(10, dtype=torch.float16), P) == "raw"
    assert int8_policy("w", torch.zeros(10, dtype=torch.float64), P) == "raw"
    assert int8_policy("w", torch.zeros(big, 1), P) == "int8_row"
    assert int8_policy("w", torch.zeros(big), P) == "int8_tensor"
    assert int8_policy("w", torch.zeros(big, 1, 1), P) == "int8_tensor"
    assert int8_policy("blocks.0.attn_scale", torch.zeros(big, 1), Role.CONTROL) == "int8_row"  # size rule first
    assert int8_policy("steps", torch.zeros(big, 1, dtype=torch.int64), P) == "raw"
    assert int8_policy("mask", torch.zeros(3, dtype=torch.bool), Role.CONTROL) == "raw"
    with pytest.raises(ConfigError, match="no declared role"):
        grid.int8_policy_for({})("w", torch.zeros(3))


def test_passthrough_round_trips_restore_dtype():
    g = torch.Generator().manual_seed(3)
    sd = {
        "blocks.0.resid_mix": torch.randn(2, 16, generator=g).bfloat16(),
        "blocks.0.attn.c_q.weight": torch.randn(16, 16, generator=g),
        "norm.weight": torch.randn(16, generator=g).half(),
        "buf": torch.arange(7, dtype=torch.int64),
        "dbl": torch.randn(3, generator=g, dtype=torch.float64),
    }
    roles = {"blocks.0.resid_mix": Role.CONTROL, "blocks.0.attn.c_q.weight": Role.ATTN_Q, "norm.weight": Role.GATE,
             "buf": Role.CONTROL, "dbl": Role.GATE}
    qsd = quantize_state_dict(sd, grid.int8_policy_for(roles))
    assert [qt.scheme for qt in qsd.values()] == ["fp32", "fp16", "raw", "raw", "raw"]
    out = dequantize_state_dict(qsd)
    for name, t in sd.items():
        assert out[name].dtype == t.dtype and out[name].shape == t.shape
    assert torch.equal(out["blocks.0.resid_mix"], sd["blocks.0.resid_mix"])  # bf16 → fp32 → bf16 lossless
    assert torch.equal(out["blocks.0.attn.c_q.weight"], sd["blocks.0.attn.c_q.weight"].half().float())
    for name in ("norm.weight", "buf", "dbl"):
        assert torch.equal(out[name], sd[name])


def test_quantized_dequantize_matches_parts_and_dtype():
    w = torch.randn(300, 260, generator=torch.Generator().manual_seed(4)).bfloat16()
    qt = quantize_tensor(w, int8_policy("x", w, Role.EMBED))
    assert qt.scheme == "int8_row" and qt.nbytes == 300 * 260 + 2 * 300
    out = dequantize_tensor(qt)
    assert out.dtype == torch.bfloat16 and out.shape == w.shape
    assert torch.equal(out, (qt.parts["q"].float() * qt.parts["scale"].float()[:, None]).bfloat16())


def test_check_parts_rejects_mismatches():
    q = torch.zeros(4, 3, dtype=torch.int8)
    s = torch.ones(4, dtype=torch.float16)
    check_parts("int8_row", {"q": q, "scale": s}, (4, 3), torch.float32)
    bad = [
        ({"q": q}, (4, 3), torch.float32),
        ({"q": q, "scale": s.float()}, (4, 3), torch.float32),
        ({"q": q, "scale": s[:3]}, (4, 3), torch.float32),
        ({"q": q, "scale": s}, (4, 3, 1), torch.float32),
        ({"q": q, "scale": s}, (4, 3), torch.int64),
    ]
    for parts, shape, dt in bad:
        with pytest.raises(ValueError):
            check_parts("int8_row", parts, shape, dt)
    with pytest.raises(ValueError, match="unknown quant scheme"):
        dequantize_tensor(QuantTensor("int3", {"w": q}, (4, 3), torch.float32))
