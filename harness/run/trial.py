"""One trial = one (row, seed): a Tune function that runs a DDP TorchTrainer, and the loop each rank runs.

This is the only code that runs inside Ray; the specs were made on the driver (:mod:`harness.run.specs`).
Identity is stable across retries and restores: the Train run is named after the row, the seed and the
config hash (so Ray Train resumes it from its own last checkpoint, never one of an edited row) and the
MLflow run is found again by ``sfh.run_key``. Each rank keeps its local checkpoints in one scratch folder
per Train run, emptied when the rank starts (what a killed worker left) and removed when it ends. Rank 0
reports a checkpoint each time the engine writes one, logs every epoch to MLflow, and after training
measures energy, SOPs and firing rates on the evaluation set with the best weights.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs
import ray.train
import torch
import yaml
from mlflow.entities import Run
from ray import tune
from ray.train import TrainingFailedError, WorkerGroupError
from ray.train.torch import TorchTrainer, get_device
from ray.tune.integration.ray_train import TuneReportCallback

from harness import tracking
from harness.cost.actuals import TrialMeter, log_actual
from harness.experiment import Resources
from harness.experiment.resolve import flatten
from harness.failures import plain
from harness.reference import guard
from harness.reference.guard import ConvergenceGuard, GuardSpec
from harness.run import preemption
from harness.run.specs import TRIAL_DRIVER_CPU, TrialSpec, path_name, sampled_run_key
from spikingformer import evaluate
from spikingformer._validation import deep_merge
from spikingformer.checkpoints.training import BEST, LAST, CheckpointError, newest_intact, resume_candidates
from spikingformer.config import TrainConfig
from spikingformer.data.loaders import eval_batch_size
from spikingformer.evaluate import evaluate_run
from spikingformer.models import batch_coupling
from spikingformer.training.engine import Callback, FitResult, fit
from spikingformer.training.epoch import RunState
from spikingformer.training.preemption import Preempted, StopRequest

CHECKPOINTS_KEPT = 2
#: The folder, beside Ray Train's checkpoints of a run, holding rank 0's newest in-epoch checkpoint.
IN_EPOCH = "sfh_in_epoch"


@dataclass(frozen=True)
class WorkerJob:
    """What every rank of one Train run needs: the validated config and where rank 0 reports."""

    config: TrainConfig
    tracking_uri: str
    run_id: str
    #: Name of the run's local scratch folder (unique per Train run and storage).
    scratch: str
    energy_batches: int
    use_gpu: bool
    #: The convergence guard's spec (``GuardSpec.to_mapping``), None for a row without a reference curve.
    guard: dict[str, Any] | None = None
    #: The tracked experiment (whose stop flag every rank polls) and where rank 0 keeps the run's newest
    #: in-epoch checkpoint in the Train storage (a path or URI), for a restarted worker group to find.
    experiment: str = ""
    in_epoch: str = ""


def trainable() -> Any:
    """The Tune trainable of every trial (grid, search and restore alike)."""
    return tune.with_resources(run_trial, {"cpu": TRIAL_DRIVER_CPU})


def open_run(store: tracking.Tracking, spec: TrialSpec, key: str) -> Run:
    """The trial's MLflow run: found again by ``key``, else created with its tags, config hash and params."""
    return store.open_trial_run(
        spec.experiment,
        key,
        run_name=f"{spec.row} seed{spec.seed}",
        tags={tracking.EXPERIMENT: spec.experiment, tracking.ROW: spec.row, tracking.SEED: str(spec.seed),
              tracking.CONFIG_HASH: spec.config_hash, **spec.tags},
        params={**flatten(spec.train), **flatten({"resources": spec.resources})},
    )


