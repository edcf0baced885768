"""The Ray Tune driver: a grid of trials (rows x seeds), or any searcher/scheduler, and its restore.

A reproduction passes ``{"trial": tune.grid_search(specs)}``; a search passes a searcher, a scheduler and
``{"trial": spec, "overrides": {...sampled TrainConfig values...}}``. Both write their Tune state to
``<storage>/<name>`` so ``restore`` can pick an interrupted run up where it stopped.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pyarrow import fs
from ray import tune
from ray.tune.experiment import Trial

from harness import tracking
from harness.failures import first_line
from harness.run import cluster, preemption
from harness.run.specs import TrialSpec, bind, path_name, trial_resources
from harness.run.trial import METRIC
from harness.run.trial import trainable as training_trial
from spikingformer._validation import did_you_mean

#: What the sweep was started with, beside Tune's own state: the resume command reads it back.
INVOCATION = "sfh_invocation.json"
#: The exit status of a command stopped by Ctrl-C (128 + SIGINT, as a shell reports it).
EXIT_INTERRUPTED = 130
#: Set when Ctrl-C reached the sweep of this process (Tune then stops and returns as if it had finished).
INTERRUPTED = threading.Event()


class Interrupt(tune.Callback):
    """Notes a Ctrl-C. Tune catches the first one, saves its state, stops the trials (marking them as
    TERMINATED) and returns normally, so without this note an interrupted sweep reads as finished.

    ``setup`` runs after Tune has put in its own SIGINT handler: ours records the signal, then hands it on.
    A restored Tuner brings back a pickled copy of this callback, hence the flag at module level.
    """

    def setup(self, **info: Any) -> None:
        INTERRUPTED.clear()
        tune_handler = signal.getsignal(signal.SIGINT)
        if threading.current_thread() is not threading.main_thread() or not callable(tune_handler):
            return

        def note(sig: int, frame: Any) -> None:
            INTERRUPTED.set()
            tune_handler(sig, frame)

        signal.signal(signal.SIGINT, note)


class _NoTunerRestoreHint(logging.Filter):
    """Ray's own hint after an interrupt (``Tuner.restore(...)``) is not how this project resumes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tuner.restore(" not in record.getMessage()


logging.getLogger("ray.tune.tune").addFilter(_NoTunerRestoreHint())


def resume_hint(name: str, storage: str) -> str:
    """How to continue experiment ``name`` (its state under ``storage``) after an interrupt or a failure."""
    flag = "" if Path(storage) == Path("runs/ray").resolve() else f" --storage {storage}"
    make = f"make resume NAME={name}" + (f" STORAGE={storage}" if flag else "")
    return f"sfh resume {name}{flag}   (or: {make})"


class Drive:
    """One command's sweep on the driver, from joining Ray to the parent run's end.

    As a context manager around the launch: Ray is shut down however the block ends; an error of the driver
    itself (Tune, Ray, memory, disk) ends the parent run and every trial run still RUNNING as FAILED with its
    reason instead of leaving them RUNNING; a Ctrl-C that
    Tune did not catch (a second one, or one before Tune took over) ends the block quietly once the parent run
    exists, so that :meth:`conclude` marks what was left KILLED. ``parent`` and ``results`` are set as they
    become known.
    """

    def __init__(self, store: tracking.Tracking, name: str, parent: str | None = None) -> None:
        self.store, self.name, self.parent = store, name, parent
        self.results: tune.ResultGrid | None = None

    def __enter__(self) -> Drive:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: Any) -> bool:
        try:
            if isinstance(err, Exception) and self.parent is not None:
                reason = f"the driver failed: {type(err).__name__}: {first_line(err)}"
                details = "".join(traceback.format_exception(err))
                for run in self.store.trial_runs(self.name):  # none is left RUNNING (the lock: no other driver)
                    if run.info.status == "RUNNING":
                        self.store.record_failure(run.info.run_id, reason, details, kind="driver error")
                self.store.record_failure(self.parent, reason, details, kind="driver error")
        finally:
            cluster.shutdown()
        return isinstance(err, KeyboardInterrupt) and self.parent is not None

    def conclude(self, keys: Sequence[str] | None) -> int:
        """End the parent run as what happened and return the command's exit status.

        Interrupted (Ctrl-C, 130) or stopped (SIGTERM, 143): the parent and every trial run of the experiment left
        RUNNING become KILLED (the lock guarantees no other driver of it runs). Otherwise a trial run that Tune
        saw fail without its reason recorded gets one from Tune's error; 0 only when no trial failed and every run
        of ``keys`` (when None: the run of each trial of the results) is FINISHED.
        """
        store, results = self.store, self.results
        runs = {r.data.tags[tracking.RUN_KEY]: r for r in store.trial_runs(self.name)}
        stopped = preemption.STOPPED.is_set() and not INTERRUPTED.is_set()
        if INTERRUPTED.is_set() or stopped or results is None:
            why = "stopped by SIGTERM to the driver" if stopped else "interrupted (Ctrl-C)"
            for run in runs.values():
                if run.info.status == "RUNNING":
                    store.record_failure(run.info.run_id, f"{why} before it finished",
                                         f"The driver was {why}; the trial continues with `sfh resume`.",
                                         kind="interrupted", status="KILLED")
            store.end(self.parent, "KILLED")
            return preemption.EXIT_STOPPED if stopped else EXIT_INTERRUPTED
        grid_keys = []
        for result in results:
            spec = (result.config or {}).get("trial")
            key = tracking.run_key(spec["experiment"], spec["row"], spec["seed"]) if spec else None
            grid_keys.append(key)
            run = runs.get(key)
            if result.error is not None and run is not None and run.info.status == "RUNNING":
                store.record_failure(run.info.run_id, f"{type(result.error).__name__}: {result.error}",
                                     str(result.error), kind="trial error")
        runs = {r.data.tags[tracking.RUN_KEY]: r for r in store.trial_runs(self.name)}
        wanted = [runs.get(k) for k in (grid_keys if keys is None else keys)]
        ok = not results.errors and all(r is not None and r.info.status == "FINISHED" for r in wanted)
        store.end(self.parent, "FINISHED" if ok else "FAILED")
        return 0 if ok else 1


