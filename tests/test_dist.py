"""The process-group scope: a synchronized teardown on success, an unsynchronized one on error.

Why it exists: a 2-process gloo bundle run aborted at exit on a loaded 2-core machine (rank 0:
"terminate called without an active exception", SIGABRT) when rank 1 destroyed its group first. The
success path now meets at a barrier before ``destroy_process_group``; the error path must not (a rank
that failed never arrives, and the others would wait for the collective timeout)."""

import time

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
from test_optim import _free_port

from pgolf import dist


def _scope_worker(rank: int, port: int, fail: bool, out: dict) -> None:
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    late = 1.5 if rank == 1 else 0.0  # rank 1 reaches the end of its scope 1.5 s after rank 0
    try:
        with dist.group_scope():
            out[f"main{rank}"] = dist.is_main()
            time.sleep(late)
            out[f"leave{rank}"] = time.monotonic()
            if fail:
                raise RuntimeError("boom")
    except RuntimeError:
        out[f"raised{rank}"] = True
    out[f"done{rank}"] = time.monotonic()
    out[f"initialized{rank}"] = tdist.is_initialized()


def _run(fail: bool) -> dict:
    with mp.get_context("spawn").Manager() as manager:
        out = manager.dict()
        mp.start_processes(_scope_worker, args=(_free_port(), fail, out), nprocs=2, join=True, start_method="spawn")
        return dict(out)


def test_success_path_waits_for_every_rank_before_teardown():
    out = _run(fail=False)
    assert out["main0"] is True and out["main1"] is False
    assert not out["initialized0"] and not out["initialized1"]
    # rank 0 left its body 1.5 s before rank 1, but its teardown finished only after rank 1 arrived
    assert out["done0"] >= out["leave1"]


def test_error_path_tears_down_without_waiting_and_reraises():
    out = _run(fail=True)
    assert out["raised0"] and out["raised1"]
    assert not out["initialized0"] and not out["initialized1"]
    assert out["done0"] < out["leave1"]  # rank 0 did not wait for rank 1 at a barrier


def test_single_process_scope_is_a_no_op_and_propagates():
    assert not tdist.is_initialized()
    with dist.group_scope():
        assert dist.is_main() and dist.world_size() == 1
    with pytest.raises(ValueError, match="x"), dist.group_scope():
        raise ValueError("x")
