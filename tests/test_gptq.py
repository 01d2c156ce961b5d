"""pgolf.quant.gptq and pgolf.quant.calib: GPTQ against a float64 OBS reference and plain rounding
(H = I equals rounding; lower Hessian-weighted error on correlated calibration data), dead columns,
act-order un-permutation; Hessians from hooks against XᵀX by hand; calibration sources (time budget,
never validation, self-generation); the whole-model driver and its cache."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from pgolf.config import ModelConfig
from pgolf.errors import ConfigError
from pgolf.model.gpt import GPT, count_params, parameter_roles, rms_norm
from pgolf.quant import grid, intgrid
from pgolf.quant.calib import (
    HessianCollector,
    calibrate_from_generated,
    calibrate_from_train,
    generate_tokens,
)
from pgolf.quant.gptq import (
    ModelQuantizer,
    gptq_quantize,
    hessian_error,
    quantize_gptq,
    quantize_model,
    quantize_weight,
)
from pgolf.quant.intgrid import QuantSpec, compute_scale, dequantize_grid, quantize_rtn, quantize_with_scale
from pgolf.quant.lqer import LqerSpec


def _calib(n=600, cols=40, seed=0, scale_cols=True):
    """Correlated inputs X [n, cols] and H = XᵀX / n (float64)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(cols, cols, generator=g, dtype=torch.float64) * 0.5 + torch.eye(cols, dtype=torch.float64)
    x = torch.randn(n, cols, generator=g, dtype=torch.float64) @ mix
    if scale_cols:
        x = x * torch.logspace(-1, 0.5, cols, dtype=torch.float64)
    return x, x.T @ x / n


def _weight(rows=16, cols=40, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, cols, generator=g) * 0.05


def _ref_obs(w, h, step, m, damp=0.01, act_order=True):
    """Column-by-column OBS quantization in float64 with the explicit inverse Hessian downdate
    (the formulation GPTQ's Cholesky trick reproduces)."""
    w = w.double().clone()
    h = h.double().clone()
    dead = h.diagonal() == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    h += damp * h.diagonal().mean() * torch.eye(h.shape[0], dtype=torch.float64)
    order = torch.argsort(h.diagonal(), descending=True, stable=True) if act_order else torch.arange(h.shape[0])
    hinv = torch.linalg.inv(h)
    q = torch.zeros_like(w)
    for j in order.tolist():
        qj = torch.round(w[:, j] / step[:, j]).clamp(-m, m)
        q[:, j] = qj
        e = (w[:, j] - qj * step[:, j]) / hinv[j, j]
        w -= e[:, None] * hinv[j][None, :]
        hinv = hinv - torch.outer(hinv[:, j], hinv[j]) / hinv[j, j]
    return q.to(torch.int8)


@pytest.mark.parametrize("bits,group", [(3, 0), (4, 16), (6, 0), (8, 12)])
@pytest.mark.parametrize("block", [1, 7, 128])
def test_gptq_equals_float64_obs_reference(bits, group, block):
    w = _weight()
    _, h = _calib()
    s = compute_scale(w, QuantSpec(bits=bits, group_size=group, clip="max"))
    m = 2 ** (bits - 1) - 1
    q = gptq_quantize(w.double(), h, s, bits, group, block_size=block, dtype=torch.float64)
    ref = _ref_obs(w, h, intgrid.expand_scale(s, 40, group).double(), m)
    assert torch.equal(q, ref)


