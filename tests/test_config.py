"""Config: overrides parse by field type, unknown keys and bad values are one-line ConfigErrors."""

import json

import pytest

from pgolf.config import RunConfig, apply_overrides, load_config
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
