"""One log format: what pgolf's writers print, :func:`pgolf.logformat.parse_log` reads back (a round trip at
the printed precision), and a real ``pgolf run`` log parses to its own metrics.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pgolf import logformat as lf


def _round_trip_log() -> tuple[str, dict]:
    cfg = {"name": "tiny", "train": {"seed": 42, "iterations": 9}}
    lines = [*lf.header_lines("pgolf run tiny --set train.seed=42", {"torch": "2.13.0"}, {"cpu": "AMD EPYC", "cpu_count": 2},
                              json.dumps(cfg, indent=2)),
             "val_bpb:enabled tokenizer=/t/tokenizer.model data=/data/mine",
             lf.kv_line(seed=42), lf.kv_line(tokenizer_path="/t/tokenizer.model", vocab_size=384),
             "precision: fp32 (set explicitly)",
             lf.kv_line(model_params=47396, world_size=2, grad_accum_steps=4, device="cpu")]
    for step, loss, sec in [(1, 6.1234567, 0.0301), (5, 4.5, 0.151), (9, 3.25, 0.2719)]:
        lines.append(lf.step_line(step, 9, loss, sec, tokens_per_second=1234.5, lr_mul=0.75))
    lines.append(lf.val_line(9, 9, 3.3333333, 1.23456789, 0.2719))
    lines.append(lf.stop_line(0.2719, 9, 9))
    lines.append(lf.trained_line(9, 0.2719, 1234.5, "wallclock"))
    lines += [lf.serialized_line("int8_zlib", 94553, 95000), lf.code_line(65827),
              lf.total_line("int8_zlib", 94553, 65827, 16_000_000)]
    lines += lf.final_lines("final_int8_zlib_roundtrip", 5.614592828583152, 3.041687188561241, 0.15990217,
                            val_bpb_raw=2.941739208645434, byte_ratio=0.9671406)
    want = {"cfg": cfg, "loss": 5.614592828583152, "bpb": 3.041687188561241}
    return "\n".join(lines) + "\n", want


def test_writers_and_parser_round_trip_at_the_printed_precision() -> None:
    text, want = _round_trip_log()
    p = lf.parse_log(text)
    assert p.recognized and p.command == "pgolf run tiny --set train.seed=42" and p.config == want["cfg"]
    assert p.versions == {"torch": "2.13.0"} and p.hardware == {"cpu": "AMD EPYC", "cpu_count": 2}
    assert p.started and p.pgolf_origin.startswith("# pgolf run ")
    assert (p.data_dir, p.tokenizer, p.precision) == ("/data/mine", "/t/tokenizer.model", "fp32 (set explicitly)")
    assert (p.seed, p.world_size, p.params) == (42, 2, 47396)
    assert p.header["vocab_size"] == "384" and p.header["tokenizer_path"] == "/t/tokenizer.model"
    assert p.curves() == {"train": [[1, 6.1235, 0.03], [5, 4.5, 0.151], [9, 3.25, 0.272]],
                          "val": [[9, 1.2346, 0.272]]}
    assert p.stopped_early and p.train_ms == 272 and p.steps == 9 and p.iterations == 9
    assert p.trained == (9, 0.3, "wallclock") and p.where["config"] == 5 and p.where["hardware"] == 4
    assert p.artifact_bytes() == ("int8_zlib", 94553 + 65827)
    assert p.model_bytes == {"int8_zlib": 94553} and p.code_bytes == {"plain": 65827}
    final = p.final()  # the _exact line: 8 decimals, within half a unit of the last digit
    assert final.name == "final_int8_zlib_roundtrip_exact"
    assert abs(final.val_bpb - want["bpb"]) <= 0.5e-8 and abs(final.val_loss - want["loss"]) <= 0.5e-8
    rounded = p.metrics["final_int8_zlib_roundtrip"]
    assert abs(rounded.val_bpb - want["bpb"]) <= 0.5e-4 and rounded.eval_ms == 160


def test_curves_follow_a_resume_and_a_fresh_run_in_one_file() -> None:
    a = [lf.header_lines("c", {}, {}, "{\n}")[0], lf.step_line(1, 9, 5.0, 0.1), lf.step_line(5, 9, 4.0, 0.5),
         lf.step_line(6, 9, 3.9, 0.6), lf.val_line(6, 9, 3.0, 1.5, 0.6)]
    resumed = [lf.header_lines("c", {}, {}, "{\n}")[0], "resume: step:5 train_time:500ms tokens:10",
               lf.step_line(6, 9, 3.8, 0.6), lf.step_line(9, 9, 3.5, 0.9)]
    c = lf.parse_log("\n".join(a + resumed)).curves()
    assert [p[:2] for p in c["train"]] == [[1, 5.0], [5, 4.0], [6, 3.8], [9, 3.5]] and c["val"] == []
    fresh = [lf.header_lines("c", {}, {}, "{\n}")[0], lf.step_line(1, 2, 6.0, 0.1)]
    assert lf.parse_log("\n".join(a + fresh)).curves() == {"train": [[1, 6.0, 0.1]], "val": []}


def test_nonfinite_losses_are_logged_and_left_out_of_curves() -> None:
    text = "\n".join([lf.step_line(1, 3, 5.0, 0.1), lf.step_line(2, 3, math.nan, 0.2), lf.step_line(3, 3, math.inf, 0.3)])
    p = lf.parse_log(text)
    assert [x[0] for x in p.train_loss] == [1, 2, 3] and p.curves()["train"] == [[1, 5.0, 0.1]]


def test_a_real_pgolf_log_parses_to_its_metrics(tiny_data: Path, tmp_path: Path) -> None:
    from pgolf.cli import main

    run = tmp_path / "run"
    assert main(["run", "tiny", "--set", "model.vocab_size=384", "--set", "train.iterations=4", "--set",
                 "train.seed=11", "--set", f"data.path={tiny_data}", "--out", str(run)]) == 0
    m = json.loads((run / "metrics.json").read_text())
    p = lf.parse_log((run / "train.log").read_text())
    assert p.seed == 11 and p.config["train"]["seed"] == 11 and p.data_dir == str(tiny_data)
    assert p.steps == m["steps"] == 4 and p.params == m["params"]
    assert p.artifact_bytes()[1] == m["artifact_bytes"] and p.code_bytes["plain"] == m["code_bytes"]
    final = p.final()
    assert abs(final.val_bpb - m["val_bpb"]) <= 0.5e-8 and abs(final.val_loss - m["val_loss"]) <= 0.5e-8


@pytest.mark.parametrize("name", ["step_line", "val_line", "stop_line", "final_lines", "kv_line"])
def test_the_bundle_prints_with_the_same_writers(name: str) -> None:
    """The training path's f-strings are gone: every challenge line comes from this module."""
    import pgolf

    root = Path(pgolf.__file__).parent
    users = [p.relative_to(root).as_posix() for p in root.rglob("*.py") if f"logformat.{name}(" in p.read_text()]
    assert users, name
