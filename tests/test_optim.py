"""Tests of pgolf.optim: Newton–Schulz against float64 references, one Muon step against the
update formula, 2-process (gloo) Muon against 1 process, the optimizer split, and the schedules
against hand-computed values."""

from __future__ import annotations

import math
import socket
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

from pgolf.config import ModelConfig, OptimConfig, TrainConfig
from pgolf.model.gpt import GPT
from pgolf.optim import apply_step, build_optimizers
from pgolf.optim.muon import NS_COEFFS, Muon, newton_schulz
from pgolf.optim.schedule import lr_multiplier, muon_momentum

# --- Newton–Schulz -------------------------------------------------------------------------------


def ns_reference(G: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Float64 Newton–Schulz written out plainly: work on the wide orientation, X ← aX + bAX + cA²X."""
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.double()
    tall = X.shape[0] > X.shape[1]
    if tall:
        X = X.T
    X = X / (math.sqrt(float((X * X).sum())) + 1e-7)
    for _ in range(steps):
        A = X @ X.T
        X = a * X + b * (A @ X) + c * (A @ (A @ X))
    return X.T if tall else X


SHAPES = [(16, 48), (48, 16), (32, 32), (24, 40)]


@pytest.mark.parametrize("shape", SHAPES)
def test_newton_schulz_float64_matches_reference(shape: tuple[int, int]) -> None:
    G = torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    X = newton_schulz(G)
    assert X.dtype == torch.float64 and X.shape == G.shape
    torch.testing.assert_close(X, ns_reference(G), rtol=0, atol=1e-10)
    torch.testing.assert_close(newton_schulz(G, steps=2), ns_reference(G, steps=2), rtol=0, atol=1e-10)


def test_newton_schulz_acts_on_singular_values_only() -> None:
    """NS(G) = U p(S/‖G‖) Vᵀ with p the scalar quintic iterated 5 times (G = U S Vᵀ)."""
    G = torch.randn(20, 36, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    s = S / (torch.linalg.norm(G) + 1e-7)
    a, b, c = NS_COEFFS
    for _ in range(5):
        s = a * s + b * s**3 + c * s**5
    torch.testing.assert_close(newton_schulz(G), U @ torch.diag(s) @ Vh, rtol=0, atol=1e-10)


@pytest.mark.parametrize("shape", SHAPES)
def test_newton_schulz_bf16_close_to_float64(shape: tuple[int, int]) -> None:
    G = torch.randn(*shape, generator=torch.Generator().manual_seed(2))
    ref = ns_reference(G)
    Xb = newton_schulz(G.bfloat16())
    assert Xb.dtype == torch.bfloat16
    err = (Xb.double() - ref).norm() / ref.norm()
    assert err < 0.06  # measured ≈0.03: five bf16 iterations (eps 2⁻⁸) amplify rounding ~10×
    torch.testing.assert_close(newton_schulz(G.float()).double(), ref, rtol=0, atol=1e-4)  # fp32


@pytest.mark.parametrize("shape", [(32, 96), (96, 32), (64, 128), (40, 120)])
@pytest.mark.parametrize("seed", [0, 1])
def test_newton_schulz_singular_values_in_band(shape: tuple[int, int], seed: int) -> None:
    # Random Gaussian matrices with aspect ratio ≥ 2 are full rank and well conditioned, so after
    # Frobenius normalisation five iterations bring every σ into the quintic's band ≈[0.68, 1.14].
    G = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    s = torch.linalg.svdvals(newton_schulz(G))
    assert s.min() > 0.65 and s.max() < 1.2


def test_newton_schulz_batched_and_rejects_vectors() -> None:
    G = torch.randn(3, 8, 12, dtype=torch.float64)
    X = newton_schulz(G)
    for i in range(3):
        torch.testing.assert_close(X[i], ns_reference(G[i]), rtol=0, atol=1e-10)
    with pytest.raises(ValueError):
        newton_schulz(torch.randn(5))


# --- Muon ----------------------------------------------------------------------------------------


def test_one_muon_step_equals_formula() -> None:
    g = torch.Generator().manual_seed(0)
    shapes = [(12, 8), (8, 12), (6, 6)]
    params = [torch.nn.Parameter(torch.randn(*s, generator=g)) for s in shapes]
    grads = [torch.randn(*s, generator=g) for s in shapes]
    bufs0 = [torch.randn(*s, generator=g) for s in shapes]
    before = [p.detach().clone() for p in params]
    lr, mu = 0.03, 0.9
    opt = Muon(params, lr=lr, momentum=mu, backend_steps=5)
    for p, gr, b0 in zip(params, grads, bufs0, strict=True):
        p.grad = gr.clone()
        opt.state[p]["momentum_buffer"] = b0.clone()
    opt.step()
    for p, p0, gr, b0 in zip(params, before, grads, bufs0, strict=True):
        buf = mu * b0 + gr
        torch.testing.assert_close(opt.state[p]["momentum_buffer"], buf)
        x = newton_schulz((gr + mu * buf).bfloat16()) * max(1.0, p.shape[0] / p.shape[1]) ** 0.5
        expected = p0 - lr * x.float()
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-6)
    # the update is close to the float64 orthogonalisation, scaled
    p, p0, gr, b0 = params[0], before[0], grads[0], bufs0[0]
    ref = ns_reference(gr + mu * (mu * b0 + gr)) * math.sqrt(12 / 8)
    assert ((p0 - p.detach()).double() / lr - ref).norm() / ref.norm() < 0.06


def test_muon_plain_momentum_first_step_and_no_grad() -> None:
    p = torch.nn.Parameter(torch.randn(4, 6, dtype=torch.float64))
    q = torch.nn.Parameter(torch.randn(4, 6))
    p0, q0 = p.detach().clone(), q.detach().clone()
    opt = Muon([p, q], lr=0.1, momentum=0.5, nesterov=False)
    p.grad = torch.randn(4, 6, dtype=torch.float64)
    opt.step()  # q has no grad: untouched
    torch.testing.assert_close(p.detach(), p0 - 0.1 * newton_schulz(p.grad.bfloat16()).double(), rtol=0, atol=1e-12)
    assert torch.equal(q.detach(), q0)
    with pytest.raises(ValueError):
        Muon([torch.nn.Parameter(torch.randn(3))])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SHAPES_DIST = [(8, 4), (4, 8), (6, 6), (10, 3), (3, 5)]


def _make_problem() -> tuple[list[torch.nn.Parameter], list[list[torch.Tensor]]]:
    g = torch.Generator().manual_seed(7)
    params = [torch.nn.Parameter(torch.randn(*s, generator=g)) for s in SHAPES_DIST]
    grads = [[torch.randn(*s, generator=g) for s in SHAPES_DIST] for _ in range(3)]
    return params, grads


def _run_muon(params: list[torch.nn.Parameter], grads: list[list[torch.Tensor]]) -> tuple[list[torch.Tensor], list[int]]:
    """Three Muon steps (exercising the momentum buffers); returns the parameters and the indices
    of the matrices whose momentum this process holds."""
    opt = Muon(params, lr=0.05, momentum=0.95)
    for step_grads in grads:
        for p, gr in zip(params, step_grads, strict=True):
            p.grad = gr.clone()
        opt.step()
    owned = [i for i, p in enumerate(params) if "momentum_buffer" in opt.state[p]]
    return [p.detach().clone() for p in params], owned


def _worker(rank: int, world: int, port: int, out: dict) -> None:
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        params, grads = _make_problem()
        result, owned = _run_muon(params, grads)
        out[rank] = ([t.numpy() for t in result], owned)
    finally:
        tdist.destroy_process_group()


def test_muon_two_process_gloo_equals_one_process() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # same matmul blocking as the workers, so results are bitwise equal
    try:
        params, grads = _make_problem()
        single, owned = _run_muon(params, grads)
    finally:
        torch.set_num_threads(threads)
    assert owned == list(range(len(SHAPES_DIST)))
    with mp.get_context("spawn").Manager() as manager:
        out = manager.dict()
        mp.start_processes(_worker, args=(2, _free_port(), out), nprocs=2, join=True, start_method="spawn")
        results = {r: out[r] for r in range(2)}
    for r in range(2):
        got_params, got_owned = results[r]
        assert got_owned == [i for i in range(len(SHAPES_DIST)) if i % 2 == r]  # matrix i on rank i mod 2
        for got, ref in zip(got_params, single, strict=True):
            assert torch.equal(torch.from_numpy(got), ref)


# --- build_optimizers ----------------------------------------------------------------------------

TINY = dict(vocab_size=64, num_layers=3, model_dim=32, num_heads=4, num_kv_heads=2, mlp_mult=2)


@pytest.mark.parametrize("tie", [True, False])
def test_build_optimizers_partition_and_lrs(tie: bool) -> None:
    model = GPT(ModelConfig(**TINY, tie_embeddings=tie))
    cfg = OptimConfig(matrix_lr=0.01, scalar_lr=0.02, tied_embed_lr=0.03, embed_lr=0.4, head_lr=0.005,
                      beta1=0.8, beta2=0.9, adam_eps=1e-7)
    opts = build_optimizers(model, cfg)
    seen: list[int] = []
    for opt in opts:
        for g in opt.param_groups:
            assert g["base_lr"] == g["lr"]
            seen += [id(p) for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters())  # each exactly once
    names = {id(p): n for n, p in model.named_parameters()}
    lr_of = {names[id(p)]: (type(o).__name__, g["lr"]) for o in opts for g in o.param_groups for p in g["params"]}
    assert lr_of["tok_emb.weight"] == ("Adam", 0.03 if tie else 0.4)
    if not tie:
        assert lr_of["lm_head.weight"] == ("Adam", 0.005)
    assert lr_of["blocks.1.attn.c_k.weight"] == ("Muon", 0.01)
    assert lr_of["blocks.2.mlp.proj.weight"] == ("Muon", 0.01)
    for n in ("blocks.0.resid_mix", "blocks.0.attn.q_gain", "blocks.2.mlp_scale", "skip_weights"):
        assert lr_of[n] == ("Adam", 0.02)
    assert sum(kind == "Muon" for kind, _ in lr_of.values()) == 6 * 3
    adam = opts[0]
    assert adam.defaults["betas"] == (0.8, 0.9) and adam.defaults["eps"] == 1e-7
    assert adam.defaults["weight_decay"] == 0.0 and not adam.defaults["fused"]
    muon = next(o for o in opts if isinstance(o, Muon))
    assert muon.param_groups[0]["momentum"] == cfg.muon_momentum and muon.param_groups[0]["nesterov"]
    assert [type(o).__name__ for o in opts] == ["Adam"] * (1 if tie else 2) + ["Muon", "Adam"]


def test_apply_step_sets_every_group_from_its_base() -> None:
    """The one writer of step settings: lr = base_lr × lr_mult everywhere, weight_decay = base_wd × wd_mult,
    Muon's momentum; Adam keeps its betas and gets no momentum key; applying twice does not compound."""
    model = GPT(ModelConfig(**TINY))
    opts = build_optimizers(model, OptimConfig(matrix_lr=0.01, scalar_lr=0.02, adam_wd=0.04, muon_wd=0.09))
    betas = [g.get("betas") for o in opts for g in o.param_groups]
    for _ in range(2):
        apply_step(opts, SimpleNamespace(lr_mult=0.25, wd_mult=0.5, momentum=0.9))
    groups = [(o, g) for o in opts for g in o.param_groups]
    assert all(g["lr"] == g["base_lr"] * 0.25 and g["weight_decay"] == g["base_wd"] * 0.5 for _, g in groups)
    assert {g["base_wd"] for o, g in groups if isinstance(o, Muon)} == {0.09}
    assert all(g["momentum"] == 0.9 for o, g in groups if isinstance(o, Muon))
    assert not any("momentum" in g for o, g in groups if not isinstance(o, Muon))
    assert [g.get("betas") for _, g in groups] == betas


def test_optimizers_train_a_tiny_model() -> None:
    """A few steps with every optimizer lower the loss on a fixed batch (one layer: empty skip_weights)."""
    torch.manual_seed(0)
    model = GPT(ModelConfig(**{**TINY, "num_layers": 1}))
    assert model.skip_weights.numel() == 0
    opts = build_optimizers(model, OptimConfig())
    idx = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(1))
    losses = []
    for _ in range(8):
        loss = model(idx[:, :-1], idx[:, 1:])
        losses.append(loss.item())
        for o in opts:
            o.zero_grad(set_to_none=True)
        loss.backward()
        for o in opts:
            o.step()
    assert losses[-1] < losses[0] - 0.5


