"""A record as it ran, shrunk: ``torchrun --nproc_per_node=2 -m pgolf run record-0427`` on 2 gloo processes
trains, exports with the record's own scheme (``record_0427``) and scores with its phased score-first TTT on
both ranks inside its eval clock (issue 22's end-to-end check; the full-size run needs 8×H100)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pgolf.logformat import parse_log

SHRINK = ["model.num_layers=4", "model.model_dim=64", "model.num_heads=4", "model.num_kv_heads=2",
          "model.vocab_size=384", "model.attn.xsa_layers=-4,-3,-2,-1", "model.parallel_start=-1", "model.recur.start=1",
          "model.recur.end=2", "model.attn.gate_window=8", "model.embed.bigram_buckets=0", "train.batch_tokens=4096",
          "train.seq_len=128", "train.iterations=6", "train.max_wallclock_seconds=0", "train.warmup_steps=0",
          "train.compile=false", "eval.compile=false", "train.val_every=0", "train.calib_reserve_seconds=0",
          "eval.seq_len=128", "eval.batch_tokens=8192", "eval.ttt.chunk=32", "eval.ttt.prefix_docs=8",
          "eval.ttt.batch_docs=4", "data.val_max_tokens=16384", "export.calib_seqs=4", "eval.budget_seconds=240"]
"""record-0427's switches at toy size; no compile (inductor on this CPU takes minutes), Hessians self-generated
(no calibration reserve in a 6-step run)."""


def test_record_0427_trains_exports_with_its_scheme_and_scores_with_phased_ttt_on_two_ranks(tiny_data, tmp_path):
    out = tmp_path / "run"
    sets = [a for s in [f"data.path={tiny_data}", *SHRINK] for a in ("--set", s)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PGOLF_REGISTRY": "off"}
    env.pop("RANK", None)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "pgolf",
                        "run", "record-0427", *sets, "--out", str(out)], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["export_scheme"] == "record_0427" and m["eval_method"] == "ttt"
    assert m["eval_within_budget"] is True and m["eval_seconds"] < 240
    assert any("global SGD phase 3" in str(a) for a in m["eval_actions"])  # every phase ran, on both ranks
    assert m["artifact_bytes"] == m["model_bytes"] + m["code_bytes"] == (out / "model.pgolf").stat().st_size + m["code_bytes"]
    log = parse_log((out / "train.log").read_text())
    final = log.final()
    assert final.name == "final_record_0427_ttt_exact" and abs(final.val_bpb - m["val_bpb"]) <= 0.5e-8
    assert log.world_size == 2 and "final_record_0427_roundtrip_exact" in log.metrics  # the plain line first
    assert r.stdout.count("— scorecard") == 1  # rank 0 alone reports
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["eval"]["ttt"]["lora_slots"] == "virtual" and cfg["eval"]["ttt"]["lora_alpha"] == 144.0
    assert Path(out / "model.pgolf").exists()
