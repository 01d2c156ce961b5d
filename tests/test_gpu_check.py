"""bench/gpu_check.py's CPU dry run: the GPU check's own code path, tiny shapes, on the CPU (it is prepared
before any GPU is seen; a broken check would waste a GPU slot)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_dry_run_writes_one_json_and_one_table(tmp_path, tiny_data, capsys, monkeypatch):
    monkeypatch.delenv("OUT", raising=False)
    out = tmp_path / "gpu_check.json"
    rc = _module().main(["--dry-run", "--out", str(out), "--data", str(tiny_data), "--skip", "cuda_tests"])
    res = json.loads(out.read_text())
    assert rc == 0, json.dumps({k: v for k, v in res.items() if k != "env"}, default=str)[:3000]
    assert res["dry_run"] is True
    assert res["compile"]["status"] == "ok" and res["compile"]["max_grad_diff"] < 2e-2
    steps = res["steps"]
    assert set(steps) == {"record-0427", "baseline", "record-0427 fused"}
    rec = steps["record-0427"]
    assert rec["status"] == "ok" and set(rec["phases"]) == {"plain", "looped"}  # the recurrence's two plans
    # compared with preflight's 1xH100 prediction (derived, not measured: 839.7 ms/step average)
    assert round(rec["predicted_ms_per_step"], 1) == 839.7
    assert round(steps["baseline"]["predicted_ms_per_step"], 1) == 215.6
    for p in rec["phases"].values():
        assert p["grad_accum"] == 8 and p["ms_per_step"] > 0 and p["tokens_per_s_per_gpu"] > 0
    e2e = res["e2e"]
    assert e2e["status"] == "ok" and e2e["eval_method"] == "plain" and 0 < e2e["val_bpb"] < 20
    assert e2e["artifact_bytes"] > 0
    table = capsys.readouterr().out
    assert "DRY RUN" in table and "step record-0427 [looped]" in table and "e2e baseline" in table


def test_cuda_tests_section_runs_pytest_on_the_selection():
    r = _module().cuda_tests(dry=True)  # the CPU selection: the same command, every case skips here
    assert r.get("failed", 0) == 0 and r.get("skipped", 0) > 0 and "tests/test_fused.py" in r["command"]
