"""The search's Optuna study as Ray Tune's searcher: ask for a trial, report each epoch, tell how it ended.

Ray's ``OptunaSearch`` tells the study COMPLETE whenever a value is present, so a trial ASHA stopped read as a
finished one, and the epoch at which it was stopped (which Tune hands to the searcher only as the trial's end)
never reached the study. Here the study is what an Optuna user expects: a trial stopped before its last epoch
is PRUNED with one intermediate value per epoch it ran, a failed or interrupted one FAIL, a finished one
COMPLETE with the search's objective values (the last epoch's metric, or the final figures its MLflow run holds
for a multi-objective search); the objectives are the study's metric names, and each trial carries its MLflow
run id as the user attribute ``mlflow_run_id``.
"""

from __future__ import annotations

import math
import pickle
import warnings
from pathlib import Path
from typing import Any

import optuna
from mlflow.entities import Run
from ray.tune.search import Searcher

from harness import tracking
from harness.experiment.search_space import Sampler, Search
from harness.run import sweep
from harness.run.specs import TrialSpec, sampled_run_key
from harness.run.trial import FAILED

#: The Optuna user attribute of a trial holding its MLflow run id.
MLFLOW_RUN_ID = "mlflow_run_id"
#: The Optuna user attribute saying why a trial is FAIL.
FAIL_REASON = "fail_reason"


def open_study(url: str, name: str, search: Search) -> optuna.Study:
    """The study (created on first use, a sqlite file's folder too) with the search's directions and metric
    names; a study of that name with other directions is refused (its trials rank another question)."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=url, study_name=name, directions=search.directions, load_if_exists=True)
    wanted = [optuna.study.StudyDirection.MAXIMIZE if d == "maximize" else optuna.study.StudyDirection.MINIMIZE
              for d in search.directions]
    if study.directions != wanted:
        have = [d.name.lower() for d in study.directions]
        raise ValueError(f"{search.source}: study {name} in {url} optimises {have} ({study.metric_names}), the file "
                         f"asks {search.directions} ({search.objective_names}): rename the search or use another "
                         "--study-storage")
    if study.metric_names != search.objective_names:
        with warnings.catch_warnings():  # experimental since Optuna 3.2, and what optuna-dashboard shows
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(search.objective_names)
    return study


def sampler(search: Search, study: optuna.Study) -> optuna.samplers.BaseSampler:
    """The file's sampler; its seed moves on with the study's size, so a second invocation never replays the first."""
    seed = None if search.seed is None else search.seed + len(study.trials)
    if search.sampler == "nsgaii":
        return optuna.samplers.NSGAIISampler(population_size=search.population_size, seed=seed)
    return optuna.samplers.TPESampler(n_startup_trials=search.startup_trials, seed=seed)


def epochs_run(result: dict[str, Any] | None) -> int:
    """Epochs a trial's last result says it has run (its engine counts from 0)."""
    return int(result["epoch"]) + 1 if result and "epoch" in result else 0


