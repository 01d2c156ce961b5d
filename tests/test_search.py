"""pgolf.export.search / pgolf.export.solve and pgolf.quant.selective_prune: the knapsack against brute force, the budget
never exceeded (property test with random budgets), exact per-group byte accounting, a one-line
BudgetError when nothing fits, loss weights recovered from a known quadratic loss, plan verification,
and selective ±1 pruning against a reference."""

import functools
import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pgolf.artifact.streams import unpack
from pgolf.config import ModelConfig
from pgolf.errors import BudgetError
from pgolf.export.search import FAST_PACK, Measured, Option, Search, SearchSpace
from pgolf.export.solve import _neighbours, _prune_to_fit, choose, format_choices, search_budget, solve
from pgolf.model.gpt import GPT, parameter_roles
from pgolf.quant import grid, intgrid
from pgolf.quant.calib import HessianCollector
from pgolf.quant.gptq import hessian_error
from pgolf.quant.grid import dequantize_tensor
from pgolf.quant.selective_prune import apply_pruning, prune_order, pruned_cost

SPACE = SearchSpace(bits=(4, 6, 8), sdclip_k=(6.0, 12.0), gptq=True, lqer_rank=2, lqer_top=1, max_options=4)
CFG = ModelConfig(vocab_size=64, num_layers=2, model_dim=32, num_heads=2, num_kv_heads=1, mlp_mult=2)


@functools.lru_cache(maxsize=1)
def _model_and_hessians():
    """A tiny GPT whose matrices look trained (heavier-tailed than init), its declared roles and its
    input Hessians from random token batches."""
    torch.manual_seed(0)
    model = GPT(CFG)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _name, p in model.named_parameters():
            if p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05 * (1 + torch.rand(p.shape[0], 1, generator=g)))
                p.view(-1)[:: 97] *= 4  # a few outliers per matrix
    idx = torch.randint(0, CFG.vocab_size, (16, 32), generator=g)
    with HessianCollector(model) as hc:
        hc.run(idx)
        hessians, _ = hc.hessians()
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return sd, parameter_roles(model), hessians


@functools.lru_cache(maxsize=1)
def _search() -> Search:
    sd, roles, h = _model_and_hessians()
    s = Search(sd, roles, h, space=SPACE, settings=FAST_PACK)
    s.run_measurements()
    return s


def _size_range(s: Search) -> tuple[int, int]:
    small = s.settings.pack(s.tensors_for({g: ms[0].option for g, ms in s.measured.items()}), s.grouping)[0]
    big = s.settings.pack(s.tensors_for({g: ms[-1].option for g, ms in s.measured.items()}), s.grouping)[0]
    return len(small), len(big)


# --------------------------------------------------------------------------- the knapsack


def _m(group, b, e, i=0):
    return Measured(group, Option(intgrid.QuantSpec(bits=2 + i % 7)), b, e, e)


def _brute(measured, budget, w):
    best = None
    for combo in itertools.product(*measured.values()):
        if sum(m.bytes for m in combo) <= budget:
            v = sum(w[m.group] * m.herr for m in combo)
            best = v if best is None or v < best else best
    return best


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.lists(st.tuples(st.integers(1, 400), st.floats(0, 10)), min_size=1, max_size=4), min_size=1, max_size=4),
    st.integers(0, 1500),
    st.lists(st.floats(0.1, 5), min_size=4, max_size=4),
)
def test_choose_is_the_exact_knapsack_optimum(table, budget, ws):
    measured = {f"g{i}": [_m(f"g{i}", b, e, j) for j, (b, e) in enumerate(opts)] for i, opts in enumerate(table)}
    w = {f"g{i}": ws[i] for i in range(len(table))}
    plan = choose(measured, budget, w)
    ref = _brute(measured, budget, w)
    if ref is None:
        assert plan is None
        return
    assert plan is not None and set(plan) == set(measured)
    assert sum(m.bytes for m in plan.values()) <= budget
    assert sum(w[g] * m.herr for g, m in plan.items()) == pytest.approx(ref, rel=1e-9, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.integers(1, 5_000_000), min_size=1, max_size=3), min_size=1, max_size=5),
       st.integers(1, 20_000_000))
