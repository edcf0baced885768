"""``sfh search``: the search file is validated like an experiment file, the study grows across invocations,
every trial is one MLflow run, and the best trial comes out as an experiment file ``sfh reproduce`` accepts."""

from __future__ import annotations

import copy
import math
import pickle
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
import yaml
from helpers.ray_nodes import RayNode
from optuna.study import StudyDirection
from optuna.trial import TrialState
from ray.tune.schedulers import TrialScheduler

from dashboards.search_report import published_points
from harness import tracking
from harness.cli import main
from harness.experiment import Experiment, load_experiment
from harness.experiment.search_space import Sampler, Search, load_search
from harness.run import pareto
from harness.run.search import OPTUNA_TRIAL, STOPPED_EARLY, scheduler
from harness.run.specs import trial_specs
from harness.run.study import FAIL_REASON, MLFLOW_RUN_ID, StudySearcher
from harness.run.trial import FAILED
from spikingformer import evaluate
from spikingformer._validation import ConfigError

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
SEARCHES = sorted((EXPERIMENTS / "search").glob("*.yaml"))
DEMO = EXPERIMENTS / "search" / "demo.yaml"
PARETO = EXPERIMENTS / "search" / "pareto.yaml"


def demo_mapping() -> dict[str, Any]:
    return yaml.safe_load(DEMO.read_text())


@pytest.mark.parametrize("path", SEARCHES, ids=[p.stem for p in SEARCHES])
def test_every_search_file_validates_and_yields_a_valid_best_row(path: Path) -> None:
    search = load_search(path)
    [row] = search.experiment().rows
    assert search.experiment().name == search.name
    values = {k: d.candidates()[-1] for k, d in search.space.items()}
    best = Experiment.from_dict(search.tuned_experiment({"trial-0": values}, "best", "note"), where="best")
    assert best.name == f"{search.name}-best" and best.rows[0].model.name == row.model.name


def test_shipped_searches_live_outside_the_experiment_discovery() -> None:
    assert SEARCHES == [EXPERIMENTS / "search" / "cifar10.yaml", DEMO, PARETO]
    assert not list(EXPERIMENTS.glob("search*.yaml"))


BAD_SEARCHES = [
    (lambda d: d["space"].update({"optim.lrr": {"uniform": [0.1, 0.2]}}),
     r"x\.yaml: space\.optim\.lrr: 0\.1 is refused: .*unknown key\(s\) \['lrr'\]"),
    (lambda d: d["space"].update({"optimizer.lr": {"uniform": [0.1, 0.2]}}),
     r"x\.yaml: space\.optimizer\.lr: .*unknown key\(s\) \['optimizer'\]"),
    (lambda d: d["space"].update({"optim.lr": {"lognormal": [0.1, 0.2]}}),
     r"x\.yaml: space\.optim\.lr: unknown key\(s\) \['lognormal'\]"),
    (lambda d: d["space"].update({"optim.lr": {"uniform": [0.1, 0.2], "choice": [0.1]}}),
     r"x\.yaml: space\.optim\.lr\.distribution: \['uniform', 'choice'\] is not allowed"),
    (lambda d: d["space"].update({"optim.lr": {"loguniform": [0.0, 0.2]}}),
     r"x\.yaml: space\.optim\.lr\.loguniform: \[0\.0, 0\.2\] is not allowed \(low > 0\)"),
    (lambda d: d["space"].update({"optim.lr": {"uniform": [0.3, 0.2]}}),
     r"x\.yaml: space\.optim\.lr\.uniform: \[0\.3, 0\.2\] is not allowed"),
    (lambda d: d["space"].update({"optim.lr": {"uniform": [-0.1, 0.2]}}),
     r"x\.yaml: space\.optim\.lr: -0\.1 is refused: .*optim\.lr: -0\.1 is not allowed"),
    (lambda d: d["space"].update({"model.kwargs.dpeth": {"choice": [1, 2]}}),
     r"x\.yaml: space\.model\.kwargs\.dpeth: 1 is refused: .*unexpected keyword argument 'dpeth'"),
    (lambda d: d["space"].update({"model.kwargs.embed_dim": {"choice": [30, 64]}}),
     r"x\.yaml: space\.model\.kwargs\.embed_dim: 30 is refused: .*must be a positive multiple of 8"),
    (lambda d: d["space"].update({"model.kwargs.T": {"integer": [1.5, 3]}}),
     r"x\.yaml: space\.model\.kwargs\.T\.integer: \[1\.5, 3\] matches none"),
    (lambda d: d["space"].update({"model.kwargs.T": {"choice": []}}),
     r"x\.yaml: space\.model\.kwargs\.T\.choice: \[\] is not allowed"),
    (lambda d: d.update(trials=3), r"x\.yaml: unknown key\(s\) \['trials'\]"),
    (lambda d: d.update(metric="accuracy"), r"x\.yaml\.metric: 'accuracy' is not one of"),
    (lambda d: d["base"].update(recipe="digits"), r"x\.yaml\.base: gives \['experiment', 'recipe', 'row'\]"),
    (lambda d: d["base"].update(row="nope"), r"x\.yaml: base: .*demo\.yaml: no row 'nope'"),
    (lambda d: d.update(base={"recipe": "nope", "model": {"name": "spikformer_cifar_2_384"}}),
     r"x\.yaml\.base: recipe: unknown recipe 'nope'; known: .*digits"),
    (lambda d: d["base"].update(experiment="missing.yaml"), r"x\.yaml: base: experiment file .*missing\.yaml does not"),
    (lambda d: d["budget"].update(optim={"lr": 0}),
     r"x\.yaml: base \+ budget: row spikingformer\.optim\.lr: 0\.0 is not allowed"),
]


