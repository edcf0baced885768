"""What a row's training costs per step on this device, and how many steps a whole run takes.

``measure`` builds the row's model and input pipeline (the dataset at ``data.root`` when it is there, else
synthetic samples of the same shape; ``StepCost.data`` says which) and trains it through ``engine.fit``
itself: one untimed warm-up step (kernels, allocator, the first optimizer update), then ``steps`` optimizer
steps of the per-worker batch in the recipe's precision and a few evaluation batches, timed by the engine.

A batch that does not fit is run as gradient accumulation of smaller micro-batches (same images per
optimizer step): on CUDA the largest halving of the batch that does not run out of memory, on CPU the
largest halving whose extrapolated resident memory stays within the caller's budget (a CPU process is
killed, not told, when memory runs out). ``largest_fitting_batch`` is that search, as a pure function.

``split_size`` and ``run_steps`` count what a whole run does: optimizer steps per epoch per rank and
evaluation batches, from the dataset's size (ImageNet-1K, CIFAR, the DVS splits, digits).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from spikingformer._validation import deep_merge
from spikingformer.config import TrainConfig
from spikingformer.data.loaders import SYNTHETIC_SIZES
from spikingformer.models.registry import input_spec
from spikingformer.training.engine import Callback, fit
from spikingformer.training.epoch import amp_dtype, peak_memory_mb, reset_peak_memory

#: Train / evaluation split sizes: ImageNet-1K, CIFAR-10/100, CIFAR10-DVS (upstream's 90 % head split per
#: class), DVS128 Gesture (official split), scikit-learn digits (the demo's fixed split).
SPLIT_SIZES: dict[str, tuple[int, int]] = {
    "imagenet": (1_281_167, 50_000),
    "cifar10": (50_000, 10_000),
    "cifar100": (50_000, 10_000),
    "cifar10-dvs": (9_000, 1_000),
    "dvs128-gesture": (1_176, 288),
    "digits": (1_437, 360),
}


def split_size(config: TrainConfig, split: str) -> int:
    """Samples in the run's train or eval split (a ``data.train_size`` / ``eval_size`` subset included)."""
    train = split == "train"
    limit = config.data.train_size if train else config.data.eval_size
    if config.data.dataset == "synthetic":
        return limit or SYNTHETIC_SIZES[split]
    full = SPLIT_SIZES[config.data.dataset][0 if train else 1]
    return min(full, limit) if limit is not None else full


@dataclass(frozen=True)
class RunSteps:
    """What one rank of a ``world_size``-rank run does: optimizer steps and evaluation passes."""

    epochs: int
    steps_per_epoch: int
    evaluations: int
    eval_batches: int


def run_steps(config: TrainConfig, world_size: int) -> RunSteps:
    """Steps as the engine takes them: DistributedSampler pads to ceil(n / world) per rank, drops the last
    short batch; evaluation shards without padding, every ``eval_every`` epochs and at the last epoch."""
    data, epochs = config.data, config.schedule.total_epochs
    batches = math.ceil(split_size(config, "train") / world_size) // data.batch_size
    if data.max_train_batches is not None:
        batches = min(batches, data.max_train_batches)
    steps = math.ceil(batches / config.optim.grad_accum_steps)
    eval_batch = data.eval_batch_size or data.batch_size
    eval_batches = math.ceil(math.ceil(split_size(config, "eval") / world_size) / eval_batch)
    if data.max_eval_batches is not None:
        eval_batches = min(eval_batches, data.max_eval_batches)
    every = config.runtime.eval_every
    evaluations = epochs // every + (0 if epochs % every == 0 else 1)
    return RunSteps(epochs, steps, evaluations, eval_batches)


def largest_fitting_batch(batch: int, fits: Callable[[int], bool]) -> int | None:
    """The first of ``batch, batch // 2, ..., 1`` that ``fits``; None when not even one sample does."""
    size = batch
    while size >= 1:
        if fits(size):
            return size
        size //= 2
    return None


def accumulation(batch: int, micro_batch: int) -> int:
    """Micro-batches per optimizer step that carry at least ``batch`` images."""
    return math.ceil(batch / micro_batch)


@dataclass(frozen=True)
class StepCost:
    """One worker's measured cost of a row's training step (the per-worker batch) and evaluation batch."""

    model: str
    #: "<dataset> at <root>" for real data, else "synthetic <shape> (<why>)".
    data: str
    device: str
    #: "fp32", or the autocast dtype of the recipe's AMP.
    precision: str
    #: The per-worker batch of the recipe (images per optimizer step per worker).
    batch: int
    #: The micro-batch the step was run as (= batch when the batch fits in one pass).
    micro_batch: int
    steps: int
    step_s: float
    img_per_s: float
    eval_batch: int
    eval_batch_s: float
    #: fit's start-up before the first epoch (model, loaders, optimizer): once per trial and restart.
    setup_s: float
    peak_mem_mb: float
    #: Why the micro-batch is smaller than the batch ("" when it is not).
    note: str = ""

    @property
    def fits(self) -> bool:
        return self.micro_batch >= self.batch

    @property
    def accumulation(self) -> int:
        """Micro-batches per step needed to keep the per-worker (and so the global) batch."""
        return accumulation(self.batch, self.micro_batch)


