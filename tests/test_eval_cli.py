"""`pgolf eval` end to end: several methods side by side, another dataset, the loss dump from which both
bpb figures are recomputed exactly, and bad input (config mismatch, foreign tokenizer, too small a
budget, unknown method): one line, non-zero exit, nothing written."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from pgolf.cli import main

TINY = ["--set", "model.vocab_size=384"]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_dir(tiny_data, tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("eval-run") / "run"
    assert main(["run", "tiny", *TINY, "--set", f"data.path={tiny_data}", "--out", str(out)]) == 0
    return out


def _corpus(tmp_path, first: int, n: int):
    from pgolf.data.embedded import stdlib_documents

    src = tmp_path / f"docs{first}.jsonl"
    docs = [t for _name, t in stdlib_documents()[first : first + n]]
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    return src


@pytest.fixture(scope="module")
def other_data(tiny_data, tmp_path_factory):
    """Documents the tiny model never saw, tokenized with the run's tokenizer."""
    from pgolf.data.corpus import build_dataset

    root = tmp_path_factory.mktemp("other")
    out = root / "other"
    build_dataset([_corpus(root, 300, 30)], out, tokenizer=tiny_data / "tokenizer.model", vocab_size=384, val_docs=6, workers=1,
                  progress=False)
    return out


def _err(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code != 0, err
    assert err.splitlines()[-1].startswith("pgolf: error: ") and "Traceback" not in err
    return code, err.splitlines()[-1]


def _bpb(loss: np.ndarray, nbytes: np.ndarray) -> float:
    return float(np.sum(loss, dtype=np.float64)) / (math.log(2.0) * int(nbytes.sum(dtype=np.int64)))


def test_methods_side_by_side_with_dumps(run_dir, other_data, tmp_path, capsys) -> None:
    metrics = tmp_path / "m.json"
    dump = tmp_path / "losses.npy"
    sets = ["--set", "eval.sliding.stride=16", "--set", "eval.ttt.chunk=16", "--set", "eval.ttt.batch_docs=4",
            "--set", "data.val_max_tokens=5000"]
    argv = ["eval", str(run_dir), "--method", "plain", "--method", "sliding", "--method", "ttt", "--method", "sliding+mix",
            "--metrics", str(metrics), "--dump-losses", str(dump), *sets]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    written = json.loads(metrics.read_text())["evals"]
    assert set(written) == {"plain", "sliding", "ttt", "sliding+mix"}
    for e in out["methods"]:
        name = e["method"]
        table = np.load(tmp_path / f"losses.{name.replace('+', '_')}.npy")
        assert len(table) == e["val_tokens"]
        assert np.all(np.diff(table["pos"]) > 0)  # stream order, each target once
        assert _bpb(table["loss"], table["bytes"]) == e["val_bpb"]  # exactly, from the file alone
        assert _bpb(table["loss"], table["raw_bytes"]) == e["val_bpb_raw"]
        assert written[name]["val_bpb"] == e["val_bpb"] and written[name]["eval_seconds"] > 0
        assert e["tokens_per_second"] > 0 and "load" in e["phases"] and "score" in e["phases"]
        assert e["within_budget"]
    full = {e["method"]: e for e in out["methods"]}
    n_val = full["sliding"]["val_tokens"]
    assert full["ttt"]["val_tokens"] == full["sliding+mix"]["val_tokens"] == n_val >= full["plain"]["val_tokens"]
    assert full["sliding+mix"]["details"]["lm_val_bpb"] == full["sliding"]["val_bpb"]  # mixed on top of the same LM

    # the scorecard, and another dataset scored with the same artifact
    assert main(["eval", str(run_dir), "--method", "plain", "--data", str(other_data), "--metrics", str(metrics),
                 "--scorecard"]) == 0
    card = capsys.readouterr().out
    run_metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "evals" not in run_metrics  # --metrics elsewhere: the run directory is left alone
    assert "val_bpb" in card and "plain" in card and "phases:" in card
    written = json.loads(metrics.read_text())["evals"]
    assert "plain@other" in written and written["plain@other"]["data"] == str(other_data)
    assert written["plain@other"]["val_tokens"] != written["plain"]["val_tokens"]


def _snapshot(d):
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in d.rglob("*"))


