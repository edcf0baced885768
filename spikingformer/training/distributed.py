"""torch.distributed, as the engine sees it: whoever launched us (torchrun, Ray Train) owns the process group.

Everything here degrades to the single-process case when no group is initialized. Nothing here reads the
environment: the launcher's protocol (torchrun's WORLD_SIZE / LOCAL_RANK) belongs to its CLI.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if is_distributed() else (0, 1)


def default_device(requested: str, rank: int = 0) -> torch.device:
    """'auto' picks CUDA when present; rank r takes GPU r mod count (callers that know the local GPU pass it)."""
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("runtime.device is 'cuda' but torch sees no CUDA device; use 'auto' or 'cpu'")
    return torch.device("cuda", rank % torch.cuda.device_count())


def all_reduce(values: list[float], device: torch.device, op: str = "sum") -> list[float]:
    """Reduce a few scalars across ranks in one call (float64, so counts stay exact)."""
    if not is_distributed():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t.tolist()


def all_gather(obj: Any) -> list[Any]:
    """Collective: every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(module: nn.Module) -> None:
    """Give every rank rank 0's buffers (BN running stats drift apart per rank within an epoch)."""
    if is_distributed():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def rank0_first(make: Callable[[], T]) -> T:
    """Collective: rank 0 runs ``make`` (which may write a shared cache), then the other ranks do."""
    if is_distributed() and dist.get_rank() != 0:
        dist.barrier()
        return make()
    out = make()
    if is_distributed():
        dist.barrier()
    return out
