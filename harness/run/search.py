"""A search's run: the Optuna study the trials write to, TPE proposing and ASHA stopping through Ray Tune, each
trial's MLflow run closed as Tune saw it end, and the best row written as an experiment file (``sfh search``).
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from harness import tracking
from harness.experiment import tracked_name
from harness.experiment.search_space import Search, load_search
from harness.options import default_study_storage
from harness.run import claim, pareto, sweep
from harness.run.progress import Progress
from harness.run.specs import TrialSpec, check_data_folders, sampled_run_key, trial_specs
from harness.run.study import FAIL_REASON, StudySearcher, epochs_run, fail_running, open_study

OPTUNA_STUDY, OPTUNA_TRIAL, STOPPED_EARLY = "sfh.optuna.study", "sfh.optuna.trial", "sfh.search.stopped_early"


def scheduler(search: Search, epochs: int) -> ASHAScheduler | None:
    """ASHA with every rung before the last epoch, so a trial that reaches the end is never cut short
    (its energy pass and final figures come after the last report); none when no rung fits or the search
    has several objectives (Optuna cannot prune those)."""
    if search.asha is None or epochs - 1 < search.asha.grace_period:
        return None
    return ASHAScheduler(max_t=epochs - 1, grace_period=search.asha.grace_period,
                         reduction_factor=search.asha.reduction_factor, stop_last_trials=False)


class TrialRuns(tune.Callback):
    """Close each trial's MLflow run as Tune saw it end: ASHA stops a trial without its code noticing."""

    def __init__(self, tracking_uri: str, study: str) -> None:
        self.tracking_uri = tracking_uri
        self.study = study

    def _close(self, trial: Any, status: str) -> None:
        """Tag the run with its Optuna trial; a run not FINISHED by its trial was stopped (or lost) here."""
        spec = trial.config["trial"]  # the TrialSpec's mapping
        store = tracking.Tracking(self.tracking_uri)
        experiment_id = store.find_experiment(spec["experiment"])
        key = sampled_run_key(tracking.run_key(spec["experiment"], spec["row"], spec["seed"]), trial.trial_id)
        run = store.find_run(experiment_id, key) if experiment_id else None
        if run is None:  # the trial ended before opening its run
            return
        number = trial.config.get("optuna_trial")
        store.set_tags(run.info.run_id, {OPTUNA_STUDY: self.study, OPTUNA_TRIAL: str(number)})
        store.client.update_run(run.info.run_id, name=f"trial {number}")
        if run.info.status != "RUNNING":  # FINISHED, or FAILED with its reason by the trial itself
            return
        if status == "FINISHED":
            store.set_tags(run.info.run_id, {STOPPED_EARLY: "true"})
            store.end(run.info.run_id, status)
        else:
            store.record_failure(run.info.run_id, f"the trial's process failed (Tune's error.txt in {trial.path})",
                                 f"Tune reported an error for trial {trial.trial_id}; see {trial.path}/error.txt",
                                 kind="trial error")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._close(trial, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._close(trial, "FAILED")


class SearchProgress(Progress):
    """The live lines, one per Optuna trial."""

    @staticmethod
    def _label(trial: Any) -> str:
        return f"trial {trial.config.get('optuna_trial', trial.trial_id)}"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _values(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in params.items())


#: How an Optuna trial of this invocation ended, in the summary's words.
ENDED = {TrialState.COMPLETE: "done", TrialState.PRUNED: "pruned by ASHA", TrialState.FAIL: "failed",
         TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}


def summarize(results: tune.ResultGrid, study: optuna.Study, epochs: int) -> str:
    """This invocation's trials as the study holds them: objective values, epochs run, how each ended (a failed
    one with its reason), and the sampled values."""
    lines = []
    for result in sorted(results, key=lambda r: r.config["optuna_trial"]):
        trial = study.trials[result.config["optuna_trial"]]
        values = trial.values or [math.nan] * len(study.metric_names)
        figures = ", ".join(f"{n} {_fmt(v)}" for n, v in zip(study.metric_names, values, strict=True))
        ended = ENDED[trial.state] + (f": {trial.user_attrs[FAIL_REASON]}" if FAIL_REASON in trial.user_attrs else "")
        lines.append(f"  trial {trial.number:>3}: {figures} after {epochs_run(result.metrics)}/{epochs} epochs "
                     f"({ended}): {_values(trial.params)}")
    return "\n".join(lines)


def write_best(search: Search, study: optuna.Study, out: Path, storage_url: str) -> optuna.trial.FrozenTrial:
    """The study's best trial as an experiment file of one row, for ``sfh reproduce``."""
    best = study.best_trial
    note = (f"Best of search {search.name}: Optuna study {study.study_name} ({storage_url}) trial {best.number}, "
            f"{search.metric} {best.value:.4g} under the search budget")
    mapping = search.tuned_experiment({f"trial-{best.number}": best.params}, "best", note)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# {note}.\n# Train it with the base row's full recipe: sfh reproduce {out}\n"
                   + yaml.safe_dump(mapping, sort_keys=False))
    return best