# --- schedules -----------------------------------------------------------------------------------


def test_lr_multiplier_warmdown_frac_wallclock() -> None:
    cfg = TrainConfig(max_wallclock_seconds=100.0, warmdown_frac=0.2)
    assert lr_multiplier(0, 0.0, cfg) == 1.0
    assert lr_multiplier(5, 80.0, cfg) == pytest.approx(1.0)  # decay starts at 80 % of the time
    assert lr_multiplier(5, 90.0, cfg) == pytest.approx(0.5)
    assert lr_multiplier(5, 95.0, cfg) == pytest.approx(0.25)
    assert lr_multiplier(5, 100.0, cfg) == 0.0
    assert lr_multiplier(5, 130.0, cfg) == 0.0  # clamped past the budget
    assert lr_multiplier(10**6, 50.0, cfg) == 1.0  # steps do not matter with a budget


def test_lr_multiplier_warmdown_frac_iterations() -> None:
    cfg = TrainConfig(max_wallclock_seconds=0.0, iterations=1000, warmdown_frac=0.25)
    assert lr_multiplier(0, 123.0, cfg) == 1.0
    assert lr_multiplier(750, 0.0, cfg) == pytest.approx(1.0)
    assert lr_multiplier(800, 0.0, cfg) == pytest.approx(0.8)
    assert lr_multiplier(900, 0.0, cfg) == pytest.approx(0.4)
    assert lr_multiplier(1000, 0.0, cfg) == 0.0
    assert lr_multiplier(5, 0.0, TrainConfig(max_wallclock_seconds=0, iterations=10, warmdown_frac=1.0)) == 0.5


