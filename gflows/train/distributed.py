"""Several processes, one model: ``torchrun`` and DistributedDataParallel (DDP).

``torchrun --nproc_per_node N -m gflows.train ...`` starts N processes with the environment variables
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``. :func:`setup` turns them into a process group (nccl
on CUDA, one GPU per process; gloo on CPU); without them a run is one process and nothing changes.
Each process trains on its shard of every global batch, DDP averages the gradients, so N processes
with per-process batch b follow the same trajectory as one process with batch N b (to float
round-off). Only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    """This process's place among the processes of a run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True for the process that writes files (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when the run has more than one process."""
        return self.size > 1


def world() -> World:
    """The current process group's view (one process when no group is initialised)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def launched_by_torchrun() -> bool:
    """True when ``WORLD_SIZE`` says this process is one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup() -> World:
    """Initialise the process group from torchrun's environment (nccl with CUDA, else gloo); one
    process when launched without torchrun. Binds each process to GPU ``LOCAL_RANK``."""
    if launched_by_torchrun() and not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl" if cuda else "gloo")
    return world()


def teardown() -> None:
    """Destroy the process group if :func:`setup` made one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def default_device(current: World) -> torch.device:
    """``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``."""
    return torch.device(f"cuda:{current.local_rank}") if torch.cuda.is_available() else torch.device("cpu")


def broadcast_state(module: nn.Module, current: World) -> None:
    """Copy rank 0's parameters and buffers to every process (models built with different seeds agree).

    Tensors are matched by name: escnn registers the buffers of a basis expansion in an order that
    changes from one process to the next (it iterates over a set of strings), so broadcasting
    ``module.buffers()`` in order, as DDP's own start-up synchronisation does, would copy one basis
    into another of the same shape. Non-contiguous tensors go through a contiguous copy.
    """
    if current.distributed:
        named = sorted([*module.named_parameters(), *module.named_buffers()], key=lambda item: item[0])
        with torch.no_grad():
            for _, tensor in named:
                received = tensor.detach().contiguous()
                dist.broadcast(received, src=0)
                tensor.copy_(received)


def all_sum(values: torch.Tensor, current: World) -> torch.Tensor:
    """Elementwise sum over the processes (the tensor itself with one process)."""
    if current.distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def all_max(values: torch.Tensor, current: World) -> torch.Tensor:
    """Elementwise maximum over the processes."""
    if current.distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return values


def all_gather(obj: object, current: World) -> List[object]:
    """Every process's ``obj``, indexed by rank (``[obj]`` with one process)."""
    if not current.distributed:
        return [obj]
    gathered: List[object] = [None] * current.size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(current: World) -> None:
    """Wait until every process gets here (nothing with one process)."""
    if current.distributed:
        dist.barrier()
