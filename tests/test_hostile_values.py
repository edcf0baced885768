"""Values that would escape a folder or poison a run are refused before Ray starts, naming the file and key.

Non-finite numbers anywhere a float is read (the train config at every level, tolerance, paper numbers,
resources, search ranges, grid axes) and names that become folder names (experiment and search names, row
ids, ``sfh resume NAME``): ``.``, ``..``, separators, control characters.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.experiment import load_experiment
from harness.experiment.search_space import load_search
from spikingformer._validation import ConfigError, folder_name_problem

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
DEMO = yaml.safe_load((EXPERIMENTS / "demo.yaml").read_text())
INF, NAN = float("inf"), float("nan")

BAD_EXPERIMENTS = [
    (lambda d: d.setdefault("train", {}).update(optim={"lr": INF}), r"exp\.yaml: row spikingformer\.optim\.lr: inf"),
    (lambda d: d["rows"][0].setdefault("train", {}).update(optim={"lr": -INF}), r"optim\.lr: -inf is not allowed"),
    (lambda d: d["rows"][0].setdefault("train", {}).update(optim={"weight_decay": NAN}), r"weight_decay: nan"),
    (lambda d: d.update(tolerance={"pass_pp": INF, "warn_pp": INF}), r"tolerance\.pass_pp: inf is not allowed"),
    (lambda d: d["rows"][0].update(paper={"top1": NAN}), r"paper\.top1: nan"),
    (lambda d: d.update(resources={"cpus_per_worker": INF}), r"resources\.cpus_per_worker: inf is not allowed"),
    (lambda d: d.update(name=".."), r"exp\.yaml\.name: '\.\.' is not allowed \(a folder name .*it is '\.\.'\)"),
    (lambda d: d.update(name="."), r"exp\.yaml\.name: '\.' is not allowed"),
    (lambda d: d.update(name="demo/other"), r"name: 'demo/other' is not allowed .*path separator"),
    (lambda d: d.update(name="demo\\other"), r"path separator"),
    (lambda d: d.update(name="demo\nx"), r"control character"),
    (lambda d: d.update(name=""), r"it is empty"),
    (lambda d: d["rows"][0].update(id=".."), r"row\(s\)|id: '\.\.' is not allowed"),
    (lambda d: d["rows"][0].update(id="a/../b"), r"id: 'a/\.\./b' is not allowed .*a segment is '\.\.'"),
    (lambda d: d["rows"][0].update(id="a//b"), r"empty segment"),
]


@pytest.mark.parametrize(("change", "message"), BAD_EXPERIMENTS, ids=[m for _, m in BAD_EXPERIMENTS])
def test_experiment_refuses_non_finite_numbers_and_escaping_names(tmp_path: Path, change, message: str) -> None:
    data = copy.deepcopy(DEMO)
    change(data)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=message):
        load_experiment(path)


def test_a_grid_axis_of_infinite_values_is_refused(tmp_path: Path) -> None:
    grid = yaml.safe_load((EXPERIMENTS / "grid" / "digits.yaml").read_text())
    grid["grid"]["axes"] = {"optim.lr": [1e-3, INF]}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    with pytest.raises(ConfigError, match=r"row spikingformer/lr=inf\.optim\.lr: inf is not allowed \(a finite"):
        load_experiment(path)


@pytest.mark.parametrize(("change", "message"), [
    (lambda s: s.update(name=".."), r"search\.yaml\.name: '\.\.' is not allowed"),
    (lambda s: s["space"].update({"optim.lr": {"loguniform": [1e-4, INF]}}), r"optim\.lr.*inf"),
    (lambda s: s["space"].update({"optim.weight_decay": {"uniform": [NAN, 0.1]}}), r"weight_decay.*nan"),
])
def test_search_refuses_non_finite_ranges_and_escaping_names(tmp_path: Path, change, message: str) -> None:
    search = yaml.safe_load((EXPERIMENTS / "search" / "demo.yaml").read_text())
    search["base"]["experiment"] = str(EXPERIMENTS / "demo.yaml")
    change(search)
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(search))
    with pytest.raises(ConfigError, match=message):
        load_search(path)


def test_folder_names_that_stay_inside() -> None:
    assert folder_name_problem("cifar10-smoke") is folder_name_problem("4-384/T=2", segments=True) is None
    assert folder_name_problem("4-384/T=2") == "it holds a path separator or control character"
    assert folder_name_problem(" x") == "it has surrounding spaces"


def test_reproduce_and_resume_refuse_an_escaping_name_before_ray(tmp_path: Path, capsys) -> None:
    import ray

    data = copy.deepcopy(DEMO)
    data["name"] = ".."
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    storage = tmp_path / "shared" / "ray"
    common = ["--storage", str(storage), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    assert main(["reproduce", str(path), *common]) == 2
    assert "exp.yaml.name: '..' is not allowed" in capsys.readouterr().err
    assert main(["resume", "..", "--storage", str(storage)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sfh resume: error: name: '..' is not allowed") and err.count("\n") == 1
    assert not ray.is_initialized() and not (tmp_path / "shared").exists() and not (tmp_path / "mlflow.db").exists()