def test_bad_input_one_line_and_nothing_written(run_dir, tiny_data, tmp_path, capsys) -> None:
    from pgolf.data.corpus import build_dataset

    metrics = tmp_path / "m.json"
    metrics.write_text("{}")
    before = _snapshot(tmp_path)
    common = ["--metrics", str(metrics), "--dump-losses", str(tmp_path / "d.npy")]
    _, line = _err(capsys, ["eval", str(run_dir), "--set", "model.num_layers=3", *common])
    assert "model.pgolf" in line and "does not match the model config" in line
    code, line = _err(capsys, ["eval", str(run_dir), "--method", "sliding", "--budget", "0.001", *common])
    assert code == 3 and "eval budget" in line and "too small" in line
    _, line = _err(capsys, ["eval", str(run_dir), "--method", "lookahead", *common])
    assert "unknown eval method" in line
    # a dataset whose tokenizer has another vocabulary, and one with the same size but other pieces
    small = tmp_path / "v512"
    build_dataset([_corpus(tmp_path, 300, 12)], small, vocab_size=512, val_docs=5, workers=1, progress=False)
    _, line = _err(capsys, ["eval", str(run_dir), "--data", str(small), *common])
    assert "tokenizer" in line and "384" in line
    alien = tmp_path / "v384"
    build_dataset([_corpus(tmp_path, 400, 16)], alien, vocab_size=384, val_docs=5, workers=1, progress=False)
    _, line = _err(capsys, ["eval", str(run_dir), "--data", str(alien), *common])
    assert str(alien) in line and "not the one the run was trained with" in line
    shutil.rmtree(small)
    shutil.rmtree(alien)
    for p in tmp_path.glob("docs*.jsonl"):
        p.unlink()
    assert _snapshot(tmp_path) == before  # nothing written, not even a temp file


