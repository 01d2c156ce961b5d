"""Legal evaluation, proved on every method (RULES.md "Legal evaluation"; DESIGN principle 3).

1. Causality by perturbation: for random t, every token at positions ≥ t is redrawn (BOS included,
   so documents split and merge) and the loss of every target before t must be bit for bit the same —
   for plain, sliding (stream and document-aware), every TTT mode and the mixer. The check can fail:
   a model that peeks one token ahead and a mixer whose counts include the current token are caught.
2. Normalization: every distribution a method scores from is a full distribution over the vocabulary
   that sums to 1 in float64, and the scored loss is −log of it at the target (model methods: checked
   inside every no-grad scoring call, adapters included; the mixer: tests/test_eval_mix.py).
3. Single pass: every validation target is scored exactly once and all of them are scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pgolf.eval.sliding as sliding_mod
import pgolf.eval.ttt as ttt_mod
from pgolf.config import MixConfig, apply_overrides
from pgolf.data.bytetables import ByteTables
from pgolf.eval.bpb import evaluate_scored
from pgolf.eval.mix import hints, mix_losses, ngram_stats
from pgolf.eval.scoring import check_single_pass
from pgolf.eval.sliding import evaluate_sliding
from pgolf.eval.ttt import evaluate_ttt
from pgolf.model.gpt import GPT
from pgolf.presets import get_preset

pytestmark = pytest.mark.usefixtures("one_thread")
V, BOS, L = 48, 1, 32


@dataclass
class Val:
    tokens: np.ndarray
    raw_bytes: np.ndarray | None


TABLES = ByteTables(np.r_[0, 0, np.ones(V - 2, np.int32)].astype(np.int32), np.zeros(V, bool),
                    np.r_[True, True, np.zeros(V - 2, bool)], None)


def _stream(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = rng.integers(2, V, n)
    t[rng.random(n) < 0.03] = BOS
    t[0] = BOS
    return t.astype(np.uint16)


def _gpt(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    cfg = apply_overrides(get_preset("tiny"), [f"model.vocab_size={V}"])
    m = GPT(cfg.model)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m.eval()


def _perturbed(tokens: np.ndarray, t: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = tokens.copy()
    new = rng.integers(2, V, len(tokens) - t)
    new[rng.random(new.shape[0]) < 0.05] = BOS  # documents split and merge after t
    out[t:] = new
    return out


def assert_causal(run, tokens: np.ndarray, n_positions: int = 2, seed: int = 0) -> None:
    """run(tokens) → per-target losses [N−1]. Losses of targets before t unchanged, bit for bit."""
    rng = np.random.default_rng(seed)
    base = run(tokens)
    for t in rng.integers(len(tokens) // 4, len(tokens) - 2, n_positions):
        other = run(_perturbed(tokens, int(t), int(t)))
        assert np.array_equal(base[: t - 1], other[: t - 1]), f"a target before {t} changed"
        assert not np.array_equal(base[t - 1 :], other[t - 1 :])  # the perturbation was seen at all


def _all_once(s) -> np.ndarray:
    assert np.all(s.counts == 1), "not every target scored exactly once"
    return s.losses


def _sliding(model, doc_aware=False, stride=8, hints_fn=None):
    def run(tok):
        return _all_once(evaluate_sliding(model, Val(tok, None), TABLES, seq_len=L, stride=stride, doc_aware=doc_aware,
                                          batch_tokens=4 * L, device="cpu", amp_dtype="fp32"))
    return run


def test_plain_is_causal_and_covers_its_targets() -> None:
    model = _gpt()

    def run(tok):
        s = evaluate_scored(model, Val(tok, None), TABLES, seq_len=L, batch_tokens=3 * L, device="cpu", amp_dtype="fp32")
        S = (len(tok) - 1) // L
        assert np.all(s.counts[: S * L] == 1) and np.all(s.counts[S * L :] == 0)  # the challenge's cut
        return s.losses

    assert_causal(run, _stream(300, 1))


@pytest.mark.parametrize("doc_aware", [False, True])
def test_sliding_is_causal(doc_aware: bool) -> None:
    assert_causal(_sliding(_gpt(), doc_aware=doc_aware), _stream(300, 2))


class PeekAhead(nn.Module):
    """A deliberately illegal model: the logits at j also see the input two places later (u_{p+1} for
    target u_p), the kind of leak a wrong mask or an off-by-one window would cause."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x, targets=None, reduction="mean"):
        logits = self.inner(x)
        ahead = torch.cat([x[:, 2:], x[:, -2:]], dim=1)
        logits = logits + 3.0 * F.one_hot(ahead, V).float()
        ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(x.shape)
        return ce if reduction == "none" else ce.mean()


def test_the_perturbation_check_catches_a_leaky_model() -> None:
    with pytest.raises(AssertionError, match="a target before"):
        assert_causal(_sliding(PeekAhead(_gpt())), _stream(300, 3), n_positions=6)


TTT_CASES = {
    "lora": ["eval.ttt.mode=lora"],
    "lora_all_targets_warm_a": ["eval.ttt.mode=lora", "eval.ttt.lora_targets=q,k,v,o,mlp,head", "eval.ttt.warm_start_a=true",
                                "eval.ttt.lora_steps=2"],
    "phased": ["eval.ttt.mode=phased", "eval.ttt.prefix_docs=6", "eval.ttt.phases=2", "eval.ttt.global_lr=0.01"],
    "sgd": ["eval.ttt.mode=sgd", "eval.ttt.sgd_chunk_tokens=96", "eval.ttt.sgd_epochs=1", "eval.ttt.sgd_lr=0.01"],
    # record-0427's TTT as its code has it: α 144, warm-start A, one slot per virtual layer
    "phased_record_0427": ["eval.ttt.mode=phased", "eval.ttt.prefix_docs=6", "eval.ttt.phases=2",
                           "eval.ttt.global_lr=0.01", "eval.ttt.lora_alpha=144", "eval.ttt.warm_start_a=true",
                           "eval.ttt.lora_slots=virtual"],
}