@pytest.mark.parametrize("bits", [2, 4, 6, 8])
@pytest.mark.parametrize("group", [0, 16])
def test_gptq_with_identity_hessian_is_plain_rounding(bits, group):
    w = _weight(seed=bits)
    for clip in ("max", "sdclip", "gptq_lite"):
        spec = QuantSpec(bits=bits, group_size=group, clip=clip, k=4.0)
        q0, s0 = quantize_rtn(w, spec)
        assert torch.equal(gptq_quantize(w, torch.eye(40), s0, bits, group), q0)
        assert torch.equal(gptq_quantize(w, torch.eye(40) * 3.0, s0, bits, group, damp=0.0), q0)


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("group", [0, 16])
def test_gptq_beats_plain_rounding_on_its_calibration_data(bits, group):
    w = _weight(rows=24, cols=40, seed=10 + bits)
    x, h = _calib(seed=bits)
    for clip in ("max", "sdclip", "gptq_lite"):
        spec = QuantSpec(bits=bits, group_size=group, clip=clip, k=4.0, gptq=True)
        q, s, stats = quantize_gptq(w, h, spec)
        w_hat = dequantize_grid(q, s, group, torch.float64)
        q_rtn = quantize_with_scale(w.float(), s, bits, group)
        w_rtn = dequantize_grid(q_rtn, s, group, torch.float64)
        # the output error on the calibration inputs themselves: ‖X(W − Ŵ)ᵀ‖² / n
        out_err = float(((x @ (w.double() - w_hat).T) ** 2).sum() / x.shape[0])
        out_rtn = float(((x @ (w.double() - w_rtn).T) ** 2).sum() / x.shape[0])
        assert out_err < out_rtn, (bits, group, clip)
        assert stats.herr == pytest.approx(out_err, rel=1e-9) and stats.herr_rtn == pytest.approx(out_rtn, rel=1e-9)
        assert int(q.abs().max()) <= 2 ** (bits - 1) - 1


def test_gptq_lite_inside_gptq_picks_per_row_minimum():
    w = _weight(rows=12, cols=40, seed=3)
    _, h = _calib(seed=3)
    q, s, stats = quantize_gptq(w, h, QuantSpec(bits=4, clip="gptq_lite", gptq=True))
    got = hessian_error(w.double() - dequantize_grid(q, s, 0, torch.float64), h)
    for p in intgrid.GPTQ_LITE_CANDIDATES:
        spec_p = QuantSpec(bits=4, clip="max" if p == 1.0 else "percentile", clip_q=p, gptq=True)
        qp, sp, _ = quantize_gptq(w, h, spec_p)
        ep = hessian_error(w.double() - dequantize_grid(qp, sp, 0, torch.float64), h)
        assert bool((got <= ep * (1 + 1e-9)).all())
    assert stats.herr == pytest.approx(float(got.sum()), rel=1e-9)


def test_dead_columns_are_zeroed_and_decoupled():
    w = _weight(rows=10, cols=40, seed=4)
    x, _ = _calib(seed=4)
    dead = [5, 17, 39]
    x[:, dead] = 0.0
    h = x.T @ x / x.shape[0]
    s = compute_scale(w, QuantSpec(bits=4, clip="max"))
    q = gptq_quantize(w.double(), h, s, 4, damp=0.0, dtype=torch.float64)
    assert not q[:, dead].any()
    # The other columns are exactly GPTQ on the problem without the dead inputs.
    keep = [j for j in range(40) if j not in dead]
    q_red = gptq_quantize(w.double()[:, keep], h[keep][:, keep], s, 4, damp=0.0, dtype=torch.float64)
    assert torch.equal(q[:, keep], q_red)
    # A fully dead Hessian: everything is zero, nothing is NaN.
    assert not gptq_quantize(w, torch.zeros(40, 40), s, 4).any()


