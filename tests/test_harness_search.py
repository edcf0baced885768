"""``sfh search``: the search file is validated like an experiment file, the study grows across invocations,
every trial is one MLflow run, and the best trial comes out as an experiment file ``sfh reproduce`` accepts."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
import yaml
from ray.tune.schedulers import TrialScheduler

from harness import tracking
from harness.cli import main
from harness.experiment import Experiment, load_experiment
from harness.experiment.search_space import Sampler, Search, load_search
from harness.run.search import OPTUNA_TRIAL, scheduler
from spikingformer._validation import ConfigError

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
SEARCHES = sorted((EXPERIMENTS / "search").glob("*.yaml"))
DEMO = EXPERIMENTS / "search" / "demo.yaml"


def demo_mapping() -> dict[str, Any]:
    return yaml.safe_load(DEMO.read_text())


@pytest.mark.parametrize("path", SEARCHES, ids=[p.stem for p in SEARCHES])
def test_every_search_file_validates_and_yields_a_valid_best_row(path: Path) -> None:
    search = load_search(path)
    [row] = search.experiment().rows
    assert search.experiment().name == search.name
    values = {k: d.candidates()[-1] for k, d in search.space.items()}
    best = Experiment.from_dict(search.best_experiment(values, "trial-0", "note"), where="best")
    assert best.name == f"{search.name}-best" and best.rows[0].model.name == row.model.name


def test_shipped_searches_live_outside_the_experiment_discovery() -> None:
    assert SEARCHES == [EXPERIMENTS / "search" / "cifar10.yaml", DEMO]
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
    mapping = search.best_experiment({"optim.lr": 1e-3, "model.kwargs.depth": 2}, "trial-7", "note")
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


@pytest.mark.ray
def test_search_grows_one_study_and_tracks_every_trial(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = copy.deepcopy(demo_mapping())
    data.update(name="t-search", num_samples=2)
    data["base"]["experiment"] = str(EXPERIMENTS / "demo.yaml")
    data["budget"] = {"data": {"train_size": 128, "eval_size": 60}, "schedule": {"epochs": 2, "warmup_epochs": 1}}
    data["space"] = {"optim.lr": {"loguniform": [1.0e-3, 5.0e-3]}, "model.kwargs.T": {"choice": [1, 2]}}
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(data))
    uri, study_url = f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'optuna.db'}"
    out = tmp_path / "best.yaml"
    common = ["--storage", str(tmp_path / "ray"), "--tracking-uri", uri, "--study-storage", study_url,
              "--out", str(out)]

    assert main(["search", str(path), *common]) == 0
    study = optuna.load_study(study_name="t-search", storage=study_url)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert main(["search", str(path), "--trials", "1", *common]) == 0
    study = optuna.load_study(study_name="t-search", storage=study_url)
    assert [(t.number, t.state) for t in study.trials] == [(n, optuna.trial.TrialState.COMPLETE) for n in range(3)]
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
    assert config.optim.lr == study.best_trial.params["optim.lr"]
    assert config.model.kwargs["T"] == study.best_trial.params["model.kwargs.T"]
    assert (config.schedule.epochs, config.data.train_size) == (6, None)
