"""``eval.ttt.chunk`` fits the run it is given: 0 (the default) is min(128, the context), so a ``tiny`` run
(context 64) scores with TTT as configured, bit for bit as with the chunk written out; a chunk set longer
than the context stays one error line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_eval_ttt import TABLES, Val, _gpt, _stream

from pgolf.cli import main
from pgolf.config import RunConfig, apply_overrides
from pgolf.errors import ConfigError
from pgolf.eval.ttt import DEFAULT_CHUNK, chunk_for, evaluate_ttt
from pgolf.presets import get_preset

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(*sets: str):
    return apply_overrides(get_preset("tiny"), ["eval.ttt.batch_docs=3", *sets]).eval.ttt


def test_the_default_chunk_is_derived_from_the_context() -> None:
    assert RunConfig().eval.ttt.chunk == 0 and get_preset("tiny").eval.ttt.chunk == 0
    assert chunk_for(_cfg(), 64) == 64 and chunk_for(_cfg(), 2048) == DEFAULT_CHUNK == 128
    assert chunk_for(_cfg("eval.ttt.chunk=48"), 64) == 48
    with pytest.raises(ConfigError, match=r"eval.ttt.chunk=128 is longer than the context seq_len=64"):
        chunk_for(_cfg("eval.ttt.chunk=128"), 64)
    with pytest.raises(ConfigError, match="chunk >= 0"):
        _cfg("eval.ttt.chunk=-1")


@pytest.mark.parametrize("seq_len", [32, 160])
def test_chunk_0_scores_exactly_as_the_derived_chunk_written_out(seq_len) -> None:
    tokens = _stream(700, seed=3, repeat=True)
    val = Val(tokens, None)
    derived = min(128, seq_len)

    def score(cfg):
        return evaluate_ttt(_gpt(), val, TABLES, cfg, seq_len=seq_len, device="cpu", bos_id=1)

    auto, written = score(_cfg()), score(_cfg(f"eval.ttt.chunk={derived}"))
    assert auto.info["chunk"] == derived
    assert np.array_equal(auto.losses, written.losses) and np.array_equal(auto.counts, written.counts)
    assert auto.result.val_bpb == written.result.val_bpb and np.isfinite(auto.result.val_bpb)
    with pytest.raises(ConfigError, match="longer than the context"):
        score(_cfg(f"eval.ttt.chunk={seq_len + 1}"))


def test_a_tiny_run_evaluates_with_ttt_by_default(tiny_data, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["run", "tiny", "--set", "model.vocab_size=384", "--set", f"data.path={tiny_data}",
                 "--set", "train.iterations=4", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["eval", str(out), "--method", "ttt"]) == 0
    m = json.loads(capsys.readouterr().out)
    (ttt,) = m["methods"]
    assert ttt["method"] == "ttt" and ttt["details"]["chunk"] == 64 and np.isfinite(ttt["val_bpb"])
    # an explicit chunk that does not fit the context: one error line, exit non-zero
    assert main(["eval", str(out), "--method", "ttt", "--set", "eval.ttt.chunk=128"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["pgolf: error: eval.ttt.chunk=128 is longer than the context seq_len=64 (0 = min(128, the context))"]