@pytest.mark.parametrize(("mutate", "message"), BAD_SEARCHES)
def test_bad_search_names_the_file_and_the_key(mutate: Any, message: str) -> None:
    data = demo_mapping()
    mutate(data)
    with pytest.raises(ConfigError, match=message):
        Search.from_dict(data, where=str(DEMO.parent / "x.yaml"))


BAD_OBJECTIVES = [
    (lambda d: d["objectives"][1].update(name="energy"),
     r"x\.yaml\.objectives\[1\]\.name: 'energy' is not one of \['top1', 'energy_mJ', 'sops_G', 'macs_G', 'params', "),
    (lambda d: d["objectives"][0].update(mode="maximize"),
     r"x\.yaml\.objectives\[0\]\.mode: 'maximize' is not one of \['max', 'min'\]"),
    (lambda d: d["objectives"][1].update(convention="hardware"),
     r"x\.yaml\.objectives\[1\]\.convention: 'hardware' is not reported by spikingformer_cifar_2_384 for "
     r"energy_mJ \(allowed: \['paper', 'common', 'memory'\]\)"),
    (lambda d: d["objectives"][1].update(name="sops_G", convention="memory"),
     r"x\.yaml\.objectives\[1\]\.convention: 'memory' is not reported by spikingformer_cifar_2_384 for "
     r"sops_G \(allowed: \['paper', 'common'\]\)"),
    (lambda d: d["objectives"][1].pop("convention"),
     r"x\.yaml\.objectives\[1\]\.convention: None is not allowed \(energy_mJ is counted under a convention"),
    (lambda d: d["objectives"][0].update(convention="common"),
     r"x\.yaml\.objectives\[0\]\.convention: 'common' is not allowed \(only \['energy_mJ', 'sops_G', 'macs_G'\]"),
    (lambda d: d.update(asha={"grace_period": 1}), r"x\.yaml\.asha: not allowed with objectives \(Optuna cannot prune"),
    (lambda d: d.update(metric="top1"), r"x\.yaml\.metric: not allowed with objectives"),
    (lambda d: d.update(mode="max"), r"x\.yaml\.mode: not allowed with objectives"),
    (lambda d: d["objectives"].pop(), r"x\.yaml\.objectives: 1 is not allowed \(two or more objectives"),
    (lambda d: d["objectives"].append({"name": "top1", "mode": "min"}),
     r"x\.yaml\.objectives: \['top1', 'energy_mJ \[common\]', 'top1'\] is not allowed \(each objective once\)"),
    (lambda d: d.update(sampler="random"), r"x\.yaml\.sampler: 'random' is not one of \['tpe', 'nsgaii'\]"),
]


@pytest.mark.parametrize(("mutate", "message"), BAD_OBJECTIVES)
def test_bad_objectives_are_refused_naming_the_file_key_and_allowed_values(mutate: Any, message: str) -> None:
    data = yaml.safe_load(PARETO.read_text())
    mutate(data)
    with pytest.raises(ConfigError, match=message):
        Search.from_dict(data, where=str(PARETO.parent / "x.yaml"))