def test_lr_multiplier_baseline_rule_wallclock() -> None:
    # 600 s budget, 1200-step window, 43.54 ms/step (the baseline's 8×H100 speed):
    # window = 1200 × 0.04354 = 52.248 s, so decay starts at 547.752 s.
    cfg = TrainConfig(max_wallclock_seconds=600.0, warmdown_iters=1200, warmdown_frac=0.0)
    dt = 0.04354
    assert lr_multiplier(0, 0.0, cfg) == 1.0
    assert lr_multiplier(10000, 10000 * dt, cfg) == 1.0  # 435.4 s: remaining 164.6 > window
    s = 13000
    elapsed = s * dt  # 566.02 s: remaining 33.98 s, window 52.248 s
    assert lr_multiplier(s, elapsed, cfg) == pytest.approx((600 - elapsed) / (1200 * dt))
    assert lr_multiplier(s, elapsed, cfg) == pytest.approx(0.650359, abs=1e-6)
    assert lr_multiplier(14000, 601.0, cfg) == 0.0


def test_lr_multiplier_baseline_rule_iterations() -> None:
    cfg = TrainConfig(max_wallclock_seconds=0.0, iterations=100, warmdown_iters=20, warmdown_frac=0.0)
    assert lr_multiplier(0, 0.0, cfg) == 1.0
    assert lr_multiplier(79, 0.0, cfg) == 1.0
    assert lr_multiplier(80, 0.0, cfg) == 1.0  # (100 − 80)/20
    assert lr_multiplier(90, 0.0, cfg) == 0.5
    assert lr_multiplier(99, 0.0, cfg) == pytest.approx(0.05)
    assert lr_multiplier(100, 0.0, cfg) == 0.0
    assert lr_multiplier(50, 0.0, TrainConfig(max_wallclock_seconds=0, warmdown_iters=0)) == 1.0


