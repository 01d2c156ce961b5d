"""parse_log against logs written in the shapes of the root train_gpt.py and of the records (CATALOGUE §1.8)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pgolf.logformat import parse_log

BASELINE = """logs/hf_verify_sp1024_8gpu.txt
val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path=/root/data/tokenizers/fineweb_1024_bpe.model
train_loader:dataset:fineweb10B_sp1024 train_shards:25
val_loader:shards pattern=/root/data/fineweb_val_*.bin tokens:62021632
model_params:17059912
world_size:8 grad_accum_steps:1
train_batch_tokens:524288 train_seq_len:1024 iterations:20000 warmup_steps:20 max_wallclock_seconds:600.000
seed:1337
warmup_step:1/20
step:0/20000 val_loss:6.9357 val_bpb:4.1077 train_time:0ms step_avg:0.02ms
step:1/20000 train_loss:6.9370 train_time:41ms step_avg:41.38ms
step:200/20000 train_loss:3.2100 train_time:8710ms step_avg:43.55ms
step:13780/20000 val_loss:2.0606 val_bpb:1.2172 train_time:600038ms step_avg:43.54ms
stopping_early: wallclock_cap train_time:600038ms step:13780/20000
peak memory allocated: 10184 MiB reserved: 10200 MiB
Serialized model: 67224983 bytes
Code size: 47642 bytes
Total submission size: 67272625 bytes
Serialized model int8+zlib: 15815847 bytes (payload:17178912 raw_torch:17224025 payload_ratio:3.91x)
Total submission size int8+zlib: 15863489 bytes
final_int8_zlib_roundtrip val_loss:2.0727 val_bpb:1.2244 eval_time:1401ms
final_int8_zlib_roundtrip_exact val_loss:2.07269931 val_bpb:1.22436570
"""

RECORD = """Hyperparameters:
  caseops_enabled: True
  gptq_reserve_seconds: 0.5
  seed: 42
  ttt_eval_batches:<SP>
  val_doc_fraction: 1.0
train_shards: 80
val_tokens: 47851520
gptq:reserving 0s, effective=599500ms
1/20000 train_loss: 9.0087 train_time: 0.0m tok/s: 17921784
500/20000 train_loss: 3.2523 train_time: 0.8m tok/s: 8203641
4945/20000 val_loss: 2.3539 val_bpb: 1.0756
stopping_early: wallclock_cap train_time: 599592ms step: 4945/20000
diagnostic pre-quantization post-ema val_loss:2.32848665 val_bpb:1.06395844 eval_time:6718ms
Code size (uncompressed): 157868 bytes
Code size (compressed): 31999 bytes
GPTQ:collecting Hessians from calibration data...
GPTQ:collected 67 Hessians in 4.7s
Serialized model quantized+pergroup: 15865260 bytes
Total submission size quantized+pergroup: 15897259 bytes
ngram_tilt:precompute n_tok=40540161 hints=9560451 (23.58%) elapsed=32.3s base_beta=2.0
ttt_lora:warming up compile (random tokens, no val data)
ttt_lora:compile warmup done (137.6s)

beginning TTT eval timer
quantized_ttt_phased val_loss:2.31944212 val_bpb:1.05989454 eval_time:508785ms
ppm_mixer val_bpb:1.00140000
total_eval_time:508.8s
""".replace("<SP>", " ")


def test_baseline_log_exact_values() -> None:
    p = parse_log(BASELINE)
    assert p.recognized and p.stopped_early
    assert (p.steps, p.iterations, p.train_ms) == (13780, 20000, 600038.0)
    assert p.train_loss == [(1, 6.937), (200, 3.21)]
    assert p.val_curve == [(0, 6.9357, 4.1077), (13780, 2.0606, 1.2172)]
    assert (p.seed, p.world_size, p.max_wallclock_seconds) == (1337, 8, 600.0)
    assert p.header["val_tokens"] == "62021632" and p.header["train_shards"] == "25"
    assert p.model_bytes == {"raw": 67224983, "int8+zlib": 15815847}
    assert p.total_bytes == {"raw": 67272625, "int8+zlib": 15863489}
    assert p.code_bytes == {"plain": 47642}
    assert p.artifact_bytes() == ("int8+zlib", 15863489)
    assert list(p.metrics) == ["final_int8_zlib_roundtrip", "final_int8_zlib_roundtrip_exact"]
    fin = p.final()
    assert (fin.name, fin.val_loss, fin.val_bpb, fin.line) == ("final_int8_zlib_roundtrip_exact", 2.07269931, 1.2243657, 22)
    assert p.eval_seconds == {"final_int8_zlib_roundtrip": 1.401}
    assert p.where["train_ms"] == 14 and p.where["total_bytes:int8+zlib"] == 20


def test_record_log_variants() -> None:
    p = parse_log(RECORD)
    assert (p.steps, p.train_ms, p.stopped_early, p.seed) == (4945, 599592.0, True, 42)
    assert p.train_time_curve[:2] == [(1, 0.0), (500, 48000.0)]  # minutes, 0.1 min resolution
    assert p.val_curve == [(4945, 2.3539, 1.0756)]
    assert p.header["val_doc_fraction"] == "1.0" and p.header["ttt_eval_batches"] == ""
    assert p.header["val_tokens"] == "47851520" and p.header["caseops_enabled"] == "True"
    assert p.code_bytes == {"uncompressed": 157868, "compressed": 31999}
    assert p.artifact_bytes() == ("quantized+pergroup", 15897259)
    assert [(e.kind, e.seconds) for e in p.events if e.kind in ("gptq_reserve", "hessians", "compile_warmup",
                                                                 "precompute")] == [
        ("gptq_reserve", 0.0), ("hessians", 4.7), ("precompute", 32.3), ("compile_warmup", 137.6)]
    assert p.metrics["diagnostic pre-quantization post-ema"].diagnostic
    assert p.metrics["ppm_mixer"].val_loss is None and p.metrics["ppm_mixer"].val_bpb == 1.0014
    assert p.final().name == "ppm_mixer"
    assert p.eval_seconds["quantized_ttt_phased"] == 508.785 and p.eval_seconds["total"] == 508.8
    assert p.eval_seconds["compile_warmup"] == 137.6 and p.eval_seconds["precompute"] == 32.3


def test_unix_time_prefix_and_embedded_source() -> None:
    stamped = "\n".join(f"1776142360.538 {ln}" for ln in BASELINE.splitlines())
    assert parse_log(stamped).final().val_bpb == 1.2243657
    code = 'import os\nlog0(f"step:{step}/{n} val_loss:{v:.4f} val_bpb:{b:.4f}")\nx = 1\n'
    p = parse_log(code + "=" * 100 + "\nRunning Python 3.12.3\n" + BASELINE)
    assert p.code == code and p.code_lines == 3
    assert p.final().line == 22 + 5 and len(p.metric_lines) == 2  # the source's f-strings are not metrics


def test_foreign_logs_are_not_recognized() -> None:
    assert not parse_log("Epoch 1/3\n100/100 [======] - loss: 0.52 - accuracy: 0.81\n").recognized
    assert not parse_log("").recognized


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_never_raises(text: str) -> None:
    parse_log(text)