def run_trial(config: dict[str, Any]) -> None:
    """Tune function: open the trial's MLflow run, train it with a TorchTrainer, close the run.

    ``config["trial"]`` is the TrialSpec's mapping; a search puts its sampled values in ``config["overrides"]`` (a
    TrainConfig-shaped mapping, validated here with the config it changes) and each sampled trial gets its own
    run key.
    """
    spec = TrialSpec.from_mapping(config["trial"])
    why = preemption.requested(spec.experiment)
    if why:  # the driver asked every trial to stop: one not started yet does not start
        raise preemption.TrialStopped(f"{spec.run_key}: not started ({why})")
    key = spec.run_key
    if config.get("overrides"):
        key = sampled_run_key(key, tune.get_context().get_trial_id())
        spec = spec.with_config(TrainConfig.from_dict(deep_merge(spec.train, config["overrides"]), where=key))
    store = tracking.Tracking(spec.tracking_uri)
    run = open_run(store, spec, key)
    run_id = run.info.run_id
    if run.info.status == "FINISHED":
        tune.report(dict(run.data.metrics))
        return
    train_run = f"{path_name(key)}-{spec.config_hash[:8]}"
    scratch = f"{train_run}-{hashlib.sha256(spec.train_storage.encode()).hexdigest()[:8]}"
    store.log_text(run_id, yaml.safe_dump(json.loads(json.dumps(spec.train)), sort_keys=False), "config.yaml")
    res = Resources(**spec.resources)
    job = WorkerJob(spec.config, spec.tracking_uri, run_id, scratch, spec.energy_batches, res.use_gpu, spec.guard,
                    experiment=spec.experiment, in_epoch=f"{spec.train_storage.rstrip('/')}/{train_run}/{IN_EPOCH}")
    attempts = spec.max_failures + 1
    for attempt in range(1, attempts + 1):
        try:
            _trainer(job, res, train_run, spec.train_storage).fit()
            break
        except TrainingFailedError as err:
            if store.client.get_run(run_id).info.status != "RUNNING":
                raise  # the driver closed the run: a search's scheduler stopped it, or Ctrl-C
            stopped = stop_cause(err)
            if stopped is not None:
                store.record_failure(run_id, f"{stopped}; continue with `sfh resume {spec.experiment}`", str(err),
                                     kind="stopped", status="KILLED")
                raise preemption.TrialStopped(f"{key}: {stopped}") from None
            fatal = deterministic_cause(err)
            if fatal is None and attempt < attempts:
                print(f"{key}: attempt {attempt}/{attempts} failed ({first_line(err)}); "
                      "retrying from the last checkpoint", flush=True)
                continue
            reason = fatal or f"failed {attempts} time(s), the last with: {first_line(err)}"
            store.record_failure(run_id, reason, str(err), kind="deterministic" if fatal else "retries exhausted")
            # Ended here, not raised: Tune would retry any exception (it cannot tell a NaN from a lost node),
            # training the whole trial again. The driver reads the outcome from the MLflow run.
            tune.report({FAILED: reason, config.get(METRIC, "top1"): math.nan})
            return
    store.end(run_id, "FINISHED")


#: The result key of a trial that ended FAILED (its reason): Tune sees it complete, MLflow records it FAILED.
FAILED = "sfh_failed"
#: The config key naming the sweep's metric, which every result must hold (a failed trial's is NaN).
METRIC = "sfh_metric"


#: Worker exceptions that fail the same way on every attempt: non-finite loss, configuration, data layout and
#: checkpoint contents, and programming errors. Anything else (a lost process or node, a collective that
#: broke with it, out-of-memory, I/O hiccups) is retried from the last checkpoint.
DETERMINISTIC = (ArithmeticError, ValueError, TypeError, LookupError, AttributeError, NameError,
                 NotImplementedError, FileNotFoundError, NotADirectoryError, IsADirectoryError)


def deterministic_cause(err: TrainingFailedError) -> str | None:
    """The first rank's deterministic exception (``"rank R: Type: message"``), None when a retry may help.

    Ray Train gives each failed rank's own exception (``WorkerGroupError.worker_failures``); when one rank
    fails deterministically the others usually fail with collateral collective errors, so any rank counts.
    """
    failures = err.worker_failures if isinstance(err, WorkerGroupError) else {}
    for rank, exc in sorted(failures.items()):
        if isinstance(exc, DETERMINISTIC):
            return f"rank {rank}: {type(exc).__name__}: {exc}"
    return None


