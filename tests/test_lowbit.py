"""Ternary / binary weights (pgolf.quant.lowbit): packing round trips, the grids against a float64
reference, the straight-through weight function, and the defining property — the trained forward equals
the packed-then-unpacked artifact's forward bit for bit."""

import math

import pytest
import torch

from pgolf.config import QatConfig, apply_overrides
from pgolf.errors import ConfigError
from pgolf.export.driver import export_model, get_export_scheme, load_model_state
from pgolf.model.gpt import GPT, parameter_roles
from pgolf.presets import get_preset
from pgolf.quant import grid, lowbit
from pgolf.quant.qat import attach_qat

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- packing


@pytest.mark.parametrize("n", [0, 1, 4, 5, 6, 9, 10, 11, 37, 1000, 1003])
def test_trits_round_trip_any_length(n):
    g = torch.Generator().manual_seed(n)
    q = torch.randint(-1, 2, (n,), generator=g, dtype=torch.int8)
    packed = lowbit.pack_trits(q)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(n / 5)
    assert int(packed.max()) <= 242 if n else True
    assert torch.equal(lowbit.unpack_trits(packed, n), q)


def test_trit_byte_layout_is_the_records():
    # digits q+1 = (0, 1, 2, 2, 0) → 0 + 3 + 18 + 54 + 0 = 75 (first trit least significant); padding d = 0
    q = torch.tensor([-1, 0, 1, 1, -1, 1], dtype=torch.int8)
    assert lowbit.pack_trits(q).tolist() == [75, 2]
    assert lowbit.pack_trits(torch.ones(5, dtype=torch.int8)).tolist() == [242]


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 15, 16, 17, 1001])
def test_bits_round_trip_any_length(n):
    g = torch.Generator().manual_seed(100 + n)
    q = (torch.randint(0, 2, (n,), generator=g) * 2 - 1).to(torch.int8)
    packed = lowbit.pack_bits(q)
    assert packed.numel() == math.ceil(n / 8)
    assert torch.equal(lowbit.unpack_bits(packed, n), q)


def test_bit_layout_lsb_first():
    q = torch.tensor([1, -1, -1, -1, -1, -1, -1, 1, 1], dtype=torch.int8)
    assert lowbit.pack_bits(q).tolist() == [1 + 128, 1]


def test_unpacking_refuses_what_packing_never_writes():
    with pytest.raises(ValueError, match="exceeds 242"):
        lowbit.unpack_trits(torch.tensor([243], dtype=torch.uint8), 5)
    with pytest.raises(ValueError, match="padding"):
        lowbit.unpack_trits(torch.tensor([0, 3], dtype=torch.uint8), 6)  # second trit of the pad byte set
    with pytest.raises(ValueError, match="uint8 bytes"):
        lowbit.unpack_trits(torch.zeros(3, dtype=torch.uint8), 5)
    with pytest.raises(ValueError, match="padding"):
        lowbit.unpack_bits(torch.tensor([255, 2], dtype=torch.uint8), 9)
    with pytest.raises(ValueError, match="codes must be"):
        lowbit.pack_trits(torch.tensor([2], dtype=torch.int8))
    with pytest.raises(ValueError, match="codes must be"):
        lowbit.pack_bits(torch.tensor([0], dtype=torch.int8))


# --------------------------------------------------------------------------- the grid


def _reference(w: torch.Tensor, kind: str, g: int, shrink: bool) -> torch.Tensor:
    """Group by group in float64 (scale rounded to fp16 as stored), the module docstring's maths."""
    rows, cols = w.shape
    out = torch.empty(rows, cols, dtype=torch.float64)
    step = cols if g == 0 else g
    for i in range(rows):
        for j0 in range(0, cols, step):
            blk = w[i, j0 : j0 + step].double()
            s = float(torch.tensor(float(blk.abs().mean())).clamp(2**-24, 65504).half())
            if kind == "binary":
                q = torch.where(blk >= 0, 1.0, -1.0).double()
            else:
                q = torch.round(blk / s).clamp(-1, 1)
            sig = s / float(q.abs().mean()) if shrink and float(q.abs().mean()) > 0 else s
            out[i, j0 : j0 + step] = q * sig
    return out


@pytest.mark.parametrize("kind,shrink", [("ternary", False), ("ternary", True), ("binary", False)])
@pytest.mark.parametrize("shape,g", [((6, 40), 16), ((5, 33), 8), ((4, 24), 0), ((3, 7), 128)])
def test_grid_matches_the_float64_reference(kind, shrink, shape, g):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(7)) * 0.05
    got = lowbit.fake_lowbit(w, kind, g, shrink).double()
    torch.testing.assert_close(got, _reference(w, kind, g, shrink), rtol=1e-6, atol=0)
    q, _ = lowbit.lowbit_quantize(w, kind, g)
    assert set(q.unique().tolist()) <= ({-1, 0, 1} if kind == "ternary" else {-1, 1})


@pytest.mark.parametrize("kind,shrink", [("ternary", False), ("ternary", True), ("binary", False)])
@pytest.mark.parametrize("shape,g", [((6, 40), 16), ((5, 33), 8), ((4, 24), 0), ((1, 1), 4)])
def test_storage_scheme_round_trips_to_the_trained_value_bit_for_bit(kind, shrink, shape, g):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(3)) * 0.02
    name = lowbit.storage_scheme_name(kind, g, shrink)
    qt = grid.quantize_tensor(w, name)
    n = shape[0] * shape[1]
    assert qt.parts["codes"].numel() == (math.ceil(n / 8) if kind == "binary" else math.ceil(n / 5))
    back = grid.dequantize_tensor(qt)
    assert back.dtype == w.dtype and torch.equal(back, lowbit.fake_lowbit(w, kind, g, shrink))