def test_act_order_unpermutes():
    w = _weight(rows=8, cols=40, seed=5)
    _, h = _calib(seed=5)
    s = compute_scale(w, QuantSpec(bits=5, group_size=16, clip="max"))
    perm = torch.argsort(h.diagonal(), descending=True, stable=True)
    assert not torch.equal(perm, torch.arange(40))
    q = gptq_quantize(w.double(), h, s, 5, 16, act_order=True, dtype=torch.float64)
    # the same run done by hand: permute W, H and the column steps, no reordering, un-permute
    step = intgrid.expand_scale(s, 40, 16)[:, perm]
    ref = _ref_obs(w[:, perm], h[perm][:, perm], step.double(), 15, act_order=False)
    assert torch.equal(q, ref[:, torch.argsort(perm)])
    # and diagonal H (no coupling) with distinct entries: any order gives plain rounding
    hd = torch.diag(torch.linspace(0.1, 4.0, 40).flip(0)[torch.randperm(40, generator=torch.Generator().manual_seed(0))])
    assert torch.equal(gptq_quantize(w, hd, s, 5, 16, act_order=True), quantize_with_scale(w, s, 5, 16))


def test_not_positive_definite_hessian_gets_more_damping():
    w = _weight(rows=4, cols=40)
    x, _ = _calib(n=5)  # rank 5 < 40 columns: singular without damping
    h = x.T @ x / 5
    s = compute_scale(w, QuantSpec(bits=6, clip="max"))
    q = gptq_quantize(w, h, s, 6, damp=0.0)
    assert q.shape == w.shape
    with pytest.raises(ValueError, match="finite square"):
        gptq_quantize(w, torch.full((40, 40), float("nan")), s, 6)


# --------------------------------------------------------------------------- calibration

CFG = ModelConfig(vocab_size=48, num_layers=2, model_dim=32, num_heads=4, num_kv_heads=2)


