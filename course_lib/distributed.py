"""Data-parallel training helpers (``torch.distributed`` + ``DistributedDataParallel``).

Launch one process per GPU with torchrun; each process trains a replica of the
model on its slice of every batch and DDP averages the gradients:

    torchrun --standalone --nproc_per_node=2 -m course_lib.train --recipe cifar --data data

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; ``setup()`` reads them. Without
torchrun everything here degrades to a single process (rank 0 of 1).
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def is_initialized() -> bool:
    """True inside an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_initialized() else 1


def setup(backend: str | None = None) -> torch.device:
    """Join the process group that torchrun described in the environment.

    Args:
        backend: "nccl" (GPUs) or "gloo" (CPU); default nccl when CUDA is available.

    Returns:
        this process's device: ``cuda:LOCAL_RANK`` with CUDA, else the CPU.
        Without torchrun's variables nothing is initialised and the default
        device of a single process is returned.
    """
    from course_lib.device import get_device

    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return get_device()
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not is_initialized():
        dist.init_process_group(backend)
    return device


def cleanup() -> None:
    """Leave the process group (safe to call without one)."""
    if is_initialized():
        dist.destroy_process_group()


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel`` around ``model`` (rank 0's weights are broadcast to all)."""
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        return DistributedDataParallel(model, device_ids=[device.index])
    return DistributedDataParallel(model)


def mean_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """Average a tensor over all processes (returns it unchanged in a single process)."""
    if world_size() == 1:
        return t
    t = t.detach().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / world_size()