def stop_cause(err: TrainingFailedError) -> str | None:
    """Where the trial stopped on request (rank 0's :class:`Preempted`, else any rank's), None otherwise."""
    failures = err.worker_failures if isinstance(err, WorkerGroupError) else {}
    stops = [exc for _, exc in sorted(failures.items()) if isinstance(exc, Preempted)]
    return str(stops[0]) if stops else None


def first_line(err: BaseException) -> str:
    """The first informative line of a (multi-line, traceback-carrying) error message."""
    lines = [plain(line).strip() for line in str(err).splitlines() if plain(line).strip()]
    return next((line for line in lines if not line.startswith("Training failed due to")), type(err).__name__)


def _trainer(job: WorkerJob, res: Resources, train_run: str, storage: str) -> TorchTrainer:
    """The trial's TorchTrainer; no retries of its own (:func:`run_trial` decides them), and the same
    ``name`` and ``storage`` on every attempt so that Ray Train resumes the run from its last checkpoint."""
    return TorchTrainer(
        functools.partial(train_worker, job),
        scaling_config=ray.train.ScalingConfig(
            num_workers=res.num_workers, use_gpu=res.use_gpu, resources_per_worker={"CPU": res.cpus_per_worker}
        ),
        run_config=ray.train.RunConfig(
            name=train_run,
            storage_path=storage,
            callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=0),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
        ),
    )


class _ReportEpochs(Callback):
    """Every rank reports each epoch to Ray Train; rank 0 attaches the checkpoint and logs to MLflow, and tags
    the run with what the engine resolved (the neurons' implementation) before the first epoch. With a
    convergence guard, each epoch's metrics carry its gap to the reference, rank 0 keeps the run's status in the
    ``sfh.reference`` tag, and every rank stops when the guard says so."""

    def __init__(self, work: Path, log: tracking.EpochLog | None, in_epoch: str,
                 guard: ConvergenceGuard | None = None) -> None:
        self.work = work
        self.log = log
        self.in_epoch = in_epoch
        self.guard = guard
        self.status = ""

    def on_checkpoint(self, epoch: int, batches: int, checkpoint_path: Path | None) -> None:
        """Rank 0 puts an in-epoch checkpoint in the Train storage (Ray Train's own are per epoch, via Tune)."""
        if checkpoint_path is not None and self.in_epoch:
            upload_in_epoch(checkpoint_path, self.in_epoch)

    def on_fit_start(self, run: RunState) -> None:
        if self.guard is not None:
            self.guard.replay(run.history)
        if self.log is not None:
            self.log.tracking.set_tags(self.log.run_id, {"sfh.lif": run.lif})
            self.log.tracking.log_datasets(self.log.run_id, {"train": run.train_loader.dataset.info,
                                                             "eval": run.eval_loader.dataset.info})

    def on_epoch_end(self, metrics: dict[str, float], checkpoint_path: Path | None) -> None:
        if self.guard is not None:
            judged = self.guard.judge(metrics)
            metrics.update(judged)
            status = self.guard.status(judged) if judged else self.status
            if self.log is not None and status != self.status:
                self.log.tracking.set_tags(self.log.run_id, {guard.TAG: status})
            self.status = status
        if checkpoint_path is None:
            ray.train.report(metrics)
        else:
            with tempfile.TemporaryDirectory(dir=self.work.parent) as stage:
                for name in (LAST, BEST):
                    if (self.work / name).is_file():
                        os.link(self.work / name, Path(stage) / name)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(stage))
        if self.log is not None:
            self.log.log(metrics)

    def stop_reason(self) -> str | None:
        return self.guard.stopped if self.guard is not None else None


