"""torch.distributed helpers: one code path for one process and for ``torchrun``.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) :func:`init` starts the process group with the
backend that fits the device (NCCL on GPUs, gloo on CPU) and gives each rank its device. Without
torchrun everything here is a no-op, so the same commands work unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init(device: torch.device) -> tuple[Dist, torch.device]:
    """Start the process group if launched by torchrun; returns the rank info and this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, local), device


def env_is_main() -> bool:
    """True unless this process is a non-zero torchrun rank (readable before the group starts)."""
    return int(os.environ.get("RANK", "0")) == 0


def current() -> Dist:
    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return Dist()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def gather(obj: Any, d: Dist) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` in one process)."""
    if not d.enabled:
        return [obj]
    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: Any, d: Dist) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not d.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shard(n: int, d: Dist, block: int = 1) -> range:
    """This rank's contiguous share of ``range(n)``, in whole blocks of ``block`` indices.

    Shares cover every index exactly once and differ by less than two blocks. With ``block`` = the batch size,
    every rank's batches are exactly the batches of a single-process run, so per-image results are
    bitwise identical (no batch-composition rounding).
    """
    blocks = -(-n // block)
    sizes = [len(a) for a in np.array_split(np.arange(blocks), d.world)]
    start = min(n, block * sum(sizes[: d.rank]))
    return range(start, min(n, start + block * sizes[d.rank]))
