"""Mistakes answered in one line that says what to do: a mistyped experiment file, a resume of nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.experiment import load_experiment
from harness.run import sweep

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def test_a_missing_experiment_file_suggests_the_closest() -> None:
    with pytest.raises(FileNotFoundError) as err:
        load_experiment(EXPERIMENTS / "cifar.yml")
    assert str(err.value).endswith(f"does not exist; did you mean 'cifar10.yaml' or 'cifar100.yaml' in {EXPERIMENTS}/?")


def test_a_missing_experiment_file_lists_the_folder(tmp_path: Path) -> None:
    (tmp_path / "alpha.yaml").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"does not exist; .* holds alpha\.yaml$"):
        load_experiment(tmp_path / "zzz.yaml")


def test_resume_of_nothing_says_what_can_be_resumed(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nothing to resume named 'cifar10' .*: no experiment was started "
                                                r"there yet; start one with `sfh reproduce EXPERIMENT.yaml`"):
        sweep.read_invocation(str(tmp_path), "cifar10")
    for name in ("demo", "cifar10-smoke"):
        sweep.write_invocation(str(tmp_path), name, {"name": name})
    (tmp_path / "not-started").mkdir()
    assert sweep.resumable(str(tmp_path)) == ["cifar10-smoke", "demo"]
    with pytest.raises(FileNotFoundError, match=r"did you mean 'demo'\?$"):
        sweep.read_invocation(str(tmp_path), "dmeo")
    with pytest.raises(FileNotFoundError, match=r"resumable there: cifar10-smoke, demo$"):
        sweep.read_invocation(str(tmp_path), "imagenet")
    assert json.loads((tmp_path / "demo" / sweep.INVOCATION).read_text()) == {"name": "demo"}
