"""The training engine: one process or one DDP rank, epochs of train + eval, checkpoints and callbacks.

``fit(config)`` is all a caller needs. It joins the process group the launcher made (torchrun via
``spikingformer.train``, or Ray Train), else runs alone. Every epoch first reseeds python, numpy and torch
from (seed, rank, epoch), so an epoch's randomness (sampler order, RandAugment, mixup, erasing, worker
seeds) is a function of those three numbers: a run resumed from an epoch-end checkpoint equals the
uninterrupted run, on every rank. Checkpoints also carry every rank's generator states (gathered to rank 0,
each rank's put back on resume), so a checkpoint records where every generator stood; exactness comes from the
reseed at the next epoch's start, which overrides them.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.utils import ModelEmaV3
from torch.nn.parallel import DistributedDataParallel

from spikingformer.checkpoints.loading import load_weights, read_checkpoint
from spikingformer.checkpoints.training import (
    BEST,
    LAST,
    copy_checkpoint,
    newest_intact,
    resume_candidates,
    rng_state,
    save_checkpoint,
    set_rng_state,
    state_sha256,
)
from spikingformer.config import TrainConfig
from spikingformer.data.loaders import build_loaders
from spikingformer.models import build_model
from spikingformer.neurons import describe_lif_backend, set_lif_backend
from spikingformer.training.distributed import (
    all_gather,
    all_reduce,
    broadcast_buffers,
    default_device,
    is_distributed,
    rank_and_world,
)
from spikingformer.training.epoch import (
    EpochPosition,
    EvalSums,
    RunState,
    amp_dtype,
    build_criterion,
    evaluate,
    peak_memory_mb,
    train_one_epoch,
    updates_per_epoch,
)
from spikingformer.training.optim import build_optimizer, build_scheduler, scaled_lr
from spikingformer.training.preemption import Preempted, StopRequest

log = logging.getLogger(__name__)

#: How each reported figure was selected.
SELECTION = {
    "best_top1": "best test epoch (paper protocol)",
    "last_top1": "last epoch",
    "ema_top1": "EMA last epoch",
}
#: Per-epoch metrics that measure the machine, not the model (they differ between identical runs).
TIMING_KEYS = ("epoch_time_s", "img_per_s", "peak_mem_mb")
CHECKPOINT_FORMAT = 1


@dataclass
class FitResult:
    """The figures of one run, each labelled in ``selection`` with the protocol that picked it."""

    best_top1: float
    best_epoch: int
    last_top1: float
    ema_top1: float | None
    history: list[dict[str, float]]
    global_batch: int
    recipe_global_batch: int | None
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    data_info: dict[str, dict[str, Any]]
    #: ``state_sha256`` of the final weights on this rank (all ranks agree in a healthy DDP run).
    weights_sha256: str
    #: Why training ended before its last epoch (a callback's ``stop_reason``), None when it ran to the end.
    stopped: str | None = None
    selection: dict[str, str] = field(default_factory=lambda: dict(SELECTION))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (paths as strings)."""
        out = dataclasses.asdict(self)
        for key in ("last_checkpoint", "best_checkpoint"):
            out[key] = str(out[key]) if out[key] else None
        return out


class Callback:
    """Hooks called on every rank; override the ones you need.

    ``on_epoch_end`` gets metrics already reduced across ranks (identical everywhere) and, on rank 0 when a
    checkpoint was written this epoch, its path (None otherwise).
    """

    def on_fit_start(self, run: RunState) -> None:
        """After set-up (and resume), before the first epoch: the run's parts as they were resolved."""

    def on_epoch_end(self, metrics: dict[str, float], checkpoint_path: Path | None) -> None:
        pass

    def stop_reason(self) -> str | None:
        """Asked after each epoch's ``on_epoch_end``: a reason ends training there. It must be the same on every
        rank (decide from the reduced metrics only)."""
        return None

    def on_checkpoint(self, epoch: int, batches: int, checkpoint_path: Path | None) -> None:
        """After an in-epoch checkpoint at ``batches`` of ``epoch`` (path on rank 0 when one was written)."""

    def on_fit_end(self, result: FitResult) -> None:
        pass


def seed_epoch(seed: int, rank: int, epoch: int) -> None:
    """Reseed python, numpy and torch (CPU and CUDA) from (seed, rank, epoch)."""
    state = int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1)[0])
    random.seed(state)
    np.random.seed(state)
    torch.manual_seed(state)