def test_objectives_read_final_figures_under_their_convention() -> None:
    search = load_search(PARETO)
    assert search.asha is None and search.directions == ["maximize", "minimize"]
    assert [o.figure for o in search.objectives] == ["best_top1", "energy_mJ_common"]
    memory = yaml.safe_load(PARETO.read_text())
    memory["objectives"][1]["convention"] = "memory"  # the memory-inclusive estimate every trial logs
    assert Search.from_dict(memory, where=str(PARETO)).objectives[1].figure == evaluate.ENERGY_MJ_MEMORY
    assert search.objective_names == ["top1", "energy_mJ [common]"]
    assert load_search(DEMO).objective_names == ["top1"] and load_search(DEMO).directions == ["maximize"]


def test_a_yaml_syntax_error_names_the_search_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: s\nspace:\n  optim.lr: {uniform: [0.1, 0.2}\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml, line 3, column 32: not valid YAML: expected ',' or ']'"):
        load_search(path)


def test_a_recipe_base_needs_no_experiment_file() -> None:
    data = demo_mapping()
    data["base"] = {"recipe": "digits", "model": {"name": "spikformer_cifar_2_384"}}
    search = Search.from_dict(data, where=str(DEMO))
    assert search.experiment().train_config(search.experiment().rows[0]).data.eval_size == 240


def test_best_row_is_the_base_row_plus_the_values_without_the_budget() -> None:
    search = load_search(DEMO)
    mapping = search.tuned_experiment({"trial-7": {"optim.lr": 1e-3, "model.kwargs.depth": 2}}, "best", "note")
    experiment = Experiment.from_dict(mapping, where="best")
    config = experiment.train_config(experiment.row("trial-7"))
    assert (config.optim.lr, config.model.kwargs["depth"], config.model.kwargs["embed_dim"]) == (1e-3, 2, 64)
    assert (config.schedule.epochs, config.data.train_size) == (6, None)  # the demo recipe, not the budget
    assert experiment.resources_for(experiment.rows[0]).num_workers == 1


def test_sampler_draws_every_key_inside_its_distribution() -> None:
    search = load_search(DEMO)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for number in range(20):
        config = Sampler(search.space)(study.ask())
        assert config["optuna_trial"] == number
        kwargs, optim = config["overrides"]["model"]["kwargs"], config["overrides"]["optim"]
        assert 5e-4 <= optim["lr"] <= 5e-3 and 0 <= optim["weight_decay"] <= 0.1
        assert kwargs["T"] in (1, 2) and kwargs["depth"] in (1, 2) and kwargs["embed_dim"] in (32, 64)
        assert config["overrides"]["augment"]["mixup_alpha"] in (0.0, 0.2)


def test_asha_stops_laggards_but_never_a_trial_at_its_last_epoch() -> None:
    asha = scheduler(load_search(DEMO), epochs=4)
    asha.set_search_properties("top1", "max")
    good, bad, late = (SimpleNamespace(trial_id=i) for i in ("good", "bad", "late"))
    for trial in (good, bad, late):
        asha.on_trial_add(None, trial)

    def report(trial: SimpleNamespace, epoch: int, top1: float) -> str:
        return asha.on_trial_result(None, trial, {"training_iteration": epoch, "top1": top1})

    assert [report(good, e, 50.0) for e in (1, 2, 3, 4)] == [TrialScheduler.CONTINUE] * 4
    assert report(bad, 1, 10.0) == TrialScheduler.STOP
    assert [report(late, e, 60.0) for e in (1, 2, 3)] == [TrialScheduler.CONTINUE] * 3
    assert report(late, 4, 1.0) == TrialScheduler.CONTINUE  # its energy pass and final figures still run
    assert scheduler(load_search(DEMO), epochs=1) is None


def test_searcher_tells_the_study_how_each_trial_ended(tmp_path: Path) -> None:
    """Results fed as Tune hands them over (an epoch's result, then the trial's end): finished, stopped by ASHA
    (whose stopping epoch arrives only with the end), failed in training, lost; a pickled copy goes on."""
    search = load_search(DEMO)  # 4 epochs under the budget
    uri, study_url = f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'optuna.db'}"
    [spec] = trial_specs(search.experiment(), name="demo-search", rows=None, seeds=1, tracking_uri=uri,
                         train_storage=str(tmp_path / "train"), smoke=False, data_root=None, energy_batches=1,
                         max_failures=0)
    searcher = StudySearcher(search, study_url, "demo-search", spec)
    assert [searcher.suggest(t)["optuna_trial"] for t in ("done", "stopped", "failed", "lost")] == [0, 1, 2, 3]
    for epoch in range(4):
        searcher.on_trial_result("done", {"epoch": epoch, "top1": 20.0 + epoch})
    searcher.on_trial_complete("done", {"epoch": 3, "top1": 23.0})
    searcher.on_trial_result("stopped", {"epoch": 0, "top1": 5.0})
    searcher.on_trial_complete("stopped", {"epoch": 1, "top1": 6.0})
    searcher.on_trial_complete("failed", {"epoch": 0, "top1": math.nan, FAILED: "rank 0: FloatingPointError: nan"})
    searcher.on_trial_complete("lost", None, error=True)

    study = optuna.load_study(study_name="demo-search", storage=study_url)
    done, stopped, failed, lost = study.trials
    assert (done.state, done.value, done.intermediate_values) == (TrialState.COMPLETE, 23.0,
                                                                  {0: 20.0, 1: 21.0, 2: 22.0, 3: 23.0})
    assert (stopped.state, stopped.value, stopped.intermediate_values) == (TrialState.PRUNED, 6.0, {0: 5.0, 1: 6.0})
    assert (failed.state, failed.user_attrs[FAIL_REASON]) == (TrialState.FAIL, "rank 0: FloatingPointError: nan")
    assert lost.state == TrialState.FAIL and "process failed" in lost.user_attrs[FAIL_REASON]
    assert study.metric_names == ["top1"]

    clone = pickle.loads(pickle.dumps(searcher))  # what Tune keeps of it: no study, no open trial
    assert clone.suggest("next")["optuna_trial"] == 4


