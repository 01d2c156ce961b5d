"""Config: overrides parse by field type, unknown keys and bad values are one-line ConfigErrors."""

import json

import pytest

from pgolf.config import RunConfig, apply_overrides, flatten, load_config
from pgolf.errors import ConfigError
from pgolf.presets import PRESETS, get_preset


def test_overrides_coerce_types():
    cfg = apply_overrides(RunConfig(), ["model.num_layers=4", "train.compile=true", "optim.matrix_lr=0.02",
                                        "train.batch_tokens=1_024", "data.path=/x", "name=abc"])
    assert cfg.model.num_layers == 4 and isinstance(cfg.model.num_layers, int)
    assert cfg.train.compile is True
    assert cfg.optim.matrix_lr == 0.02
    assert cfg.train.batch_tokens == 1024
    assert cfg.data.path == "/x" and cfg.name == "abc"


@pytest.mark.parametrize(
    "item, needle",
    [
        ("model.foo=1", "unknown config key model.foo"),
        ("nosuch.key=1", "unknown config section"),
        ("model.num_layers=2.5", "cannot parse"),
        ("train.compile=maybe", "cannot parse"),
        ("model.num_layers", "section.key=value"),
        ("model.model_dim=100", "divisible"),
        ("train.device=tpu", "train.device"),
    ],
)
def test_bad_overrides(item, needle):
    with pytest.raises(ConfigError) as e:
        apply_overrides(RunConfig(), [item])
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_roundtrip_json(tmp_path):
    cfg = apply_overrides(get_preset("cpu"), ["model.num_layers=3"])
    p = tmp_path / "config.json"
    p.write_text(cfg.to_json())
    assert load_config(str(p)) == cfg
    d = json.loads(cfg.to_json())
    d["model"]["extra"] = 1
    p.write_text(json.dumps(d))
    with pytest.raises(ConfigError, match="model.extra"):
        load_config(str(p))


def test_presets_valid_and_unknown():
    for name in PRESETS:
        assert isinstance(get_preset(name), RunConfig)
    with pytest.raises(ConfigError, match="unknown preset"):
        get_preset("nope")


def test_baseline_preset_is_the_official_config():
    """CATALOGUE §1.4: the baseline's hyperparameters, unchanged."""
    c = get_preset("baseline")
    m, o, t = c.model, c.optim, c.train
    assert (m.vocab_size, m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads, m.mlp_mult) == (1024, 9, 512, 8, 4, 2)
    assert (m.tie_embeddings, m.rope_base, m.logit_softcap, m.qk_gain_init, m.tied_embed_init_std) == (True, 1e4, 30, 1.5, 0.005)
    assert (o.tied_embed_lr, o.matrix_lr, o.scalar_lr, o.muon_momentum, o.muon_backend_steps) == (0.05, 0.04, 0.04, 0.95, 5)
    assert (o.muon_momentum_warmup_start, o.muon_momentum_warmup_steps, o.beta1, o.beta2, o.grad_clip_norm) == (0.85, 500, 0.9, 0.95, 0)
    assert (t.seed, t.iterations, t.max_wallclock_seconds, t.warmup_steps, t.warmdown_iters, t.warmdown_frac) == (1337, 20000, 600, 20, 1200, 0)
    assert (t.batch_tokens, t.seq_len, t.val_every, t.log_every, t.grad_accum) == (524288, 1024, 1000, 200, 0)
    assert c.export.scheme == "int8_zlib" and c.export.budget_bytes == 16_000_000


# --- typed fields beyond bool/int/float/str, nested sections, derived presets, provenance -------------


def test_tuple_literal_optional_and_nested_fields():
    from dataclasses import dataclass, field

    from pgolf.config import _build

    cfg = apply_overrides(RunConfig(), ["model.attn.xsa_layers=5, 6,7,8", "model.skips=none",
                                        "export.search_k=8,12.5", "train.amp_dtype=fp32"])
    assert cfg.model.attn.xsa_layers == (5, 6, 7, 8) and cfg.model.skips == "none"
    assert cfg.export.search_k == (8.0, 12.5) and cfg.train.amp_dtype == "fp32"
    assert apply_overrides(cfg, ["model.attn.xsa_layers="]).model.attn.xsa_layers == ()

    @dataclass
    class Sub:
        k: int | None = None
        """optional"""

    @dataclass
    class Top:
        sub: Sub = field(default_factory=Sub)
        xs: tuple[float, ...] = ()

    assert _build(Top, {"sub": {"k": "none"}, "xs": [1, "2.5"]}, "") == Top(Sub(None), (1.0, 2.5))
    assert _build(Top, {"sub": {"k": "7"}}, "").sub.k == 7
    with pytest.raises(ConfigError, match=r"sub.k: cannot parse 'x' as int or none"):
        _build(Top, {"sub": {"k": "x"}}, "")


