"""Mistakes answered in one line that says what to do: a mistyped experiment file, a resume of nothing."""

from __future__ import annotations

import json
import subprocess
import sys
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


def test_every_help_answers_without_the_heavy_stack() -> None:
    """`sfh --help` and each command's, `sfh energy`'s included (the library's own parser, loaded by its path):
    none imports torch, Ray or MLflow, which is what makes them answer at once."""
    probe = (
        "import sys\n"
        "from harness.cli import build_parser, main\n"
        "commands = next(a for a in build_parser()._actions if a.dest == 'command').choices\n"
        "for argv in [[], *([c] for c in commands)]:\n"
        "    try:\n"
        "        main([*argv, '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in ('torch', 'ray', 'mlflow', 'timm') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "usage: sfh energy" in done.stdout and "--max-spike-count" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_energy_help_gives_the_energy_models_defaults_and_a_mistyped_model_its_neighbours(
        capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main
    from spikingformer.energy import E_AC_PJ, E_MAC_PJ

    assert main(["energy", "--help"]) == 0
    out = capsys.readouterr().out
    assert f"(default {E_MAC_PJ:g}:" in out and f"(default {E_AC_PJ:g}:" in out
    assert main(["energy", "--model", "spikingformer_cifar_4_384x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sfh energy: error: unknown model 'spikingformer_cifar_4_384x'; did you mean")
