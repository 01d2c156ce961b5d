"""Parameter roles: declared once by the model, read by the optimizer split, quantization, streams,
calibration and the planner. A technique that adds tensors (BigramHash) lands in the right place in all
of them without any of those modules knowing its names."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pgolf.artifact import streams
from pgolf.config import ExportConfig, ModelConfig, RunConfig, apply_overrides
from pgolf.errors import ConfigError
from pgolf.export.driver import export_model
from pgolf.export.search import Search
from pgolf.model.gpt import GPT, model_roles, parameter_groups, parameter_roles
from pgolf.model.layers import CastedLinear, declare
from pgolf.optim import build_optimizers
from pgolf.presets import PRESETS, get_preset
from pgolf.quant.calib import HessianCollector
from pgolf.roles import HOT_GROUPS, QUANT_GROUPS, Role

TINY = ModelConfig(vocab_size=64, num_layers=3, model_dim=32, num_heads=2, num_kv_heads=1, mlp_mult=2)
BIGRAM = apply_overrides(RunConfig(model=TINY),
                         ["model.embed.bigram_buckets=32", "model.embed.bigram_dim=16"]).model


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_parameter_of_every_preset_has_exactly_one_role(name):
    cfg = get_preset(name).model
    with torch.device("meta"):
        m = GPT(cfg)
    roles = parameter_roles(m)
    assert list(roles) == [n for n, _ in m.named_parameters()] == list(m.state_dict())
    assert all(isinstance(r, Role) for r in roles.values())
    groups = parameter_groups(m)
    names = [n for g in groups.values() for n, _ in g]
    assert sorted(names) == sorted(roles)  # a partition: each parameter in exactly one optimizer group


def test_baseline_roles_and_the_split_of_catalogue_1_4():
    roles = model_roles(get_preset("baseline").model)
    assert roles["tok_emb.weight"] is Role.EMBED and roles["skip_weights"] is Role.CONTROL
    want = {"attn.c_q.weight": Role.ATTN_Q, "attn.c_k.weight": Role.ATTN_K, "attn.c_v.weight": Role.ATTN_V,
            "attn.proj.weight": Role.ATTN_O, "mlp.fc.weight": Role.MLP_UP, "mlp.proj.weight": Role.MLP_DOWN,
            "attn.q_gain": Role.CONTROL, "attn_scale": Role.CONTROL, "mlp_scale": Role.CONTROL,
            "resid_mix": Role.CONTROL}
    for i in range(9):
        for suffix, role in want.items():
            assert roles[f"blocks.{i}.{suffix}"] is role
    assert len(roles) == 2 + 9 * len(want)
    untied = model_roles(apply_overrides(get_preset("tiny"), ["model.tie_embeddings=false"]).model)
    assert untied["lm_head.weight"] is Role.HEAD


def test_coverage_check_catches_undeclared_stray_conflicting_and_misshapen():
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(3))

    with pytest.raises(ConfigError, match="w has no declared role"):
        parameter_roles(Bad())
    m = declare(Bad(), w=Role.CONTROL, v=Role.CONTROL)
    with pytest.raises(ConfigError, match="declares a role for 'v'"):
        parameter_roles(m)
    with pytest.raises(ConfigError, match="matrix role"):
        parameter_roles(declare(Bad(), w=Role.MLP_UP))

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = CastedLinear(4, 4, role=Role.ATTN_Q)
            self.b = CastedLinear(4, 4, role=Role.MLP_UP)
            self.b.weight = self.a.weight  # one tensor, two roles

    with pytest.raises(ConfigError, match="two roles"):
        parameter_roles(Shared())


def test_role_table():
    assert QUANT_GROUPS[:8] == ("embed", "head", "attn_q", "attn_k", "attn_v", "attn_o", "mlp_up", "mlp_down")
    assert "control" not in QUANT_GROUPS and set(HOT_GROUPS) == {"embed", "attn_q", "mlp_up"}
    assert {r.optimizer for r in Role} == {"embed", "head", "matrix", "scalar"}
    assert Role.HASH.optimizer == "embed" and Role.PROJ.optimizer == "matrix" and Role.GATE.optimizer == "scalar"
    assert Role.EMBED.hessian == "head" and Role.MLP_DOWN.hessian == "input" and Role.HASH.hessian is None


def test_a_technique_that_adds_tensors_lands_everywhere_by_its_roles():
    """BigramHash adds a table, a projection and a scale; none of the consumers names them."""
    torch.manual_seed(0)
    m = GPT(BIGRAM)
    roles = parameter_roles(m)
    assert roles["bigram.table"] is Role.HASH and roles["bigram.proj.weight"] is Role.PROJ
    assert roles["bigram.scale"] is Role.CONTROL
    # optimizer: table with the embedding (Adam, tied_embed_lr), projection on Muon, scale with the scalars
    groups = {k: [n for n, _ in v] for k, v in parameter_groups(m).items()}
    assert "bigram.table" in groups["embed"] and "bigram.proj.weight" in groups["matrix"]
    assert "bigram.scale" in groups["scalar"]
    opts = build_optimizers(m, get_preset("tiny").optim)
    owner = {id(p): type(o).__name__ for o in opts for g in o.param_groups for p in g["params"]}
    params = dict(m.named_parameters())
    assert owner[id(params["bigram.proj.weight"])] == "Muon" and owner[id(params["bigram.table"])] == "Adam"
    # calibration: the projection is a linear whose input Hessian is collected; the table has none
    with torch.no_grad():
        m.bigram.table.normal_()
    with HessianCollector(m) as hc:
        hc.run(torch.randint(0, 64, (2, 16)))
        h, _ = hc.hessians()
    assert h["bigram.proj.weight"].shape == (16, 16) and "bigram.table" not in h
    assert torch.count_nonzero(h["bigram.proj.weight"]) > 0
    # quantization groups of the budget search, and the streams
    sd = {k: v.detach() for k, v in m.state_dict().items()}
    s = Search(sd, roles, h)
    assert s.groups["hash"] == ["bigram.table"] and s.groups["proj"] == ["bigram.proj.weight"]
    assert "bigram.scale" in s.fixed
    res = export_model(sd, ExportConfig(scheme="int6_gptqlite_zstd"), roles=roles)
    schemes = {r.name: r.scheme for r in res.rows}
    assert schemes["bigram.table"] == schemes["bigram.proj.weight"] == "int8_row"  # quantized matrices
    assert schemes["bigram.scale"] == "fp32"  # control: kept fp32 as the baseline keeps its scales
    grouping = streams.role_grouping(roles)
    assert grouping("bigram.table", "q", torch.zeros(64, 64, dtype=torch.int8)) == "hash"


def test_export_refuses_a_state_dict_the_roles_do_not_cover():
    sd = {k: v.detach() for k, v in GPT(TINY).state_dict().items()}
    with pytest.raises(ConfigError, match="no declared role"):
        export_model({**sd, "extra.weight": torch.zeros(4, 4)}, ExportConfig(), roles=model_roles(TINY))
    with pytest.raises(ConfigError, match="not in the state dict"):
        export_model({k: v for k, v in sd.items() if k != "skip_weights"}, ExportConfig(), roles=model_roles(TINY))
