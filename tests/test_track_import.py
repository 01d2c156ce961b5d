"""Importing existing results: the challenge's log formats (the root train_gpt.py's lines, the later records'
lines) parse to exactly the logged numbers, their seeds group under one config hash, pgolf logs that were
resumed give one continuous curve, and ``pgolf runs import`` is idempotent over folders of logs and run
directories."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from pgolf.logformat import parse_log
from pgolf.track.record import PgolfLog, build_official_record, discover

NVIDIA = """+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 570.124.06             Driver Version: 570.124.06     CUDA Version: 12.8     |
|=========================================+========================+======================|
|   0  NVIDIA H100 80GB HBM3          On  |   00000000:19:00.0 Off |                    0 |
|   1  NVIDIA H100 80GB HBM3          On  |   00000000:3B:00.0 Off |                    0 |
+-----------------------------------------------------------------------------------------+"""


def root_log(seed: int = 1337, final: str = "1.22436570", matrix_lr: str = "0.04") -> str:
    """A log in the root train_gpt.py's format (its logfile: code first, then the run)."""
    code = "import torch\nstep:1/2 train_loss:99.0 train_time:1ms step_avg:1.00ms\n    log0(f'seed:{args.seed}')\n"
    return "\n".join([
        code + "=" * 100, "Running Python 3.12.3 (main, Nov  6 2025, 13:44:16) [GCC 13.3.0]",
        "Running PyTorch 2.8.0+cu128", NVIDIA, "=" * 100,
        "val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path=./data/tokenizers/fineweb_1024_bpe.model",
        "train_loader:dataset:fineweb10B_sp1024 train_shards:80",
        "val_loader:shards pattern=./data/datasets/fineweb10B_sp1024/fineweb_val_*.bin tokens:62021632",
        "model_params:17059912", "world_size:2 grad_accum_steps:4",
        f"tie_embeddings:True embed_lr:0.05 head_lr:0.0 matrix_lr:{matrix_lr} scalar_lr:0.04",
        "train_batch_tokens:524288 train_seq_len:1024 iterations:20000 warmup_steps:20 max_wallclock_seconds:600.000",
        f"seed:{seed}", "warmup_step:1/20",
        "step:0/20000 val_loss:6.9357 val_bpb:4.1077 train_time:0ms step_avg:0.02ms",
        "step:1/20000 train_loss:6.9370 train_time:30ms step_avg:29.81ms",
        "step:2/20000 train_loss:16.7000 train_time:75ms step_avg:37.50ms",
        "step:200/20000 val_loss:2.8397 val_bpb:1.6774 train_time:8699ms step_avg:43.49ms",
        "step:13780/20000 val_loss:2.0606 val_bpb:1.2172 train_time:600038ms step_avg:43.54ms",
        "stopping_early: wallclock_cap train_time:600038ms step:13780/20000",
        "peak memory allocated: 10184 MiB reserved: 10200 MiB",
        "Serialized model: 67224983 bytes", "Code size: 47642 bytes", "Total submission size: 67272625 bytes",
        "Serialized model int8+zlib: 15815847 bytes (payload:17178912 raw_torch:17224025 payload_ratio:3.91x)",
        "Total submission size int8+zlib: 15863489 bytes",
        "final_int8_zlib_roundtrip val_loss:2.0727 val_bpb:1.2244 eval_time:1401ms",
        f"final_int8_zlib_roundtrip_exact val_loss:2.07269931 val_bpb:{final}", ""])


def record_log(seed: int = 42) -> str:
    """A log in the later records' format (console output, Hyperparameters block, minutes)."""
    return "\n".join([
        "W0426 19:59:28.614000 762659 torch/distributed/run.py:803] *****", "Hyperparameters:",
        "  adam_eps: 1e-08", "  data_dir: /workspace/data", "  datasets_dir: /workspace/data/datasets/fineweb10B_sp8192",
        "  ema_decay: 0.9965", f"  run_id: record_s{seed}", f"  seed: {seed}", "  world_size: 8",
        "train_shards: 80", "model_params:35945671", "warmup_step: 1/20",
        "1/20000 train_loss: 9.0087 train_time: 0.0m tok/s: 17921784",
        "500/20000 train_loss: 2.5615 train_time: 0.8m tok/s: 8217810",
        "4945/20000 val_loss: 2.3539 val_bpb: 1.0756",
        "stopping_early: wallclock_cap train_time: 599592ms step: 4945/20000",
        "diagnostic pre-quantization post-ema val_loss:2.32848665 val_bpb:1.06395844 eval_time:6718ms",
        "Serialized model: 135417533 bytes", "Code size (uncompressed): 157868 bytes",
        "Code size (compressed): 31999 bytes", "Serialized model quantized+pergroup: 15865260 bytes",
        "Total submission size quantized+pergroup: 15897259 bytes",
        "diagnostic quantized val_loss:2.34727563 val_bpb:1.07254371 eval_time:49995ms",
        "ttp: b9/782 bl:2.7610 bb:1.2598 rl:2.3017 rb:1.0495 dl:105-107 gd:1",
        "quantized_ttt_phased val_loss:2.31944212 val_bpb:1.05989454 eval_time:508785ms", "total_eval_time:508.8s", ""])


