"""train.autosize: the probe's line fit, the rule's constraints and choice, and resolution once."""

from __future__ import annotations

import dataclasses

import pytest

from pgolf import autosize
from pgolf.autosize import StepTimeModel, chinchilla_loss, choose, heads_for
from pgolf.config import apply_changes
from pgolf.errors import ConfigError
from pgolf.model.flops import train_flops_per_token
from pgolf.model.gpt import count_params
from pgolf.presets import get_preset


def _cfg(seconds: float = 600, cap: int = 1_000_000, floor: int = 400):
    return apply_changes(get_preset("cpu"), [("train.max_wallclock_seconds", seconds), ("train.autosize_model_bytes", cap),
                                             ("train.autosize_min_steps", floor)])


def _rate(cfg, ms_flop_part: float, overhead: float) -> StepTimeModel:
    f = train_flops_per_token(cfg.model, cfg.train.seq_len)
    return StepTimeModel(flops=8192 * f / (ms_flop_part / 1000.0), overhead_ms=overhead, ref_params=count_params(cfg.model), seconds=0.0)


def test_heads_divide_and_keep_head_dim_32() -> None:
    for d in autosize.DIMS:
        h, kv = heads_for(d)
        assert d // h == 32 and h % kv == 0


def test_choice_is_feasible_and_minimises_the_law_over_the_grid() -> None:
    cfg = _cfg()
    best, table = choose(cfg, _rate(cfg, 550.0, 87.0))
    assert best == table[0] and len(table) > 5
    from pgolf.export.planner import estimate_artifact_bytes

    assert best.model_bytes == estimate_artifact_bytes(apply_changes(cfg, list(best.changes().items()))).model_bytes
    for ch in table:
        assert ch.model_bytes * (1 + cfg.train.autosize_bytes_margin) <= 1_000_000 and ch.steps >= 400
        assert ch.steps == int(600_000 // ch.ms_per_step) and ch.tokens == ch.steps * ch.batch_tokens
        assert ch.loss == pytest.approx(chinchilla_loss(ch.params, ch.tokens))
        assert best.loss <= ch.loss
    # the time model: overhead scaled by parameters + batch × FLOPs / R
    c = apply_changes(cfg, list(best.changes().items()))
    r = _rate(cfg, 550.0, 87.0)
    want = 87.0 * best.params / r.ref_params + 1000 * best.batch_tokens * train_flops_per_token(c.model, 256) / r.flops
    assert best.ms_per_step == pytest.approx(want)


def test_the_byte_margin_keeps_room_for_what_training_adds() -> None:
    """A trained model compresses worse than the planner's pre-training estimate (+12 % measured on an AMX
    Xeon, over the cap): candidates must fit the cap with the margin; without it, bigger ones get in."""
    cfg = _cfg()
    r = _rate(cfg, 550.0, 87.0)
    _, with_margin = choose(cfg, r)
    _, no_margin = choose(apply_changes(cfg, [("train.autosize_bytes_margin", 0.0)]), r)
    assert cfg.train.autosize_bytes_margin == 0.2
    assert max(ch.model_bytes for ch in with_margin) <= 1_000_000 / 1.2
    assert max(ch.model_bytes for ch in no_margin) > 1_000_000 / 1.2  # the margin is what excluded them
    assert {ch.params for ch in with_margin} < {ch.params for ch in no_margin}
    with pytest.raises(ConfigError, match="autosize_bytes_margin"):
        apply_changes(cfg, [("train.autosize_bytes_margin", -0.1)])


def test_a_slower_machine_gets_a_smaller_model_and_a_cap_binds() -> None:
    cfg = _cfg()
    fast, _ = choose(cfg, _rate(cfg, 550.0, 87.0))
    slow, _ = choose(cfg, _rate(cfg, 5500.0, 870.0))  # 10× slower
    assert slow.params < fast.params
    small_cap, _ = choose(_cfg(cap=300_000), _rate(cfg, 550.0, 87.0))
    assert small_cap.model_bytes <= 300_000 < fast.model_bytes
    # no shape reaches the floor (a short budget on a slow machine): the step-rich half stays eligible
    relaxed, table = choose(_cfg(floor=10**6), _rate(cfg, 550.0, 87.0))
    everything, all_table = choose(_cfg(floor=1), _rate(cfg, 550.0, 87.0))
    most = max(ch.steps for ch in all_table)
    key = lambda c: tuple(c.changes().values())  # noqa: E731
    assert min(ch.steps for ch in table) >= most // 2
    assert {key(c) for c in all_table if c.steps >= most // 2} == {key(c) for c in table}
    with pytest.raises(ConfigError, match="no candidate"):
        choose(_cfg(cap=1000), _rate(cfg, 550.0, 87.0))
    with pytest.raises(ConfigError, match="wallclock"):
        choose(_cfg(seconds=0), _rate(cfg, 550.0, 87.0))


def test_probe_times_every_candidate_batch_and_fits_the_overhead_line(monkeypatch) -> None:
    cfg = _cfg()
    f = train_flops_per_token(cfg.model, 256)
    calls = []

    def fake(c, looping, steps=2, max_seconds=20.0):  # ms/step = 40 + 0.05·B, 15 % more per token at 16K
        b = c.train.batch_tokens
        calls.append(b)
        return (40.0 + 0.05 * b * (1.15 if b > 8192 else 1.0)) / b

    monkeypatch.setattr("pgolf.preflight.measure_cpu_ms_per_token", fake)
    r = autosize.probe(cfg)
    assert calls == [4096, 8192, 16384] == list(autosize.BATCHES)
    assert r.overhead_ms == pytest.approx(40.0)
    assert r.flops == pytest.approx(f / 0.05e-3)  # the line through 4K and 8K
    assert r.batch_flops[8192] == pytest.approx(r.flops) and r.batch_flops[16384] == pytest.approx(f / 0.0575e-3)
    # at the reference shape the time model reproduces every probed point exactly
    n = count_params(cfg.model)
    for b in list(autosize.BATCHES):
        assert r.ms_per_step(n, f, b) == pytest.approx(fake(apply_changes(cfg, [("train.batch_tokens", b)]), None) * b)
    # noise that makes the larger batch no slower (seen with a neighbour on the CPU): no negative or
    # infinite rate — all of the time is taken to scale with the batch
    monkeypatch.setattr("pgolf.preflight.measure_cpu_ms_per_token", lambda c, looping, steps=2, max_seconds=20.0:
                        (3000.0 if c.train.batch_tokens == 4096 else 2900.0) / c.train.batch_tokens)
    r = autosize.probe(cfg)
    assert r.overhead_ms == 0.0 and r.flops == pytest.approx(f * 8192 / 2.9)
    assert all(0 < v < float("inf") for v in r.batch_flops.values())


def test_a_batch_that_runs_slower_per_token_is_not_chosen_for_tokens_it_never_gets() -> None:
    """The AMX Xeon case (docs/benchmarks.md): 3L×192 ran 14–20 % slower per token at 16K than at 8K. A
    line extrapolated from 8K predicts 16K gets 4 % more tokens, so the law picks it; timed at 16K, the
    rule sees that 16K gets fewer tokens and keeps 8K."""
    cfg = _cfg()
    f = train_flops_per_token(cfg.model, 256)
    line = StepTimeModel(flops=8192 * f / 0.5, overhead_ms=25.0, ref_params=count_params(cfg.model), seconds=0.0)
    timed = dataclasses.replace(line, batch_flops={4096: line.flops, 8192: line.flops, 16384: line.flops / 1.17})
    by_line, _ = choose(cfg, line)
    by_timed, table = choose(cfg, timed)
    assert by_line.batch_tokens == 16384
    assert by_timed.batch_tokens < 16384
    same_shape = [ch for ch in table if ch.changes() | {"train.batch_tokens": 0} == by_timed.changes() | {"train.batch_tokens": 0}]
    assert all(ch.tokens <= by_timed.tokens for ch in same_shape)


def test_resolve_applies_the_choice_once(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PGOLF_CACHE", str(tmp_path))
    cfg = apply_changes(_cfg(), [("train.autosize", True)])
    monkeypatch.setattr(autosize, "probe", lambda c: _rate(c, 550.0, 87.0))
    lines: list[str] = []
    out = autosize.resolve(cfg, log=lines.append)
    best, _ = choose(cfg, _rate(cfg, 550.0, 87.0))
    assert not out.train.autosize and out.name == cfg.name
    assert (out.model.num_layers, out.model.model_dim, out.train.batch_tokens) == (best.num_layers, best.model_dim, best.batch_tokens)
    assert any(line.startswith("autosize: chose") for line in lines)
    assert autosize.resolve(out) is out  # resolved configs never re-probe


def test_a_run_records_the_resolved_shape_and_resume_keeps_it(tiny_data, tmp_path, monkeypatch) -> None:

    from pgolf.autosize import resolve_for_run
    from pgolf.config import load_config

    cfg = apply_changes(get_preset("tiny"), [("data.path", str(tiny_data)), ("model.vocab_size", 384),
                                             ("train.autosize", True), ("train.max_wallclock_seconds", 60),
                                             ("train.autosize_min_steps", 1)])
    monkeypatch.setattr(autosize, "probe", lambda c: _rate(c, 550.0, 87.0))
    out, lines = resolve_for_run(cfg, tmp_path, resume=False)
    assert not out.train.autosize and lines and lines[-1].startswith("autosize: chose")
    (tmp_path / "config.json").write_text(out.to_json())
    monkeypatch.setattr(autosize, "probe", lambda c: (_ for _ in ()).throw(AssertionError("re-probed")))
    again, lines2 = resolve_for_run(cfg, tmp_path, resume=True)
    assert again.to_dict() == load_config(str(tmp_path / "config.json")).to_dict() == out.to_dict()
    assert "resumed" in lines2[0]


def test_the_choice_is_kept_per_machine_and_config(monkeypatch, tmp_path) -> None:
    """Seeds and repeated runs on one machine train the same shape (they compare); another budget or
    autosize_cache=false probes again; an unreadable cache file is only a miss."""
    monkeypatch.setenv("PGOLF_CACHE", str(tmp_path))
    probes = []

    def fake(c):
        probes.append(c.train.max_wallclock_seconds)
        return _rate(c, 550.0 * (1 + len(probes)), 87.0)  # a different rate each time: a re-probe shows

    monkeypatch.setattr(autosize, "probe", fake)
    cfg = apply_changes(_cfg(), [("train.autosize", True)])
    first = autosize.resolve(cfg, log=lambda _: None)
    lines: list[str] = []
    again = autosize.resolve(apply_changes(cfg, [("train.seed", 7), ("data.path", "/elsewhere")]), log=lines.append)
    assert len(probes) == 1 and "reused the shape" in lines[0]
    assert (again.model.num_layers, again.model.model_dim, again.train.batch_tokens) == (
        first.model.num_layers, first.model.model_dim, first.train.batch_tokens) and not again.train.autosize
    autosize.resolve(apply_changes(cfg, [("train.max_wallclock_seconds", 300)]), log=lambda _: None)
    autosize.resolve(apply_changes(cfg, [("train.autosize_cache", False)]), log=lambda _: None)
    assert probes == [600, 300, 600]
    (tmp_path / autosize.CACHE_FILE).write_text("{not json")
    autosize.resolve(cfg, log=lambda _: None)
    assert len(probes) == 4


def test_a_progressive_sequence_length_is_priced_stage_by_stage() -> None:
    """Each stage of ``train.seq_len_stages`` gets its share of the clock at its own FLOPs per token: the
    steps are the sum of what each stage alone would get in its share, between the all-short and the
    all-long run's; a batch must hold whole sequences of every stage."""
    long_cfg = apply_changes(_cfg(), [("train.seq_len", 1024)])
    staged = apply_changes(long_cfg, [("train.seq_len_stages", (256, 1024)), ("train.seq_len_stage_fracs", (0.0, 0.75))])
    short = _cfg()
    r = _rate(short, 550.0, 87.0)
    assert staged.train.seq_len_shares() == [(256, 0.75), (1024, 0.25)]
    assert short.train.seq_len_shares() == [(256, 1.0)]
    _, t_long = choose(long_cfg, r)
    _, t_short = choose(short, r)
    _, t_staged = choose(staged, r)
    key = lambda c: tuple(c.changes().values())  # noqa: E731
    by_short, by_long = {key(c): c for c in t_short}, {key(c): c for c in t_long}
    for ch in t_staged:
        assert ch.batch_tokens % 1024 == 0
        a, b = by_short.get(key(ch)), by_long.get(key(ch))
        if a is None or b is None:  # below one of the other runs' step floor
            continue
        assert b.steps < ch.steps < a.steps
        want = 600_000 * (0.75 / a.ms_per_step + 0.25 / b.ms_per_step)
        assert ch.steps == int(want) or ch.steps == int(want) - 1


def test_a_layer_list_rules_out_the_shapes_it_cannot_hold_before_the_probe(monkeypatch, tmp_path) -> None:
    """``model.attn.xsa_layers=2`` is valid at the preset's 3 layers but not at 2: the 2-layer candidates are
    left out (one log line) instead of the run failing after the probe; a list no candidate can hold is one
    ConfigError before the probe; a negative index follows every depth."""
    monkeypatch.setenv("PGOLF_CACHE", str(tmp_path))
    base = apply_changes(_cfg(), [("train.autosize", True), ("train.autosize_cache", False)])
    cfg = apply_changes(base, [("model.attn.xsa_layers", (2,))])
    ok, bad = autosize.shapes(cfg)
    assert {layers for layers, _ in bad} == {2} and all(layers > 2 for layers, _, _ in ok)
    rate = _rate(cfg, 550.0, 87.0)
    _, table = choose(cfg, rate)
    assert table and all(ch.num_layers > 2 for ch in table)
    monkeypatch.setattr(autosize, "probe", lambda c: rate)
    lines: list[str] = []
    out = autosize.resolve(cfg, log=lines.append)
    assert out.model.num_layers > 2 and any("left out 5 candidate shapes (2L)" in x for x in lines)

    probed: list[int] = []
    monkeypatch.setattr(autosize, "probe", lambda c: probed.append(1) or rate)
    with pytest.raises(ConfigError, match="no candidate shape can hold this config .*xsa_layers: layer 7 does not exist"):
        autosize.resolve(apply_changes(base, [("model.num_layers", 8), ("model.attn.xsa_layers", (7,))]))
    assert probed == []
    assert autosize.shapes(apply_changes(base, [("model.attn.xsa_layers", (-1,))]))[1] == {}