class StudySearcher(Searcher):
    """Proposes each Tune trial from the study (``ask``), reports its epochs and ``tell``s its end.

    Pickled by Tune with its experiment state: the study and the open trials are dropped then (a search is
    never resumed through Tune; running the command again continues the study).
    """

    def __init__(self, search: Search, study_url: str, study_name: str, spec: TrialSpec) -> None:
        single = search.objectives is None
        super().__init__(metric=search.metric if single else None, mode=search.mode if single else None)
        self.search, self.study_url, self.study_name = search, study_url, study_name
        self.epochs = spec.total_epochs
        self.experiment, self.tracking_uri = spec.experiment, spec.tracking_uri
        self.run_key = tracking.run_key(spec.experiment, spec.row, spec.seed)
        self._study: optuna.Study | None = None
        self._trials: dict[str, optuna.Trial] = {}
        self._steps: dict[str, set[int]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_study": None, "_trials": {}, "_steps": {}}

    def save(self, checkpoint_path: str) -> None:
        """Tune's periodic experiment checkpoint: the search's settings (the study itself is in its storage)."""
        Path(checkpoint_path).write_bytes(pickle.dumps(self.__getstate__()))

    def restore(self, checkpoint_path: str) -> None:
        self.__dict__.update(pickle.loads(Path(checkpoint_path).read_bytes()))

    @property
    def study(self) -> optuna.Study:
        if self._study is None:
            study = open_study(self.study_url, self.study_name, self.search)
            self._study = optuna.load_study(study_name=self.study_name, storage=self.study_url,
                                            sampler=sampler(self.search, study))
        return self._study

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return False  # the space is the search file's, the objectives too

    def suggest(self, trial_id: str) -> dict[str, Any]:
        trial = self.study.ask()
        self._trials[trial_id], self._steps[trial_id] = trial, set()
        return Sampler(self.search.space)(trial)

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        trial = self._trials.get(trial_id)
        if trial is None:
            return
        if MLFLOW_RUN_ID not in trial.user_attrs:
            self._note_run(trial_id, trial)
        self._report(trial_id, trial, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        trial = self._trials.pop(trial_id, None)
        if trial is None:
            return
        run = self._note_run(trial_id, trial)
        if sweep.INTERRUPTED.is_set():
            self._fail(trial, "interrupted (Ctrl-C) before it finished")
        elif error or not result:
            self._fail(trial, "the trial's process failed (see Tune's error.txt)")
        elif FAILED in result:
            self._fail(trial, str(result[FAILED]))
        elif epochs_run(result) < self.epochs:
            self._stopped(trial_id, trial, result)
        else:
            self._finished(trial_id, trial, result, run)
        self._steps.pop(trial_id, None)

    def _report(self, trial_id: str, trial: optuna.Trial, result: dict[str, Any]) -> None:
        """One intermediate value per epoch (single-objective only: Optuna keeps none for several)."""
        value = result.get(self.search.metric)
        if self.search.objectives or "epoch" not in result or not _finite(value):
            return
        step = int(result["epoch"])
        if step not in self._steps[trial_id]:
            trial.report(float(value), step)
            self._steps[trial_id].add(step)

    def _stopped(self, trial_id: str, trial: optuna.Trial, result: dict[str, Any]) -> None:
        """Stopped before its last epoch: by ASHA, the only one that stops a trial short of a single-objective
        search (a multi-objective search has no scheduler)."""
        if self.search.objectives:
            self._fail(trial, f"stopped after {epochs_run(result)} of {self.epochs} epochs")
            return
        self._report(trial_id, trial, result)
        self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)

    def _finished(self, trial_id: str, trial: optuna.Trial, result: dict[str, Any], run: Run | None) -> None:
        if self.search.objectives is None:
            self._report(trial_id, trial, result)
            values = [result.get(self.search.metric)]
        else:
            metrics = run.data.metrics if run is not None else {}
            values = [metrics.get(o.figure) for o in self.search.objectives]
        if not all(_finite(v) for v in values):
            names = self.search.objective_names
            self._fail(trial, "no finite value of " + ", ".join(f"{n}={v}" for n, v in zip(names, values, strict=True)))
            return
        self.study.tell(trial, [float(v) for v in values])

    def _fail(self, trial: optuna.Trial, reason: str) -> None:
        trial.set_user_attr(FAIL_REASON, reason)
        self.study.tell(trial, state=optuna.trial.TrialState.FAIL)

    def _note_run(self, trial_id: str, trial: optuna.Trial) -> Run | None:
        """The trial's MLflow run (None before it opened one), its id kept as the trial's user attribute."""
        store = tracking.Tracking(self.tracking_uri)
        experiment_id = store.find_experiment(self.experiment)
        run = store.find_run(experiment_id, sampled_run_key(self.run_key, trial_id)) if experiment_id else None
        if run is not None and MLFLOW_RUN_ID not in trial.user_attrs:
            trial.set_user_attr(MLFLOW_RUN_ID, run.info.run_id)
        return run


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