def test_slow_hardware_baseline_rule_decays_from_step_one() -> None:
    # 2 s/step: only 300 steps fit in 600 s, far fewer than warmdown_iters = 1200.
    base = dict(max_wallclock_seconds=600.0, warmdown_iters=1200)
    rule_b = TrainConfig(**base, warmdown_frac=0.0)
    rule_a = TrainConfig(**base, warmdown_frac=0.2)
    # after step 1: window = 1200 × 2 s = 2400 s > remaining 598 s → 598/2400
    assert lr_multiplier(1, 2.0, rule_b) == pytest.approx(598 / 2400)
    assert lr_multiplier(100, 200.0, rule_b) == pytest.approx(400 / 2400)
    assert lr_multiplier(1, 2.0, rule_a) == 1.0
    assert lr_multiplier(100, 200.0, rule_a) == 1.0
    assert lr_multiplier(270, 540.0, rule_a) == pytest.approx(0.5)  # (1 − 0.9)/0.2


def test_muon_momentum_warmup() -> None:
    cfg = OptimConfig(muon_momentum=0.95, muon_momentum_warmup_start=0.85, muon_momentum_warmup_steps=500)
    assert muon_momentum(0, cfg) == pytest.approx(0.85)
    assert muon_momentum(250, cfg) == pytest.approx(0.90)
    assert muon_momentum(100, cfg) == pytest.approx(0.87)
    assert muon_momentum(500, cfg) == pytest.approx(0.95)
    assert muon_momentum(10**6, cfg) == pytest.approx(0.95)
    assert muon_momentum(0, OptimConfig(muon_momentum_warmup_steps=0)) == 0.95


