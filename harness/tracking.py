"""MLflow bookkeeping: one parent run per invocation, one child run per (row, seed), found again by its key.

A trial's run is looked up by the tag ``sfh.run_key`` ("<experiment>/<row>/seed<k>") before one is created,
so a retried, resumed or re-invoked trial continues its run instead of starting a duplicate. Epoch metrics
are logged with ``step=epoch`` and an epoch already in the run is never logged twice.

Writers: the driver (parent run, experiment), the trial process (run creation and status) and rank 0 of
the trial's workers (epochs, final figures, artifacts); with sqlite that is a handful of short writes.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import logging
import math
import os
import subprocess
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, Run, RunStatus, RunTag
from mlflow.utils.time import get_current_time_millis

from harness.failures import plain

KIND, EXPERIMENT, ROW, SEED, RUN_KEY, PAPER_TABLE, CONFIG_HASH = (
    "sfh.kind", "sfh.experiment", "sfh.row", "sfh.seed", "sfh.run_key", "sfh.paper_table", "sfh.config_hash",
)
#: What a trial run is tagged with beside its params: the per-rank evaluation batch its figures were measured at,
#: and what couples a sample to the rest of its batch in its model ("none" for most families).
EVAL_BATCH, BATCH_COUPLING = "sfh.eval_batch_per_rank", "sfh.batch_coupling"
PARENT_RUN_ID = "mlflow.parentRunId"
#: MLflow's own tags: the experiment's kind (the UI opens a model-training experiment on its runs table, not on
#: the GenAI overview), its description (shown on the experiment page), and who and what made a run.
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
DESCRIPTION = "mlflow.note.content"
USER, SOURCE_NAME, SOURCE_TYPE = "mlflow.user", "mlflow.source.name", "mlflow.source.type"
#: The dataset input's context tag, as ``mlflow.log_input`` sets it.
DATASET_CONTEXT = "mlflow.data.context"
#: A saved view of the runs table (MLflow's "share view"): the trial runs, best top-1 first, with the final figures
#: as columns. ``make mlflow-ui`` prints each experiment's link to it (``?viewStateShareKey=results``).
RESULTS_VIEW = "results"
RESULTS_COLUMNS = ("best_top1", "last_top1", "energy_mJ", "sops_G", "params")
#: Why a run ended FAILED (or KILLED): a one-line reason, its kind, and the full text as an artifact.
FAILURE, FAILURE_KIND, FAILURE_ARTIFACT = "sfh.failure", "sfh.failure.kind", "failure.txt"
FAILURE_TAG_CHARS = 1000
#: MLflow limits one log_batch call to 1000 metrics and 100 params.
_BATCH_METRICS, _BATCH_PARAMS = 1000, 100
_PACKAGES = ("torch", "spikingjelly", "timm", "ray", "mlflow")
#: The metric every epoch logs (its step is the epoch): what tells which epochs a run holds.
EPOCH_KEY = "train_loss"
REPO = Path(__file__).resolve().parents[1]


def default_tracking_uri(runs_dir: str | Path = "runs") -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the embedded store ``sqlite:///<abs runs dir>/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(runs_dir).resolve() / 'mlflow.db'}"


def run_key(experiment: str, row: str, seed: int) -> str:
    return f"{experiment}/{row}/seed{seed}"


def config_changes(params: Mapping[str, str], train: Mapping[str, Any]) -> list[str]:
    """``key: tracked -> now`` for each identity key where a run's params (flattened TrainConfig and
    ``resources.*``) differ from ``train``. An unset option is no param (older runs logged it as "None")."""
    # Imported here: the experiment side imports the library (torch, timm), which reading runs does not need.
    from harness.experiment.resolve import MACHINE_KEYS, config_identity

    now = {k: v for k, v in config_identity(train).items() if v != "None"}
    then = {k: v for k, v in params.items()
            if k not in MACHINE_KEYS and not k.startswith("resources.") and v != "None"}
    return [f"{k}: {then.get(k, '(absent)')} -> {now.get(k, '(absent)')}"
            for k in sorted(now.keys() | then.keys()) if then.get(k) != now.get(k)]


def provenance_tags() -> dict[str, str]:
    """What produced a run: code revision, package versions (the trial tags the LIF that ran, ``sfh.lif``)."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        sha = "unknown"
    tags = {"sfh.git_sha": sha, "mlflow.source.git.commit": sha, USER: _user()}
    tags.update({f"sfh.version.{pkg}": metadata.version(pkg) for pkg in _PACKAGES})
    return tags


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a uid without a name (some containers)
        return f"uid {os.getuid()}"


