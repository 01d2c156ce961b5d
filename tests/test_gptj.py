"""The GPT-J single-stream parallel block (``model.gptj_layers``; [04-06a], [04-09b] PR #1493):
x ← x + attn(n(x)) + mlp(n(x)), both branches reading the same normalized input."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pgolf import bundler
from pgolf.config import ModelConfig
from pgolf.errors import ConfigError
from pgolf.model.gpt import GPT, build_plan

CFG = ModelConfig(vocab_size=64, num_layers=4, model_dim=32, num_heads=2, num_kv_heads=1, mlp_mult=2)


def _model(cfg: ModelConfig, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    m = GPT(cfg).double().eval()
    with torch.no_grad():  # the output projections start at zero: give every branch something to say
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def _with_gptj(layers):
    return dataclasses.replace(CFG, gptj_layers=tuple(layers))


def test_the_block_sums_both_branches_of_one_normalized_input():
    cfg = _with_gptj([2])
    model = _model(cfg)
    idx = torch.randint(0, 64, (2, 16))
    blk = model.blocks[2]
    seen: dict[str, torch.Tensor] = {}
    ins = {"attn": blk.attn.register_forward_hook(lambda m, a, o: seen.update(attn_in=a[0], attn_out=o)),
           "mlp": blk.mlp.register_forward_hook(lambda m, a, o: seen.update(mlp_in=a[0], mlp_out=o)),
           "blk": blk.register_forward_hook(lambda m, a, o: seen.update(x=a[0], x0=a[1], out=o))}
    model(idx)
    for h in ins.values():
        h.remove()
    assert torch.equal(seen["attn_in"], seen["mlp_in"])  # the same normalized input, not attn's output
    mixed = blk.mix(seen["x"], seen["x0"])
    expect = mixed + blk.attn_scale * seen["attn_out"] + blk.mlp_scale * seen["mlp_out"]
    torch.testing.assert_close(seen["out"], expect, rtol=0, atol=1e-12)


def test_only_the_listed_layers_change_and_the_switch_changes_the_model():
    idx = torch.randint(0, 64, (2, 16))
    ref, par = _model(CFG), _model(_with_gptj([-1]))  # the last layer, from the end
    par.load_state_dict(ref.state_dict())  # no new parameters: the same weights
    outs = {}
    for name, m in (("ref", ref), ("par", par)):
        outs[name] = []
        hooks = [b.register_forward_hook(lambda mod, a, o, k=name: outs[k].append(o)) for b in m.blocks]
        logits = m(idx)
        for h in hooks:
            h.remove()
        outs[name + "_logits"] = logits
    for i in range(3):  # blocks before the GPT-J one compute exactly what they did
        assert torch.equal(outs["ref"][i], outs["par"][i]), i
    assert not torch.allclose(outs["ref"][3], outs["par"][3])
    assert not torch.allclose(outs["ref_logits"], outs["par_logits"])
    assert [p.gptj for p in build_plan(par.cfg)] == [False, False, False, True]


def test_gradients_reach_both_branches():
    model = _model(_with_gptj([1]))
    idx = torch.randint(0, 64, (2, 16))
    model(idx, idx).backward()
    blk = model.blocks[1]
    assert blk.attn.c_q.weight.grad.abs().sum() > 0 and blk.mlp.fc.weight.grad.abs().sum() > 0


def test_layer_lists_are_checked_once_with_one_line():
    with pytest.raises(ConfigError, match=r"model.gptj_layers: layer 4 does not exist"):
        _with_gptj([4])
    with pytest.raises(ConfigError, match="twice"):
        _with_gptj([1, -3])
    with pytest.raises(ConfigError, match="parallel lanes"):
        build_plan(dataclasses.replace(CFG, gptj_layers=(3,), parallel_start=2))


def test_the_bundle_ships_it_only_where_a_layer_uses_it():
    sw = bundler.dead_definitions()["pgolf.model.gpt:Block._gptj"]
    from pgolf.config import RunConfig

    assert not sw.needed(RunConfig(model=CFG)) and sw.needed(RunConfig(model=_with_gptj([0])))