# --- optimizer techniques: decoupled WD, MuonEq-R, Polar Express, AdamW groups, WD taper, MIN_LR ------


def _one_step(p0: torch.Tensor, g: torch.Tensor, **kw) -> torch.Tensor:
    p = torch.nn.Parameter(p0.clone())
    opt = Muon([p], lr=0.1, momentum=0.0, nesterov=False, **kw)
    p.grad = g.clone()
    opt.step()
    return p.detach()


def test_muon_decoupled_weight_decay_is_exactly_a_shrink_before_the_update() -> None:
    g0 = torch.Generator().manual_seed(11)
    p0, g = torch.randn(24, 16, generator=g0), torch.randn(24, 16, generator=g0)
    plain, decayed = _one_step(p0, g), _one_step(p0, g, weight_decay=0.04)
    # p_wd − p_plain = p0·(1 − lr·λ) − p0 = −lr·λ·p0 (the update term is the same bf16 tensor)
    assert torch.allclose(decayed - plain, -0.1 * 0.04 * p0, atol=1e-6)
    assert torch.equal(_one_step(p0, torch.zeros_like(g), weight_decay=0.5), p0 * (1 - 0.1 * 0.5))


def test_muoneq_r_normalizes_rows_before_newton_schulz() -> None:
    g0 = torch.Generator().manual_seed(12)
    p0 = torch.randn(32, 16, generator=g0)
    g = torch.randn(32, 16, generator=g0) * torch.logspace(-2, 2, 32)[:, None]  # very unequal rows
    rn = _one_step(p0, g, row_normalize=True)
    ref = _one_step(p0, g / g.norm(dim=1, keepdim=True))
    assert torch.equal(rn, ref)
    assert not torch.allclose(rn, _one_step(p0, g))


def test_polar_express_per_iteration_coefficients_match_a_float64_reference() -> None:
    from pgolf.optim.muon import POLAR_EXPRESS_COEFFS

    g0 = torch.Generator().manual_seed(13)
    G = torch.randn(48, 20, generator=g0, dtype=torch.float64)
    X = G / (G.norm() + 1e-7)
    X = X.T  # rows > cols: work on the transpose
    for a, b, c in POLAR_EXPRESS_COEFFS:
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    ref = X.T
    got = newton_schulz(G, steps=5, coeffs=POLAR_EXPRESS_COEFFS)
    assert torch.allclose(got, ref, atol=1e-12)
    # and it is closer to orthogonal than the fixed quintic in the same five steps
    pe = torch.linalg.svdvals(got)
    qu = torch.linalg.svdvals(newton_schulz(G, steps=5))
    assert (pe - 1).abs().max() < (qu - 1).abs().max()
    with pytest.raises(ValueError, match="5 iterations"):
        Muon([torch.nn.Parameter(torch.zeros(4, 4))], backend_steps=4, ns="polar_express")
    with pytest.raises(ValueError, match="per-iteration"):
        newton_schulz(G, steps=3, coeffs=POLAR_EXPRESS_COEFFS)


def test_adamw_groups_and_weight_decay_wiring() -> None:
    torch.manual_seed(0)
    m = GPT(ModelConfig(vocab_size=64, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1))
    opts = build_optimizers(m, OptimConfig(adam_wd=0.04, embed_wd=0.085, muon_wd=0.095, muon_row_normalize=True,
                                           muon_ns="polar_express"))
    embed, muon, scalar = opts
    assert isinstance(embed, torch.optim.AdamW) and embed.param_groups[0]["weight_decay"] == 0.085
    assert isinstance(scalar, torch.optim.AdamW) and scalar.param_groups[0]["base_wd"] == 0.04
    assert muon.param_groups[0]["weight_decay"] == 0.095 and muon.param_groups[0]["row_normalize"]
    assert muon.param_groups[0]["ns"] == "polar_express"
    plain = build_optimizers(m, OptimConfig())
    assert type(plain[0]) is torch.optim.Adam and plain[1].param_groups[0]["weight_decay"] == 0.0


