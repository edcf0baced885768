"""The experiment schema: every shipped file validates, and bad input names the file, the row and the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from harness.experiment import Experiment, Tolerance, load_experiment, run_overrides, tracked_name
from harness.experiment.overrides import SMOKE_OVERRIDES
from harness.run.specs import trial_specs
from spikingformer._validation import ConfigError

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
#: The experiment files (experiments/ may hold other YAML, e.g. a standalone TrainConfig).
FILES = ("imagenet", "cifar10", "cifar100", "cifar10-dvs", "dvs128-gesture", "demo")
DEMO = EXPERIMENTS / "demo.yaml"


def demo_mapping() -> dict:
    return yaml.safe_load(DEMO.read_text())


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("name", FILES)
def test_every_experiment_file_validates(name: str) -> None:
    experiment = load_experiment(EXPERIMENTS / f"{name}.yaml")
    assert experiment.name == name
    for row in experiment.rows:
        config = experiment.train_config(row)
        assert config.model.name == row.model.name
        assert experiment.resources_for(row).num_workers >= 1


def test_paper_rows_carry_the_readme_numbers() -> None:
    imagenet = load_experiment(EXPERIMENTS / "imagenet.yaml")
    assert [(r.id, r.paper.top1, r.paper.sops_G, r.paper.energy_mJ) for r in imagenet.rows] == [
        ("8-384", 72.45, 3.88, 4.69), ("8-512", 74.79, 6.52, 7.46), ("8-768", 75.85, 12.54, 13.68),
    ]
    cifar10 = load_experiment(EXPERIMENTS / "cifar10.yaml")
    epochs = {r.id: cifar10.train_config(r).schedule.epochs for r in cifar10.rows}
    assert epochs == {"4-256": 300, "2-384": 300, "4-384": 300, "4-384-400E": 400}
    dvs = load_experiment(EXPERIMENTS / "cifar10-dvs.yaml")
    assert {r.id: (dvs.train_config(r).data.frames, r.paper.top1) for r in dvs.rows} == {
        "2-256-T10": (10, 79.9), "2-256-T16": (16, 81.3),
    }
    demo = load_experiment(DEMO)  # no published figures: each row's top-1 is a labelled reference of our own
    assert all(r.paper.top1 is not None and r.paper.source.startswith("reference: ") for r in demo.rows)


BAD_INPUTS = [
    (lambda d: d.update(colour="red"), r"exp\.yaml: unknown key\(s\) \['colour'\]"),
    (lambda d: d["rows"][1].update(epochs=3), r"exp\.yaml: row spikformer: unknown key\(s\) \['epochs'\]"),
    (lambda d: d["rows"][0]["train"].update(optim={"lr": -1.0}),
     r"exp\.yaml: row spikingformer\.optim\.lr: -1\.0 is not allowed"),
    (lambda d: d["rows"][0]["train"].update(data={"batchsize": 3}),
     r"exp\.yaml: row spikingformer\.data: unknown key\(s\) \['batchsize'\]"),
    (lambda d: d["rows"][0]["model"].update(name="resnet50"),
     r"exp\.yaml: row spikingformer\.model\.name: unknown model 'resnet50'"),
    (lambda d: d["rows"][1].update(paper={"top1": "high"}),
     r"exp\.yaml: row spikformer\.paper\.top1: 'high' matches none"),
    (lambda d: d["tolerance"].update(warn_pp=0.1), r"exp\.yaml\.tolerance\.warn_pp: 0\.1 is not allowed"),
    (lambda d: d["rows"][1].update(id="spikingformer"), r"unique row ids"),
    (lambda d: d["rows"][0].update(resources={"num_workers": 0}),
     r"row spikingformer: resources\.num_workers: 0 is not allowed"),
    (lambda d: d.update(seeds=0), r"exp\.yaml\.seeds: 0 is not allowed"),
    (lambda d: d["rows"][1]["model"].update(kwargs={"num_heads": 5}),
     r"exp\.yaml: row spikformer\.model: spikformer_cifar_2_384 .*embed_dim=64 is not divisible by num_heads=5"),
    (lambda d: d["rows"][0]["model"].update(kwargs={"heads": 4}),
     r"exp\.yaml: row spikingformer\.model: .*unexpected keyword argument 'heads'"),
]


@pytest.mark.parametrize(("change", "message"), BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_input_names_file_row_and_key(tmp_path: Path, change, message: str) -> None:
    data = demo_mapping()
    for row in data["rows"]:
        row.setdefault("train", {})
    change(data)
    with pytest.raises(ConfigError, match=message):
        load_experiment(write(tmp_path, data))


def test_row_train_config_layers_recipe_file_and_row(tmp_path: Path) -> None:
    data = demo_mapping()
    data["rows"][0]["train"] = {"schedule": {"epochs": 5}, "data": {"batch_size": 8}}
    experiment = load_experiment(write(tmp_path, data))
    first, second = (experiment.train_config(r) for r in experiment.rows)
    assert (first.schedule.epochs, first.data.batch_size, first.optim.lr) == (5, 8, 2e-3)  # row, row, recipe
    assert (second.schedule.epochs, second.data.batch_size) == (6, 32)  # recipe
    assert (second.model.name, second.model.kwargs["embed_dim"]) == ("spikformer_cifar_2_384", 64)  # row, recipe
    assert second.runtime.device == "cpu"  # the file's train section


def test_command_line_overrides() -> None:
    experiment = load_experiment(DEMO)
    row = experiment.rows[0]
    base = experiment.train_config(row)
    smoke = experiment.train_config(row, run_overrides(base, smoke=True, epochs=2, data_root="/data"))
    assert smoke.data.dataset == "synthetic" and smoke.data.root is None  # digits/synthetic need no root
    assert (smoke.schedule.total_epochs, smoke.data.max_train_batches, smoke.runtime.device) == (2, 1, "cpu")
    assert SMOKE_OVERRIDES["data"]["batch_size"] == smoke.data.batch_size
    assert tracked_name(experiment, smoke=True) == "demo-smoke"
    assert tracked_name(experiment, epochs=3) == "demo-e3"
    assert tracked_name(experiment) == "demo"


def test_data_root_points_each_dataset_at_its_folder() -> None:
    experiment = load_experiment(EXPERIMENTS / "cifar10.yaml")
    row = experiment.rows[0]
    overrides = run_overrides(experiment.train_config(row), data_root="/data")
    assert experiment.train_config(row, overrides).data.root == str(Path("/data").resolve() / "cifar10")


def test_tolerance_bands() -> None:
    tol = Tolerance(pass_pp=0.5, warn_pp=1.5)
    assert [tol.verdict(d) for d in (0.0, -0.5, 0.7, -1.5, 2.0)] == ["PASS", "PASS", "WARN", "WARN", "FAIL"]


def test_unknown_row_is_an_error() -> None:
    with pytest.raises(ConfigError, match="no row 'nope'"):
        load_experiment(DEMO).row("nope")


def test_experiment_from_dict_needs_rows() -> None:
    data = demo_mapping()
    data["rows"] = []
    with pytest.raises(ConfigError, match="at least one row"):
        Experiment.from_dict(data, where="inline")


def test_reproduce_stops_on_a_bad_row_before_ray_starts(tmp_path: Path, capsys) -> None:
    import ray

    from harness.cli import main

    data = demo_mapping()
    data["rows"][1]["train"] = {"schedule": {"epochs": 0}}
    path = write(tmp_path, data)
    code = main(["reproduce", str(path), "--storage", str(tmp_path / "ray"),
                 "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    assert code == 2
    assert f"{path}: row spikformer.schedule.epochs: 0 is not allowed" in capsys.readouterr().err
    assert not ray.is_initialized() and not (tmp_path / "mlflow.db").exists()


def test_unknown_recipe_names_the_file_the_key_and_the_recipes(tmp_path: Path) -> None:
    data = demo_mapping()
    data["recipe"] = "nope"
    with pytest.raises(ConfigError, match=r"exp\.yaml: recipe: unknown recipe 'nope'; known: .*digits"):
        load_experiment(write(tmp_path, data))


def test_yaml_syntax_error_exits_2_naming_the_file_line_and_column(tmp_path: Path, capsys) -> None:
    from harness.cli import main

    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\nrows: [a, b\nrecipe: digits\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml, line 3, column 7: not valid YAML: expected ','"):
        load_experiment(path)
    assert main(["reproduce", str(path)]) == 2
    assert f"sfh reproduce: error: {path}, line 3, column 7: not valid YAML" in capsys.readouterr().err


BAD_FLAGS = [
    (["reproduce", str(DEMO), "--seeds", "0"], "argument --seeds: must be >= 1, got 0"),
    (["reproduce", str(DEMO), "--seeds", "-1"], "argument --seeds: must be >= 1, got -1"),
    (["reproduce", str(DEMO), "--seeds", "two"], "argument --seeds: must be an integer >= 1, got 'two'"),
    (["reproduce", str(DEMO), "--max-concurrent", "0"], "argument --max-concurrent: must be >= 1, got 0"),
    (["reproduce", str(DEMO), "--energy-batches", "0"], "argument --energy-batches: must be >= 1, got 0"),
    (["reproduce", str(DEMO), "--max-failures", "-1"], "argument --max-failures: must be >= 0, got -1"),
    (["reproduce", str(DEMO), "--epochs", "0"], "argument --epochs: must be >= 1, got 0"),
    (["reproduce", str(DEMO), "--rows", "spikingformer,spikingformer"],
     "argument --rows: row(s) spikingformer given more than once in 'spikingformer,spikingformer'"),
    (["reproduce", str(DEMO), "--rows", "spikingformer,"], "argument --rows: an empty row id"),
    (["search", str(EXPERIMENTS / "search" / "demo.yaml"), "--trials", "0"], "argument --trials: must be >= 1, got 0"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_FLAGS, ids=[m.split(":")[0] + a[-1] for a, m in BAD_FLAGS])
def test_bad_numbers_on_the_command_line_exit_2_before_anything_starts(argv: list[str], message: str,
                                                                       capsys) -> None:
    from harness.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert f"error: {message}" in capsys.readouterr().err


def test_unknown_row_on_the_command_line_names_the_file_and_its_rows(tmp_path: Path, capsys) -> None:
    from harness.cli import main

    code = main(["reproduce", str(DEMO), "--rows", "nope", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"])
    assert code == 2
    assert f"{DEMO}: no row 'nope'; rows: ['spikingformer', 'spikformer']" in capsys.readouterr().err


def tracked_plan(path: Path, uri: str, **options) -> list:

    experiment = load_experiment(path)
    return trial_specs(experiment, name=experiment.name, rows=None, seeds=options.pop("seeds", 2), tracking_uri=uri,
                train_storage="/nowhere/train", **options)


def test_seeds_and_duplicate_rows_in_the_plan(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    specs = tracked_plan(DEMO, uri, seeds=3)
    assert [(s.row, s.seed) for s in specs] == [(r, k) for r in ("spikingformer", "spikformer") for k in (0, 1, 2)]
    assert len(tracked_plan(DEMO, uri, seeds=None)) == 2  # the file's seeds: 1

    with pytest.raises(ConfigError, match=r"demo\.yaml: run key\(s\) \['demo/spikformer/seed0'\] planned twice"):
        trial_specs(load_experiment(DEMO), name="demo", rows=["spikformer", "spikformer"], seeds=1, tracking_uri=uri,
             train_storage="/nowhere/train")


def test_a_tracked_run_of_an_edited_row_is_refused_before_ray_starts(tmp_path: Path, capsys) -> None:
    import ray

    from harness import tracking
    from harness.cli import main
    from harness.experiment.resolve import config_hash
    from harness.run.specs import ConfigChanged, check_tracked
    from harness.run.trial import open_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store = tracking.Tracking(uri)
    path = write(tmp_path, demo_mapping())
    runs = {s.run_key: open_run(store, s, s.run_key) for s in tracked_plan(path, uri)}  # a first invocation
    finished = runs["demo/spikingformer/seed1"].info.run_id
    store.end(finished, "FINISHED")

    # The same rows (a retry, a resume), or a change of where they run only: each run is found again.
    assert check_tracked(store, tracked_plan(path, uri), str(path)).keys() == runs.keys()
    spec = tracked_plan(path, uri)[0]  # Tune restores a trial's config with lists where it had tuples
    assert spec.config_hash == config_hash(json.loads(json.dumps(spec.train)))
    moved = demo_mapping()
    moved["train"]["data"] = {"num_workers": 3}
    moved["train"]["runtime"].update(device="auto", checkpoint_every=2)
    assert check_tracked(store, tracked_plan(write(tmp_path, moved), uri), str(path)).keys() == runs.keys()

    edited = demo_mapping()
    edited["rows"][0]["train"] = {"optim": {"lr": 1e-3}}
    path = write(tmp_path, edited)
    with pytest.raises(ConfigChanged) as refused:
        check_tracked(store, tracked_plan(path, uri), str(path))
    message = str(refused.value)
    assert message.startswith(f"{path}: 2 (row, seed) run(s) of 'demo' in {uri} were trained under another")
    assert f"row spikingformer seed 1: MLflow run {finished} (FINISHED), config " in message
    assert "optim.lr: 0.002 -> 0.001" in message and "row spikformer" not in message
    assert "new `name`" in message and "mlflow runs delete --run-id" in message

    assert main(["reproduce", str(path), "--seeds", "2", "--tracking-uri", uri,
                 "--storage", str(tmp_path / "ray")]) == 2
    assert "row spikingformer seed 0: MLflow run" in capsys.readouterr().err
    assert not ray.is_initialized()

    for run in runs.values():  # tracked before config hashes existed: taken as it is
        store.client.delete_tag(run.info.run_id, tracking.CONFIG_HASH)
    assert check_tracked(store, tracked_plan(path, uri), str(path)).keys() == runs.keys()


def test_a_row_finetunes_from_a_checkpoint() -> None:
    """A row's ``model: {finetune: PATH}`` reaches its TrainConfig; other rows start from random weights."""
    experiment = Experiment.from_dict({
        "name": "tune", "paper": {"arxiv": "-", "table": "-", "source": "-"}, "recipe": "digits",
        "rows": [{"id": "scratch", "model": {"name": "spikingformer_cifar_2_384"}},
                 {"id": "tuned", "model": {"name": "spikingformer_cifar_2_384", "finetune": "runs/src/last.pt"}}],
    }, where="inline")
    assert experiment.train_config(experiment.row("tuned")).model.finetune == "runs/src/last.pt"
    assert experiment.train_config(experiment.row("scratch")).model.finetune is None