def train_worker(job: WorkerJob) -> None:
    """Ray Train loop of one rank: resume from Ray's last checkpoint, fit, then (rank 0) final figures."""
    config = job.config
    rank = ray.train.get_context().get_world_rank()
    device = get_device() if job.use_gpu else None
    scratch = scratch_dir(job.scratch, rank)
    shutil.rmtree(scratch, ignore_errors=True)  # what a killed worker of this rank left
    work = scratch / "checkpoints"
    work.mkdir(parents=True)
    resume = _resume_point(ray.train.get_checkpoint(), job.in_epoch, work, scratch)
    store = tracking.Tracking(job.tracking_uri) if rank == 0 else None
    log = tracking.EpochLog(store, job.run_id) if store is not None else None
    if store is not None:
        world = ray.train.get_context().get_world_size()
        batch = {tracking.EVAL_BATCH: str(eval_batch_size(config)),
                 tracking.BATCH_COUPLING: batch_coupling(config.model.name, **config.model.kwargs) or "none"}
        store.set_tags(job.run_id, {"sfh.device": _device_name(device), "sfh.world_size": str(world),
                                    "sfh.node": ray.util.get_node_ip_address(), **batch,
                                    **(resume.tags if resume is not None else {})})
    context = ray.train.get_context()
    several_nodes = context.get_local_world_size() < context.get_world_size()
    meter = TrialMeter(store, job.run_id, job.tracking_uri, device or torch.device("cpu"),
                            local_rank=context.get_local_rank(),
                            node=f"node{context.get_node_rank()}" if several_nodes else None)
    judge = None
    if job.guard is not None:
        judge = ConvergenceGuard(GuardSpec.from_mapping(job.guard), config.schedule.total_epochs,
                                 config.schedule.warmup_epochs)
    stop = StopRequest(pollers=(preemption.FlagPoller(job.experiment),)) if job.experiment else None
    try:
        result = fit(
            config,
            callbacks=[_ReportEpochs(work, log, job.in_epoch, judge), meter.callback],
            checkpoint_dir=work,
            resume_from=resume.path if resume is not None else None,
            device=device,
            stop=stop,
        )
        if store is not None:
            log.backfill(result.history)
            log_actual(store, job.run_id, result.history, world, meter.meter)
            _log_final(store, job.run_id, config, result, job.energy_batches, device)
    finally:
        meter.stop()
        shutil.rmtree(scratch, ignore_errors=True)
        with contextlib.suppress(OSError):  # the last rank out removes the trial's folder
            scratch.parent.rmdir()


@dataclass(frozen=True)
class _Resume:
    """The local file a restarted rank resumes from, and tags telling the run where it came from."""

    path: Path
    tags: dict[str, str]


def _storage(uri: str) -> tuple[pyarrow.fs.FileSystem, str]:
    """The filesystem and path of a Train storage location (a local path or an object-store URI)."""
    return pyarrow.fs.FileSystem.from_uri(uri) if "://" in uri else (pyarrow.fs.LocalFileSystem(), uri)


def upload_in_epoch(local: Path, folder: str) -> None:
    """Copy an in-epoch checkpoint to ``folder/last.pt`` in the storage, replacing the previous one whole."""
    filesystem, path = _storage(folder)
    filesystem.create_dir(path, recursive=True)
    pyarrow.fs.copy_files(str(local), f"{path}/.{LAST}.tmp", source_filesystem=pyarrow.fs.LocalFileSystem(),
                          destination_filesystem=filesystem)
    filesystem.move(f"{path}/.{LAST}.tmp", f"{path}/{LAST}")


def _fetch_in_epoch(folder: str, local: Path) -> Path | None:
    """The run's in-epoch checkpoint copied from the storage into ``local``, None when there is none."""
    filesystem, path = _storage(folder)
    if filesystem.get_file_info(f"{path}/{LAST}").type != pyarrow.fs.FileType.File:
        return None
    local.mkdir(parents=True, exist_ok=True)
    pyarrow.fs.copy_files(f"{path}/{LAST}", str(local / LAST), source_filesystem=filesystem,
                          destination_filesystem=pyarrow.fs.LocalFileSystem())
    return local / LAST