def input_source(config: TrainConfig, device: torch.device) -> tuple[TrainConfig, str]:
    """The config to measure with and what it reads: the real dataset when its folder exists, else synthetic
    samples of the model's input shape (no augmentation pipeline then; made in the measured process on a CPU,
    whose cores loader processes would take from the step)."""
    data = config.data
    if data.dataset == "digits":
        return config, data.dataset
    shape = list(input_spec(config.model.name, **config.model.kwargs).input_shape)
    if data.dataset == "synthetic":
        return config, f"synthetic {shape}"
    if data.root is not None and Path(data.root).is_dir():
        return config, f"{data.dataset} at {data.root}"
    why = f"no {data.dataset} folder at {data.root}" if data.root else f"no data root given for {data.dataset}"
    synthetic = {"dataset": "synthetic", "root": None, "train_size": None, "eval_size": None, "frames": None,
                 **({"num_workers": 0} if device.type == "cpu" else {})}
    return TrainConfig.from_dict(deep_merge(config.to_dict(), {"data": synthetic})), f"synthetic {shape} ({why})"


def _timed_config(
    config: TrainConfig, micro: int, train_batches: int, eval_batch: int, eval_batches: int
) -> TrainConfig:
    """``config`` as one epoch of ``train_batches`` micro-batches and ``eval_batches`` evaluation batches."""
    synthetic = config.data.dataset == "synthetic"
    data = {
        "batch_size": micro, "eval_batch_size": eval_batch, "max_train_batches": train_batches,
        "max_eval_batches": eval_batches,
        **({"train_size": micro * train_batches, "eval_size": eval_batch * eval_batches} if synthetic else {}),
    }
    accum = accumulation(config.data.batch_size, micro)
    schedule = {"epochs": 1, "warmup_epochs": 0, "cooldown_epochs": 0}
    return TrainConfig.from_dict(deep_merge(config.to_dict(), {
        "data": data, "schedule": schedule, "optim": {"grad_accum_steps": config.optim.grad_accum_steps * accum},
        "runtime": {"eval_every": 1},
    }))


class _LastEpoch(Callback):
    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}

    def on_epoch_end(self, metrics: dict[str, float], checkpoint_path: Path | None) -> None:
        self.metrics = metrics


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err)


def measure(
    config: TrainConfig,
    *,
    steps: int,
    device: torch.device,
    memory_budget_mb: float | None = None,
    before_timed: Callable[[], object] | None = None,
) -> StepCost:
    """Warm up, then time ``steps`` optimizer steps of the per-worker batch (and as many evaluation batches,
    at most the split's) in one process. ``before_timed`` is called just before the timed run starts (an
    energy meter's lap).

    ``memory_budget_mb`` bounds the extrapolated resident memory of a CPU step (the caller knows the machine).
    """
    config, data = input_source(config, device)
    batch = config.data.batch_size
    eval_full = config.data.eval_batch_size or batch
    note = ""

    def warm_up(micro: int) -> float:
        """One micro-batch through fit; returns this process's peak memory (MB) after it."""
        fit(_timed_config(config, micro, 1, min(micro, eval_full), 1), device=device)
        return peak_memory_mb(device)

    unit = 2 if config.augment.mixup_active else 1  # timm's mixup pairs each sample with its mirror
    if device.type == "cuda":
        def fits(micro: int) -> bool:
            if micro % unit:
                return False
            try:
                warm_up(micro)
                return True
            except (torch.OutOfMemoryError, RuntimeError) as err:
                if not _is_oom(err):
                    raise
                torch.cuda.empty_cache()
                return False

        micro = largest_fitting_batch(batch, fits)
        if micro is None:
            raise MemoryError(f"{config.model.name}: {unit} sample(s) do not fit on {device}")
        if micro < batch:
            note = f"batch {batch} runs out of memory on {device}; {micro} fits"
    else:
        reset_peak_memory(device)  # the warm-ups' growth, not a peak this process reached before
        before = peak_memory_mb(device)
        first = warm_up(unit) - before
        per_image = max(warm_up(2 * unit) - before - first, 0.0) / unit if batch > unit else first / unit
        fixed = max(first - unit * per_image, 0.0)

        def fits(micro: int) -> bool:
            within = memory_budget_mb is None or fixed + micro * per_image < memory_budget_mb
            return micro % unit == 0 and within

        micro = largest_fitting_batch(batch, fits) or unit
        if micro < batch:
            note = (f"batch {batch} would need ~{fixed + batch * per_image:,.0f} MB here (budget "
                    f"{memory_budget_mb:,.0f} MB); run as {accumulation(batch, micro)} x {micro}")
        warm_up(micro)
    accum = accumulation(batch, micro)
    eval_micro = min(eval_full, micro) if device.type == "cpu" else eval_full
    eval_batches = max(1, min(steps, math.ceil(split_size(config, "eval") / eval_micro)))
    last = _LastEpoch()
    timed = _timed_config(config, micro, steps * accum, eval_micro, eval_batches)
    if before_timed is not None:
        before_timed()
    began = time.perf_counter()
    fit(timed, device=device, callbacks=[last])
    m = last.metrics
    setup_s = max(time.perf_counter() - began - m["epoch_time_s"], 0.0)
    images = steps * accum * micro
    train_s = images / m["img_per_s"]
    eval_s = max(m["epoch_time_s"] - train_s, 0.0) / eval_batches * (eval_full / eval_micro)
    dtype = amp_dtype(config.runtime, device)
    return StepCost(
        model=config.model.name, data=data, device=_device_name(device),
        precision="fp32" if dtype is None else str(dtype).removeprefix("torch."), batch=batch, micro_batch=micro,
        steps=steps, step_s=train_s / steps * batch / (accum * micro), img_per_s=m["img_per_s"],
        eval_batch=eval_full, eval_batch_s=eval_s, setup_s=setup_s, peak_mem_mb=m["peak_mem_mb"], note=note,
    )


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"