def test_fp8_storage_is_e4m3_bytes():
    w = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
    qt = grid.quantize_tensor(w, lowbit.FP8_SCHEME)
    assert qt.parts["w"].dtype == torch.uint8 and qt.nbytes == w.numel()
    assert torch.equal(grid.dequantize_tensor(qt), w.to(torch.float8_e4m3fn).float())


def test_straight_through_gradient_and_exact_forward():
    w = (torch.randn(8, 32, generator=torch.Generator().manual_seed(5)) * 0.1).requires_grad_()
    f = lowbit.LowBitWeight("ternary", 16)
    assert torch.equal(f(w), w)  # inactive: the float weight
    f.active.fill_(1.0)
    out = f(w)
    assert torch.equal(out.detach(), lowbit.fake_lowbit(w, "ternary", 16))  # exactly Ŵ, not w + (Ŵ − w)
    c = torch.randn(8, 32, generator=torch.Generator().manual_seed(6))
    (out * c).sum().backward()
    assert torch.equal(w.grad, c)  # ∂Ŵ/∂W := identity
    f.eval()
    assert torch.equal(f(w).detach(), lowbit.fake_lowbit(w, "ternary", 16))  # low-bit in evaluation too


# --------------------------------------------------------------------------- config and export names


def test_config_and_scheme_names():
    assert QatConfig(kind="ternary").lowbit and not QatConfig(kind="ste").lowbit
    with pytest.raises(ConfigError, match="ternary option"):
        QatConfig(kind="binary", shrink=True)
    assert lowbit.export_scheme_name("ternary", 128, floats="fp8") == "ternary_g128+fp8"
    assert lowbit.export_scheme_name("ternary", 64, shrink=True) == "ternary_shrink_g64"
    assert lowbit.export_scheme_name("binary", 0) == "binary_row"
    assert get_export_scheme("ternary_g128+fp8").codec == "lzma-9"
    with pytest.raises(ConfigError, match="unknown export.scheme"):
        get_export_scheme("ternary_g128+fp4")


# --------------------------------------------------------------------------- the property on a tiny model


def _tiny_model(kind: str, group: int, shrink: bool = False, steps: int = 3):
    cfg = apply_overrides(get_preset("tiny"), ["model.vocab_size=64", "model.num_layers=2", "model.model_dim=32"])
    torch.manual_seed(0)
    model = GPT(cfg.model)
    qat = attach_qat(model, QatConfig(kind=kind, group_size=group, shrink=shrink))
    assert qat is not None and len(qat.owners) == 2 * 6  # q, k, v, o, up, down per block
    qat.update(0.0, 1.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):  # train a little so the weights are not the init
        x = torch.randint(0, 64, (4, 16), generator=g)
        model(x, torch.roll(x, -1, 1)).backward()
        opt.step()
        opt.zero_grad()
    qat.detach()  # what the trainer calls at the end: low-bit weights stay
    assert all(m.weight_fn is not None for m in qat.owners)
    return cfg, model, qat


@pytest.mark.parametrize("kind,group,shrink", [("ternary", 16, False), ("ternary", 0, True), ("binary", 8, False),
                                               ("ternary", 24, False)])
def test_trained_forward_equals_the_artifact_forward_bit_for_bit(kind, group, shrink, tmp_path):
    cfg, model, _ = _tiny_model(kind, group, shrink)
    model.eval()
    x = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        trained = model(x)
    name = lowbit.export_scheme_name(kind, group, shrink)
    res = export_model(model.state_dict(), cfg.export.__class__(scheme=name), roles=parameter_roles(model))
    path = tmp_path / "m.pgolf"
    path.write_bytes(res.blob)
    state, header = load_model_state(path)
    schemes = {t["scheme"] for t in header["tensors"].values()}
    assert lowbit.storage_scheme_name(kind, group, shrink) in schemes and header["codec"] == "lzma-9"
    fresh = GPT(cfg.model)
    fresh.load_state_dict(state, strict=True)
    fresh.eval()
    with torch.no_grad():
        loaded = fresh(x)
    assert torch.equal(trained, loaded)
    # and the float model is a different function (the low-bit weights matter)
    plain = GPT(cfg.model)
    plain.load_state_dict(model.state_dict())
    plain.eval()
    with torch.no_grad():
        assert not torch.equal(plain(x), trained)


def test_packed_matrices_are_about_1_6_and_1_bit_per_weight():
    cfg, model, _ = _tiny_model("ternary", 16, steps=0)
    sd, roles = model.state_dict(), parameter_roles(model)
    for kind, per in (("ternary", 5), ("binary", 8)):
        res = export_model(sd, cfg.export.__class__(scheme=lowbit.export_scheme_name(kind, 16)), roles=roles)
        for row in res.rows:
            if lowbit.is_lowbit_role(roles[row.name]):
                n = math.prod(row.shape)
                assert row.quant_bytes == math.ceil(n / per) + 2 * n // 16  # codes + fp16 scales