def _ttt_cfg(sets):
    base = ["eval.ttt.chunk=8", "eval.ttt.batch_docs=3", "eval.ttt.lora_lr=0.02", "eval.ttt.sgd_batch_seqs=2"]
    return apply_overrides(get_preset("tiny"), base + sets).eval.ttt


@pytest.mark.parametrize("case", sorted(TTT_CASES))
def test_ttt_is_causal_single_pass_and_restores_the_model(case: str) -> None:
    model = _gpt()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = _ttt_cfg(TTT_CASES[case])
    tok = _stream(260, 4)
    infos = []

    def run(t):
        s = evaluate_ttt(model, Val(t, None), TABLES, cfg, seq_len=L, device="cpu", stride=8, batch_tokens=4 * L)
        infos.append(s.info)
        return _all_once(s)

    assert_causal(run, tok)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    if case == "phased":
        assert infos[0]["phases_run"] == 2
    if case == "sgd":
        assert infos[0]["trained_chunks"] == infos[0]["chunks"] - 1
    # it really adapted: the losses differ from scoring the same chunks without updates
    frozen = apply_overrides(get_preset("tiny"), ["eval.ttt.lora_steps=0", "eval.ttt.sgd_epochs=0", "eval.ttt.phases=0"]
                             + ["eval.ttt.chunk=8", "eval.ttt.batch_docs=3", f"eval.ttt.mode={cfg.mode}",
                                "eval.ttt.sgd_chunk_tokens=96"]).eval.ttt
    still = evaluate_ttt(model, Val(tok, None), TABLES, frozen, seq_len=L, device="cpu", stride=8, batch_tokens=4 * L)
    assert not np.array_equal(still.losses, run(tok))


def _mixer(model, mode: str, leaky: bool = False):
    cfg = MixConfig(mode=mode, max_order=3, update_every=40, tilt_min_order=1)

    def run(tok):
        stats = ngram_stats(np.roll(tok, -1) if leaky else tok, cfg.max_order, V)  # leaky: history includes u_p
        h = hints(stats, cfg.tilt_min_order)
        base = evaluate_sliding(model, Val(tok, None), TABLES, seq_len=L, stride=8, batch_tokens=4 * L, device="cpu",
                                amp_dtype="fp32", hints=h if mode == "tilt" else None)
        out = mix_losses(tok, _all_once(base), base.counts > 0, cfg, V, hint_logp=base.hint_logp, hint_ids=h, stats=stats)
        return out.losses

    return run


@pytest.mark.parametrize("mode", ["linear", "tilt"])
def test_mixer_is_causal(mode: str) -> None:
    assert_causal(_mixer(_gpt(), mode), _stream(400, 5), n_positions=3)


def test_the_perturbation_check_catches_a_leaky_mixer() -> None:
    with pytest.raises(AssertionError, match="a target before"):
        assert_causal(_mixer(_gpt(), "linear", leaky=True), _stream(400, 6), n_positions=3)


@pytest.mark.parametrize("case", ["sliding", "lora", "phased", "sgd"])
def test_every_scored_distribution_is_normalized(case: str, monkeypatch) -> None:
    """Inside every no-grad scoring call: softmax of the logits (with the adapters of that moment) sums
    to 1 in float64 at every position, and the CE handed to the sink is −log of it at the target."""
    calls = []
    orig = sliding_mod.score_logits

    def checking(model, x, y, hint=None, adapter=None):
        ce, hl = orig(model, x, y, hint, adapter)
        if not torch.is_grad_enabled():
            logits = model(x) if adapter is None else model(x, adapter=adapter)
            p = torch.softmax(logits.double(), -1)
            assert torch.allclose(p.sum(-1), torch.ones((), dtype=torch.float64), rtol=0, atol=1e-12)
            ref = -torch.log(p.gather(-1, y[..., None])[..., 0])
            assert torch.allclose(ce.double(), ref, rtol=1e-5, atol=1e-6)
            calls.append(x.shape[0])
        return ce, hl

    monkeypatch.setattr(sliding_mod, "score_logits", checking)
    monkeypatch.setattr(ttt_mod, "score_logits", checking)
    model = _gpt()
    tok = _stream(200, 7)
    if case == "sliding":
        s = evaluate_sliding(model, Val(tok, None), TABLES, seq_len=L, stride=8, batch_tokens=4 * L, device="cpu",
                             amp_dtype="fp32")
    else:
        cfg = _ttt_cfg(TTT_CASES[case if case != "lora" else "lora_all_targets_warm_a"])
        s = evaluate_ttt(model, Val(tok, None), TABLES, cfg, seq_len=L, device="cpu", stride=8, batch_tokens=4 * L)
    assert len(calls) > 3
    assert np.all(s.counts == 1)


def test_single_pass_check_rejects_twice_missing_and_extra() -> None:
    ok = np.ones(10, np.uint8)
    check_single_pass(ok)
    for bad, msg in ((np.r_[ok[:9], 2], "times"), (np.r_[ok[:9], 0], "never scored")):
        with pytest.raises(RuntimeError, match=msg):
            check_single_pass(bad.astype(np.uint8))
    with pytest.raises(RuntimeError, match="outside"):
        check_single_pass(ok, expected=slice(0, 5))