def _model(tied=True, seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(**{**CFG.__dict__, "tie_embeddings": tied})
    m = GPT(cfg)
    with torch.no_grad():  # give the zero-initialised projections some weight
        for p in m.parameters():
            if p.ndim == 2 and not p.any():
                p.normal_(0, 0.05)
    return m


def test_final_norm_hook_point_leaves_the_model_unchanged():
    m = _model()
    assert list(m.final_norm.parameters()) == [] and list(m.final_norm.buffers()) == []
    assert not any("final_norm" in k for k in m.state_dict())
    assert m.num_params() == count_params(CFG)
    x = torch.randn(2, 5, 32)
    assert torch.equal(m.final_norm(x), rms_norm(x))


@pytest.mark.parametrize("tied", [True, False])
def test_hook_hessians_equal_hand_computed(tied):
    m = _model(tied).double()
    idx = torch.randint(0, 48, (3, 11), generator=torch.Generator().manual_seed(1))
    seen = {}
    hooks = [
        m.blocks[1].attn.c_v.register_forward_pre_hook(lambda mod, i: seen.__setitem__("v", i[0].detach())),
        m.blocks[-1].register_forward_hook(lambda mod, i, o: seen.__setitem__("last", o.detach())),
    ]
    with torch.no_grad():
        m(idx)
    for h in hooks:
        h.remove()
    with HessianCollector(m, accum_dtype=torch.float64) as hc:
        assert len(hc.names) == 2 * 6 + 1
        hc.run(idx)
    hs, tokens = hc.hessians()
    assert tokens == 33
    xv = seen["v"].reshape(-1, 32)
    torch.testing.assert_close(hs["blocks.1.attn.c_v.weight"].double(), xv.T @ xv / 33, rtol=1e-6, atol=0)
    xf = rms_norm(seen["last"]).reshape(-1, 32)  # the LM-head input
    head = "tok_emb.weight" if tied else "lm_head.weight"
    assert (head in hs) and (("lm_head.weight" in hs) == (not tied))
    torch.testing.assert_close(hs[head].double(), xf.T @ xf / 33, rtol=1e-6, atol=0)
    assert all(h.dtype == torch.float32 and h.device.type == "cpu" for h in hs.values())


def test_collector_names_filter():
    m = _model()
    hc = HessianCollector(m, names=["blocks.0.mlp.fc.weight", "tok_emb.weight"])
    assert sorted(hc.names) == ["blocks.0.mlp.fc.weight", "tok_emb.weight"]
    with pytest.raises(ConfigError, match="no hook point"):
        HessianCollector(m, names=["blocks.9.mlp.fc.weight"])


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class _TrainLoader:
    """A DistributedTokenLoader stand-in whose every batch costs 1 s of a fake clock."""

    def __init__(self, clock, files=("data/fineweb_train_000000.bin",), cost=1.0):
        self.files = list(files)
        self.clock, self.cost, self.calls = clock, cost, 0
        self.gen = torch.Generator().manual_seed(7)

    def next_batch(self, global_tokens, seq_len, grad_accum):
        self.calls += 1
        self.clock.t += self.cost
        x = torch.randint(0, 48, (global_tokens // seq_len // grad_accum, seq_len), generator=self.gen)
        return x, x


def test_train_calibration_respects_reserve():
    m = _model()
    clock = _Clock()
    loader = _TrainLoader(clock)
    c = calibrate_from_train(m, loader, batch_tokens=64, seq_len=16, reserve_seconds=3.5, clock=clock)
    assert (c.batches, loader.calls, c.source) == (3, 3, "train")
    assert c.seconds == 3.0 <= 3.5 and c.tokens == 3 * 64
    # same Hessians as collecting those three batches by hand
    replay = _TrainLoader(_Clock())
    with HessianCollector(m) as hc:
        for _ in range(3):
            hc.run(replay.next_batch(64, 16, 1)[0])
    ref, _ = hc.hessians()
    assert set(ref) == set(c.hessians)
    for k in ref:
        torch.testing.assert_close(c.hessians[k], ref[k])
    c0 = calibrate_from_train(m, _TrainLoader(clock), batch_tokens=64, seq_len=16, reserve_seconds=0.0, clock=clock)
    assert c0.batches == 0 and c0.hessians == {} and c0.tokens == 0
    c2 = calibrate_from_train(m, _TrainLoader(clock), batch_tokens=64, seq_len=16, reserve_seconds=100, max_batches=2, clock=clock)
    assert c2.batches == 2
    slow = _TrainLoader(clock, cost=2.0)  # 2 s batches in a 5 s reserve: the third would end at 6 s
    assert calibrate_from_train(m, slow, batch_tokens=64, seq_len=16, reserve_seconds=5.0, clock=clock).batches == 2


class _ValData:
    def __init__(self):
        self.tokens = np.arange(100, dtype=np.uint16)
        self.raw_bytes = None


def test_calibration_never_accepts_validation():
    m = _model()
    clock = _Clock()
    val_loader = _TrainLoader(clock, files=["/d/fineweb_train_000000.bin", "/d/fineweb_val_000000.bin"])
    split_loader = _TrainLoader(clock)
    split_loader.split = "val"
    bad = [torch.arange(100), np.arange(100), _ValData(), val_loader, split_loader, object(), [torch.arange(10)]]
    for src in bad:
        with pytest.raises(ConfigError):
            calibrate_from_train(m, src, batch_tokens=64, seq_len=16, reserve_seconds=10, clock=clock)
    assert val_loader.calls == 0 and split_loader.calls == 0  # refused before reading anything


def test_real_loader_train_shards_accepted_val_shards_refused(tmp_path):
    loader_mod = pytest.importorskip("pgolf.data.loader")
    shards = pytest.importorskip("pgolf.data.shards")
    toks = np.random.default_rng(0).integers(0, 48, 4096).astype(np.uint16)
    shards.write_shard(tmp_path / "fineweb_train_000000.bin", toks)
    shards.write_shard(tmp_path / "fineweb_val_000000.bin", toks)
    m = _model()
    train = loader_mod.DistributedTokenLoader([tmp_path / "fineweb_train_000000.bin"], vocab_size=48)
    c = calibrate_from_train(m, train, batch_tokens=128, seq_len=16, reserve_seconds=60, max_batches=2)
    assert c.batches == 2 and c.tokens == 256 and len(c.hessians) == 13
    val = loader_mod.DistributedTokenLoader([tmp_path / "fineweb_val_000000.bin"], vocab_size=48)
    with pytest.raises(ConfigError, match="validation"):
        calibrate_from_train(m, val, batch_tokens=128, seq_len=16, reserve_seconds=60)
    with pytest.raises(ConfigError, match="never validation"):
        calibrate_from_train(m, loader_mod.ValData(toks, None), batch_tokens=128, seq_len=16, reserve_seconds=60)


def test_generated_tokens_are_seeded_and_greedy_follows_the_model():
    m = _model()
    a = generate_tokens(m, n_seqs=3, seq_len=6, seed=5, batch_size=2)
    b = generate_tokens(m, n_seqs=3, seq_len=6, seed=5, batch_size=2)
    c = generate_tokens(m, n_seqs=3, seq_len=6, seed=6, batch_size=2)
    assert a.shape == (3, 6) and a.dtype == torch.int64 and torch.equal(a, b) and not torch.equal(a, c)
    assert int(a.min()) >= 0 and int(a.max()) < 48
    g = generate_tokens(m, n_seqs=2, seq_len=5, temperature=0.0, seed=1)
    with torch.no_grad():
        for t in range(1, 5):
            assert torch.equal(g[:, t], m(g[:, :t])[:, -1].argmax(dim=-1))
    assert m.training  # mode restored
    cal = calibrate_from_generated(m, n_seqs=3, seq_len=6, batch_size=2, seed=5)
    assert (cal.source, cal.batches, cal.tokens) == ("generated", 2, 18)
    with HessianCollector(m) as hc:
        hc.run(a[:2])
        hc.run(a[2:])
    ref, _ = hc.hessians()
    for k in ref:
        torch.testing.assert_close(cal.hessians[k], ref[k])


_DDP_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from pgolf import dist
    from pgolf.config import ModelConfig
    from pgolf.model.gpt import GPT
    from pgolf.quant.calib import HessianCollector
    from safetensors.torch import save_file
    info = dist.init("cpu")
    torch.manual_seed(0)
    m = GPT(ModelConfig(vocab_size=48, num_layers=2, model_dim=32, num_heads=4, num_kv_heads=2))
    idx = torch.randint(0, 48, (4, 9), generator=torch.Generator().manual_seed(3))
    with HessianCollector(m, accum_dtype=torch.float64) as hc:
        hc.run(idx[info.rank :: info.world_size])
    hs, tokens = hc.hessians()
    if info.rank == 0:
        save_file({k: v.contiguous() for k, v in hs.items()}, sys.argv[1], metadata={"tokens": str(tokens)})
    dist.cleanup()
    """
)


def test_two_rank_hessians_equal_one_process(tmp_path):
    from safetensors import safe_open

    script, out = tmp_path / "calib_ddp.py", tmp_path / "h.safetensors"
    script.write_text(_DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), str(out)],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    torch.manual_seed(0)
    m = GPT(CFG)
    idx = torch.randint(0, 48, (4, 9), generator=torch.Generator().manual_seed(3))
    with HessianCollector(m, accum_dtype=torch.float64) as hc:
        hc.run(idx)
    ref, tokens = hc.hessians()
    with safe_open(str(out), "pt") as f:
        assert int(f.metadata()["tokens"]) == tokens == 36
        for k in ref:
            torch.testing.assert_close(f.get_tensor(k), ref[k], rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------- model driver


def _calibrated():
    m = _model(seed=2)
    cal = calibrate_from_generated(m, n_seqs=4, seq_len=16, batch_size=4, seed=0)
    sd = {k: v.detach().clone() for k, v in m.state_dict().items()}
    return m, sd, cal.hessians


def test_model_gptq_including_tied_embedding():
    m, sd, hs = _calibrated()
    mats = [k for k, v in sd.items() if v.ndim == 2 and k.startswith("blocks.") and "resid_mix" not in k]
    specs = {k: QuantSpec(bits=3, gptq=True, clip="gptq_lite") for k in mats}
    specs["tok_emb.weight"] = QuantSpec(bits=4, clip="sdclip", k=4.0, gptq=True)
    res = quantize_model(sd, specs, hs, policy=grid.int8_policy_for(parameter_roles(m)))
    for name in [*mats, "tok_emb.weight"]:
        st = res.stats[name]
        assert st.herr < st.herr_rtn, name
        w_hat = grid.dequantize_tensor(res.tensors[name])
        assert st.herr == pytest.approx(float(hessian_error(sd[name].double() - w_hat.double(), hs[name]).sum()), rel=1e-9)
        assert st.scheme == res.tensors[name].scheme == specs[name].scheme and st.bits == specs[name].bits
        assert st.raw_bytes == res.tensors[name].nbytes and 0 <= st.entropy_bits <= specs[name].bits
    # tensors without a spec follow the policy: here the baseline's (control role → fp32), by default
    # float_policy (fp16 for fp32 floats); the result loads into the model
    assert res.tensors["blocks.0.attn_scale"].scheme == "fp32"
    default = quantize_model(sd, {k: specs[k] for k in mats[:1]}, hs)
    assert default.tensors["blocks.0.attn_scale"].scheme == "fp16" and default.tensors["tok_emb.weight"].scheme == "fp16"
    m2 = GPT(m.cfg)
    m2.load_state_dict(grid.dequantize_state_dict(res.tensors), strict=True)
    assert list(res.tensors) == list(sd)


def test_model_quantizer_caches_and_lqer_top_k():
    _, sd, hs = _calibrated()
    mats = [k for k, v in sd.items() if v.ndim == 2 and "resid_mix" not in k and "skip" not in k]
    mq = ModelQuantizer(sd, hs)
    specs = {k: QuantSpec(bits=3) for k in mats}
    a = mq.quantize(specs)
    b = mq.quantize({**specs, mats[0]: QuantSpec(bits=5)})
    assert all(a.tensors[k] is b.tensors[k] for k in mats[1:])  # cached, not recomputed
    assert b.stats[mats[0]].mse < a.stats[mats[0]].mse
    c = mq.quantize(specs, LqerSpec(top_k=2, rank=2))
    errs = {k: a.stats[k].mse * a.stats[k].numel for k in mats}
    top = sorted(errs, key=lambda k: -errs[k])[:2]
    for k in mats:
        if k in top:
            assert c.tensors[k].scheme == f"{specs[k].scheme}+lqer2" and c.stats[k].lqer_rank == 2
            assert c.stats[k].mse < a.stats[k].mse and c.stats[k].raw_bytes > a.stats[k].raw_bytes
        else:
            assert c.tensors[k] is a.tensors[k]


def test_driver_errors_are_one_line_config_errors():
    _, sd, hs = _calibrated()
    with pytest.raises(ConfigError, match="blocks.0.attn_scale"):
        quantize_model(sd, {"blocks.0.attn_scale": QuantSpec(bits=4)})
    with pytest.raises(ConfigError, match="needs a Hessian"):
        quantize_model(sd, {"blocks.0.mlp.fc.weight": QuantSpec(bits=4, gptq=True)})
    with pytest.raises(ConfigError, match="not in the state dict"):
        quantize_model(sd, {"nope": QuantSpec()})
    with pytest.raises(ConfigError, match="Hessian shape"):
        quantize_weight(sd["blocks.0.mlp.proj.weight"], QuantSpec(gptq=True), hs["blocks.0.mlp.fc.weight"])
    with pytest.raises(ConfigError, match="unknown quant scheme"):
        quantize_model(sd, {"blocks.0.mlp.fc.weight": "int4"})
    r = quantize_weight(sd["blocks.0.mlp.fc.weight"], "fp16")
    assert r.stats.bits == 16 and r.stats.entropy_bits is None
