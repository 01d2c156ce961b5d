"""bench/ablations.py: every switch is a valid, real change at any pinned depth; the shape is pinned; the
table's paired differences are exact."""

from __future__ import annotations

import pytest
from test_bench import _load

from pgolf.config import apply_overrides, flatten
from pgolf.model.gpt import GPT
from pgolf.presets import get_preset

abl = _load("ablations")
PIN = ["model.num_layers={L}", "model.model_dim=64", "model.num_heads=2", "model.num_kv_heads=1",
       "train.batch_tokens=2048", "train.autosize=false"]


ADOPTED = {"leaky_relu2", "parallel_last", "ema_h0.07", "stack_best3"}  # the winners the cpu preset took


@pytest.mark.parametrize("base", ["cpu-v1", "cpu"])
@pytest.mark.parametrize("layers", [2, 3, 5])
def test_every_switch_is_a_valid_change_of_the_pinned_shape(layers, base):
    pins = [p.format(L=layers) for p in PIN]
    ref = apply_overrides(get_preset(base), pins)
    ref_flat = flatten(ref)
    for name, switch in abl.TECHNIQUES.items():
        cfg = apply_overrides(ref, switch(layers))  # raises on a layer the pinned depth does not have
        changed = {k for k, v in flatten(cfg).items() if v != ref_flat[k]}
        # on cpu-v1 every switch is a real change; cpu already has the adopted ones, which the bench skips
        expect = name != "ref" and not (base == "cpu" and name in ADOPTED)
        assert bool(changed) == expect == abl.is_change(base, switch(layers), pins), name
        # a switch never changes the shape it is compared at
        assert not changed & {"model.num_layers", "model.model_dim", "model.num_heads", "model.num_kv_heads",
                              "train.batch_tokens", "train.autosize"}, name
        GPT(cfg.model)  # and the model builds


def test_a_given_shape_pins_like_autosize():
    pins, layers, what = abl.given_shape("2x160:16384")
    assert layers == 2 and "2L×160" in what
    cfg = apply_overrides(get_preset("cpu-v1"), pins)
    m, t = cfg.model, cfg.train
    assert (m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads, t.batch_tokens, t.autosize) == (2, 160, 5, 1, 16384, False)
    for bad in ("2x160", "2L×160:16384", "x160:8"):
        with pytest.raises(ValueError, match="LAYERSxWIDTH:BATCH"):
            abl.given_shape(bad)


def test_layer_lists_follow_the_depth():
    assert abl.TECHNIQUES["xsa_all"](4) == ["model.attn.xsa_layers=0,1,2,3"]
    assert abl.TECHNIQUES["value_embed_last"](2)[0] == "model.attn.ve_layers=1"
    assert abl.TECHNIQUES["parallel_last"](3) == ["model.parallel_start=-1"]  # the last layer at any depth
    assert "model.recur.start=2" in abl.TECHNIQUES["recur_mid_x2"](5)


def test_predicted_steps_are_read_from_the_autosize_line():
    line = ("autosize: chose 2L×160 (5 heads, 1 kv), batch 16,384: 492,970 params, ≈413,924 model bytes, "
            "278.0 ms/step → 1,539 steps, 8,830,976 tokens, L 11.0668")
    assert abl._predicted_steps(line) == 1539
    assert abl._predicted_steps("autosize: reused … " + line.split("chose ")[1]) == 1539
    assert abl._predicted_steps("no such line") == 0


def test_table_pairs_each_seed_with_its_reference(capsys):
    def r(bpb, raw, pre):
        return {"params": 10, "steps": 5, "val_bpb": bpb, "val_bpb_raw": raw, "pre_quant_val_bpb": pre}

    rows = {"ref": {"1": r(2.0, 2.1, 1.9), "2": r(2.5, 2.6, 2.4)},
            "x": {"1": r(1.9, 2.05, 1.85), "2": r(2.6, 2.6, 2.4)}}
    abl.print_table(rows, ["ref", "x"], ["1", "2"])
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| x |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[3] == "2.2500"                 # mean val_bpb
    assert cells[4] == "-0.1000 +0.1000"        # per seed, against that seed's reference
    assert cells[5:] == ["+0.0000", "-0.0250", "-0.0250"]  # mean Δ, Δ raw, Δ pre-quant


SMALL = ["model.vocab_size=384", "model.model_dim=64", "model.num_heads=2", "model.num_kv_heads=1",
         "train.batch_tokens=512", "train.seq_len=64", "train.compile=false"]


def test_throughput_times_real_trainer_steps_with_the_switch_on(tiny_data):
    """bench/technique_throughput.py: a run times exactly ``steps`` trainer steps after its priming step,
    with every schedule over the timed run; recurrence is timed looped from the first step."""
    from pgolf.config import apply_overrides

    tput = _load("technique_throughput")
    cfg = tput.timing_config(str(tiny_data), 3, 1, abl.TECHNIQUES["ema_h0.07"](3))
    t = cfg.train
    assert (t.iterations, t.warmup_steps, t.max_wallclock_seconds, t.val_every) == (4, 1, 0, 0)
    assert t.ema.horizon_frac == 0.07 and cfg.model.num_layers == 3
    r = tput.time_steps(apply_overrides(cfg, SMALL))
    assert r["timed_steps"] == 3 and 0 < r["ms_min"] <= r["ms_median"]
    rec = tput.timing_config(str(tiny_data), 3, 1, abl.TECHNIQUES["recur_mid_x2"](3))
    assert rec.model.recur.loops == 1 and rec.model.recur.start_frac == 0
    assert tput.flops_per_token(rec) > tput.flops_per_token(tput.timing_config(str(tiny_data), 3, 1, []))
    # --set moves the reference and every technique alike; the switch still wins over it, the timing frame too
    wide = tput.timing_config(str(tiny_data), 3, 1, abl.TECHNIQUES["ema_h0.07"](3),
                              ["train.batch_tokens=16384", "train.ema.horizon_frac=0.5", "train.iterations=99"])
    assert wide.train.batch_tokens == 16384 and wide.train.ema.horizon_frac == 0.07 and wide.train.iterations == 4
