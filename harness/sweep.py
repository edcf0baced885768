"""The Ray Tune driver: a grid of trials (rows x seeds), or any searcher/scheduler, and its restore.

A reproduction passes ``{"trial": tune.grid_search(specs)}``; a search passes a searcher, a scheduler and
``{"trial": spec, "overrides": {...sampled TrainConfig values...}}``. Both write their Tune state to
``<storage>/<name>`` so ``restore`` can pick an interrupted run up where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pyarrow import fs
from ray import tune
from ray.tune.experiment import Trial

from harness import cluster, tracking
from harness.specs import TrialSpec, bind, path_name, trial_resources
from harness.trial import trainable

#: What the sweep was started with, beside Tune's own state: the resume command reads it back.
INVOCATION = "sfh_invocation.json"


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
    searcher: Any = None,
    scheduler: Any = None,
    metric: str = "top1",
    mode: str = "max",
    num_samples: int = 1,
    max_concurrent: int | None = None,
    max_failures: int = 1,
    callbacks: Sequence[tune.Callback] = (),
) -> tune.ResultGrid:
    """Run every trial of ``param_space`` to the end; Tune retries a lost trial ``max_failures`` times."""
    tuner = tune.Tuner(
        trainable(),
        param_space=param_space,
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
            callbacks=list(callbacks),
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
    tuner = tune.Tuner.restore(path, trainable=trainable(), resume_unfinished=True, resume_errored=True)
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
        raise FileNotFoundError(f"{path} holds no {INVOCATION}: it was not started by `sfh reproduce`") from err