def test_per_group_adam_betas_from_config_strings() -> None:
    from pgolf.config import RunConfig, apply_overrides
    from pgolf.errors import ConfigError

    m = GPT(ModelConfig(vocab_size=64, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1, tie_embeddings=False))
    cfg = apply_overrides(RunConfig(), ["optim.embed_betas=0.8,0.95", "optim.scalar_betas=0.7,0.99", "optim.beta2=0.98"])
    embed, head, _, scalar = build_optimizers(m, cfg.optim)
    assert embed.param_groups[0]["betas"] == (0.8, 0.95)
    assert scalar.param_groups[0]["betas"] == (0.7, 0.99)
    assert head.param_groups[0]["betas"] == (0.9, 0.98)  # no override: the shared pair
    with pytest.raises(ConfigError, match="embed_betas"):
        apply_overrides(RunConfig(), ["optim.embed_betas=0.8"])


def test_wd_taper_and_min_lr_floor() -> None:
    from pgolf.optim.schedule import progress, wd_multiplier

    o = OptimConfig(wd_taper_start_frac=0.7, wd_taper_final_mult=0.5)
    assert wd_multiplier(0.0, o) == wd_multiplier(0.7, o) == 1.0
    assert wd_multiplier(0.85, o) == pytest.approx(0.75) and wd_multiplier(1.0, o) == pytest.approx(0.5)
    assert wd_multiplier(0.9, OptimConfig()) == 1.0
    t = TrainConfig(max_wallclock_seconds=100, warmdown_frac=0.5, min_lr_mult=0.1)
    assert lr_multiplier(0, 99.0, t) == pytest.approx(0.1)  # (1 − 0.99)/0.5 = 0.02 → floored
    assert lr_multiplier(0, 60.0, t) == pytest.approx(0.8)
    assert progress(0, 25.0, t) == 0.25 and progress(5, 0.0, TrainConfig(max_wallclock_seconds=0, iterations=20)) == 0.25


# --- parallel Muon ([03-23] PR #549): banks, reduce-scatter, sharded batched NS, all-gather --------------


def _parallel_problem():
    g = torch.Generator().manual_seed(17)
    shapes = [(16, 48), (16, 48), (48, 16), (32, 32), (16, 48)]
    params = [torch.randn(*s, generator=g) for s in shapes]
    grads = [[torch.randn(*s, generator=g) for s in shapes] for _ in range(3)]
    return params, grads


def _run_opt(cls, params, grads, scale: float = 1.0, **kw) -> list[torch.Tensor]:
    ps = [torch.nn.Parameter(p.clone()) for p in params]
    opt = cls(ps, lr=0.05, momentum=0.95, weight_decay=0.04, row_normalize=True, **kw)
    for step_grads in grads:
        for p, gr in zip(ps, step_grads, strict=True):
            p.grad = gr.clone() * scale
        opt.step()
    return [p.detach().clone() for p in ps]


def _parallel_worker(rank: int, world: int, port: int, out: dict) -> None:
    from pgolf.optim.parallel_muon import ParallelMuon

    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        params, grads = _parallel_problem()
        # local gradients whose rank mean is exactly the reference: 2·g on rank 0, 0 on rank 1
        result = _run_opt(ParallelMuon, params, grads, scale=2.0 if rank == 0 else 0.0)
        out[rank] = [t.numpy() for t in result]
    finally:
        tdist.destroy_process_group()


def test_parallel_muon_equals_plain_muon_on_one_and_two_gloo_processes() -> None:
    from pgolf.optim.parallel_muon import ParallelMuon

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        params, grads = _parallel_problem()
        plain = _run_opt(Muon, params, grads)
        one = _run_opt(ParallelMuon, params, grads)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(plain, one, strict=True))  # one process: the same numbers
    assert [len(b) for b in ParallelMuon.banks([torch.zeros(s) for s in [(16, 48), (16, 48), (48, 16)]])] == [2, 1]
    with mp.get_context("spawn").Manager() as manager:
        out = manager.dict()
        mp.start_processes(_parallel_worker, args=(2, _free_port(), out), nprocs=2, join=True, start_method="spawn")
        results = {r: out[r] for r in range(2)}
    for r in range(2):
        for got, ref in zip(results[r], plain, strict=True):
            assert torch.equal(torch.from_numpy(got), ref)