def _checkpoint_state(
    run: RunState, epoch: int, rng: list[dict[str, Any]], position: EpochPosition | None = None
) -> dict[str, Any]:
    """Everything a resumed run needs; ``rng`` holds each rank's generator states, in rank order. ``epoch`` is the
    last whole epoch, or with ``position`` the epoch in progress and how far it got."""
    return {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "position": dataclasses.asdict(position) if position is not None else None,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "ema": run.ema.module.state_dict() if run.ema is not None else None,
        "num_updates": run.num_updates,
        "best_top1": run.best[0],
        "best_epoch": run.best[1],
        "history": run.history,
        "config": run.config.to_dict(),
        "seed": run.config.runtime.seed,
        "world_size": len(rng),
        "rng": rng,
    }


def _restore(run: RunState, ckpt: dict[str, Any], rank: int) -> None:
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint format {ckpt.get('format')!r} is not {CHECKPOINT_FORMAT}")
    if ckpt["seed"] != run.config.runtime.seed:
        raise ValueError(
            f"checkpoint was trained with runtime.seed={ckpt['seed']}, the config says {run.config.runtime.seed}: "
            "the resumed run would not continue the same run"
        )
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    run.scaler.load_state_dict(ckpt["scaler"])
    if run.ema is not None:
        if ckpt["ema"] is None:
            raise ValueError("the config asks for EMA but the checkpoint has none")
        run.ema.module.load_state_dict(ckpt["ema"])
    run.num_updates = ckpt["num_updates"]
    states = ckpt.get("rng") or []  # absent in checkpoints written before generator states were stored
    if rank < len(states):
        set_rng_state(states[rank], run.device)
    run.history, run.best = ckpt["history"], (ckpt["best_top1"], ckpt["best_epoch"])
    run.start_epoch = ckpt["epoch"] + 1
    if ckpt.get("position") is not None:  # an in-epoch checkpoint: that epoch goes on from where it stopped
        run.start_epoch, run.position = ckpt["epoch"], EpochPosition(**ckpt["position"])
        run.resume_rng = states[rank] if rank < len(states) else None
    if ckpt["world_size"] != run.world:
        log.warning("resuming a %d-rank run on %d ranks: batches will differ", ckpt["world_size"], run.world)


def _on_disk(folder: Path | None, name: str, rank: int) -> Path | None:
    """The checkpoint file rank 0 sees in ``folder`` (from this call or the run it resumed), else None."""
    return folder / name if folder is not None and rank == 0 and (folder / name).is_file() else None


def set_up(config: TrainConfig, device: torch.device | None = None) -> RunState:
    """Model, data, optimizer, schedule, scaler, EMA and loss of one run on this rank, nothing trained yet."""
    rank, world = rank_and_world()
    device = device or default_device(config.runtime.device, rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.manual_seed(config.runtime.seed)  # identical initial weights on every rank
    model = build_model(config.model.name, **config.model.kwargs)
    if config.model.finetune is not None:  # before .to(device): a new head is made where the model is
        load_weights(model, read_checkpoint(config.model.finetune), new_head=True)
    model = model.to(device)
    lif = describe_lif_backend(set_lif_backend(model, config.runtime.lif_backend, device), device)
    if config.runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    train_loader, eval_loader = build_loaders(config, rank=rank, world_size=world)
    global_batch = config.data.batch_size * world * config.optim.grad_accum_steps
    optimizer = build_optimizer(model, config.optim, scaled_lr(config.optim, global_batch))
    dtype = amp_dtype(config.runtime, device)
    criterion, mixup = build_criterion(config.augment, model.num_classes)
    return RunState(
        config=config,
        model=model,
        net=torch.compile(model) if config.runtime.compile else model,  # trains through it; shares the weights
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, config.schedule, updates_per_epoch(config, train_loader)),
        scaler=torch.amp.GradScaler(device.type, enabled=dtype == torch.float16),
        ema=ModelEmaV3(model, decay=config.runtime.ema_decay) if config.runtime.ema_decay else None,
        criterion=criterion,
        mixup=mixup,
        device=device,
        dtype=dtype,
        train_loader=train_loader,
        eval_loader=eval_loader,
        rank=rank,
        world=world,
        global_batch=global_batch,
        lif=lif,
    )


def _log_start(run: RunState) -> None:
    config, recipe_batch = run.config, run.config.data.recipe_global_batch
    log.info(
        "%s on %s: %d rank(s) on %s, global batch %d (recipe %s, lr rule %r, lr %.3g), amp %s, epochs %d..%d",
        config.model.name, config.data.dataset, run.world, run.device, run.global_batch, recipe_batch,
        config.optim.lr_scaling, run.optimizer.param_groups[0]["initial_lr"], run.dtype, run.start_epoch,
        config.schedule.total_epochs - 1,
    )
    if recipe_batch is not None and recipe_batch != run.global_batch:
        log.warning("global batch %d differs from the recipe's %d", run.global_batch, recipe_batch)
    log.info("data: %s", _data_info(run))


