"""What a Slurm job asks for, and whether every trial of an experiment fits in it: checked at submit time, so an
impossible row is refused before anything waits in the queue."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from harness.experiment import Resources

#: Slurm's time formats: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS.
_TIME = re.compile(r"^(?:(?P<d>\d+)-)?(?P<a>\d+)(?::(?P<b>\d+))?(?::(?P<c>\d+))?$")


def time_limit_s(text: str) -> int:
    """Seconds in a Slurm ``--time`` value; a malformed one is refused naming the formats."""
    match = _TIME.match(text.strip())
    if not match:
        raise ValueError(f"--time {text!r}: not a Slurm time (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS)")
    d, a, b, c = (int(g) if g is not None else None for g in match.group("d", "a", "b", "c"))
    if d is not None:  # D-HH[:MM[:SS]]
        return d * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    if c is not None:  # HH:MM:SS
        return a * 3600 + b * 60 + c
    if b is not None:  # MM:SS
        return a * 60 + b
    return a * 60


@dataclass(frozen=True)
class Allocation:
    """One job's request: ``nodes`` alike, each with ``cpus_per_node`` CPUs (one task) and ``gpus_per_node`` GPUs."""

    nodes: int
    cpus_per_node: int
    gpus_per_node: int
    time: str
    partition: str | None = None
    account: str | None = None

    def describe(self) -> str:
        gpus = f", {self.gpus_per_node} GPU" if self.gpus_per_node else ""
        return f"{self.nodes} node(s) x ({self.cpus_per_node} CPU{gpus})"

    def workers_per_node(self, res: Resources) -> int:
        """How many of a trial's DDP workers one node holds (a worker never spans nodes)."""
        by_cpu = math.floor(self.cpus_per_node / res.cpus_per_worker + 1e-9)
        return min(by_cpu, self.gpus_per_node) if uses_gpu(res, self.gpus_per_node) else by_cpu


def uses_gpu(res: Resources, gpus_per_node: int) -> bool:
    """A trial's ``use_gpu`` on this allocation (``auto``: when its nodes have GPUs)."""
    return gpus_per_node > 0 if res.use_gpu == "auto" else bool(res.use_gpu)


def cpus_needed(resources: list[dict[str, Any]], nodes: int, gpus_per_node: int) -> int:
    """The CPUs per node that let the largest trial spread its workers evenly over ``nodes``: the default of
    ``--cpus-per-node``."""
    need = 1
    for mapping in resources:
        res = Resources(**mapping)
        per_node = math.ceil(res.num_workers / nodes)
        if uses_gpu(res, gpus_per_node) and gpus_per_node:
            per_node = min(per_node, gpus_per_node)
        need = max(need, math.ceil(per_node * res.cpus_per_worker))
    return need


def check_fits(trials: dict[str, dict[str, Any]], allocation: Allocation) -> None:
    """Refuse, naming every row that cannot run, when a trial (its resources, by row) needs more than the job.

    A trial's workers must all run at once (DDP), each on one node with its CPUs and, with ``use_gpu``, one GPU;
    the trial's own driver and Train controller take the head node's spare logical CPU.
    """
    refused = []
    for row, mapping in trials.items():
        res = Resources(**mapping)
        gpu = uses_gpu(res, allocation.gpus_per_node)
        worker = f"{res.cpus_per_worker:g} CPU" + (", 1 GPU" if gpu else "")
        if gpu and not allocation.gpus_per_node:
            refused.append(f"row {row}: use_gpu is true, and the job asks for no GPU (--gpus-per-node)")
            continue
        room = allocation.nodes * allocation.workers_per_node(res)
        if res.num_workers > room:
            refused.append(f"row {row}: {res.num_workers} worker(s) of ({worker}); {allocation.describe()} "
                           f"holds {room}")
    if refused:
        raise ValueError("refused before queueing, the job is too small for:\n  " + "\n  ".join(refused) +
                         "\nAsk for more nodes, GPUs or CPUs per node, or lower the rows' resources.")