@pytest.mark.parametrize(
    "item, needle",
    [
        ("model.attn.xsa_layers=1,x", "model.attn.xsa_layers[1]: cannot parse 'x' as int"),
        ("model.skips=unett", "model.skips: 'unett' is not one of 'unet', 'gated', 'none'"),
        ("train.amp_dtype=fp8", "is not one of 'auto', 'bf16', 'fp32'"),
        ("model.attn=3", "model.attn is a section"),
        ("model.attn.nope=3", "unknown config key model.attn.nope"),
        ("model.nosub.x=3", "unknown config key 'model.nosub'"),
        ("model.num_layer=3", "did you mean num_layers"),
        ("export.search_bits=4,9", "export.search_bits must list integers in 2..8"),
        ("model.embed.bigram_buckets=1", "bigram_buckets must be 0 or >= 2"),
        ("train.compile=2.5", "cannot parse"),
        ("model.parallel_start=9", "model.parallel_start must be a layer: 1..8, or -1..-8 from the end"),  # no lanes
        ("model.parallel_start=-9", "model.parallel_start must be a layer: 1..8, or -1..-8 from the end"),
        ("model.attn.xsa_layers=9", "model.attn.xsa_layers: layer 9 does not exist (9 layers: 0..8, or -1..-9"),
        ("model.attn.xsa_layers=-10", "model.attn.xsa_layers: layer -10 does not exist"),
        ("model.attn.ve_layers=8,-1", "model.attn.ve_layers lists a layer twice at 9 layers"),
    ],
)
def test_ill_typed_values_are_one_clear_error(item, needle):
    with pytest.raises(ConfigError) as e:
        apply_overrides(RunConfig(), [item])
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_every_field_type_is_supported():
    """No field falls through to 'keep the value as it is': each type round-trips from a string."""
    from pgolf.config import _coerce, field_types, flatten

    flat = flatten(RunConfig())
    for path, typ in field_types().items():
        v = flat[path]
        s = ",".join(map(str, v)) if isinstance(v, tuple) else str(v)
        assert _coerce(path, s, typ) == v, path


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_round_trips_through_config_json(name, tmp_path):
    cfg = get_preset(name)
    p = tmp_path / "config.json"
    p.write_text(cfg.to_json())
    assert load_config(str(p)) == cfg


def test_derived_presets_and_provenance():
    from pgolf.presets import PRESETS, derive, preset_layers, provenance

    try:
        derive("cpu-xsa-test", "cpu", {"model.attn.xsa_layers": (1, 2), "train.seed": "7"}, doc="test")
        derive("cpu-xsa-test2", "cpu-xsa-test", [("model.attn.xsa_layers", "2"), ("model.num_layers", 4)])
        cfg = get_preset("cpu-xsa-test2")
        parent = get_preset("cpu")
        assert cfg.name == "cpu-xsa-test2" and cfg.model.attn.xsa_layers == (2,) and cfg.train.seed == 7
        assert cfg.model.num_layers == 4 and cfg.model.model_dim == parent.model.model_dim
        assert [n for n, _ in preset_layers("cpu-xsa-test2")] == ["default", "cpu", "cpu-xsa-test", "cpu-xsa-test2"]
        prov = provenance("cpu-xsa-test2", ["optim.matrix_lr=0.02"])
        assert prov["model.attn.xsa_layers"] == ((2,), "cpu-xsa-test2")
        assert prov["train.seed"] == (7, "cpu-xsa-test") and prov["model.model_dim"] == (192, "cpu")
        assert prov["optim.matrix_lr"] == (0.02, "--set") and prov["model.vocab_size"] == (1024, "default")
        assert prov["name"] == ("cpu-xsa-test2", "cpu-xsa-test2")
        with pytest.raises(ConfigError, match="unknown config key model.attn.nope"):
            derive("cpu-bad-test", "cpu", {"model.attn.nope": 1})
            get_preset("cpu-bad-test")
    finally:
        for n in ("cpu-xsa-test", "cpu-xsa-test2", "cpu-bad-test"):
            PRESETS.pop(n, None)


def test_layer_lists_count_from_the_end_and_follow_the_depth():
    """A negative index names the same layer from the end at every depth (as ``parallel_start`` does)."""
    for n in (3, 5, 11):
        m = apply_overrides(RunConfig(), [f"model.num_layers={n}", "model.attn.xsa_layers=-2,-1",
                                          "model.attn.ve_layers=0,-1"]).model
        assert m.layers("xsa_layers") == (n - 2, n - 1) and m.layers("ve_layers") == (0, n - 1)


def test_a_negative_layer_list_plans_the_same_layers_as_the_positive_one():
    from pgolf.model.gpt import build_plan

    def plan(xsa: str, ve: str):
        m = apply_overrides(RunConfig(), ["model.num_layers=5", f"model.attn.xsa_layers={xsa}",
                                          f"model.attn.ve_layers={ve}"]).model
        return build_plan(m, False)

    assert plan("-2,-1", "-1") == plan("3,4", "4") != plan("3", "4")


def test_eval_seq_len_falls_back_to_the_training_length():
    """``RunConfig.eval_seq_len``, the one place ``eval.seq_len`` 0 means ``train.seq_len``."""
    base = apply_overrides(RunConfig(), ["train.seq_len=256", "train.batch_tokens=4096"])
    assert base.eval.seq_len == 0 and base.eval_seq_len == 256
    own = apply_overrides(base, ["eval.seq_len=512"])
    assert own.eval_seq_len == 512 and own.train.seq_len == 256
    assert "eval_seq_len" not in flatten(own) and "eval_seq_len" not in own.to_dict()  # derived, never stored