def storage_root(storage: str) -> str:
    """An absolute path for a local folder (Ray needs one), URIs (s3://, gs://, ...) unchanged."""
    return storage if "://" in storage else str(Path(storage).expanduser().resolve())


def join(storage: str, *parts: str) -> str:
    return "/".join([storage.rstrip("/"), *parts])


def trial_name(trial: Trial) -> str:
    spec = trial.config.get("trial", {})
    return f"{spec.get('row', 'trial')}-seed{spec.get('seed', 0)}"


def trial_dirname(trial: Trial) -> str:
    return f"{path_name(trial_name(trial))}-{trial.trial_id}"


def start(
    specs: list[TrialSpec], *, address: str | None, verbose: bool, store: tracking.Tracking, name: str,
    tags: Mapping[str, str],
) -> tuple[list[TrialSpec], str]:
    """Join Ray, settle the specs against it (GPUs; a trial larger than the cluster fails now, not PENDING
    forever) and open the invocation's MLflow parent run (provenance + ``tags``).

    Returns the specs, bound and tagged with the parent, and the parent's id; the caller shuts Ray down.
    """
    print(cluster.connect(address, log_to_driver=verbose), flush=True)
    specs = [bind(s, gpus_available=cluster.gpus_available()) for s in specs]
    for spec in specs:
        cluster.check_fits(trial_resources(spec), spec.run_key)
    parent = store.start_parent(name, {**tracking.provenance_tags(), **tags})
    return [replace(s, tags={**s.tags, tracking.PARENT_RUN_ID: parent}) for s in specs], parent


def run(
    *,
    name: str,
    storage: str,
    param_space: dict[str, Any],
    trainable: Any = None,
    searcher: Any = None,
    scheduler: Any = None,
    metric: str = "top1",
    mode: str = "max",
    num_samples: int = 1,
    max_concurrent: int | None = None,
    max_failures: int = 1,
    callbacks: Sequence[tune.Callback] = (),
) -> tune.ResultGrid:
    """Run every trial of ``param_space`` to the end (``trainable``: the training trial unless given).

    Tune starts a trial again (``max_failures`` times) only when its process was lost (its node died): failed
    training never reaches Tune as an error, since each trial decides its own retries
    (:func:`harness.run.trial.run_trial`) and Tune cannot tell a NaN loss from a lost node.
    """
    tuner = tune.Tuner(
        trainable or training_trial(),
        param_space={**param_space, METRIC: metric},  # a failed trial reports it (as NaN): Tune requires it
        tune_config=tune.TuneConfig(
            metric=metric,
            mode=mode,
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=num_samples,
            max_concurrent_trials=max_concurrent,
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            verbose=0,
            callbacks=[Interrupt(), *callbacks],
            failure_config=tune.FailureConfig(max_failures=max_failures),
        ),
    )
    return tuner.fit()


def can_restore(storage: str, name: str) -> bool:
    return tune.Tuner.can_restore(join(storage, name))


def restore(*, name: str, storage: str) -> tune.ResultGrid:
    """Continue a sweep whose driver died: finished trials stay, the others resume from their checkpoints."""
    path = join(storage, name)
    if not can_restore(storage, name):
        raise FileNotFoundError(f"no Tune experiment to resume at {path}")
    tuner = tune.Tuner.restore(path, trainable=training_trial(), resume_unfinished=True, resume_errored=True)
    return tuner.fit()


def _folder(storage: str, name: str) -> tuple[fs.FileSystem, str]:
    path = join(storage, name)
    return fs.FileSystem.from_uri(path) if "://" in storage else (fs.LocalFileSystem(), path)


def write_invocation(storage: str, name: str, record: dict[str, Any]) -> None:
    """Keep the command's context (experiment, options, tracking URI, parent run) beside Tune's state."""
    filesystem, path = _folder(storage, name)
    filesystem.create_dir(path, recursive=True)
    with filesystem.open_output_stream(f"{path}/{INVOCATION}") as out:
        out.write(json.dumps(record, indent=2).encode())


def read_invocation(storage: str, name: str) -> dict[str, Any]:
    filesystem, path = _folder(storage, name)
    try:
        with filesystem.open_input_stream(f"{path}/{INVOCATION}") as src:
            return json.loads(src.read().decode())
    except FileNotFoundError as err:
        raise FileNotFoundError(f"nothing to resume named {name!r} in {storage}{_resumable(storage, name)}") from err


def resumable(storage: str) -> list[str]:
    """The experiments under ``storage`` that ``sfh resume`` can continue (a reproduce or search started there)."""
    filesystem, path = _folder(storage, "")
    try:
        entries = filesystem.get_file_info(fs.FileSelector(path.rstrip("/"), allow_not_found=True))
    except OSError:
        return []
    return sorted(e.base_name for e in entries if e.type == fs.FileType.Directory
                  and filesystem.get_file_info(f"{e.path}/{INVOCATION}").type == fs.FileType.File)


def _resumable(storage: str, name: str) -> str:
    """The end of the refusal: the closest resumable experiment, or the list, or how to start one."""
    names = resumable(storage)
    if not names:
        return ": no experiment was started there yet; start one with `sfh reproduce EXPERIMENT.yaml`"
    near = did_you_mean(name, names)
    return f"; did you mean {near}?" if near else f"; resumable there: {', '.join(names)}"
