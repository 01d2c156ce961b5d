"""The planner (pgolf.export.planner): its synthetic weights have the fitted statistics, its header
size is the real one, and its estimate is within a stated tolerance of the real artifact of a tiny
trained model for every export scheme; `pgolf info --json` reports it."""

import json
import math
import struct

import pytest
import torch

from pgolf.artifact.budget import code_bytes
from pgolf.cli import main
from pgolf.config import apply_overrides
from pgolf.export import planner
from pgolf.export.driver import EXPORT_SCHEMES, export_model
from pgolf.model.gpt import count_params, parameter_roles
from pgolf.presets import get_preset

TOLERANCE = 0.20
"""|predicted / actual − 1| for a tiny model trained 20 steps (docs/benchmarks.md, "Planner": ≤ 1 % on
the demo and cpu checkpoints for the SDClip / GPTQ-lite schemes, 10–25 % for int8_zlib whose 1/127
step floor makes bytes depend on the absolute weight scale, 5–16 % on 20-step tiny models whose
Adam-trained embedding rows are far from the fitted shape)."""
SCHEMES = ("int8_zlib", "int6_gptqlite_zstd", "gptq6_emb7_brotli")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("beta", [0.8, 1.3, 2.0, 3.5])
def test_generalized_normal_shape_and_scales(beta):
    assert planner.gn_beta(planner.gn_kurtosis(beta)) == pytest.approx(beta, rel=1e-6)
    state = torch.random.get_rng_state()
    tails = {"beta": beta, "row_std_median": 0.04, "row_log_std": 0.3}
    w = planner.synthetic_weights(400, 1000, tails, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
    assert torch.equal(w, planner.synthetic_weights(400, 1000, tails, seed=3))
    z = w.double() / w.double().std(dim=1, keepdim=True)
    kurt = float((z**4).mean() / (z**2).mean() ** 2 - 3)
    assert kurt == pytest.approx(planner.gn_kurtosis(beta), abs=0.08 + 0.05 * abs(planner.gn_kurtosis(beta)))
    row_std = w.double().std(dim=1)
    assert float(row_std.median()) == pytest.approx(0.04, rel=0.08)
    assert float(row_std.log().std()) == pytest.approx(0.3, rel=0.15)
    assert math.isclose(planner.gn_kurtosis(2.0), 0.0, abs_tol=1e-12) and planner.gn_kurtosis(1.0) == pytest.approx(3.0)


@pytest.fixture(scope="module")
def tiny_run(tiny_data, tmp_path_factory):
    from pgolf.data.prepare import prepare_data
    from pgolf.train.loop import train

    cfg = apply_overrides(get_preset("tiny"), [f"data.path={tiny_data}", "model.vocab_size=384"])
    out = tmp_path_factory.mktemp("tiny-run")
    res = train(cfg, out, data=prepare_data(cfg), progress=False)
    return cfg, res.model


@pytest.mark.parametrize("scheme", SCHEMES)
def test_estimate_is_within_tolerance_of_the_real_artifact(tiny_run, scheme):
    from pgolf.export.driver import calibration_hessians

    cfg, model = tiny_run
    cfg = apply_overrides(cfg, [f"export.scheme={scheme}", "export.calib_seqs=4"])
    h, source, info = calibration_hessians(model, cfg.export, seq_len=cfg.train.seq_len)
    needs = EXPORT_SCHEMES[scheme].needs_hessians  # the runner's meta: calibration info only where used
    res = export_model(model.state_dict(), cfg.export, roles=parameter_roles(model),
                       meta={"config": cfg.to_dict(), "calibration": info if needs else {}},
                       hessians=h, hessian_source=source)
    est = planner.estimate_artifact_bytes(cfg)
    assert est.code_bytes == code_bytes(cfg) and est.artifact_bytes == est.model_bytes + est.code_bytes
    assert abs(est.model_bytes / res.model_bytes - 1) <= TOLERANCE, (est.model_bytes, res.model_bytes)
    # the container header is computed, not estimated: within a few digits of the real one
    hlen = struct.unpack_from("<I", res.blob, 8)[0]
    assert abs(est.groups["header"] - (12 + hlen + 32)) <= 32


def test_budget_estimate_fills_the_budget_or_stores_fp16():
    cfg = apply_overrides(get_preset("cpu"), ["export.scheme=budget", "export.budget_bytes=1500000"])
    est = planner.estimate_artifact_bytes(cfg)
    assert est.artifact_bytes <= 1_500_000 and est.model_bytes == 1_500_000 - code_bytes(cfg)
    big = planner.estimate_artifact_bytes(apply_overrides(cfg, ["export.budget_bytes=16000000"]))
    fp16 = 2 * count_params(cfg.model)
    assert 0.5 * fp16 < big.model_bytes <= fp16  # everything fits as (compressed) fp16


def test_info_json_reports_the_planner(capsys):
    assert main(["info", "cpu", "--json", "--set", "export.scheme=gptq6_emb7_brotli"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"] == count_params(get_preset("cpu").model)
    assert out["estimated_artifact_bytes"] == out["estimated_model_bytes"] + out["code_bytes"]
    groups = out["estimate"]["groups"]
    assert {"embed", "attn", "mlp", "passthrough", "header"} <= set(groups)
    assert abs(sum(groups.values()) - out["estimated_model_bytes"]) <= len(groups)
