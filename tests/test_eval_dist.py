"""Every evaluation method on 2 ranks (gloo, 2 CPU processes): legal, and equal to the one-process run.

One spawn of two processes runs every method through :func:`pgolf.eval.methods.run_method` (the path
``pgolf eval`` takes) on a stream and on perturbed copies of it (tests/test_eval_legality.py), and
hands back the per-target losses gathered over the ranks. Here, on one process, the same runs:

1. causality at 2 ranks: targets before the perturbation keep their loss bit for bit;
2. single pass at 2 ranks: every target of the method's set scored exactly once, by exactly one rank;
3. 2 ranks vs 1: bit for bit where the method's per-target losses do not depend on how the work is
   split (plain, sliding, LoRA TTT, the mixer on them), to float32 rounding where gradients are summed
   over the ranks (phased, sgd); warm-started LoRA A (documents dealt round-robin) is only causal.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
from test_eval_legality import BOS, TABLES, TTT_CASES, L, V, Val, _gpt, _perturbed, _stream
from test_optim import _free_port

from pgolf.config import apply_overrides
from pgolf.eval.clock import EvalClock
from pgolf.presets import get_preset

pytestmark = pytest.mark.usefixtures("one_thread")
TTT_BASE = ["eval.ttt.chunk=8", "eval.ttt.batch_docs=3", "eval.ttt.lora_lr=0.02", "eval.ttt.sgd_batch_seqs=2"]
MIX = ["eval.mix.max_order=3", "eval.mix.update_every=40", "eval.mix.tilt_min_order=1"]
CASES = {  # name: (method, settings, how 2 ranks compare with 1: "equal", "close" or None)
    "plain": ("plain", [], "equal"),
    "sliding": ("sliding", ["eval.sliding.doc_aware=true"], "equal"),
    "lora": ("ttt", TTT_CASES["lora"], "equal"),
    "lora_warm_a": ("ttt", TTT_CASES["lora_all_targets_warm_a"], None),
    "phased": ("ttt", TTT_CASES["phased"], "close"),
    "sgd": ("ttt", TTT_CASES["sgd"], "close"),
    "mix": ("mix", ["eval.mix.mode=linear"], "equal"),
    "sliding+mix": ("sliding+mix", ["eval.mix.mode=tilt"], "equal"),
    "ttt+mix": ("ttt+mix", ["eval.ttt.mode=lora", "eval.mix.mode=linear"], "equal"),
}
N_TOKENS = 300
CUTS = [int(t) for t in np.random.default_rng(0).integers(N_TOKENS // 4, N_TOKENS - 2, 2)]


def _cfg(case: str):
    method, sets, _ = CASES[case]
    return method, apply_overrides(get_preset("tiny"), [
        f"model.vocab_size={V}", f"model.embed.bos_id={BOS}", f"eval.seq_len={L}", f"eval.batch_tokens={8 * L}",
        "eval.sliding.stride=8", "eval.compile=false", "eval.budget_seconds=600", *TTT_BASE, *MIX, *sets])


def _streams() -> list[np.ndarray]:
    base = _stream(N_TOKENS, 4)
    return [base] + [_perturbed(base, t, t) for t in CUTS]


def _run_all() -> dict[str, np.ndarray]:
    """Every case on every stream: the gathered losses and counts (a collective under torchrun)."""
    from pgolf.eval.methods import run_method
    from pgolf.eval.scoring import gathered

    out = {}
    model = _gpt()
    for case in CASES:
        method, cfg = _cfg(case)
        for i, tok in enumerate(_streams()):
            r = run_method(method, model, Val(tok, None), TABLES, cfg, device=torch.device("cpu"), amp_dtype="fp32",
                           score="table", clock=EvalClock(cfg.eval.budget_seconds))
            g = gathered(r.scored, torch.device("cpu"))
            out[f"{case}/{i}/losses"] = g.losses
            out[f"{case}/{i}/counts"] = g.counts
            out[f"{case}/{i}/bpb"] = np.array([r.scored.result.val_bpb])
    return out


class RankOneTight(EvalClock):
    """Rank 1 affords the first ``n_ok`` projections of kind ``what`` and no more; rank 0 affords all."""

    def __init__(self, what: str, n_ok: int = 0) -> None:
        super().__init__(1000.0)
        self.what, self.n_ok = what, n_ok

    def affords(self, seconds: float, what: str = "") -> bool:
        if what != self.what or tdist.get_rank() != 1:
            return True
        self.n_ok -= 1
        return self.n_ok >= 0


def _budget_facts(rank: int) -> dict:
    """What each rank did when only rank 1's clock says no (the degradation must be everyone's)."""
    import time

    from pgolf.errors import BudgetError
    from pgolf.eval.scoring import gathered
    from pgolf.eval.ttt import evaluate_ttt

    facts = {}
    clock = EvalClock(100.0, start=time.perf_counter() - (99.5 if rank == 1 else 0.0))
    try:
        clock.require(1.0, "x")
        facts["require_raised"] = False
    except BudgetError:
        facts["require_raised"] = True
    clock = EvalClock(100.0, start=time.perf_counter() - (50.0 if rank == 1 else 0.0))
    clock.agree_start()
    facts["agreed_elapsed"] = clock.elapsed()
    model = _gpt()
    tok = _stream(480, 3)
    ttt = lambda sets: apply_overrides(get_preset("tiny"), TTT_BASE + sets).eval.ttt  # noqa: E731
    for name, what, n_ok, sets in (("lora", "adapt", 2, ["eval.ttt.lora_lr=0.05"]),
                                   ("sgd", "adapt", 1, TTT_CASES["sgd"]),
                                   ("phased", "global", 0, TTT_CASES["phased"])):
        c = RankOneTight(what, n_ok)
        s = evaluate_ttt(model, Val(tok, None), TABLES, ttt(sets), seq_len=L, device="cpu", stride=8,
                         batch_tokens=8 * L, clock=c)
        g = gathered(s, torch.device("cpu"))
        facts[name] = {"actions": c.actions, "all_once": bool(np.all(g.counts == 1)), "info": s.info}
    return facts


def _worker(rank: int, port: int, path: str) -> None:
    import json

    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        out = _run_all()
        facts = [None, None]
        tdist.all_gather_object(facts, _budget_facts(rank))
        if rank == 0:
            np.savez(path, **out)
            with open(path + ".json", "w") as f:
                json.dump(facts, f)
        tdist.barrier()
    finally:
        tdist.destroy_process_group()


@pytest.fixture(scope="module")
def spawned(tmp_path_factory):
    import json

    path = str(tmp_path_factory.mktemp("dist") / "two.npz")
    mp.start_processes(_worker, args=(_free_port(), path), nprocs=2, join=True, start_method="spawn")
    with np.load(path) as f, open(path + ".json") as g:
        return dict(f), json.load(g)


@pytest.fixture(scope="module")
def two_ranks(spawned):
    return spawned[0]


@pytest.fixture(scope="module")
def one_rank():
    torch.set_num_threads(1)
    return _run_all()


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_method_is_causal_and_single_pass_on_two_ranks(case, two_ranks, one_rank) -> None:
    base = _streams()[0]
    for res in (one_rank, two_ranks):
        counts = res[f"{case}/0/counts"]
        if CASES[case][0] == "plain" or CASES[case][0] == "mix":  # the challenge's cut: ⌊(N−1)/L⌋·L targets
            m = (len(base) - 1) // L * L
            assert np.all(counts[:m] == 1) and np.all(counts[m:] == 0)
        else:
            assert np.all(counts == 1)
        for i, t in enumerate(CUTS, start=1):
            a, b = res[f"{case}/0/losses"], res[f"{case}/{i}/losses"]
            assert np.array_equal(a[: t - 1], b[: t - 1]), f"{case}: a target before {t} changed"
            assert not np.array_equal(a[t - 1 :], b[t - 1 :])  # the perturbation was seen at all


@pytest.mark.parametrize("case", sorted(c for c in CASES if CASES[c][2]))
def test_two_ranks_equal_one(case, two_ranks, one_rank) -> None:
    for i in range(len(CUTS) + 1):
        a, b = one_rank[f"{case}/{i}/losses"], two_ranks[f"{case}/{i}/losses"]
        if CASES[case][2] == "equal":
            np.testing.assert_array_equal(a, b)
        else:  # gradients summed over the ranks in another order: float32 rounding, carried by the updates
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        x, y = one_rank[f"{case}/{i}/bpb"][0], two_ranks[f"{case}/{i}/bpb"][0]
        assert abs(x - y) <= (1e-12 if CASES[case][2] == "equal" else 1e-5) * abs(x)


def test_one_clock_whose_degradations_every_rank_applies(spawned) -> None:
    """Only rank 1's clock refuses; both ranks refuse, stop adapting, stop the sgd updates at the same chunk,
    skip the same global phases — and still score every target once."""
    facts = spawned[1]
    assert [f["require_raised"] for f in facts] == [True, True]
    assert all(f["agreed_elapsed"] >= 50.0 for f in facts)  # the earliest start is everyone's
    for f in facts:
        assert f["lora"]["all_once"] and f["sgd"]["all_once"] and f["phased"]["all_once"]
        assert sum("stopped adapting after" in a for a in f["lora"]["actions"]) == 1
        assert f["lora"]["info"]["adapted_targets"] < 479
        assert any("stopped adapting after chunk 2 of" in a for a in f["sgd"]["actions"])
        assert f["sgd"]["info"]["trained_chunks"] == 1 < f["sgd"]["info"]["chunks"] - 1
        assert f["phased"]["info"]["phases_run"] == 0
        assert any("skipped global SGD phases 1..2" in a for a in f["phased"]["actions"])
    assert any("another rank's projection" in a for a in facts[0]["lora"]["actions"])
