"""Test-time training on a hybrid with SSM layers (model.ssm_layers): LoRA TTT (modes lora, phased) targets the
attention projections an SSM block does not have, so it is refused in one line — at config time and by
evaluate_ttt itself (``pgolf eval --method ttt`` on such a run) — instead of an AttributeError; full-model SGD TTT
(mode sgd, the chunk TTT of 2026-04-15_Mamba3Hybrid_SP8192_GPTQ_TTT) runs on it: without updates it scores
exactly the sliding windows, with them it adapts the SSM layers too, and the weights come back unchanged."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from pgolf.cli import main
from pgolf.config import apply_overrides
from pgolf.data.bytetables import ByteTables
from pgolf.errors import ConfigError
from pgolf.eval.sliding import evaluate_sliding
from pgolf.eval.ttt import evaluate_ttt
from pgolf.model.gpt import GPT
from pgolf.presets import get_preset

pytestmark = pytest.mark.usefixtures("one_thread")
V, BOS, L = 48, 1, 32
TABLES = ByteTables(np.r_[0, 0, np.ones(V - 2, np.int32)].astype(np.int32), np.zeros(V, bool),
                    np.r_[True, True, np.zeros(V - 2, bool)], None)
HYBRID = [f"model.vocab_size={V}", "model.ssm_layers=0", "model.ssm.headdim=16", "model.ssm.state=8",
          "model.ssm.chunk=16"]


@dataclass
class Val:
    tokens: np.ndarray
    raw_bytes: np.ndarray | None


def _hybrid() -> GPT:
    torch.manual_seed(0)
    m = GPT(apply_overrides(get_preset("tiny"), HYBRID).model)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m.eval()


def _repeated(n: int) -> np.ndarray:
    rng = np.random.default_rng(2)
    phrases = rng.integers(2, V, (2, 10))
    docs: list[int] = []
    for _ in range(n // 80):
        docs += [BOS, *np.tile(phrases[rng.integers(2)], 8)[:79]]
    return np.array(docs[:n], np.uint16)


@pytest.mark.parametrize("method", ["ttt", "ttt+mix"])
@pytest.mark.parametrize("mode", ["lora", "phased"])
def test_lora_ttt_on_ssm_layers_is_one_config_error(method, mode):
    with pytest.raises(ConfigError) as e:
        apply_overrides(get_preset("tiny"), [*HYBRID, f"eval.method={method}", f"eval.ttt.mode={mode}"])
    msg = str(e.value)
    assert "\n" not in msg and f"eval.ttt.mode={mode}" in msg and "eval.ttt.mode=sgd" in msg
    apply_overrides(get_preset("tiny"), [*HYBRID, f"eval.method={method}", "eval.ttt.mode=sgd"])  # accepted


def test_the_cli_says_it_in_one_line(tmp_path, capsys):
    sets = [a for s in [*HYBRID, "eval.method=ttt"] for a in ("--set", s)]
    assert main(["info", "tiny", *sets]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pgolf: error: eval.ttt.mode=lora") and "Traceback" not in err[0]


def test_evaluate_ttt_refuses_lora_on_a_hybrid_before_any_work():
    model, tok = _hybrid(), _repeated(320)
    cfg = apply_overrides(get_preset("tiny"), ["eval.ttt.chunk=8"]).eval.ttt  # mode lora
    with pytest.raises(ConfigError, match="model.ssm_layers"):
        evaluate_ttt(model, Val(tok, None), TABLES, cfg, seq_len=L, device="cpu")


def test_sgd_ttt_runs_on_a_hybrid_and_adapts_its_ssm_layers():
    model, tok = _hybrid(), _repeated(400)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sets = ["eval.ttt.mode=sgd", "eval.ttt.sgd_chunk_tokens=80", "eval.ttt.sgd_lr=0.05", "eval.ttt.sgd_batch_seqs=2"]
    cfg = apply_overrides(get_preset("tiny"), sets).eval.ttt
    off = apply_overrides(get_preset("tiny"), [*sets, "eval.ttt.sgd_epochs=0"]).eval.ttt
    frozen = evaluate_ttt(model, Val(tok, None), TABLES, off, seq_len=L, device="cpu", stride=16)
    ref = evaluate_sliding(model, Val(tok, None), TABLES, seq_len=L, stride=16, batch_tokens=4 * L, device="cpu",
                           amp_dtype="fp32")
    np.testing.assert_allclose(frozen.losses, ref.losses, rtol=1e-5, atol=1e-5)  # the same windows, scored once
    assert np.all(frozen.counts == 1)
    ssm_in = model.blocks[0].ssm.in_proj.weight
    seen = []
    ssm_in.register_hook(lambda g: seen.append(float(g.abs().sum())))
    on = evaluate_ttt(model, Val(tok, None), TABLES, cfg, seq_len=L, device="cpu", stride=16)
    assert seen and max(seen) > 0  # the SSM layer's projection is trained too
    assert on.result.val_loss < frozen.result.val_loss - 0.05
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # weights restored