def source_tags(source: str) -> dict[str, str]:
    """The run's source as MLflow's UI shows it: the experiment (or search) file it was trained from."""
    return {SOURCE_NAME: source, SOURCE_TYPE: "LOCAL"}


#: Data sets made by code rather than read from a folder, and what makes them.
_CODE_DATASETS = {"digits": "scikit-learn load_digits", "synthetic": "spikingformer.data.synthetic"}


def dataset_inputs(data_info: Mapping[str, Mapping[str, Any]]) -> list[DatasetInput]:
    """MLflow dataset inputs of a run's splits (``FitResult.data_info``: split -> the loader's description).

    Name ``<dataset>-<split>``; source the data folder (scikit-learn's digits for ``digits``); digest a hash of
    the split's description (folder, size, subset, split fingerprint where the loader computes one): two runs on
    the same data show one dataset. The folder's files are not read again for this.
    """
    inputs = []
    for split, info in data_info.items():
        name = str(info.get("dataset", "data"))
        if name in _CODE_DATASETS:
            source, source_type = _CODE_DATASETS[name], "code"
        else:
            source, source_type = str(info.get("root")), "local"
        digest = hashlib.sha256(json.dumps(info, sort_keys=True, default=str).encode()).hexdigest()[:16]
        profile = json.dumps({"num_rows": info.get("size")})
        dataset = Dataset(name=f"{name}-{split}", digest=digest, source_type=source_type,
                          source=json.dumps({"uri": source}), profile=profile)
        context = InputTag(DATASET_CONTEXT, "training" if split == "train" else split)
        inputs.append(DatasetInput(dataset, tags=[context]))
    return inputs


#: What MLflow and alembic log at INFO while they create or migrate a sqlite store's tables.
SQLITE_SETUP_LOGGERS = ("mlflow.store.db.utils", "alembic.runtime.migration")


