"""``export.fit = prune``: a one-payload scheme's artifact over the cap loses its cheapest ±1 entries until it fits."""

from __future__ import annotations

import torch

from pgolf.config import ExportConfig, ModelConfig
from pgolf.export.driver import export_model
from pgolf.model.gpt import GPT, model_roles

CFG = ModelConfig(vocab_size=64, num_layers=2, model_dim=64, num_heads=2, num_kv_heads=1, mlp_mult=2)
SCHEME = "int6_gptqlite_zstd"


def _sd():
    torch.manual_seed(0)
    return {k: v.detach().clone() for k, v in GPT(CFG).state_dict().items()}


def _export(sd, budget, fit, logs=None):
    e = ExportConfig(scheme=SCHEME, budget_bytes=budget, fit=fit, keep_float_max_numel=0)
    return export_model(sd, e, roles=model_roles(CFG), code_bytes_=1000, log=(logs.append if logs is not None else None))


def test_under_the_cap_nothing_changes_and_over_it_the_artifact_is_pruned_to_fit():
    sd = _sd()
    free = _export(sd, 10**9, "prune")
    assert _export(sd, 10**9, "off").blob == free.blob  # under the cap: byte-identical
    cap = free.model_bytes + 1000 - 300  # 300 bytes over
    assert _export(sd, cap, "off").model_bytes == free.model_bytes  # off: left over the cap
    logs: list[str] = []
    fit = _export(sd, cap, "prune", logs)
    assert fit.model_bytes + 1000 <= cap < free.model_bytes + 1000
    assert any("export fit: pruned" in m for m in logs), logs
    # what changed is only ±1 entries set to 0, in the prunable (low-bit grid) tensors
    before, after = _quantized(free), _quantized(fit)
    changed = 0
    for name, qa in before.items():
        qb = after[name]
        if "q" not in qa.parts:
            assert all(torch.equal(qa.parts[k], qb.parts[k]) for k in qa.parts), name
            continue
        d = qa.parts["q"] != qb.parts["q"]
        assert torch.all(qa.parts["q"][d].abs() == 1) and torch.all(qb.parts["q"][d] == 0), name
        changed += int(d.sum())
    assert changed > 0


def _quantized(res):
    from pgolf.artifact.format import parse_artifact

    return parse_artifact(res.blob, source="test")[0]
