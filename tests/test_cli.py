"""The CLI: user-caused errors end with one line on stderr and a non-zero exit, nothing half-written;
`pgolf info` reports exact parameter counts; `pgolf run` writes the run directory with every key."""

import json
import math
import shutil
import subprocess
import sys

import pytest

from pgolf.cli import main

TINY = ["--set", "model.vocab_size=384"]


def _err(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code != 0, err
    lines = err.splitlines()
    assert lines and lines[-1].startswith("pgolf: error: "), err
    assert "Traceback" not in err
    return code, lines[-1]


def _no_temp_files(d):
    return [p.name for p in d.rglob("*") if p.name.endswith(".tmp")] == []


def test_info_baseline_params_exact(capsys):
    assert main(["info", "baseline", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"] == 17_059_912
    assert out["estimated_artifact_bytes"] > 0 and out["config"]["model"]["num_layers"] == 9


def test_record_0322_preset_has_the_logged_parameter_count(capsys):
    """[03-22] train_seed1337.log: model_params:26993756."""
    from pgolf.presets import preset_layers

    assert main(["info", "record-0322", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"] == 26_993_756
    assert [n for n, _ in preset_layers("record-0322")] == ["default", "baseline", "record-0322"]
    assert out["fields"]["model.num_layers"] == {"value": 11, "source": "record-0322"}
    assert out["fields"]["model.model_dim"] == {"value": 512, "source": "default"}


@pytest.mark.parametrize("preset, params", [("record-0414", 35_944_602), ("record-0419", 35_989_658),
                                            ("record-0427", 35_945_671)])
def test_record_presets_have_the_logged_parameter_counts(capsys, preset, params):
    """``model_params`` of each record's train_seed42.log ([04-14] PR #1626, [04-19] PR #1736, [04-27a] PR #1855;
    vocab 8192, 17 virtual layers)."""
    assert main(["info", preset, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == params


def test_record_presets_are_built_on_each_other_as_the_records_were(capsys):
    """record-0427 = record-0419 + its changes = record-0414 + … : each field's source is the layer that set it."""
    from pgolf.presets import preset_layers

    assert [n for n, _ in preset_layers("record-0427")] == ["default", "baseline", "record-0414", "record-0419",
                                                           "record-0427"]
    assert main(["info", "record-0427", "--json"]) == 0
    f = json.loads(capsys.readouterr().out)["fields"]
    assert f["model.recur.loops"] == {"value": 2, "source": "record-0414"}
    assert f["data.path"] == {"value": "data/datasets/fineweb10B_sp8192_caseops", "source": "record-0419"}
    assert f["model.attn.gate"] == {"value": "sparse", "source": "record-0427"}
    assert f["model.attn.gate_init_std"] == {"value": 0.0, "source": "record-0427"}  # the dense gate's 0.005 undone
    assert f["optim.muon_momentum"]["source"] == "record-0414" and f["model.model_dim"]["source"] == "default"


def test_info_shows_every_field_with_its_source(capsys):
    assert main(["info", "cpu", "--json", "--set", "model.attn.xsa_layers=1,2", "--set", "train.seed=3"]) == 0
    out = json.loads(capsys.readouterr().out)
    fields = out["fields"]
    assert fields["model.attn.xsa_layers"] == {"value": [1, 2], "source": "--set"}
    assert fields["model.model_dim"] == {"value": 192, "source": "cpu"}
    assert fields["model.vocab_size"]["source"] == "default" and fields["train.seed"]["value"] == 3
    from pgolf.config import flatten
    from pgolf.presets import get_preset

    assert set(fields) == set(flatten(get_preset("cpu")))  # every field
    assert main(["info", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "model.model_dim" in text and "[cpu]" in text and "[default]" in text


def test_console_script_exit_code_and_one_line():
    r = subprocess.run([sys.executable, "-m", "pgolf", "info", "baseline", "--set", "model.nope=1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == "pgolf: error: unknown config key model.nope"


@pytest.mark.parametrize("argv, needle", [
    (["info", "baseline", "--set", "model.nope=1"], "unknown config key model.nope"),
    (["info", "nosuchpreset"], "unknown preset"),
    (["info", "baseline", "--set", "train.iterations=x"], "cannot parse"),
    (["info", "baseline", "--set", "model.attn.xsa_layers=1,a"], "model.attn.xsa_layers[1]: cannot parse 'a' as int"),
    (["info", "baseline", "--set", "train.amp_dtype=fp8"], "is not one of 'auto', 'bf16', 'fp32'"),
    (["info"], "Missing argument"),
    (["run", "tiny", "--bogus-flag"], "No such option"),
])
def test_usage_errors(capsys, argv, needle):
    _, line = _err(capsys, argv)
    assert needle in line


def test_missing_and_empty_data_dir(capsys, tmp_path):
    _, line = _err(capsys, ["run", "tiny", "--set", f"data.path={tmp_path / 'nope'}", "--out", str(tmp_path / "r")])
    assert "nope" in line
    (tmp_path / "empty").mkdir()
    _, line = _err(capsys, ["run", "tiny", "--set", f"data.path={tmp_path / 'empty'}", "--out", str(tmp_path / "r2")])
    assert "empty" in line


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_corrupt_and_truncated_shards(capsys, tiny_data, tmp_path):
    d = _copy(tiny_data, tmp_path / "trunc")
    shard = sorted(d.glob("fineweb_train_*.bin"))[0]
    shard.write_bytes(shard.read_bytes()[:-3])
    _, line = _err(capsys, ["run", "tiny", *TINY, "--set", f"data.path={d}", "--out", str(tmp_path / "r1")])
    assert shard.name in line and "truncated" in line
    d2 = _copy(tiny_data, tmp_path / "magic")
    val = sorted(d2.glob("fineweb_val_0*.bin"))[0]
    b = bytearray(val.read_bytes())
    b[0] ^= 0xFF
    val.write_bytes(bytes(b))
    _, line = _err(capsys, ["run", "tiny", *TINY, "--set", f"data.path={d2}", "--out", str(tmp_path / "r2")])
    assert val.name in line


def test_vocab_mismatch_and_ids_out_of_range(capsys, tiny_data, tmp_path):
    # the tokenizer has 384 pieces; the tiny preset's model has 1024
    _, line = _err(capsys, ["run", "tiny", "--set", f"data.path={tiny_data}", "--out", str(tmp_path / "r")])
    assert "384" in line and "1024" in line
    # ids >= vocab in a shard (a shard built for a bigger vocabulary)
    import numpy as np

    from pgolf.data.shards import read_shard, write_shard

    d = _copy(tiny_data, tmp_path / "ids")
    shard = sorted(d.glob("fineweb_train_*.bin"))[0]
    toks = read_shard(shard).copy()
    toks[10] = 500
    write_shard(shard, toks.astype(np.uint16))
    _, line = _err(capsys, ["run", "tiny", *TINY, "--set", f"data.path={d}", "--out", str(tmp_path / "r2")])
    assert "500" in line and shard.name in line


def test_run_writes_run_dir_then_artifact_errors(capsys, tiny_data, tmp_path):
    out = tmp_path / "run"
    assert main(["run", "tiny", *TINY, "--set", f"data.path={tiny_data}", "--out", str(out)]) == 0
    capsys.readouterr()
    for f in ("config.json", "train.log", "metrics.json", "model.pgolf"):
        assert (out / f).exists(), f
    m = json.loads((out / "metrics.json").read_text())
    for k in ("val_loss", "val_bpb", "val_bpb_raw", "pre_quant_val_bpb", "artifact_bytes", "model_bytes", "code_bytes",
              "params", "steps", "train_seconds", "eval_seconds", "tokens_per_second", "val_tokens", "val_bytes",
              "val_bytes_raw"):
        assert k in m, k
    # anyone can recompute both figures from the metrics
    assert math.isclose(m["val_bpb"], m["val_loss"] / math.log(2) * m["val_tokens"] / m["val_bytes"], rel_tol=1e-12)
    assert math.isclose(m["val_bpb_raw"], m["val_loss"] / math.log(2) * m["val_tokens"] / m["val_bytes_raw"], rel_tol=1e-12)
    assert m["artifact_bytes"] == m["model_bytes"] + m["code_bytes"]
    assert m["model_bytes"] == (out / "model.pgolf").stat().st_size
    log = (out / "train.log").read_text()
    assert "# versions:" in log and "# hardware:" in log and "# config:" in log
    assert "precision: fp32 (train.amp_dtype=fp32 (set explicitly))" in log  # tiny sets fp32; auto says why
    assert _no_temp_files(out)

    # pgolf eval reproduces the run's score from the artifact on disk
    assert main(["eval", str(out)]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["val_bpb"] == m["val_bpb"]

    # altered artifact: checksum; truncated artifact
    art = out / "model.pgolf"
    good = art.read_bytes()
    bad = bytearray(good)
    bad[-10] ^= 0x01
    art.write_bytes(bytes(bad))
    _, line = _err(capsys, ["eval", str(out)])
    assert "model.pgolf" in line and "checksum" in line
    art.write_bytes(good[: len(good) // 2])
    _, line = _err(capsys, ["eval", str(out)])
    assert "model.pgolf" in line and "truncated" in line
    art.write_bytes(good)

    # over the byte cap: one error line after the per-tensor table, non-zero exit
    code, line = _err(capsys, ["run", "tiny", *TINY, "--set", f"data.path={tiny_data}",
                               "--set", "export.budget_bytes=1000", "--out", str(tmp_path / "over")])
    assert "over the 1,000-byte cap" in line or "cap" in line
    assert code == 3
    assert _no_temp_files(tmp_path / "over")