@pytest.mark.ray
@pytest.mark.train
def test_search_prunes_what_asha_stops_grows_one_study_and_tracks_every_trial(
        ray_head: RayNode, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Seed 10 draws a learning rate that learns, then one that cannot (1e-9): ASHA stops the second after its
    first epoch (rung 1 of 3 epochs), and the study records it PRUNED with that epoch's value."""
    data = copy.deepcopy(demo_mapping())
    data.update(name="t-search", num_samples=2, seed=10, startup_trials=5)
    data["base"]["experiment"] = str(EXPERIMENTS / "demo.yaml")
    data["base"]["train"] = {"model": {"kwargs": {"T": 1}}}
    data["budget"] = {"data": {"eval_size": 120}, "schedule": {"epochs": 3}}
    data["space"] = {"optim.lr": {"choice": [5.0e-3, 1.0e-9]}}
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(data))
    uri, study_url = f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'optuna.db'}"
    out = tmp_path / "best.yaml"
    common = ["--address", ray_head.address, "--storage", str(tmp_path / "ray"), "--tracking-uri", uri,
              "--study-storage", study_url, "--out", str(out)]

    assert main(["search", str(path), *common]) == 0
    study = optuna.load_study(study_name="t-search", storage=study_url)
    assert study.metric_names == ["top1"]
    good, stopped = study.trials
    assert (good.params["optim.lr"], stopped.params["optim.lr"]) == (5.0e-3, 1.0e-9)  # what seed 10 draws
    assert (good.state, stopped.state) == (TrialState.COMPLETE, TrialState.PRUNED)
    assert sorted(good.intermediate_values) == [0, 1, 2]  # one value per epoch, keyed by the engine's epoch
    assert good.value == good.intermediate_values[2]
    assert list(stopped.intermediate_values) == [0] and stopped.value == stopped.intermediate_values[0]
    assert "pruned by ASHA" in capsys.readouterr().out

    runs = {r.data.tags[OPTUNA_TRIAL]: r for r in tracking.Tracking(uri).trial_runs("t-search")}
    assert {t.user_attrs[MLFLOW_RUN_ID] for t in study.trials} == {r.info.run_id for r in runs.values()}
    assert runs[str(stopped.number)].data.tags[STOPPED_EARLY] == "true"
    assert STOPPED_EARLY not in runs[str(good.number)].data.tags
    history = tracking.Tracking(uri).client.get_metric_history(runs[str(good.number)].info.run_id, "top1")
    assert {m.step: m.value for m in history} == good.intermediate_values  # the study holds what MLflow shows

    assert main(["search", str(path), "--trials", "1", *common]) == 0
    study = optuna.load_study(study_name="t-search", storage=study_url)
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert "study t-search: 3 trials (2 before this run)" in capsys.readouterr().out
    runs = tracking.Tracking(uri).trial_runs("t-search")
    assert sorted(r.data.tags[OPTUNA_TRIAL] for r in runs) == ["0", "1", "2"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert len({r.data.tags[tracking.RUN_KEY] for r in runs}) == 3
    assert len({r.data.tags[tracking.PARENT_RUN_ID] for r in runs}) == 2  # one parent per invocation

    best = load_experiment(out)
    [row] = best.rows
    assert row.id == f"trial-{study.best_trial.number}"
    config = best.train_config(row)
    assert config.optim.lr == study.best_trial.params["optim.lr"] == 5.0e-3
    assert (config.schedule.epochs, config.data.train_size) == (6, None)


@pytest.mark.ray
@pytest.mark.train
def test_pareto_search_keeps_two_objectives_and_writes_a_front_that_trains_and_draws(
        ray_head: RayNode, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = yaml.safe_load(PARETO.read_text())
    data.update(name="t-pareto", num_samples=2)
    data["base"]["experiment"] = str(EXPERIMENTS / "demo.yaml")
    data["budget"] = {"data": {"train_size": 256, "eval_size": 60}, "schedule": {"epochs": 1}}
    data["space"] = {"model.kwargs.T": {"choice": [1, 2]}}
    path = tmp_path / "pareto.yaml"
    path.write_text(yaml.safe_dump(data))
    uri, study_url = f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'optuna.db'}"
    out = tmp_path / "front.yaml"
    cluster = ["--address", ray_head.address, "--storage", str(tmp_path / "ray"), "--tracking-uri", uri]

    assert main(["search", str(path), *cluster, "--study-storage", study_url, "--out", str(out)]) == 0
    study = optuna.load_study(study_name="t-pareto", storage=study_url)
    assert study.directions == [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]
    assert study.metric_names == ["top1", "energy_mJ [common]"]
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    store = tracking.Tracking(uri)
    runs = {r.info.run_id: r for r in store.trial_runs("t-pareto")}
    for trial in study.trials:  # the study's values are the runs' final figures
        metrics = runs[trial.user_attrs[MLFLOW_RUN_ID]].data.metrics
        assert trial.values == [metrics["best_top1"], metrics["energy_mJ_common"]] and metrics["energy_mJ_common"] > 0
    front = pareto.front(study)
    printed = capsys.readouterr().out
    assert f"Pareto front of study t-pareto (top1, energy_mJ [common]): {len(front)} point(s)" in printed
    assert front
    assert {rid for rid, r in runs.items() if r.data.tags[pareto.FRONT_TAG] == "true"} == {
        t.user_attrs[MLFLOW_RUN_ID] for t in front}
    [parent] = {r.data.tags[tracking.PARENT_RUN_ID] for r in runs.values()}
    assert {a.path for a in store.client.list_artifacts(parent)} >= {pareto.FRONT_TABLE, pareto.FRONT_FIGURE}

    written = load_experiment(out)  # one row per front point, the full recipe
    assert [r.id for r in written.rows] == [f"trial-{t.number}" for t in front]
    for row, trial in zip(written.rows, front, strict=True):
        config = written.train_config(row)
        assert config.model.kwargs["T"] == trial.params["model.kwargs.T"] and config.schedule.epochs == 6
    first = written.rows[0].id
    assert main(["reproduce", str(out), "--rows", first, "--epochs", "1", *cluster]) == 0
    [trained] = store.trial_runs("t-pareto-front-e1")
    assert trained.info.status == "FINISHED" and trained.data.metrics["energy_mJ"] > 0

    assert main(["report", "--search", str(path), "--tracking-uri", uri, "--out", str(tmp_path / "reports")]) == 0
    page = (tmp_path / "reports" / "t-pareto" / "index.html").read_text()
    assert "figures/pareto.png" in page and page.count("trial ") >= 2
    assert (tmp_path / "reports" / "t-pareto" / "figures" / "pareto.png").stat().st_size > 10_000


def _pareto_search(experiment: str, row: str, energy_convention: str) -> Search:
    data = yaml.safe_load(PARETO.read_text())
    data["base"] = {"experiment": str(EXPERIMENTS / experiment), "row": row}
    data["budget"] = {}
    data["space"] = {"optim.lr": {"loguniform": [1.0e-4, 1.0e-3]}}
    data["objectives"][1]["convention"] = energy_convention
    return Search.from_dict(data, where=str(PARETO))


def test_published_rows_join_the_front_only_where_counted_the_same_way() -> None:
    paper = _pareto_search("imagenet.yaml", "8-384", "paper")
    x, y = paper.objectives[1], paper.objectives[0]
    points, why = published_points(paper, x, y)
    assert why == "" and ("8-384 (paper)", 4.69, 72.45) in [(p.label, p.x, p.y) for p in points]
    assert len(points) == len([r for r in load_experiment(EXPERIMENTS / "imagenet.yaml").rows
                               if r.paper.energy_mJ is not None and r.paper.top1 is not None])
    common = _pareto_search("imagenet.yaml", "8-384", "common")
    points, why = published_points(common, common.objectives[1], common.objectives[0])
    assert points == [] and "needs its trained weights" in why
