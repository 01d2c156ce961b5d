"""Distributed setup in one place: process-group init/cleanup, rank helpers, ``print0``.

Launch with ``torchrun --standalone --nproc_per_node=N ...``; torchrun sets RANK, WORLD_SIZE and
LOCAL_RANK. Without them everything runs as a single process (rank 0 of 1) and every collective
below is a no-op, so the same code path serves a laptop, one GPU and 8 GPUs. NCCL is used on CUDA,
gloo on CPU.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """"auto" → cuda:LOCAL_RANK when CUDA is available, else cpu."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            from pgolf.errors import ConfigError

            raise ConfigError("train.device=cuda but CUDA is not available on this machine")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init(device: str = "auto") -> DistInfo:
    """Initialise the process group if launched by torchrun (idempotent)."""
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", device_id=dev if dev.type == "cuda" else None)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def cleanup(*, synchronize: bool = True) -> None:
    """Destroy the process group (no-op in a single process). With ``synchronize`` every rank first
    meets at a barrier, so no rank tears its communicator down while another still has work in flight:
    without it, on a loaded 2-core machine, rank 0 of a 2-process gloo run aborted at exit ("terminate
    called without an active exception", SIGABRT) after rank 1 had already destroyed its group. The
    error path passes ``synchronize=False``: a rank that failed never reaches the barrier, and the
    others must not wait for it until the collective timeout."""
    if dist.is_available() and dist.is_initialized():
        if synchronize and dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


@contextlib.contextmanager
def group_scope() -> Iterator[None]:
    """Run a command's body, then :func:`cleanup` — synchronized when the body returned, unsynchronized
    when it raised (the exception propagates). Read ``is_main()`` inside the scope: after cleanup
    every rank reads as rank 0."""
    try:
        yield
    except BaseException:
        cleanup(synchronize=False)
        raise
    cleanup()


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def print0(*args, **kwargs) -> None:
    """print() on rank 0 only."""
    if is_main():
        print(*args, **kwargs, flush=True)


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def all_reduce_(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce (sum or max); identity on one process."""
    if is_initialized():
        dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op])
    return t


def collective_device() -> torch.device:
    """Where a small tensor for a collective must live: the current CUDA device under NCCL, else the CPU."""
    if is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