def test_a_run_scored_by_its_configured_method_equals_pgolf_eval(tiny_data, tmp_path) -> None:
    """``eval.method`` makes ``pgolf run`` (and a bundle) score itself as a record's train_gpt.py did: the
    plain round-trip line first, then the method's line — the last score line, the one a review reads —
    and metrics.json carries the method's numbers, equal to ``pgolf eval --method`` on the same artifact."""
    from pgolf.logformat import parse_log

    out = tmp_path / "run"
    sets = [*TINY, "--set", f"data.path={tiny_data}", "--set", "eval.method=sliding", "--set", "eval.sliding.stride=16",
            "--set", "eval.seq_len=64"]
    assert main(["run", "tiny", *sets, "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["eval_method"] == "sliding" and m["eval_within_budget"] is True
    assert m["val_bpb"] < m["plain_val_bpb"]  # every token scored with more context
    log = (out / "train.log").read_text()
    plain_at, method_at = log.index("final_int8_zlib_roundtrip_exact"), log.index("final_int8_zlib_sliding_exact")
    assert plain_at < method_at
    final = parse_log(log).final()
    assert final is not None and final.val_bpb == pytest.approx(m["val_bpb"], abs=5e-9)
    ref = tmp_path / "ref-metrics.json"
    assert main(["eval", str(out), "--method", "sliding", "--metrics", str(ref)]) == 0
    again = json.loads(ref.read_text())["evals"]["sliding"]
    assert again["val_bpb"] == m["val_bpb"] and again["val_loss"] == m["val_loss"]
    # without --method, pgolf eval scores the run's configured method, as the run scored itself
    ref2 = tmp_path / "default-metrics.json"
    assert main(["eval", str(out), "--metrics", str(ref2)]) == 0
    assert list(json.loads(ref2.read_text())["evals"]) == ["sliding"]


def test_a_method_its_budget_refuses_leaves_the_run_scored_plain(tiny_data, tmp_path, capsys) -> None:
    """A machine too slow for the configured method (here: a 1 ms eval budget) must not lose the trained
    run: the refusal is logged with its reason, metrics.json is written with the plain round trip as the
    score and names the refused method, and the last score line a review reads is the plain one."""
    from pgolf.logformat import parse_log
    from pgolf.runner import scorecard

    out = tmp_path / "run"
    sets = [*TINY, "--set", f"data.path={tiny_data}", "--set", "eval.method=mix", "--set", "eval.budget_seconds=0.001"]
    assert main(["run", "tiny", *sets, "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["eval_method_refused"] == ["mix"] and "eval_method" not in m and "plain_val_bpb" not in m
    log = (out / "train.log").read_text()
    assert "eval_budget: mix refused, the score is the plain round trip: eval budget of 0 s is too small" in log
    assert "final_int8_zlib_mix" not in log
    final = parse_log(log).final()
    assert final is not None and final.val_bpb == pytest.approx(m["val_bpb"], abs=5e-9)
    assert "scored by plain: refused by the eval budget  mix" in scorecard(m)


def test_a_refused_ttt_mix_falls_back_to_the_mixer_on_the_same_clock(tiny_data, tmp_path, monkeypatch) -> None:
    """``ttt+mix`` refused (TTT's scoring cannot fit) → the run is scored by ``mix``, whose clock keeps the
    refused attempt's start, so the attempt's seconds count against the one evaluation budget."""
    from pgolf import runner
    from pgolf.errors import BudgetError
    from pgolf.eval.methods import cheaper

    assert [cheaper(m) for m in ("ttt+mix", "sliding+mix", "mix", "ttt", "sliding")] == ["mix", "mix", None, None, None]
    real, starts = runner._method_on_artifact, []

    def refuse_ttt(name, artifact, cfg, data, device, start=None):
        starts.append((name, start))
        if name.startswith("ttt"):
            raise BudgetError("eval budget of 600 s is too small: scoring needs more (test)")
        return real(name, artifact, cfg, data, device, start=start)

    monkeypatch.setattr(runner, "_method_on_artifact", refuse_ttt)
    out = tmp_path / "run"
    assert main(["run", "tiny", *TINY, "--set", f"data.path={tiny_data}", "--set", "eval.method=ttt+mix",
                 "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["eval_method"] == "mix" and m["eval_method_refused"] == ["ttt+mix"] and m["val_bpb"] < m["plain_val_bpb"]
    assert [n for n, _ in starts] == ["ttt+mix", "mix"] and starts[0][1] == starts[1][1] is not None
    log = (out / "train.log").read_text()
    assert "eval_budget: ttt+mix refused, falling back to mix: eval budget of 600 s" in log
    assert log.index("final_int8_zlib_roundtrip_exact") < log.index("final_int8_zlib_mix_exact")
    assert "refused by the eval budget  ttt+mix" in runner.scorecard(m)


def test_ttt_under_torchrun_dumps_every_target_once_equal_to_one_process(run_dir, tmp_path, capsys) -> None:
    """``torchrun --nproc_per_node=2 -m pgolf eval RUN --method ttt --dump-losses F``: every target scored once,
    the file recomputes the reported bpb, and the losses are the one-process run's bit for bit (LoRA TTT: a
    document's adapter depends on the document alone, whichever rank claimed it)."""
    import os
    import subprocess
    import sys

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    sets = ["--set", "eval.ttt.chunk=16", "--set", "eval.ttt.batch_docs=4", "--set", "data.val_max_tokens=5000"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("RANK", None)
    two, one = tmp_path / "two.npy", tmp_path / "one.npy"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "pgolf", "eval",
           str(run), "--method", "ttt", "--metrics", str(tmp_path / "m2.json"), "--dump-losses", str(two), *sets]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert main(["eval", str(run), "--method", "ttt", "--metrics", str(tmp_path / "m1.json"), "--dump-losses", str(one),
                 *sets]) == 0
    capsys.readouterr()
    a, b = np.load(two), np.load(one)
    e2 = json.loads((tmp_path / "m2.json").read_text())["evals"]["ttt"]
    e1 = json.loads((tmp_path / "m1.json").read_text())["evals"]["ttt"]
    assert e2["details"]["ranks"] == 2 and e1["details"]["ranks"] == 1
    assert len(a) == e2["val_tokens"] and np.array_equal(a["pos"], np.arange(1, len(a) + 1))  # each target once
    assert _bpb(a["loss"], a["bytes"]) == pytest.approx(e2["val_bpb"], rel=1e-12)  # rank sums: float64 order only
    assert _bpb(a["loss"], a["raw_bytes"]) == pytest.approx(e2["val_bpb_raw"], rel=1e-12)
    np.testing.assert_array_equal(a, b)  # positions, tokens, losses and bytes: the one-process dump
    assert e2["val_bpb"] == pytest.approx(e1["val_bpb"], rel=1e-12)
