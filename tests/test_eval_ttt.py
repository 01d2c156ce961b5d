"""Test-time training parts (pgolf.eval.lora, pgolf.eval.ttt, pgolf.eval.clock).

A fresh adapter is exactly the identity and detaching restores the model bit for bit; batch rows
(documents) never see each other's tokens; with no update TTT scores exactly its chunk windows; an
update helps on repeated text; the budget logic stops adapting (everything still scored once, the
adapted part unchanged, the rest exactly the unadapted model) and skips global phases, and refuses a
budget too small to score at all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from pgolf.config import apply_overrides
from pgolf.data.bytetables import ByteTables
from pgolf.errors import BudgetError
from pgolf.eval.clock import EvalClock
from pgolf.eval.lora import BatchedLoRA
from pgolf.eval.scoring import TargetSink
from pgolf.eval.sliding import score_windows
from pgolf.eval.ttt import evaluate_ttt
from pgolf.eval.windows import plan, spans
from pgolf.model.gpt import GPT
from pgolf.presets import get_preset

pytestmark = pytest.mark.usefixtures("one_thread")
V, BOS, L = 48, 1, 32
TABLES = ByteTables(np.r_[0, 0, np.ones(V - 2, np.int32)].astype(np.int32), np.zeros(V, bool),
                    np.r_[True, True, np.zeros(V - 2, bool)], None)


@dataclass
class Val:
    tokens: np.ndarray
    raw_bytes: np.ndarray | None


def _gpt(seed: int = 0, sets: tuple[str, ...] = ()) -> GPT:
    torch.manual_seed(seed)
    cfg = apply_overrides(get_preset("tiny"), [f"model.vocab_size={V}", *sets])
    m = GPT(cfg.model)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m.eval()


def _ttt(sets: list[str]):
    return apply_overrides(get_preset("tiny"), ["eval.ttt.chunk=8", "eval.ttt.batch_docs=3", *sets]).eval.ttt


def _stream(n: int, seed: int, repeat: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if repeat:  # documents that repeat one of two phrases: learnable inside a document and across them
        phrases = rng.integers(2, V, (2, 10))
        docs = []
        for _ in range(n // 80):
            docs += [BOS, *np.tile(phrases[rng.integers(2)], 8)[:79]]
        return np.array(docs[:n], np.uint16)
    t = rng.integers(2, V, n)
    t[rng.random(n) < 0.03] = BOS
    t[0] = BOS
    return t.astype(np.uint16)


@pytest.mark.parametrize("sets", [(), ("model.recur.loops=1", "model.recur.start=0", "model.recur.end=1",
                                       "model.recur.untie_mlp=true", "model.tie_embeddings=false")])
def test_fresh_adapter_is_identity_and_detach_restores(sets) -> None:
    model = _gpt(sets=sets)
    x = torch.randint(0, V, (3, 20))
    ref = model(x)
    lora = BatchedLoRA(model, 3, 4, ("q", "k", "v", "o", "mlp", "head"))
    assert torch.equal(model(x, adapter=lora.head), ref)  # B = 0: exactly the model
    with torch.no_grad():
        for s in lora.slots.values():
            s.B.normal_()
    assert not torch.equal(model(x, adapter=lora.head), ref)
    lora.detach()
    assert torch.equal(model(x), ref)
    assert set(model.state_dict()) == set(_gpt(sets=sets).state_dict())  # no parameter was added to the model


LOOPED = ("model.recur.loops=1", "model.recur.start=0", "model.recur.end=1")


def test_virtual_slots_give_each_pass_of_a_looped_block_its_own_adapter() -> None:
    """``slots="virtual"`` (the records' one slot per virtual layer): a looped block's k-th pass uses the
    k-th adapter, counted afresh at every forward; without recurrence it is the ``block`` layout exactly."""
    x = torch.randint(0, V, (3, 20))
    plain = _gpt()
    a = BatchedLoRA(plain, 3, 4, ("q", "mlp", "head"), seed=3)
    b = BatchedLoRA(plain, 3, 4, ("q", "mlp", "head"), seed=3, slots="virtual")
    assert [n.split("_p")[0] for n in b.slots] == list(a.slots)  # one pass each: the same slots, the same draws
    with torch.no_grad():
        for sa, sb in zip(a.slots.values(), b.slots.values(), strict=True):
            sa.B.normal_(generator=torch.Generator().manual_seed(5))
            sb.B.copy_(sa.B)
            assert torch.equal(sa.A, sb.A)
    b.detach()
    out_a = plain(x, adapter=a.head)
    a.detach()
    b.attach()
    assert torch.equal(plain(x, adapter=b.head), out_a)
    b.detach()

    looped = _gpt(sets=LOOPED)
    looped.looping = True
    passes = [p.block for p in looped.plan]
    v = BatchedLoRA(looped, 3, 4, ("q",), seed=3, slots="virtual")
    assert not {id(p) for p in v.parameters()} & {id(p) for p in looped.parameters()}  # adapters only
    assert sorted(n for n in v.slots) == sorted(f"q{blk}_p{k}" for blk in set(passes) for k in range(passes.count(blk)))
    ref = looped(x)
    with torch.no_grad():
        v.slots["q0_p1"].B.normal_()  # only block 0's second pass is adapted
    first = looped(x)
    assert not torch.equal(first, ref) and torch.equal(looped(x), first)  # the count restarts every forward
    with torch.no_grad():
        v.slots["q0_p1"].B.zero_()
        v.slots["q0_p0"].B.normal_()
    assert not torch.equal(looped(x), first)  # another pass, another result
    v.detach()
    assert torch.equal(looped(x), ref)


def test_documents_in_a_batch_do_not_interact() -> None:
    model = _gpt()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randint(0, V, (3, 16))
    y = torch.randint(0, V, (3, 16))

    def step(xx, yy):
        lora = BatchedLoRA(model, 3, 4, ("q", "v", "o", "mlp", "head"), seed=1)
        opt = torch.optim.AdamW(lora.parameters(), lr=0.05)
        for _ in range(2):
            ce = torch.nn.functional.cross_entropy(model(xx, adapter=lora.head).flatten(0, 1), yy.flatten(),
                                                   reduction="none").view(3, 16)
            opt.zero_grad()
            ce.mean(1).sum().backward()
            opt.step()
        lora.detach()
        return {k: v.detach().clone() for k, v in lora.state_dict().items()}

    a = step(x, y)
    x2, y2 = x.clone(), y.clone()
    x2[1], y2[1] = torch.randint(0, V, (16,)), torch.randint(0, V, (16,))
    b = step(x2, y2)
    for k in a:
        assert torch.equal(a[k][0], b[k][0]) and torch.equal(a[k][2], b[k][2]), k  # rows 0 and 2 untouched
        if k.endswith(".B"):
            assert not torch.equal(a[k][1], b[k][1])


def test_without_updates_ttt_scores_exactly_its_chunk_windows() -> None:
    model = _gpt()
    tok = _stream(300, 1)
    frozen = evaluate_ttt(model, Val(tok, None), TABLES, _ttt(["eval.ttt.lora_steps=0"]), seq_len=L, device="cpu")
    zero_lr = evaluate_ttt(model, Val(tok, None), TABLES, _ttt(["eval.ttt.lora_lr=0"]), seq_len=L, device="cpu")
    np.testing.assert_array_equal(frozen.losses, zero_lr.losses)
    s, n = spans(tok, BOS, True)
    w = plan(s, n, L, 8, 8)
    sink = TargetSink(len(tok) - 1, torch.device("cpu"))
    for width in np.unique(w.width):  # one tensor width per chunk index
        score_windows(model, torch.from_numpy(tok.astype(np.int64)), w.take(w.width == width), sink, rows=5,
                      width=int(width), device=torch.device("cpu"), amp_dtype="fp32")
    losses, counts, _ = sink.host()
    assert np.all(counts == 1)
    np.testing.assert_allclose(frozen.losses, losses, rtol=1e-6, atol=1e-6)  # other batch shapes: float32 rounding


@pytest.mark.parametrize("mode", ["lora", "sgd"])
def test_adaptation_helps_on_repeated_text(mode: str) -> None:
    model = _gpt()
    tok = _stream(640, 2, repeat=True)
    sets = [f"eval.ttt.mode={mode}", "eval.ttt.lora_lr=0.03", "eval.ttt.lora_targets=q,v,o,mlp,head",
            "eval.ttt.sgd_chunk_tokens=80", "eval.ttt.sgd_lr=0.05", "eval.ttt.sgd_batch_seqs=2"]
    off = ["eval.ttt.lora_steps=0", "eval.ttt.sgd_epochs=0"]
    on = evaluate_ttt(model, Val(tok, None), TABLES, _ttt(sets), seq_len=L, device="cpu", stride=16)
    no = evaluate_ttt(model, Val(tok, None), TABLES, _ttt(sets + off), seq_len=L, device="cpu", stride=16)
    assert on.result.val_loss < no.result.val_loss - 0.05


class Tight(EvalClock):
    """A clock that affords the first ``n_ok`` projections of kind ``what`` and no more (no timing)."""

    def __init__(self, what: str, n_ok: int = 0) -> None:
        super().__init__(1000.0)
        self.what, self.n_ok = what, n_ok

    def affords(self, seconds: float, what: str = "") -> bool:
        if what != self.what:
            return True
        self.n_ok -= 1
        return self.n_ok >= 0


def test_budget_stops_adapting_and_still_scores_everything() -> None:
    model = _gpt()
    tok = _stream(480, 3, repeat=True)  # six documents of 80 tokens
    cfg = _ttt(["eval.ttt.lora_lr=0.05"])
    full = evaluate_ttt(model, Val(tok, None), TABLES, cfg, seq_len=L, device="cpu")
    frozen = evaluate_ttt(model, Val(tok, None), TABLES, _ttt(["eval.ttt.lora_steps=0"]), seq_len=L, device="cpu")
    clock = Tight("adapt", n_ok=2)  # two update steps are afforded, the third is not
    cut = evaluate_ttt(model, Val(tok, None), TABLES, cfg, seq_len=L, device="cpu", clock=clock)
    assert np.all(cut.counts == 1)
    stop = [a for a in clock.actions if "stopped adapting after" in a]
    assert len(stop) == 1 and cut.info["adapted_targets"] < cut.result.tokens
    s, n = spans(tok, BOS, True)
    assert n[:3].min() > 3 * 8  # the first three documents outlast the three chunks below
    for j in range(3):  # chunks 0..2 of the first documents were scored with the same adapters
        own = slice(int(s[j]), int(s[j]) + 3 * 8)
        np.testing.assert_array_equal(cut.losses[own], full.losses[own])
    later = slice(int(s[3]), None)  # documents that started after the stop: exactly the unadapted model
    np.testing.assert_array_equal(cut.losses[later], frozen.losses[later])
    assert not np.array_equal(full.losses[later], frozen.losses[later])
    assert not np.array_equal(cut.losses[: int(s[3])], full.losses[: int(s[3])])  # it did stop


def test_budget_skips_global_phases_first() -> None:
    model = _gpt()
    tok = _stream(400, 4)
    cfg = _ttt(["eval.ttt.mode=phased", "eval.ttt.prefix_docs=9", "eval.ttt.phases=3"])
    full = evaluate_ttt(model, Val(tok, None), TABLES, cfg, seq_len=L, device="cpu")
    assert full.info["phases_run"] == 3
    class OnePhase(EvalClock):  # global phases are afforded until one has run
        def affords(self, seconds: float, what: str = "") -> bool:
            return not (what == "global" and "global_sgd" in self.phases)

    clock = OnePhase(1000.0)
    s = evaluate_ttt(model, Val(tok, None), TABLES, cfg, seq_len=L, device="cpu", clock=clock)
    assert np.all(s.counts == 1)
    assert s.info["phases_run"] == 1 and s.info["adapted_documents"] == s.info["documents"]
    assert any("skipped global SGD phases 2..3" in a for a in clock.actions)
    assert "global_sgd" in clock.phases
    starts, _ = spans(tok, BOS, True)
    before = slice(0, int(starts[3]))  # documents 0..2, all scored before the first phase
    np.testing.assert_array_equal(s.losses[before], full.losses[before])


def test_budget_too_small_to_score_is_an_error() -> None:
    model = _gpt()
    tok = _stream(200, 5)
    with pytest.raises(BudgetError, match="eval budget of 0 s is too small"):
        evaluate_ttt(model, Val(tok, None), TABLES, _ttt([]), seq_len=L, device="cpu", clock=EvalClock(1e-6))
    clock = EvalClock(200.0, start=time.perf_counter() - 100.0)
    assert clock.affords(50.0) and not clock.affords(99.0)  # 3 % reserve
    clock.require(99.0, "x")
    with pytest.raises(BudgetError, match="needs ≈101 s more after 100 s"):
        clock.require(101.0, "scoring")
    assert EvalClock(0.0).affords(1e12)  # 0 = no budget


def test_after_the_stop_the_tail_is_scored_in_full_batches_with_the_same_losses(monkeypatch) -> None:
    """A long last document used to be scored one chunk per step at the cost of a full batch after the
    clock stopped adaptation (the method overran its budget 2×); the frozen tail scores its remaining
    chunks side by side with the adapters as they stood at the stop — the same losses as the slot-by-slot
    pass, in a fraction of the model calls."""
    import pgolf.eval.ttt as ttt

    model = _gpt()
    short = _stream(240, 3, repeat=True)  # three documents of 80 tokens, then one of 800
    long = np.tile(np.random.default_rng(4).integers(2, V, 20), 40)
    long[0] = BOS
    tok = np.concatenate([short, long]).astype(np.uint16)
    assert len(spans(tok, BOS, True)[1]) == 4
    cfg = _ttt(["eval.ttt.lora_lr=0.05"])
    calls = {"n": 0}
    real = ttt.score_logits

    def counting(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(ttt, "score_logits", counting)
    runs = {}
    for freeze in (True, False):
        monkeypatch.setattr(ttt, "FREEZE_TAIL", freeze)
        calls["n"] = 0
        clock = Tight("adapt", n_ok=4)
        runs[freeze] = (evaluate_ttt(model, Val(tok, None), TABLES, cfg, seq_len=L, device="cpu", clock=clock),
                        calls["n"], clock.actions)
    (fast, n_fast, acts), (ref, n_ref, _) = runs[True], runs[False]
    assert np.all(fast.counts == 1) and any("in full batches with the adapters frozen" in a for a in acts)
    np.testing.assert_array_equal(fast.losses, ref.losses)  # bit for bit: rows never see their neighbours
    assert fast.info["adapted_targets"] == ref.info["adapted_targets"] < fast.result.tokens
    assert n_fast * 2 < n_ref  # 100 chunks of the long document: one per call before, three per call now


def test_no_global_phase_after_the_last_document() -> None:
    """A phase boundary at the end of the stream would train on documents nothing is left to score with:
    with prefix_docs = every document and 2 phases, only the phase in the middle runs."""
    model = _gpt()
    tok = _stream(400, 4)
    n_docs = len(spans(tok, BOS, True)[0])
    cfg = _ttt(["eval.ttt.mode=phased", f"eval.ttt.prefix_docs={n_docs}", "eval.ttt.phases=2"])
    clock = EvalClock(0.0)
    s = evaluate_ttt(model, Val(tok, None), TABLES, cfg, seq_len=L, device="cpu", clock=clock)
    assert np.all(s.counts == 1) and s.info["phases_run"] == 1
    assert [a.split(": ", 1)[1] for a in clock.actions] == [
        f"global SGD phase 1 on the first {-(-n_docs // 2)} documents ({int(spans(tok, BOS, True)[1][: -(-n_docs // 2)].sum()):,} targets)"]


@pytest.mark.parametrize("mode", ["lora", "phased"])
def test_claim_order_changes_nothing_without_a_budget_cut(mode: str) -> None:
    """Longest-first and stream-order claims give the same losses bit for bit: a document's adapter starts
    from (seed, its index) and sees only its own chunks; the phase groups are the same stream prefixes."""
    model = _gpt()
    tok = _stream(500, 6)
    sets = [f"eval.ttt.mode={mode}", "eval.ttt.prefix_docs=8", "eval.ttt.phases=2", "eval.ttt.lora_lr=0.05"]
    a = evaluate_ttt(model, Val(tok, None), TABLES, _ttt(sets + ["eval.ttt.order=length"]), seq_len=L, device="cpu")
    b = evaluate_ttt(model, Val(tok, None), TABLES, _ttt(sets + ["eval.ttt.order=stream"]), seq_len=L, device="cpu")
    n = spans(tok, BOS, True)[1]
    assert not np.all(np.diff(n[:8]) <= 0)  # the two orders differ
    np.testing.assert_array_equal(a.losses, b.losses)
    assert np.all(a.counts == 1) and np.all(b.counts == 1)