def test_root_format_log_parses_to_the_logged_numbers():
    log = parse_log(root_log())
    curves = log.curves()
    assert curves["train"] == [[1, 6.937, 0.03], [2, 16.7, 0.075]]  # the code's column-0 step line is not a step
    assert curves["val"] == [[0, 4.1077, 0.0], [200, 1.6774, 8.699], [13780, 1.2172, 600.038]]
    assert log.stopped_early and log.train_ms == 600038 and log.steps == 13780 and log.iterations == 20000
    assert log.artifact_bytes() == ("int8+zlib", 15863489)
    assert log.model_bytes["int8+zlib"] == 15815847 and log.code_bytes["plain"] == 47642
    final = log.final()
    assert final.name == "final_int8_zlib_roundtrip_exact" and final.val_bpb == 1.2243657
    assert final.val_loss == 2.07269931 and final.eval_ms is None
    assert (log.seed, log.params, log.world_size, log.dataset) == (1337, 17059912, 2, "fineweb10B_sp1024")
    assert log.gpu == ("NVIDIA H100 80GB HBM3", 2)
    assert log.versions == {"python": "3.12.3", "torch": "2.8.0+cu128"} and log.code_sha256
    assert log.settings["matrix_lr"] == "0.04" and log.settings["train_seq_len"] == "1024"


def test_record_format_log_parses_to_the_logged_numbers():
    log = parse_log(record_log())
    curves = log.curves()
    assert curves["train"] == [[1, 9.0087, 0.0], [500, 2.5615, 48.0]]
    assert curves["val"] == [[4945, 1.0756, None]] and [v[1] for v in log.val_curve] == [2.3539]
    assert log.stopped_early and log.train_ms == 599592
    assert log.artifact_bytes() == ("quantized+pergroup", 15897259)
    assert log.model_bytes["quantized+pergroup"] == 15865260 and log.code_bytes["compressed"] == 31999
    final = log.final()
    assert final.name == "quantized_ttt_phased" and final.val_bpb == 1.05989454
    assert final.eval_ms == 508785  # diagnostics and pre-quantization lines are not the score
    assert (log.seed, log.params, log.world_size, log.dataset) == (42, 35945671, 8, "fineweb10B_sp8192")
    assert log.settings["ema_decay"] == "0.9965" and not log.code_sha256


def test_official_records_group_by_config_across_seeds(tmp_path):
    d = tmp_path / "2026-03-18_Example"
    d.mkdir()
    for seed in (1337, 1338):
        (d / f"train_seed{seed}.log").write_text(root_log(seed, final=f"1.2{seed % 10}"))
    (d / "train_lr.log").write_text(root_log(7, matrix_lr="0.02"))
    r1, r2, r3 = (build_official_record(d / n) for n in ("train_seed1337.log", "train_seed1338.log", "train_lr.log"))
    assert r1.config_hash == r2.config_hash != r3.config_hash and r1.run_id != r2.run_id
    assert (r1.seed, r1.kind, r1.dataset, r1.machine) == (1337, "import", "fineweb10B_sp1024", "2x NVIDIA H100 80GB HBM3")
    assert r1.created.startswith("2026-03-18") and r1.config["official.source"] == "2026-03-18_Example"
    assert r1.metrics["val_bpb"] == 1.27 and r1.metrics["artifact_bytes"] == 15863489 and "official" in r1.tags
    assert r1.curves["val"][-1] == [13780, 1.2172, 600.038]
    assert build_official_record(tmp_path / "x.log", text="hello\nworld\n") is None


MIRROR = Path("/work/.mirror/openai+parameter-golf/repo")


@pytest.mark.skipif(not MIRROR.exists(), reason="the openai/parameter-golf mirror is not on this machine")
@pytest.mark.parametrize("path,val_bpb,steps,artifact,seed", [
    ("records/track_10min_16mb/2026-03-17_NaiveBaseline/train.log", 1.2243657, 13780, 15863489, 1337),
    ("records/track_10min_16mb/2026-04-27_SP8192_LQER_SparseGate_BOSSmearFix_9HpStack_1.0611/train_seed42.log",
     1.05989454, 4945, 15897259, 42),
])
def test_real_record_logs(tmp_path, path, val_bpb, steps, artifact, seed):
    text = subprocess.run(["git", f"--git-dir={MIRROR}", "show", f"HEAD:{path}"], capture_output=True, text=True,
                          check=True).stdout
    p = tmp_path / Path(path).parent.name / Path(path).name
    p.parent.mkdir(parents=True)
    p.write_text(text)
    rec = build_official_record(p)
    assert (rec.metrics["val_bpb"], rec.metrics["steps"], rec.metrics["artifact_bytes"], rec.seed) == (
        val_bpb, steps, artifact, seed)
    assert rec.metrics["stopped_by"] == "wallclock" and rec.machine == "8x unknown GPU"