def search(args: argparse.Namespace) -> int:
    """``sfh search``: validate the search file, claim the experiment, run the study's trials, write the best row."""
    search = load_search(args.search)  # the space is validated here, before Ray starts
    experiment = search.experiment()
    name = tracked_name(experiment, smoke=args.smoke)
    storage = sweep.storage_root(args.storage)
    invocation = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    uri = args.tracking_uri or tracking.default_tracking_uri()
    study_url = args.study_storage or default_study_storage()
    [spec] = trial_specs(
        experiment, name=name, rows=None, seeds=1, tracking_uri=uri,
        train_storage=sweep.join(storage, invocation, "train"), smoke=args.smoke, data_root=args.data_root,
        energy_batches=args.energy_batches, max_failures=args.max_failures,
    )
    if not (args.smoke or args.skip_data_check):
        check_data_folders([spec])
    with claim.held(storage, name, f"search {name}", uri) as store:
        return _search(args, search, spec, name, storage, invocation, store, study_url)


def _search(args: argparse.Namespace, search: Search, spec: TrialSpec, name: str, storage: str, invocation: str,
            store: tracking.Tracking, study_url: str) -> int:
    """One search invocation under the experiment's lock and claim: trials, the study's summary, the best row."""
    study = open_study(study_url, name, search)
    before = len(study.trials)
    epochs = spec.total_epochs
    uri = store.uri
    with sweep.Drive(store, name) as drive:
        tags = {"sfh.command": "search", "sfh.search_file": str(args.search), OPTUNA_STUDY: f"{name} in {study_url}",
                "sfh.storage": storage, **tracking.source_tags(str(args.search))}
        [spec], drive.parent = sweep.start([spec], address=args.address, verbose=args.verbose, store=store,
                                           name=name, tags=tags)
        trials = args.trials or search.num_samples
        print(f"{name}: {trials} trial(s) of up to {epochs} epochs, study {name} ({before} trials so far) in "
              f"{study_url}; Tune state in {sweep.join(storage, invocation)}; MLflow {uri}", flush=True)
        try:
            drive.results = sweep.run(
                name=invocation, storage=storage, param_space={"trial": spec.to_mapping()},
                searcher=StudySearcher(search, study_url, name, spec), scheduler=scheduler(search, epochs),
                metric=search.metric, mode=search.mode, num_samples=trials, max_concurrent=search.max_concurrent,
                callbacks=[SearchProgress(), TrialRuns(uri, name)],
            )
        except Exception as err:
            fail_running(study, before, f"the search's driver failed: {type(err).__name__}: {err}"[:500])
            raise
    code = drive.conclude([])
    results, parent = drive.results, drive.parent
    if code == sweep.EXIT_INTERRUPTED:
        print(f"{name}: interrupted; its unfinished trials are KILLED in MLflow. The study keeps every finished "
              f"trial: run `sfh search {args.search}` again to go on.", file=sys.stderr)
        return code
    print(f"\n{name}: this run's trials\n{summarize(results, study, epochs)}")
    print(f"study {name}: {len(study.trials)} trials ({before} before this run)")
    if not any(t.state == TrialState.COMPLETE for t in study.trials):
        print("no trial completed: no best row to write")
        return 1
    if search.objectives:
        return _conclude_front(args, search, study, study_url, store, parent) or code
    out = args.out or Path("runs/search") / f"{name}-best.yaml"
    best = write_best(search, study, out, study_url)
    store.set_tags(parent, {"sfh.search.best_trial": str(best.number), "sfh.search.best_row": str(out)})
    print(f"best: trial {best.number}, {search.metric} {best.value:.4g}: {_values(best.params)}")
    print(f"best row written to {out}; train it with: sfh reproduce {out}")
    return code


def _conclude_front(args: argparse.Namespace, search: Search, study: optuna.Study, study_url: str,
                    store: tracking.Tracking, parent: str) -> int:
    """A multi-objective search's end: the front printed, written as an experiment file, logged to MLflow."""
    out = args.out or Path("runs/search") / f"{study.study_name}-front.yaml"
    points = pareto.write_front(search, study, out, study_url)
    folder = Path(tempfile.mkdtemp(prefix="sfh-front-"))
    try:
        pareto.log_front(store, parent, search, study, out, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"Pareto front of study {study.study_name} ({', '.join(search.objective_names)}): {len(points)} point(s)")
    print(pareto.front_table(search, points))
    print(f"front written to {out}, one row per point; train one with: sfh reproduce {out} "
          f"--rows trial-{points[0].number} (all: sfh reproduce {out}). Table and figure: MLflow run {parent} "
          f"({pareto.FRONT_TABLE}, {pareto.FRONT_FIGURE}).")
    return 0
