"""compile_model raises dynamo's per-code recompile limit, so many models in one process stay compiled."""

import torch

from pgolf.compile import RECOMPILE_LIMIT, compile_model


def test_recompile_limit_is_raised_and_never_lowered():
    import torch._dynamo as dynamo

    old = dynamo.config.recompile_limit
    try:
        dynamo.config.recompile_limit = 8
        compile_model(torch.nn.Linear(2, 2))
        assert dynamo.config.recompile_limit == RECOMPILE_LIMIT
        dynamo.config.recompile_limit = 500
        compile_model(torch.nn.Linear(2, 2))
        assert dynamo.config.recompile_limit == 500
    finally:
        dynamo.config.recompile_limit = old


def test_auto_compiles_on_cuda_only_and_explicit_settings_win():
    from pgolf.compile import resolve

    assert resolve("auto", "cuda")[0] is True and resolve("auto", "cpu")[0] is False
    assert resolve(True, "cpu") == (True, "set explicitly") and resolve(False, "cuda")[0] is False


SHRUNK_0427 = ["model.vocab_size=384", "model.num_layers=4", "model.model_dim=32", "model.num_heads=2",
               "model.num_kv_heads=1", "model.attn.xsa_layers=-4,-3,-2,-1", "model.parallel_start=-1",
               "model.recur.start=1", "model.recur.end=2", "model.recur.start_frac=0.4", "model.attn.gate_window=8",
               "model.embed.bigram_buckets=0", "train.batch_tokens=1024", "train.seq_len=64", "train.iterations=8",
               "train.max_wallclock_seconds=0", "train.warmup_steps=0", "train.qat.kind=ste", "train.qat.start_frac=0.6",
               "train.threads=1", "train.val_every=0", "train.checkpoint_every_seconds=0", "train.calib_reserve_seconds=0",
               "eval.seq_len=64", "eval.batch_tokens=4096"]
"""record-0427's switches (compiled with fullgraph, late loop, QAT late, EMA, gates, XSA, lanes) at toy size."""


def test_a_compiled_record_shaped_run_matches_eager_and_never_compiles_inside_the_clock(tiny_data, tmp_path,
                                                                                        monkeypatch):
    """Compiled (fullgraph, dynamo's graphs and guards on the aot_eager backend: inductor's codegen would take
    minutes here) the shrunk record trains to the eager losses, and every graph — the plain and the looped
    plan, QAT switched on late — is built while priming, before the clock: dynamo's graph counter does not
    move between the log's ``train:`` line (the clock starts after it) and the end."""
    import torch._dynamo as dynamo
    from torch._dynamo.utils import counters

    from pgolf.config import apply_overrides
    from pgolf.data.prepare import prepare_data
    from pgolf.presets import get_preset
    from pgolf.train.loop import train

    monkeypatch.setenv("PGOLF_COMPILE_BACKEND", "aot_eager")
    base = apply_overrides(get_preset("record-0427"), [f"data.path={tiny_data}", *SHRUNK_0427])
    assert base.train.compile is True and base.train.compile_fullgraph
    data = prepare_data(base)
    eager = train(apply_overrides(base, ["train.compile=false"]), tmp_path / "eager", data=data, progress=False)

    dynamo.reset()
    counters.clear()
    seen: dict[str, int] = {}

    class Log:
        def __call__(self, msg: str, **_: object) -> None:
            if msg.startswith("train: batch_tokens"):
                seen["before_clock"] = counters["stats"]["unique_graphs"]
                assert "compile:True" in msg and "fullgraph" in msg

        def close(self) -> None:
            pass

    compiled = train(base, tmp_path / "compiled", data=data, progress=False, log=Log())  # type: ignore[arg-type]
    assert seen["before_clock"] >= 2  # at least the plain and the looped plan, primed
    assert counters["stats"]["unique_graphs"] == seen["before_clock"], "a graph was compiled inside the clock"
    assert compiled.steps == eager.steps == 8
    torch.testing.assert_close(torch.tensor(compiled.losses), torch.tensor(eager.losses), rtol=2e-4, atol=2e-4)