def _resume_point(checkpoint: ray.train.Checkpoint | None, in_epoch: str, work: Path, scratch: Path) -> _Resume | None:
    """The checkpoint that got furthest among the one Ray Train hands back, the older ones it keeps beside it and
    the run's in-epoch checkpoint in the storage; None when there is none (a fresh start).

    Ray's latest is copied into ``work`` (where training goes on), the others into ``scratch``; a file that
    cannot be read is skipped (and removed from the local copy, so it is never reported again), named with its
    storage path in the ``sfh.resume.skipped`` tag. Every rank reads the same files, so every rank makes the
    same choice.
    """
    folders: dict[Path, str] = {}
    if checkpoint is not None:
        folders[work] = checkpoint.path
        checkpoint.to_directory(str(work))
        parent = checkpoint.path.rstrip("/").rsplit("/", 1)[0]
        siblings = checkpoint.filesystem.get_file_info(pyarrow.fs.FileSelector(parent))
        older = sorted((i.path for i in siblings if i.type == pyarrow.fs.FileType.Directory
                        and i.base_name.startswith("checkpoint_") and i.path != checkpoint.path), reverse=True)
        for k, path in enumerate(older):
            local = scratch / f"older-{k}"
            ray.train.Checkpoint(path, filesystem=checkpoint.filesystem).to_directory(str(local))
            folders[local] = path
    fetched = _fetch_in_epoch(in_epoch, scratch / IN_EPOCH) if in_epoch else None
    if fetched is not None:
        folders[fetched.parent] = in_epoch
    if not folders:
        return None
    candidates = [file for local in folders for file in resume_candidates(local)]

    def named(text: str) -> str:  # local copies -> the files in the Train storage
        for local, remote in folders.items():
            text = text.replace(str(local), remote)
        return text

    try:
        chosen = newest_intact(candidates)
    except CheckpointError as err:
        raise CheckpointError(named(str(err))) from None
    for problem in chosen.skipped:
        bad = next((f for f in candidates if str(f) in problem), None)
        if bad is not None:
            bad.unlink(missing_ok=True)
    position = chosen.content.get("position")
    where = f"epoch {chosen.content['epoch']}" + (f", batch {position['batches']}" if position else "")
    tags = {"sfh.resume.from": f"{named(str(chosen.path))} ({where})"}
    if chosen.skipped:
        tags["sfh.resume.skipped"] = named("; ".join(chosen.skipped))[: tracking.FAILURE_TAG_CHARS]
    return _Resume(chosen.path, tags)


def scratch_dir(name: str, rank: int) -> Path:
    """Local scratch of one rank of a Train run (``name`` is unique per run and storage), on its node."""
    return Path(tempfile.gettempdir()) / f"sfh-trials-{os.getuid()}" / name / f"rank{rank}"


def _device_name(device: torch.device | None) -> str:
    if device is not None and device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores)"


def _log_final(
    store: tracking.Tracking, run_id: str, config: TrainConfig, result: FitResult, batches: int,
    device: torch.device | None,
) -> None:
    """The library's final figures of the run (:func:`spikingformer.evaluate.evaluate_run`), logged."""
    final = evaluate_run(config, result, energy_batches=batches, device=device, memory_images=min(4, batches))
    store.log_metrics(run_id, final.metrics)
    store.set_tags(run_id, {f"{evaluate.SELECTION_TAG}{k}": v for k, v in final.selection.items()})
    store.log_text(run_id, final.report.to_json(), evaluate.ENERGY_ARTIFACT)
    store.log_text(run_id, final.report.to_table(), evaluate.ENERGY_TABLE_ARTIFACT)
    if final.memory is not None:
        store.log_text(run_id, json.dumps(final.memory.to_dict(), indent=1), evaluate.MEMORY_ARTIFACT)
        store.log_text(run_id, final.memory.to_table(), evaluate.MEMORY_TABLE_ARTIFACT)