def _reference_clip(params, max_norm: float) -> None:
    """The clip written out: c = min(1, max_norm / (‖g‖ + 1e-6)), ‖g‖ in float64 over every gradient."""
    total = math.sqrt(sum(float(p.grad.double().square().sum()) for p in params))
    coef = torch.tensor(min(1.0, max_norm / (total + 1e-6)), dtype=torch.float64).float()
    for p in params:
        p.grad.mul_(coef)


def _run_clipped(cls, params, grads, vec, vgrads, scale: float, max_norm: float, clip=None) -> list[torch.Tensor]:
    """Muon-family on the matrices + SGD on one vector; gradients clipped to ``max_norm`` every step."""
    from pgolf.optim.clip import clip_gradients

    clip = clip or (lambda ps, opts, m: clip_gradients(ps, opts, m))
    ps = [torch.nn.Parameter(p.clone()) for p in params]
    v = torch.nn.Parameter(vec.clone())
    opts = [cls(ps, lr=0.05, momentum=0.95, weight_decay=0.04, row_normalize=True), torch.optim.SGD([v], lr=0.1)]
    for step_grads, vg in zip(grads, vgrads, strict=True):
        for p, gr in zip(ps, step_grads, strict=True):
            p.grad = gr.clone() * scale
        v.grad = vg.clone()  # already rank-averaged (what DDP hands over)
        clip([*ps, v], opts, max_norm)
        for o in opts:
            o.step()
    return [p.detach().clone() for p in [*ps, v]]


def _clip_problem():
    params, grads = _parallel_problem()
    g = torch.Generator().manual_seed(3)
    return params, grads, torch.randn(40, generator=g), [torch.randn(40, generator=g) for _ in grads]


def _clipped_worker(rank: int, world: int, port: int, out: dict) -> None:
    from pgolf.optim.parallel_muon import ParallelMuon

    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        params, grads, vec, vgrads = _clip_problem()
        res = _run_clipped(ParallelMuon, params, grads, vec, vgrads, 2.0 if rank == 0 else 0.0, max_norm=5.0)
        out[rank] = [t.numpy() for t in res]
    finally:
        tdist.destroy_process_group()


def test_parallel_muon_with_grad_clip_equals_plain_muon_clipped_on_the_mean_gradient() -> None:
    """The clip coefficient of parallel Muon comes from ‖mean gradient‖ assembled across ranks."""
    from pgolf.optim.parallel_muon import ParallelMuon

    params, grads, vec, vgrads = _clip_problem()
    norm = math.sqrt(sum(float(x.square().sum()) for x in [*grads[0], vgrads[0]]))
    assert norm > 5.0 * 4  # the clip binds strongly, so a wrong norm would show
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = lambda ps, opts, m: _reference_clip(ps, m)
        plain = _run_clipped(Muon, params, grads, vec, vgrads, 1.0, max_norm=5.0, clip=ref)
        torch_clip = _run_clipped(Muon, params, grads, vec, vgrads, 1.0, max_norm=5.0,
                                  clip=lambda ps, opts, m: torch.nn.utils.clip_grad_norm_(ps, m))
        unclipped = _run_clipped(Muon, params, grads, vec, vgrads, 1.0, max_norm=1e9)
        one = _run_clipped(ParallelMuon, params, grads, vec, vgrads, 1.0, max_norm=5.0)
    finally:
        torch.set_num_threads(threads)
    assert not torch.allclose(plain[-1], unclipped[-1])
    # torch's clip agrees with the written-out one up to its float32 norm (a bf16 Newton–Schulz flip at most)
    for a, b in zip(torch_clip, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=5e-3)
    for a, b in zip(one, plain, strict=True):
        assert torch.equal(a, b)
    with mp.get_context("spawn").Manager() as manager:
        out = manager.dict()
        mp.start_processes(_clipped_worker, args=(2, _free_port(), out), nprocs=2, join=True, start_method="spawn")
        results = {r: out[r] for r in range(2)}
    for r in range(2):
        for got, want in zip(results[r], plain, strict=True):
            assert torch.equal(torch.from_numpy(got), want)