def test_resumed_pgolf_log_is_one_curve():
    text = "\n".join([
        "# pgolf run 2026-05-01T10:00:00+0000", "# versions: {\"torch\": \"2.13.0\"}",
        "step:1/100 train_loss:6.0000 train_time:10ms step_avg:10.00ms tok/s:1 lr_mul:1.0000",
        "step:50/100 train_loss:4.0000 train_time:500ms step_avg:10.00ms tok/s:1 lr_mul:1.0000",
        "step:60/100 train_loss:3.9000 train_time:600ms step_avg:10.00ms tok/s:1 lr_mul:1.0000",  # killed after
        "# pgolf run 2026-05-01T11:00:00+0000", "resume: step:50 train_time:500ms tokens:100",
        "step:55/100 train_loss:3.9500 train_time:550ms step_avg:10.00ms tok/s:1 lr_mul:1.0000",
        "step:100/100 train_loss:3.5000 train_time:1000ms step_avg:10.00ms tok/s:1 lr_mul:1.0000"])
    log = PgolfLog(text)
    assert log.origin == "# pgolf run 2026-05-01T10:00:00+0000" and log.started.hour == 11
    assert log.curves()["train"] == [[1, 6.0, 0.01], [50, 4.0, 0.5], [55, 3.95, 0.55], [100, 3.5, 1.0]]
    assert log.train_metrics() == {"steps": 100, "train_seconds": 1.0, "stopped_by": "iterations"}


def _fake_run_dir(d: Path) -> None:
    from pgolf.presets import get_preset

    d.mkdir(parents=True)
    (d / "config.json").write_text(get_preset("tiny").to_json())
    (d / "metrics.json").write_text(json.dumps({"val_bpb": 3.9, "artifact_bytes": 472922, "steps": 20}))
    (d / "train.log").write_text("# pgolf run 2026-05-02T09:00:00+0000\n"
                                 "# hardware: {\"cpu\": \"AMD EPYC\"}\n"
                                 "precision: fp32 (auto: AMD EPYC has avx512_bf16 but bf16 is not faster; probe 384² "
                                 "matmul: bf16 0.053 vs fp32 0.045 TFLOP/s (1.16×))\n"
                                 "step:1/20 train_loss:5.9482 train_time:47ms step_avg:47.40ms\n")


def test_runs_import_is_idempotent(tmp_path, capsys):
    from pgolf.cli import main
    from pgolf.track.registry import open_registry

    folder = tmp_path / "results" / "2026-03-18_Example"
    folder.mkdir(parents=True)
    (folder / "train_seed1337.log").write_text(root_log(1337))
    (folder / "train_seed42.log").write_text(record_log(42))
    (folder / "notes.txt").write_text("nothing to see\n")
    _fake_run_dir(tmp_path / "results" / "runs" / "tiny-1")
    recs, skipped = discover([tmp_path / "results"])
    assert sorted(r.kind for r in recs) == ["import"] * 3 and skipped == [str(folder / "notes.txt")]
    url = f"sqlite:///{tmp_path / 'r.sqlite'}"
    assert main(["runs", "import", str(tmp_path / "results"), "--registry", url, "--tag", "old"]) == 0
    assert "imported 3 new runs (0 already there)" in capsys.readouterr().out
    assert main(["runs", "import", str(tmp_path / "results"), str(folder / "train_seed42.log"), "--registry", url]) == 0
    assert "imported 0 new runs (4 already there)" in capsys.readouterr().out
    with open_registry(url) as reg:
        runs = reg.runs()
        assert len(runs) == 3 and all("old" in r.tags for r in runs)
        pg = [r for r in runs if r.preset == "tiny"][0]
        assert pg.metrics["val_bpb"] == 3.9 and pg.machine == "AMD EPYC" and pg.created.startswith("2026-05-02T09")
        assert pg.hardware["matmul_probe_tflops"] == {"bf16": 0.053, "fp32": 0.045}
    assert main(["runs", "import", str(folder / "notes.txt"), "--registry", url]) == 2
    assert "not a training log" in capsys.readouterr().err
    # a failed run (config and log, no metrics.json) is not a result: skipped inside a tree, refused by name
    failed = tmp_path / "results" / "runs" / "failed"
    _fake_run_dir(failed)
    (failed / "metrics.json").unlink()
    recs, skipped = discover([tmp_path / "results"])
    assert len(recs) == 3 and f"{failed} (no metrics.json: a failed or unfinished run)" in skipped
    assert main(["runs", "import", str(failed), "--registry", url]) != 0
    assert "no metrics.json (a failed or unfinished run)" in capsys.readouterr().err
