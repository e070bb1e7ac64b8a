"""Process-group set-up for every way a run starts: the `deepspeed` launcher, torchrun, or one
plain `python` process. NCCL on GPU, gloo on CPU (DeepSpeed's CPU accelerator).

Import this module before anything imports deepspeed: DeepSpeed picks its accelerator once,
at import time, from DS_ACCELERATOR.
"""

from __future__ import annotations

import datetime
import gc
import os
import socket
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

if not torch.cuda.is_available():
    os.environ.setdefault("DS_ACCELERATOR", "cpu")


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def choose_device(requested: str = "auto") -> torch.device:
    """cuda:LOCAL_RANK when CUDA is there (or asked for), else cpu."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device='cuda' but no CUDA device is visible")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Join (or create, for a single plain process) the default process group."""
    if "RANK" not in os.environ:  # plain `python launch/x.py`: a world of one
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    chosen = choose_device(device)
    if chosen.type == "cpu":
        os.environ["DS_ACCELERATOR"] = "cpu"
    if not dist.is_initialized():
        import deepspeed

        deepspeed.init_distributed(
            dist_backend="nccl" if chosen.type == "cuda" else "gloo",
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), chosen)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    out = values.detach().clone()
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(out)
    return out


def all_reduce_min(value: int, device: torch.device) -> int:
    out = torch.tensor([value], dtype=torch.int64, device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(out, op=dist.ReduceOp.MIN)
    return int(out.item())


def even_batches(loader: Iterable, device: torch.device, dummy: Callable[[], Any]) -> Iterator[tuple[Any, bool]]:
    """Yield (batch, is_real) the same number of times on every rank.

    Evaluation shards keep every sample once, so ranks can hold different numbers of batches;
    under ZeRO-3 every forward gathers parameters collectively, so a rank that ran out pads with
    its last batch (or `dummy()` if it had none) and the caller ignores those results."""
    count = len(loader)
    if dist.is_initialized() and dist.get_world_size() > 1:
        total = torch.tensor([count], dtype=torch.int64, device=device)
        dist.all_reduce(total, op=dist.ReduceOp.MAX)
        count = int(total.item())
    last = None
    seen = 0
    for batch in loader:
        if seen == count:
            raise RuntimeError(f"the loader yielded more than its length ({count}) batches")
        last, seen = batch, seen + 1
        yield batch, True
    for _ in range(count - seen):
        yield (last if last is not None else dummy()), False


def gather_objects(value: Any) -> list[Any]:
    """`value` from every rank, in rank order (just [value] without a process group)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return [value]
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, value)
    return parts


def broadcast_object(value: Any) -> Any:
    """Rank 0's `value` on every rank (a picklable object, e.g. a run name)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shutdown() -> None:
    """Leave the process group once every rank is done with it, and free it while Python is alive.

    Call it after the engine and model are out of scope: DeepSpeed's engine, optimizer and ZeRO-3
    parameters keep references to the process groups, and a gloo group still alive at interpreter
    exit is destroyed during finalisation, where its worker threads can abort the process
    ("terminate called without an active exception") after a run that succeeded."""
    if not dist.is_initialized():
        return
    # No rank tears its connections down while a peer still talks to it; but a rank leaving on an
    # error (shutdown runs in `finally`, where exc_info is the exception on its way out) must not
    # wait for peers that will never come: they fail on their next collective instead.
    if dist.get_world_size() > 1 and sys.exc_info()[0] is None:
        dist.barrier()
    import deepspeed.comm

    if deepspeed.comm.is_initialized():
        deepspeed.comm.destroy_process_group()  # also drops DeepSpeed's module-level group references
    else:
        dist.destroy_process_group()
    gc.collect()  # the engine's reference cycles (hooks, ZeRO-3 parameters) hold the groups


def is_main_rank() -> bool:
    """True on rank 0, and in a process without a process group."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def print_main(message: str) -> None:
    """Print on rank 0 only (every rank when no process group is running)."""
    if is_main_rank():
        print(message, flush=True)