def _data_info(run: RunState) -> dict[str, dict[str, Any]]:
    return {"train": run.train_loader.dataset.info, "eval": run.eval_loader.dataset.info}


class InEpochCheckpoints:
    """After every optimizer update: write an in-epoch checkpoint when one is due (``runtime.
    checkpoint_every_updates``, ``checkpoint_every_minutes`` since the last checkpoint) or a stop was requested,
    and after the latter raise :class:`Preempted`. Under DDP every rank decides together (one small all-reduce
    per update), so all stop at the same step and the checkpoint holds every rank's generator states."""

    def __init__(self, run: RunState, folder: Path | None, stop: StopRequest | None,
                 callbacks: Sequence[Callback]) -> None:
        self.run, self.folder, self.stop, self.callbacks = run, folder, stop, callbacks
        self.since = time.monotonic()

    def written(self) -> None:
        """A checkpoint was just written (e.g. at an epoch's end): the minutes count from now."""
        self.since = time.monotonic()

    def _due(self) -> bool:
        runtime, run = self.run.config.runtime, self.run
        every, minutes = runtime.checkpoint_every_updates, runtime.checkpoint_every_minutes
        by_time = run.rank == 0 and bool(minutes and time.monotonic() - self.since >= 60 * minutes)  # rank 0's clock
        return by_time or bool(every and run.num_updates % every == 0)

    def at_update(self, epoch: int, batches: int, position: Callable[[], EpochPosition]) -> None:
        run = self.run
        stop, due = self.stop is not None and self.stop.requested(), self._due()
        if is_distributed():
            stop, due = (flag > 0 for flag in all_reduce([float(stop), float(due)], run.device, op="max"))
        if not (stop or due):
            return
        rng = all_gather(rng_state(run.device))
        path = None
        if self.folder is not None and run.rank == 0:
            path = save_checkpoint(_checkpoint_state(run, epoch, rng, position()), self.folder / LAST)
        self.written()
        for callback in self.callbacks:
            callback.on_checkpoint(epoch, batches, path)
        if stop:
            reason = self.stop.reason if self.stop is not None and self.stop.reason else "asked on another rank"
            raise Preempted(reason, epoch, batches, path)


def run_epoch(
    run: RunState, epoch: int, progress: bool = False, checkpoints: InEpochCheckpoints | None = None
) -> dict[str, float]:
    """Train one epoch (from ``run.position`` when it resumes part-way; ``checkpoints`` looks in after every
    update), evaluate when due (the model and its EMA) and return the epoch's metrics, reduced over ranks
    (identical on every rank). A non-finite training loss stops the run here."""
    config, device = run.config, run.device
    seed_epoch(config.runtime.seed, run.rank, epoch)
    run.train_loader.sampler.set_epoch(epoch)
    run.train_loader.dataset.set_epoch(epoch)
    run.scheduler.step(epoch)
    run.scheduler.step_update(run.num_updates)  # a per-update schedule: the LR of this epoch's first update
    resumed = run.position
    lr = resumed.lr if resumed is not None and resumed.lr is not None else run.optimizer.param_groups[0]["lr"]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    began = time.perf_counter() - (resumed.train_time if resumed is not None else 0.0)
    boundary = None
    if checkpoints is not None:
        def boundary(batches: int, loss_sum: torch.Tensor, seen: float) -> None:
            checkpoints.at_update(epoch, batches, lambda: EpochPosition(
                batches, float(loss_sum), float(seen), lr, time.perf_counter() - began))

    loss_sum, seen = train_one_epoch(run, run.train_loader, epoch, progress and run.rank == 0, boundary)
    train_time = time.perf_counter() - began
    sums = ema_sums = EvalSums.skipped()
    if (epoch + 1) % config.runtime.eval_every == 0 or epoch == config.schedule.total_epochs - 1:
        broadcast_buffers(run.model)
        sums = evaluate(run, run.model, run.eval_loader)
        if run.ema is not None:
            broadcast_buffers(run.ema.module)
            ema_sums = evaluate(run, run.ema.module, run.eval_loader)
    epoch_time = time.perf_counter() - began
    loss_sum, seen = all_reduce([loss_sum, seen], device)
    sums, ema_sums = sums.reduced(device), ema_sums.reduced(device)
    train_time, epoch_time, peak = all_reduce([train_time, epoch_time, peak_memory_mb(device)], device, op="max")
    metrics: dict[str, float] = {
        "epoch": epoch,
        "train_loss": loss_sum / seen,
        **sums.metrics(),
        "lr": lr,
        "epoch_time_s": epoch_time,
        "img_per_s": seen / train_time,
        "peak_mem_mb": peak,
        "global_batch": run.global_batch,
    }
    if run.ema is not None:
        metrics.update(ema_sums.metrics(prefix="ema_"))
    if not math.isfinite(metrics["train_loss"]):
        raise FloatingPointError(f"epoch {epoch}: training loss is {metrics['train_loss']}")
    return metrics


