"""The ternary record's preset (record-0324) and a ternary `pgolf run` end to end on a tiny config."""

import json

import pytest
import torch

from pgolf.config import apply_overrides
from pgolf.export.driver import load_model_state
from pgolf.model.gpt import GPT, count_params, parameter_roles
from pgolf.presets import get_preset
from pgolf.quant.lowbit import is_lowbit_role


def test_record_0324_has_the_logged_parameter_counts():
    """ternary_log_1337.txt: ``params:73685840`` and ``artifact:… ternary:64880640(…) fp:2513744(…)``; the
    difference 6,291,456 = 8192 × 768 is the frozen lm_head its params: line counts and its export drops."""
    cfg = get_preset("record-0324")
    assert count_params(cfg.model) == 73_685_840
    with torch.device("meta"):
        model = GPT(cfg.model)
    roles = parameter_roles(model)
    sizes = {n: p.numel() for n, p in model.named_parameters()}
    assert sum(v for n, v in sizes.items() if is_lowbit_role(roles[n])) == 64_880_640
    assert sum(v for n, v in sizes.items() if not is_lowbit_role(roles[n])) == 2_513_744
    assert sum(sizes.values()) + 8192 * 768 == 73_685_840
    assert cfg.train.qat.kind == "ternary" and cfg.train.qat.group_size == 128
    assert cfg.export.scheme == "ternary_g128+fp8"


def test_factored_embedding_shapes_and_checks():
    cfg = apply_overrides(get_preset("tiny"), ["model.embed.factor_dim=8", "model.embed.vocab_bias=true"])
    model = GPT(cfg.model)
    assert tuple(model.tok_emb.weight.shape) == (1024, 8)
    assert tuple(model.factored.proj_in.weight.shape) == (32, 8)
    assert tuple(model.factored.proj_out.weight.shape) == (8, 32)
    roles = parameter_roles(model)
    assert roles["factored.proj_in.weight"].value == "proj" and roles["vocab_bias"].value == "control"
    x = torch.randint(0, 1024, (2, 8))
    with torch.no_grad():  # the bias is added to the logits before the softcap
        base = model(x)
        model.vocab_bias.fill_(0.5)
        c = cfg.model.logit_softcap
        moved = model(x)
    torch.testing.assert_close(torch.atanh(moved / c) * c, torch.atanh(base / c) * c + 0.5, rtol=1e-4, atol=1e-4)
    from pgolf.errors import ConfigError

    with pytest.raises(ConfigError, match="tied embeddings"):
        GPT(apply_overrides(cfg, ["model.tie_embeddings=false"]).model)


def test_ternary_run_trains_exports_packed_and_scores_exactly(tiny_data, tmp_path):
    """A ternary run (with the record's factored embedding and vocab bias): the artifact holds base-3
    packed trits for every attention/MLP matrix, and its round-trip score equals the trained model's score
    exactly (floats stored fp32: the whole artifact forward is the trained forward)."""
    from pgolf.runner import run

    cfg = apply_overrides(get_preset("tiny"), [
        f"data.path={tiny_data}", "model.vocab_size=384", "train.iterations=6", "data.val_max_tokens=4096",
        "train.qat.kind=ternary", "train.qat.group_size=16", "export.scheme=ternary_g16",
        "model.embed.factor_dim=16", "model.embed.vocab_bias=true"])
    metrics = run(cfg, tmp_path / "run", progress=False)
    assert metrics["round_trip_val_bpb"] == metrics["pre_quant_val_bpb"]
    assert metrics["quant_gap_bpb"] == 0.0
    assert metrics["val_bpb"] == metrics["round_trip_val_bpb"]  # eval.method plain
    state, header = load_model_state(tmp_path / "run" / "model.pgolf")
    roles = parameter_roles(GPT(cfg.model))
    for name, t in header["tensors"].items():
        assert (t["scheme"] == "ternary_b3_g16") == is_lowbit_role(roles[name]), name
        if is_lowbit_role(roles[name]):  # each group of 16 holds only {−σ, 0, σ}
            a = state[name].abs().reshape(state[name].shape[0], -1, 16)
            top = a.amax(dim=-1, keepdim=True)
            assert bool(((a == 0) | (a == top)).all()), name
    log = (tmp_path / "run" / "train.log").read_text()
    assert "late_qat:enabled step:0" in log
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["qat"]["kind"] == "ternary"
