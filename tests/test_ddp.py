"""2-process gloo torchrun == 1 process with gradient accumulation (the same global batch)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from pgolf.train import checkpoint as ckpt


def _sets(data_dir):
    return ["--set", f"data.path={data_dir}", "--set", "model.vocab_size=384", "--set", "train.iterations=2",
            "--set", "train.batch_tokens=2048", "--set", "train.seq_len=64", "--set", "train.threads=1", "--set", "train.log_every=1"]


@pytest.mark.parametrize("parallel_muon", [False, True])
def test_two_process_gloo_matches_one_process_with_accumulation(tiny_data, tmp_path, parallel_muon):
    """Also with parallel Muon ([03-23]): DDP leaves the matrices alone, the optimizer reduce-scatters them."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("RANK", None)
    two = tmp_path / "two"
    one = tmp_path / "one"
    pm = ["--set", f"optim.parallel_muon={str(parallel_muon).lower()}"]
    cmd2 = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "pgolf",
            "train", "tiny", *_sets(tiny_data), *pm, "--set", "train.grad_accum=1", "--out", str(two)]
    cmd1 = [sys.executable, "-m", "pgolf", "train", "tiny", *_sets(tiny_data), *pm, "--set", "train.grad_accum=2",
            "--out", str(one)]
    for cmd in (cmd2, cmd1):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
    a, b = ckpt.load_checkpoint(two), ckpt.load_checkpoint(one)
    assert a.step == b.step == 2
    assert json.loads((two / "config.json").read_text())["train"]["grad_accum"] == 1
    # rank 1 wrote its own optimizer state (Muon momentum lives on the rank that owns the matrix / slice)
    assert ckpt.has_checkpoint(two, ".rank1")
    if parallel_muon:
        assert any("bank_buf" in st for st in a.optimizer_states[1]["state"].values())
    for k, v in b.model_state.items():
        torch.testing.assert_close(a.model_state[k], v, rtol=0, atol=1e-4, msg=k)  # see test_train

    def losses(log):
        return [float(line.split("train_loss:")[1].split()[0]) for line in log.read_text().splitlines()
                if "train_loss:" in line]

    la, lb = losses(two / "train.log"), losses(one / "train.log")
    assert len(la) == len(lb) > 0
    for x, y in zip(la, lb, strict=True):
        assert abs(x - y) <= 1.5e-4  # logged with 4 decimals


def test_two_process_overlap_prescan_refuses_on_every_rank(tiny_data, tmp_path):
    """The overlap check runs before the clock with the shards split over the ranks; a validation document
    in the train shards stops both ranks with the same one-line error (no rank left waiting)."""
    from test_provenance import _contaminated

    d, _, _ = _contaminated(tiny_data, tmp_path)  # validation document 4 in a new last train shard
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("RANK", None)
    for data, ok in ((tiny_data, True), (d, False)):
        out = tmp_path / ("clean" if ok else "dirty-run")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "pgolf",
               "train", "tiny", *_sets(data), "--set", "train.grad_accum=1", "--out", str(out)]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        if ok:
            assert r.returncode == 0, r.stderr[-3000:]
            log = (out / "train.log").read_text()
            assert "overlap: no validation document in the" in log and "before the training clock" in log
        else:
            assert r.returncode != 0
            # both ranks, one verdict (their lines may interleave on the shared stderr)
            errors = [e.split(" (rebuild")[0] for e in r.stderr.split("pgolf: error: ")[1:]]
            assert len(errors) == 2 and len(set(errors)) == 1, r.stderr[-3000:]
            assert "exact copy of validation document 4" in errors[0]