def _create_sqlite(uri: str) -> MlflowClient:
    """A client of a sqlite store, its tables created or migrated under an exclusive file lock beside it.

    MLflow creates a new store's tables when a client first opens it; two processes doing so at once (two
    commands started together on a fresh folder) break each other's migration with a raw traceback. Whoever
    comes second here waits, then finds the tables made.
    """
    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    for name in SQLITE_SETUP_LOGGERS:  # "Creating initial MLflow database tables...": noise among our lines
        logging.getLogger(name).setLevel(logging.WARNING)
    with open(db.with_name(f"{db.name}.init-lock"), "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        try:
            return MlflowClient(tracking_uri=uri)
        finally:
            fcntl.flock(guard, fcntl.LOCK_UN)


class Tracking:
    """An MLflow tracking store (sqlite file or server) seen through the harness's conventions."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        if uri.startswith("sqlite:///"):
            self.client = _create_sqlite(uri)
        else:
            self.client = MlflowClient(tracking_uri=uri)

    def experiment_id(self, name: str) -> str:
        """Get or create; a sqlite store keeps artifacts beside its database, never in a worker's cwd."""
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = None
        if self.uri.startswith("sqlite:///"):
            location = (Path(self.uri.removeprefix("sqlite:///")).parent / "mlartifacts" / name).as_uri()
        return self.client.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND: MODEL_TRAINING})

    def describe(self, name: str, description: str) -> str:
        """The experiment (created if new) marked as model training, with the experiment file's description."""
        experiment_id = self.experiment_id(name)
        self.client.set_experiment_tag(experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
        self.client.set_experiment_tag(experiment_id, f"mlflow.sharedViewState.{RESULTS_VIEW}", json.dumps({
            "searchFilter": f"tags.`{KIND}` = 'trial'", "orderByKey": "metrics.`best_top1`", "orderByAsc": False,
            "selectedColumns": [f"metrics.`{column}`" for column in RESULTS_COLUMNS],
        }))
        if description:
            self.client.set_experiment_tag(experiment_id, DESCRIPTION, description)
        return experiment_id

    def find_experiment(self, name: str) -> str | None:
        found = self.client.get_experiment_by_name(name)
        return found.experiment_id if found is not None else None

    def start_parent(self, experiment: str, tags: Mapping[str, str]) -> str:
        run = self.client.create_run(
            self.experiment_id(experiment), run_name=f"{experiment} ({tags.get('sfh.command', 'run')})",
            tags={KIND: "parent", EXPERIMENT: experiment, **tags},
        )
        return run.info.run_id

    def find_run(self, experiment_id: str, key: str) -> Run | None:
        """The run tagged ``sfh.run_key = key`` (the oldest, should a race ever have made two)."""
        runs = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`{RUN_KEY}` = '{key}'", order_by=["attributes.start_time ASC"]
        )
        return runs[0] if runs else None

    def trial_runs(self, experiment: str) -> list[Run]:
        """Every trial run of an experiment (none if it was never tracked)."""
        experiment_id = self.find_experiment(experiment)
        if experiment_id is None:
            return []
        runs: list[Run] = []
        token = None
        while True:
            page = self.client.search_runs(
                [experiment_id], filter_string=f"tags.`{KIND}` = 'trial'", page_token=token, max_results=1000
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def open_trial_run(
        self, experiment: str, key: str, *, run_name: str, tags: Mapping[str, str], params: Mapping[str, str]
    ) -> Run:
        """The trial's run, created with its tags and params if new, else found by key and marked RUNNING.

        A FINISHED run is returned unchanged: the caller decides not to train it again.
        """
        experiment_id = self.experiment_id(experiment)
        run = self.find_run(experiment_id, key)
        if run is None:
            run = self.client.create_run(experiment_id, run_name=run_name, tags={**tags, RUN_KEY: key, KIND: "trial"})
            items = [(k, v) for k, v in params.items() if v != "None"]  # an unset option is no parameter
            for i in range(0, len(items), _BATCH_PARAMS):
                self.client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in items[i : i + _BATCH_PARAMS]])
        elif run.info.status != RunStatus.to_string(RunStatus.FINISHED):
            self.client.update_run(run.info.run_id, status="RUNNING")
            for tag in (FAILURE, FAILURE_KIND):  # the reason an earlier attempt ended no longer holds
                if tag in run.data.tags:
                    self.client.delete_tag(run.info.run_id, tag)
        return self.client.get_run(run.info.run_id)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        """Log the finite values of ``metrics`` at ``step`` (NaN marks 'not evaluated this epoch')."""
        now = get_current_time_millis()
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if math.isfinite(float(v))]
        for i in range(0, len(items), _BATCH_METRICS):
            self.client.log_batch(run_id, metrics=items[i : i + _BATCH_METRICS])

    def logged_steps(self, run_id: str, key: str = EPOCH_KEY) -> set[int]:
        """Epochs already logged: those of ``key`` (runs of older versions also logged an ``epoch`` metric)."""
        keys = (key, "epoch") if key == EPOCH_KEY else (key,)
        return {m.step for k in keys for m in self.client.get_metric_history(run_id, k)}

    def log_datasets(self, run_id: str, data_info: Mapping[str, Mapping[str, Any]]) -> None:
        """The run's splits as MLflow dataset inputs (shown with the run; logging them again adds nothing)."""
        self.client.log_inputs(run_id, datasets=dataset_inputs(data_info))

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def end(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status=status)

    def record_failure(self, run_id: str, reason: str, details: str, *, kind: str, status: str = "FAILED") -> None:
        """End a run as ``status`` with why: the ``sfh.failure`` tag (one line, shown by the table and the
        report), ``sfh.failure.kind`` and the full text (worker tracebacks) as the ``failure.txt`` artifact."""
        self.set_tags(run_id, {FAILURE: plain(reason)[:FAILURE_TAG_CHARS], FAILURE_KIND: kind})
        self.log_text(run_id, plain(details), FAILURE_ARTIFACT)
        self.end(run_id, status)


class EpochLog:
    """Per-epoch metrics of one run, each epoch logged exactly once (``step = epoch``).

    A restarted worker may train again an epoch it had logged before the crash took its checkpoint; that
    epoch keeps its first entry. ``backfill`` adds epochs a crash left out (checkpointed, not yet logged).
    """

    def __init__(self, tracking: Tracking, run_id: str) -> None:
        self.tracking = tracking
        self.run_id = run_id
        self.logged = tracking.logged_steps(run_id)

    def log(self, metrics: Mapping[str, float]) -> None:
        step = int(metrics["epoch"])
        if step not in self.logged:  # the epoch is the step: not a metric of its own
            self.tracking.log_metrics(self.run_id, {k: v for k, v in metrics.items() if k != "epoch"}, step=step)
            self.logged.add(step)

    def backfill(self, history: Iterable[Mapping[str, float]]) -> None:
        for metrics in history:
            self.log(metrics)