def test_choose_rounds_bytes_up_so_large_budgets_are_never_exceeded(table, budget):
    measured = {f"g{i}": [_m(f"g{i}", b, float(len(opts) - j), j) for j, b in enumerate(sorted(opts))]
                for i, opts in enumerate(table)}
    plan = choose(measured, budget)
    if plan is not None:
        assert sum(m.bytes for m in plan.values()) <= budget
    res = -(-budget // 20_000)
    if sum(-(-min(o) // res) * res for o in table) <= budget:  # feasible after rounding: found
        assert plan is not None


# --------------------------------------------------------------------------- the search


def test_group_bytes_are_exact_and_additive():
    s = _search()
    plan = {g: ms[len(ms) // 2] for g, ms in s.measured.items()}
    blob, rep = s.settings.pack(s.tensors_for({g: m.option for g, m in plan.items()}), s.grouping)
    by_stream = {st_.group: st_.compressed_bytes for st_ in rep.streams}
    for g, m in plan.items():
        assert by_stream[g] + by_stream.get(f"{g}:fp16", 0) == m.bytes, g
    fixed = sum(b for name, b in by_stream.items() if name.split(":")[0] not in plan)
    assert fixed == s.fixed_bytes()
    assert len(blob) == s.fixed_bytes() + sum(m.bytes for m in plan.values()) + (rep.total_bytes - rep.compressed_bytes)


def test_measured_options_are_a_pareto_frontier_with_fp16_and_lqer():
    s = _search()
    for _g, ms in s.measured.items():
        assert [m.bytes for m in ms] == sorted(m.bytes for m in ms)
        for a, b in itertools.combinations(ms, 2):  # none dominates another
            assert not (a.bytes <= b.bytes and a.herr < b.herr) or a.bytes == b.bytes
        assert ms[-1].herr <= ms[0].herr
    labels = [m.option.label for ms in s.measured.values() for m in ms]
    assert "fp16" in labels and any("lqer2" in x for x in labels) and any("gptq" in x for x in labels)


@settings(max_examples=25, deadline=None)
@given(st.floats(0.0, 1.0))
def test_search_never_returns_an_artifact_over_budget(frac):
    s = _search()
    lo, hi = _size_range(s)
    budget = int(0.95 * lo + frac * (1.1 * hi - 0.95 * lo))
    try:
        r = solve(s, budget, weights="hessian")
    except BudgetError as e:
        assert "\n" not in str(e) and "unreachable" in str(e)
        assert budget < lo
        return
    assert len(r.blob) <= budget and r.model_bytes == len(r.blob)
    back = unpack(r.blob)
    assert set(back) == set(s.state_dict)
    for name, qt in r.tensors.items():
        assert torch.equal(dequantize_tensor(back[name]), dequantize_tensor(qt)), name


def test_budget_just_below_the_smallest_plan_is_pruned_to_fit_or_refused():
    s = _search()
    lo, _ = _size_range(s)
    r = solve(s, lo - 3, weights="hessian")  # a few bytes under: selective pruning closes it
    assert len(r.blob) <= lo - 3 and r.pruned > 0
    with pytest.raises(BudgetError) as e:
        solve(s, lo // 2)
    msg = str(e.value)
    assert "\n" not in msg and "unreachable" in msg and f"{lo // 2:,}" in msg


def test_infeasible_budget_is_a_one_line_budget_error():
    sd, roles, h = _model_and_hessians()
    with pytest.raises(BudgetError) as e:
        search_budget(sd, roles, h, 500, space=SearchSpace(bits=(8,), sdclip_k=(12.0,), gptq=False, lqer_rank=0, max_options=1),
                      settings=FAST_PACK)
    assert "\n" not in str(e.value) and "500" in str(e.value)


def test_more_budget_never_raises_the_objective():
    s = _search()
    lo, hi = _size_range(s)
    objs = []
    for b in (lo + (hi - lo) // 8, lo + (hi - lo) // 3, hi + 1000):
        r = solve(s, b, weights="hessian")
        objs.append(sum(c.herr for c in r.choices))
    assert objs[0] >= objs[1] >= objs[2]
    assert all(c.option.bits == "fp16" for c in solve(s, hi + 1000, weights="hessian").choices)


def test_loss_weights_recover_a_known_quadratic_loss():
    """loss(sd) = Σ_g a_g Σ_{W∈g} tr(E H Eᵀ): Δloss is exactly a_g·herr, so w_g = a_g."""
    s = _search()
    sd, h = s.state_dict, s.hessians
    a = {g: 0.5 + i for i, g in enumerate(s.groups)}

    def loss(state):
        total = 0.0
        for g, names in s.groups.items():
            for n in names:
                e = state[n].double() - sd[n].double()
                total += a[g] * float(hessian_error(e, h[n]).sum()) if n in h else a[g] * float(e.square().sum())
        return total

    r = solve(s, _size_range(s)[0] * 2, loss_fn=loss, weights="loss", verify=3)
    assert r.weights_source == "loss"
    for g in s.groups:
        assert r.weights[g] == pytest.approx(a[g], rel=1e-6)
    losses = [c["loss"] for c in r.candidates]
    assert len(losses) >= 2 and all(x is not None for x in losses)
    best = min(r.candidates, key=lambda c: c["loss"])
    assert {c.group: c.option.label for c in r.choices} == best["plan"] and r.pruned == 0
    assert loss(s.dequantized(r.tensors)) == pytest.approx(best["loss"], rel=1e-9)


def test_neighbour_plans_fit_and_differ_in_two_groups():
    s = _search()
    lo, hi = _size_range(s)
    avail = (lo + hi) // 2 - s.fixed_bytes() - 400
    plan = choose(s.measured, avail)
    for v in _neighbours(plan, s.measured, {g: 1.0 for g in plan}, avail)[:5]:
        assert sum(m.bytes for m in v.values()) <= avail
        assert sum(v[g] != plan[g] for g in plan) == 2


def test_choices_table_lists_every_group_and_column():
    s = _search()
    r = solve(s, _size_range(s)[1], weights="hessian")
    text = format_choices(r)
    for col in ("group", "tensors", "bits", "clip", "GPTQ", "LQER", "bytes", "herr"):
        assert col in text.splitlines()[0]
    for g in s.groups:
        assert any(line.startswith(g) for line in text.splitlines())
    assert f"{r.model_bytes:,}" in text


def test_search_artifact_loads_into_the_gpt():
    """The blob holds exactly the tensors the search chose (every parameter, bit for bit after dequantization),
    and the GPT built from it scores within a few percent of the unquantized one."""
    s = _search()
    sd, _, _ = _model_and_hessians()
    r = solve(s, _size_range(s)[0] + 2000, weights="hessian")
    got = unpack(r.blob)
    assert set(got) == set(sd) == set(r.tensors)
    for n, qt in r.tensors.items():
        assert torch.equal(dequantize_tensor(got[n]), dequantize_tensor(qt)), n
    model, ref = GPT(CFG), GPT(CFG)
    model.load_state_dict({n: dequantize_tensor(qt) for n, qt in got.items()}, strict=True)
    ref.load_state_dict(sd)
    g = torch.Generator().manual_seed(3)
    idx, y = torch.randint(0, CFG.vocab_size, (4, 16), generator=g), torch.randint(0, CFG.vocab_size, (4, 16), generator=g)
    with torch.no_grad():
        lq, l0 = model(idx, y).item(), ref(idx, y).item()
    assert abs(lq - l0) < 0.1 * l0, (lq, l0)


# --------------------------------------------------------------------------- selective ±1 pruning


def test_prune_order_costs_match_reference_and_pruning_zeroes_exactly_n_ones():
    s = _search()
    plan = {g: ms[0].option for g, ms in s.measured.items()}
    tensors = s.tensors_for(plan)
    names = [n for ns in s.groups.values() for n in ns]
    order = prune_order(s.state_dict, tensors, s.hessians, names)
    assert len(order) > 0 and (order.cost[:-1] <= order.cost[1:]).all()
    # reference cost of a few entries: (w² − (w − q s)²) · H_jj
    for k in range(0, len(order), max(1, len(order) // 7)):
        name = order.names[order.tensor_index[k]]
        qt = tensors[name]
        cols = qt.shape[1]
        i, j = divmod(int(order.flat_index[k]), cols)
        p = grid.parse_scheme_name(qt.scheme)
        step = float(intgrid.expand_scale(qt.parts["scale"], cols, p.group_size)[i, j])
        q = int(qt.parts["q"][i, j])
        w = float(s.state_dict[name][i, j])
        ref = (w * w - (w - q * step) ** 2) * float(s.hessians[name][j, j])
        assert abs(q) == 1 and order.cost[k] == pytest.approx(ref, rel=1e-6, abs=1e-12)
    n = len(order) // 3
    pruned = apply_pruning(tensors, order, n)
    changed = 0
    for name in names:
        a, b = tensors[name].parts["q"], pruned[name].parts["q"]
        diff = a != b
        changed += int(diff.sum())
        assert (a[diff].abs() == 1).all() and (b[diff] == 0).all()
        for role in tensors[name].parts:
            if role != "q":
                assert torch.equal(tensors[name].parts[role], pruned[name].parts[role])
    assert changed == n
    assert pruned_cost(order, n) == pytest.approx(float(order.cost[:n].sum()))
    assert apply_pruning(tensors, order, 0)["tok_emb.weight"] is tensors["tok_emb.weight"]


def test_prune_to_fit_closes_a_small_overshoot():
    s = _search()
    tensors = s.tensors_for({g: ms[len(ms) // 2].option for g, ms in s.measured.items()})
    size = len(s.settings.pack(tensors, s.grouping)[0])
    blob, _, pruned, n = _prune_to_fit(s, tensors, size - 30, None, "budget", lambda m: None)
    assert len(blob) <= size - 30 and n > 0
    order = prune_order(s.state_dict, tensors, s.hessians, [x for ns in s.groups.values() for x in ns])
    ref = apply_pruning(tensors, order, n)
    for name in tensors:
        assert torch.equal(ref[name].parts.get("q", torch.zeros(0)), pruned[name].parts.get("q", torch.zeros(0)))