def checkpoint_when_due(run: RunState, epoch: int, improved: bool, folder: Path | None) -> Path | None:
    """Write ``last`` (and ``best`` when ``improved``) on rank 0 every ``checkpoint_every`` epochs, on the last
    epoch and on every improvement; returns the file written, if any. Every rank joins the gathering of
    generator states, so every rank calls this."""
    last_epoch = epoch == run.config.schedule.total_epochs - 1
    due = (epoch + 1) % run.config.runtime.checkpoint_every == 0 or last_epoch or improved
    rng = all_gather(rng_state(run.device)) if due else []  # collective: ``due`` is the same on every rank
    if folder is None or run.rank != 0 or not due:
        return None
    written = save_checkpoint(_checkpoint_state(run, epoch, rng), folder / LAST)
    if improved:
        copy_checkpoint(written, folder / BEST)
    return written


def _result(run: RunState, folder: Path | None) -> FitResult:
    evaluated = [h for h in run.history if not math.isnan(h["top1"])]
    return FitResult(
        best_top1=run.best[0],
        best_epoch=run.best[1],
        last_top1=evaluated[-1]["top1"] if evaluated else math.nan,
        ema_top1=evaluated[-1]["ema_top1"] if evaluated and run.ema is not None else None,
        history=run.history,
        global_batch=run.global_batch,
        recipe_global_batch=run.config.data.recipe_global_batch,
        last_checkpoint=_on_disk(folder, LAST, run.rank),
        best_checkpoint=_on_disk(folder, BEST, run.rank),
        data_info=_data_info(run),
        weights_sha256=state_sha256(run.model.state_dict()),
    )


def fit(
    config: TrainConfig,
    *,
    callbacks: Sequence[Callback] = (),
    checkpoint_dir: str | Path | None = None,
    resume_from: str | Path | None = None,
    device: torch.device | None = None,
    progress: bool = False,
    stop: StopRequest | None = None,
) -> FitResult:
    """Train ``config`` for ``schedule.total_epochs`` epochs, evaluating and checkpointing as configured.

    The steps: :func:`set_up` (and resume from ``resume_from``), then per epoch :func:`run_epoch` (train,
    evaluate when due) and :func:`checkpoint_when_due`, then the result. ``device`` is this rank's device (a
    launcher that knows the local GPU passes it); by default ``runtime.device`` decides, rank r taking GPU r
    mod count. ``progress`` shows a per-epoch tqdm bar on rank 0 when stderr is a terminal.

    In-epoch checkpoints (``runtime.checkpoint_every_updates`` / ``checkpoint_every_minutes``) go to
    ``checkpoint_dir`` as ``last.pt`` at update boundaries; once ``stop`` is requested the run writes one at the
    next update and raises :class:`~spikingformer.training.preemption.Preempted`. Resuming from either kind
    continues exactly where it stood: the remaining samples of the epoch, none twice.
    """
    run = set_up(config, device)
    if resume_from is not None:  # a truncated or corrupt last.pt falls back to an intact best.pt, said in the log
        _restore(run, newest_intact(resume_candidates(resume_from)).content, run.rank)
    if is_distributed():
        run.net = DistributedDataParallel(
            run.net, device_ids=[run.device.index] if run.device.type == "cuda" else None,
            find_unused_parameters=False,
        )
    if run.rank == 0:
        _log_start(run)
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    stopped = None
    for callback in callbacks:
        callback.on_fit_start(run)
    checkpoints = InEpochCheckpoints(run, folder, stop, callbacks)
    for epoch in range(run.start_epoch, config.schedule.total_epochs):
        metrics = run_epoch(run, epoch, progress, checkpoints)
        run.history.append(metrics)
        improved = metrics["top1"] > run.best[0]  # False for NaN: epochs without evaluation
        if improved:
            run.best = (metrics["top1"], epoch)
        written = checkpoint_when_due(run, epoch, improved, folder)
        if written is not None:
            checkpoints.written()
        for callback in callbacks:
            callback.on_epoch_end(dict(metrics), written)
        stopped = next((reason for callback in callbacks if (reason := callback.stop_reason())), None)
        if stopped is not None:
            log.info("epoch %d: stopping, %s", epoch, stopped)
            break
    result = _result(run, folder)
    result.stopped = stopped
    for callback in callbacks:
        callback.on_fit_end(result)
    return result
