"""pgolf review on records folders with one planted violation each, against the clean folder they come from.

Each planted case states the checks it must change and to what; every other check must keep the clean
folder's verdict (a false positive fails the test as surely as a miss)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from review_planted import BPB, CLEAN_SCRIPT, SEEDS, make_record, plant, wrap_lzma_b85  # noqa: E402

from pgolf.cli import main  # noqa: E402
from pgolf.submit.review import ReviewReport, review  # noqa: E402
from pgolf.submit.review_numbers import significance_tests  # noqa: E402


def verdicts(rep: ReviewReport) -> dict[str, str]:
    return {c.id: c.verdict for c in rep.checks}


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> dict[str, str]:
    rep = review(make_record(tmp_path_factory.mktemp("clean")))
    v = verdicts(rep)
    assert rep.exit_code == 0
    assert v["data_overlap"] == "cannot-tell"  # nothing to compare without --data
    assert {k for k, x in v.items() if x != "pass"} == {"data_overlap"}, v
    return v


PREQUANT_TTT = '''
def ttt_adapt(args, model, val_tokens):
    opt = torch.optim.AdamW(model.parameters(), lr=args.ttt_lr)
    for epoch in range(3):
        for start in range(0, val_tokens.numel() - 1025, 1024):
            local = val_tokens[start:start + 1025]
            loss = F.cross_entropy(model(local[:-1].reshape(1, -1)), local[1:].reshape(1, -1))
            opt.zero_grad()
            loss.backward()
            opt.step()


def main():'''
NGRAM = '''
def ngram_prob(val_np, pos, ctx_table, full_table, mask):
    primes = np.array([2654435761, 2246822519], dtype=np.uint64)
    ctx_hash = (val_np[pos - 1].astype(np.uint64) * primes[0]) ^ (val_np[pos - 2].astype(np.uint64) * primes[1])
    full_key = ((ctx_hash ^ (val_np[pos].astype(np.uint64) * primes[1])) & mask).astype(np.int64)
    ctx_key = (ctx_hash & mask).astype(np.int64)
    return np.minimum(full_table[full_key], ctx_table[ctx_key]) / np.maximum(ctx_table[ctx_key], 1)


def main():'''
FINAL = '    print("final", eval_val(args, model, val_tokens, None))'
SCRIPT_CASES = {
    # name: (new script, {check: verdict})
    "prequant_ttt": (plant("\n\ndef main():", PREQUANT_TTT, plant(FINAL, "    ttt_adapt(args, model, val_tokens)\n" + FINAL)),
                     {"legal_score_first": "fail", "legal_single_pass": "fail"}),
    "update_then_score": (plant('''        with torch.no_grad():
            nll = F.cross_entropy(model(x).reshape(-1, 1024), y.reshape(-1), reduction="sum")
            loss_sum += nll.to(torch.float64)
        if ci < n_chunks - 1:
            loss = F.cross_entropy(model(x).reshape(-1, 1024), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()''', '''        loss = F.cross_entropy(model(x).reshape(-1, 1024), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            nll = F.cross_entropy(model(x).reshape(-1, 1024), y.reshape(-1), reduction="sum")
            loss_sum += nll.to(torch.float64)'''), {"legal_score_first": "needs-proof"}),
    "warmup_on_val": (plant(FINAL, '''    warmup_opt = torch.optim.SGD(model.parameters(), lr=0.0)
    for warmup_step in range(3):
        wx = val_tokens[:1025]
        warmup_opt.zero_grad()
        F.cross_entropy(model(wx[:-1]), wx[1:]).backward()
        warmup_opt.step()
''' + FINAL), {"outside_timers": "needs-proof"}),
    "best_of_temperatures": (plant(FINAL, '''    best = None
    for temp in (0.9, 1.0, 1.1):
        score = eval_val(args, model, val_tokens, temp)
        if best is None or score < best:
            best = score
''' + FINAL), {"legal_single_pass": "fail"}),
    "scored_per_epoch": (plant('''    with torch.inference_mode():
        for start in range(0, val_tokens.numel() - 1 - seq_len, seq_len):''', '''    with torch.inference_mode():
      for epoch in range(2):
        for start in range(0, val_tokens.numel() - 1 - seq_len, seq_len):'''), {"legal_single_pass": "fail"}),
    "network_at_eval": (plant("    model.eval()\n    with torch.inference_mode():",
                              "    hints = urllib.request.urlopen('http://example.invalid/hints').read()\n"
                              "    model.eval()\n    with torch.inference_mode():",
                              plant("import glob\n", "import glob\nimport urllib.request\n")), {"network": "fail"}),
    "download_in_training": (plant("def main():\n    args = Hyperparameters()",
                                   "def main():\n    args = Hyperparameters()\n"
                                   "    hf_hub_download(repo_id='x/y', filename='fineweb_train_000001.bin')",
                                   plant("import glob\n", "import glob\nfrom huggingface_hub import hf_hub_download\n")),
                             {"network": "needs-proof"}),
    "calibration_on_val": (plant("collect_hessians(model, Loader(args.train_files), 16)",
                                 "collect_hessians(model, Loader(args.val_files), 16)"), {"val_in_training": "fail"}),
    "constant_subset": (plant("    train_loader = Loader(args.train_files)\n",
                              "    val_tokens = val_tokens[:1_000_000]\n    train_loader = Loader(args.train_files)\n"),
                        {"subset_scoring": "fail"}),
    "target_in_ngram_key": (plant("\n\ndef main():", NGRAM), {"legal_causal": "fail", "legal_normalized": "fail"}),
    "mixture": (plant("            val_loss_sum += loss.to(torch.float64)",
                      "            p_mix = 0.8 * torch.exp(-loss) + (1 - 0.8) * cache_prob\n"
                      "            val_loss_sum += -torch.log(p_mix).to(torch.float64)"), {"legal_normalized": "needs-proof"}),
    "non_causal_attention": (plant("is_causal=True", "is_causal=False"), {"legal_causal": "fail"}),
    "external_binary": (plant('    print(subprocess.run(["nvidia-smi"], capture_output=True).stdout)',
                              '    subprocess.run(["lrzip", "-d", "-o", "model.bin", "model.lrz"], check=True)'),
                        {"external_code": "needs-proof"}),
}


@pytest.mark.parametrize("case", sorted(SCRIPT_CASES))
def test_planted_script_violation_changes_only_its_check(tmp_path: Path, clean: dict[str, str], case: str) -> None:
    script, expected = SCRIPT_CASES[case]
    rep = review(make_record(tmp_path, script=script))
    got = verdicts(rep)
    changed = {k: v for k, v in got.items() if v != clean[k] and k != "artifact_size"}
    assert changed == expected, "\n".join(f"{c.id}: {c.evidence[0].value}" for c in rep.checks if c.id in changed)
    assert rep.exit_code == (1 if "fail" in expected.values() else 0)


def test_training_on_validation_is_caught_twice(tmp_path: Path, clean: dict[str, str]) -> None:
    script = plant("        x, y = train_loader.next_batch()\n",
                   "        x, y = train_loader.next_batch()\n        if step % 2:\n"
                   "            x, y = val_tokens[:1024].reshape(1, -1), val_tokens[1:1025].reshape(1, -1)\n")
    got = verdicts(review(make_record(tmp_path, script=script)))
    assert {k: v for k, v in got.items() if v != clean[k]} == {"val_in_training": "fail", "legal_score_first": "fail"}


def test_switched_off_code_is_judged_by_the_setting_in_the_log(tmp_path: Path, clean: dict[str, str]) -> None:
    script = plant("    if args.ttt_enabled:\n        print(\"ttt\"", "    if args.ttt_enabled:\n        ttt_adapt(args, model, val_tokens)\n"
                   "        print(\"final\", eval_val(args, model, val_tokens, None))\n        print(\"ttt\"",
                   plant("\n\ndef main():", PREQUANT_TTT))
    on = verdicts(review(make_record(tmp_path / "on", script=script)))
    assert on["legal_score_first"] == "fail"
    off = review(make_record(tmp_path / "off", script=script, log_kw={"extra": "Hyperparameters:\n  ttt_enabled: False\n"}))
    ev = next(c for c in off.checks if c.id == "legal_score_first").evidence
    assert verdicts(off)["legal_score_first"] == "pass" and "ttt_enabled='False' (log)" in ev[0].value
    readme_off = make_record(tmp_path / "readme", script=script, readme="Run: `TTT_ENABLED=0 torchrun train_gpt.py`\n")
    assert verdicts(review(readme_off))["legal_score_first"] == "needs-proof"  # the README says so, the logs do not


def test_self_extracting_script_is_decoded_and_reviewed_like_the_plain_one(tmp_path: Path, clean: dict[str, str]) -> None:
    rep = review(make_record(tmp_path / "w", script=wrap_lzma_b85(CLEAN_SCRIPT)))
    assert rep.decoded_layers == ["train_gpt.py", "lzma+b85"]
    assert {k: v for k, v in verdicts(rep).items() if v != clean[k]} == {}
    bad = review(make_record(tmp_path / "b", script=wrap_lzma_b85(SCRIPT_CASES["prequant_ttt"][0])))
    assert verdicts(bad)["legal_score_first"] == "fail"
    loader = make_record(tmp_path / "d", script='exec(open(__file__.replace("train_gpt.py","train_gpt_decode.py")).read())\n')
    (loader / "train_gpt_decode.py").write_text(CLEAN_SCRIPT)
    rep = review(loader)
    assert rep.decoded_layers == ["train_gpt.py", "open(train_gpt_decode.py)"]
    art = next(c for c in rep.checks if c.id == "artifact_size").evidence[0].value
    assert f"train_gpt.py 74 + train_gpt_decode.py {len(CLEAN_SCRIPT.encode()):,}" in art  # both count, as shipped


def _case(tmp_path: Path, **kw) -> dict[str, str]:
    return verdicts(review(make_record(tmp_path, **kw)))


def test_artifact_over_the_cap_and_code_counted_as_shipped(tmp_path: Path, clean: dict[str, str]) -> None:
    code = len(CLEAN_SCRIPT.encode())
    over = _case(tmp_path / "a", log_kw={"model_bytes": 16_000_001 - code})
    assert over["artifact_size"] == "fail" and over["claims"] == "pass"
    # the log counts a 3,000-byte compressed code the folder does not ship: fits as logged, not as shipped
    rep = review(make_record(tmp_path / "b", log_kw={"model_bytes": 15_996_500, "compressed_code": 3_000}))
    art = next(c for c in rep.checks if c.id == "artifact_size")
    assert art.verdict == "needs-proof"
    assert f"15,996,500 + {code:,} = {15_996_500 + code:,} > 16,000,000" in art.evidence[0].value
    fits = _case(tmp_path / "c", log_kw={"model_bytes": 16_000_000 - code})  # exactly the cap
    assert fits["artifact_size"] == "pass"


def test_claims_against_the_logs(tmp_path: Path, clean: dict[str, str]) -> None:
    assert _case(tmp_path / "a", submission={"val_bpb": 1.1000})["claims"] == "fail"
    bad_seed = {"seed_results": {str(s): {"val_bpb": BPB[s], "steps": 7001} for s in SEEDS}}
    rep = review(make_record(tmp_path / "b", submission=bad_seed))
    assert verdicts(rep)["claims"] == "fail"
    assert any("seed_results[1337].steps = 7001, the log says 7000" in e.value for c in rep.checks for e in c.evidence)
    table = "| Seed | val_bpb |\n|---|---|\n| 1337 | 1.1234 |\n| 42 | 1.1110 |\n| 2025 | 1.1105 |\nval_bpb 1.1105\n"
    assert _case(tmp_path / "c", readme=table)["claims"] == "needs-proof"
    sized = "| Seed | val_bpb | Artifact |\n|---|---|---|\n| 1337 | 1.1100 | 15,999,000 |\nval_bpb 1.1105\n"
    got = _case(tmp_path / "d", readme=sized, log_kw={"model_bytes": 15_999_000})
    assert got["claims"] == "fail" and got["artifact_size"] == "fail"  # the README's artifact is the model alone


def test_seeds(tmp_path: Path, clean: dict[str, str]) -> None:
    one = _case(tmp_path / "a", seeds=(1337,))
    assert one["seeds"] == "needs-proof" and one["significance"] == "needs-proof"
    assert _case(tmp_path / "b", submission={"seeds": [1337, 42, 2025, 7]})["seeds"] == "fail"
    d = make_record(tmp_path / "c")
    log = d / "train_seed42.log"
    log.write_text(log.read_text().replace("seed:42", "seed:43"))
    rep = review(d)
    assert verdicts(rep)["seeds"] == "fail"
    assert any("file name says seed 42, the log says seed 43" in e.value for c in rep.checks for e in c.evidence)


def test_times(tmp_path: Path, clean: dict[str, str]) -> None:
    assert _case(tmp_path / "a", log_kw={"train_ms": 601_000})["train_time"] == "fail"  # 1 s > two 86 ms steps
    assert _case(tmp_path / "b", log_kw={"train_ms": 600_100})["train_time"] == "pass"  # one step over: accepted
    assert _case(tmp_path / "c", log_kw={"eval_ms": 601_000})["eval_time"] == "fail"
    late = _case(tmp_path / "d", log_kw={"train_ms": 599_000, "hessian_s": 6.0})  # 605.0 s
    assert late["outside_timers"] == "fail" and late["train_time"] == "pass"
    edge = _case(tmp_path / "f", log_kw={"train_ms": 596_100, "hessian_s": 4.1})  # 600.2 s: as #2014/#1953
    assert edge["outside_timers"] == "needs-proof"
    warm = _case(tmp_path / "e", log_kw={"extra": "ttt_lora:compile warmup done (200.0s)"})
    assert warm["outside_timers"] == "needs-proof" and warm["eval_time"] == "pass"


def test_subset_settings_and_counts_from_the_log(tmp_path: Path, clean: dict[str, str]) -> None:
    script = plant("    train_loader = Loader(args.train_files)\n",
                   "    val_tokens = val_tokens[: args.val_max_tokens]\n    train_loader = Loader(args.train_files)\n")
    off = _case(tmp_path / "a", script=script, log_kw={"extra": "Hyperparameters:\n  val_max_tokens: 0\n"})
    on = _case(tmp_path / "b", script=script, log_kw={"extra": "Hyperparameters:\n  val_max_tokens: 500000\n"})
    unknown = _case(tmp_path / "c", script=script)
    assert (off["subset_scoring"], on["subset_scoring"], unknown["subset_scoring"]) == ("pass", "fail", "needs-proof")
    # the issue #2127 fingerprint: far fewer validation tokens than the dataset has
    assert _case(tmp_path / "d", log_kw={"val_tokens": 9_660_000})["subset_scoring"] == "fail"


def test_significance_as_written_and_as_applied(tmp_path: Path, clean: dict[str, str]) -> None:
    from scipy import stats

    vals = [BPB[s] for s in SEEDS]
    ratio = 0.5922
    r = significance_tests(vals, 1.1194, ratio)  # through pgolf.submit.stats, as `pgolf stats` computes it
    ref = stats.ttest_1samp(vals, 1.1194 - 0.005 * ratio, alternative="less").pvalue
    assert r["p_written"] == pytest.approx(ref, rel=1e-12) and r["p_applied"] is None
    frontier = [1.1106, 1.1104, 1.1108]
    r = significance_tests(vals, sum(frontier) / 3, ratio, frontier)
    ref = stats.ttest_1samp(vals, sum(frontier) / 3 - 0.005 * ratio, alternative="less").pvalue
    assert r["p_written"] == pytest.approx(ref, rel=1e-9)
    welch = stats.ttest_ind(vals, [1.1106, 1.1104, 1.1108], equal_var=False, alternative="less").pvalue
    assert r["p_applied"] == pytest.approx(welch, rel=1e-12) and r["p_applied"] > 0.25
    near = _case(tmp_path / "a", submission={"comparison_baseline_bpb": 1.1120})
    assert near["significance"] == "needs-proof"  # 0.0015 bpb better: not 0.005 nats at p < 0.01
    prev = make_record(tmp_path, "prev", bpb={1337: 1.1106, 42: 1.1104, 2025: 1.1108})
    cur = make_record(tmp_path, "cur", submission={"comparison_baseline_bpb": 1.1120})
    assert verdicts(review(cur, against=prev))["significance"] == "fail"  # Welch p ≥ 0.25 vs the frontier
    better = make_record(tmp_path, "prev2", bpb={1337: 1.1130, 42: 1.1135, 2025: 1.1128})
    assert verdicts(review(cur, against=better))["significance"] == "pass"


def test_tokenizer_changes_need_proof(tmp_path: Path, clean: dict[str, str]) -> None:
    no_lut = plant("sp.is_unused(i)", "False", plant("sp.is_byte(i)", "False"))
    got = _case(tmp_path / "a", script=no_lut, log_kw={"tokenizer": "fineweb_8192_bpe.model", "val_tokens": 40_540_160})
    assert got["tokenizer_dataset"] == "needs-proof"
    d = make_record(tmp_path / "b", log_kw={"tokenizer": "fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model",
                                            "val_tokens": 47_851_520})
    (d / "lossless_caps.py").write_text("def encode(s):\n    return s\n")
    rep = review(d)
    ev = next(c for c in rep.checks if c.id == "tokenizer_dataset").evidence[0].value
    assert verdicts(rep)["tokenizer_dataset"] == "needs-proof" and "byte sidecar" in ev


def _shard(path: Path, docs: list[list[int]]) -> None:
    from pgolf.data.shards import write_shard

    write_shard(path, np.array([t for d in docs for t in [1, *d]], dtype=np.uint16))


def test_overlap_with_data(tmp_path: Path) -> None:
    rec = make_record(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    _shard(data / "fineweb_val_000000.bin", [[5, 6, 7], [8, 9], [10, 11, 12]])
    _shard(data / "fineweb_train_000001.bin", [[5, 6, 7, 8], [20, 21], [8, 9]])  # [8, 9] is a validation document
    rep = review(rec, data=data)
    ov = next(c for c in rep.checks if c.id == "data_overlap")
    assert ov.verdict == "fail" and "1 of 3 validation documents" in ov.evidence[0].value
    _shard(data / "fineweb_train_000001.bin", [[5, 6, 7, 8], [20, 21], [8, 9, 9]])
    assert verdicts(review(rec, data=data))["data_overlap"] == "pass"


def test_bad_input_is_a_verdict_never_a_traceback(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    rep = review(empty)
    assert rep.exit_code == 1 and verdicts(rep)["files"] == "fail"
    assert {c.verdict for c in rep.checks if c.id != "files"} <= {"cannot-tell", "needs-proof"}
    d = make_record(tmp_path / "x")
    (d / "train_seed42.log").write_bytes(b"\x00\x01binary")
    (d / "submission.json").write_text("[1, 2]")
    (d / "other.log").write_text("Epoch 1/3 - loss: 0.52 - accuracy: 0.81\n")  # another tool's log
    (d / "train_gpt.py").write_text("def f(:\n")
    rep = review(d)
    files = " | ".join(e.value for c in rep.checks if c.id == "files" for e in c.evidence)
    for reason in ("binary, not a text log", "wrong shape: a JSON list", "a log of another tool", "not Python"):
        assert reason in files
    (d / "submission.json").write_text("{\"val_bpb\": ")
    assert "not JSON" in " ".join(e.value for c in review(d).checks for e in c.evidence)
    (d / "submission.json").write_text(json.dumps({"val_bpb": "TBD", "seeds": [1337]}))
    rep = review(d)
    assert any("wrong shape: val_bpb" in e.value for c in rep.checks for e in c.evidence)


def test_cli_json_schema_and_exit_codes(tmp_path: Path, capsys, monkeypatch) -> None:
    ok = make_record(tmp_path / "a")
    assert main(["review", str(ok), "--json"]) == 0
    rep = ReviewReport.model_validate_json(capsys.readouterr().out)
    assert rep.counts["fail"] == 0 and len(rep.checks) == 18
    bad = make_record(tmp_path / "b", log_kw={"train_ms": 650_000})
    monkeypatch.setenv("COLUMNS", "200")  # the terminal's width, as shutil.get_terminal_size reads it
    assert main(["review", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "training ≤ 600 s" in out and len(out.splitlines()) <= 3 + 2 * 18
    assert max(map(len, out.splitlines())) <= 200 and any(len(x) > 118 for x in out.splitlines())
    assert main(["review", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_local_modules_count_as_code(tmp_path: Path) -> None:
    script = plant("import glob\n", "import glob\nfrom ngram_helper import tilt\n")
    code = len(script.encode())
    d = make_record(tmp_path, script=script, log_kw={"model_bytes": 15_990_000, "code_bytes": code})
    (d / "ngram_helper.py").write_text("def tilt(x):\n    return x\n" + "# pad\n" * 2000)  # 12,026 bytes
    rep = review(d)
    art = next(c for c in rep.checks if c.id == "artifact_size")
    assert art.verdict == "fail" and "ngram_helper.py 12,026" in art.evidence[0].value


def test_eval_only_rerun_brings_its_training_log(tmp_path: Path) -> None:
    d = make_record(tmp_path, submission={"seed_results": {str(s): {"val_bpb": BPB[s] - 0.0004} for s in SEEDS},
                                          "val_bpb": round(sum(BPB.values()) / 3 - 0.0004, 5), "val_loss": None},
                    log_kw={"train_ms": 650_000})
    (d / "rerun").mkdir()
    for s in SEEDS:
        (d / "rerun" / f"seed_{s}.log").write_text(f"Hyperparameters:\n  seed: {s}\n\nlegal_ttt val_loss:1.8 "
                                                   f"val_bpb:{BPB[s] - 0.0004:.8f} eval_time:400000ms\n")
    got = verdicts(review(d))
    assert got["claims"] == "pass" and got["train_time"] == "fail"  # the claim is the re-run; training is the log's


def test_hostile_payloads_are_reported_not_raised(tmp_path: Path) -> None:
    d = make_record(tmp_path, script='import lzma as L,base64 as B\nexec(L.decompress(B.b85decode("not-a-payload")))\n')
    assert "does not" in next(c for c in review(d).checks if c.id == "files").evidence[0].value
    (d / "train_gpt.py").write_text("x = 1\n" * 20000 + "y = '\x00'\n")  # a NUL past the first 64 KB
    rep = review(d)
    assert verdicts(rep)["files"] == "cannot-tell" and verdicts(rep)["legal_score_first"] == "needs-proof"
