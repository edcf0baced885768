"""The standalone CLI: config files, one process, and two gloo processes under torchrun that must agree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from spikingformer._validation import ConfigError
from spikingformer.checkpoints.training import load_checkpoint, state_sha256
from spikingformer.train import load_config, main

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "model": {"name": "spikingformer_cifar_2_384", "kwargs": {"embed_dim": 16, "depth": 1, "num_heads": 2, "T": 1}},
    "data": {"dataset": "digits", "batch_size": 16, "train_size": 64, "eval_size": 40, "num_workers": 0},
    "schedule": {"epochs": 2, "warmup_epochs": 1, "cooldown_epochs": 0},
    "augment": {"auto_augment": "rand-m9-n1-mstd0.4-inc1", "mixup_alpha": 0.5},
}


def write(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def test_config_file_forms(tmp_path: Path) -> None:
    plain = load_config(write(tmp_path / "plain.yaml", TINY))
    assert plain.schedule.total_epochs == 2
    rows = write(tmp_path / "rows.yaml", {"rows": {"a": TINY, "b": {"recipe": "cifar100", "optim": {"lr": 1e-3}}}})
    row_b = load_config(rows, "b", epochs=50)
    assert (row_b.model.kwargs["num_heads"], row_b.optim.lr, row_b.schedule.epochs) == (8, 1e-3, 50)
    assert row_b.optim.weight_decay == 0.06  # the rest comes from the recipe
    with pytest.raises(ConfigError, match="several rows; pick one with --row"):
        load_config(rows)
    with pytest.raises(ConfigError, match="no row 'c'"):
        load_config(rows, "c")
    with pytest.raises(ConfigError, match=r"rows.yaml:rows.a.*optim.lr"):
        load_config(write(tmp_path / "rows.yaml", {"rows": {"a": {**TINY, "optim": {"lr": "fast"}}}}))
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.train
def test_single_process_run_then_resume(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = write(tmp_path / "tiny.yaml", TINY)
    assert main(["--config", str(config), "--out", str(tmp_path / "out"), "--epochs", "1"]) == 0
    printed = capsys.readouterr().out
    assert "epoch 1/1" in printed and "best top-1" in printed
    assert main(["--config", str(config), "--out", str(tmp_path / "out"), "--resume", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert [h["epoch"] for h in result["history"]] == [0, 1]
    assert result["selection"]["best_top1"] == "best test epoch (paper protocol)"
    assert main(["--config", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.train
def test_two_gloo_ranks_agree(tmp_path: Path) -> None:
    config = write(tmp_path / "tiny.yaml", TINY)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "spikingformer.train", "--config", str(config), "--out", str(tmp_path / "out")]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / "out" / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    ckpt = load_checkpoint(tmp_path / "out")
    assert state_sha256(ckpt["model"]) == ranks[0]["weights_sha256"]  # rank 0 saved the weights both ranks hold
    assert len(ckpt["rng"]) == 2  # each rank's generators, gathered to rank 0 (seeded per rank: they differ)
    assert not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["global_batch"] == 32 and result["data_info"]["eval"]["size"] == 40
    assert proc.stdout.count("epoch 2/2") == 1  # only rank 0 prints


@pytest.mark.train
def test_cli_final_figures_equal_a_ray_trials(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``python -m spikingformer.train`` ends with the figures a Ray trial logs to MLflow for the same
    checkpoint and batches: both come from spikingformer.evaluate, under the family's conventions."""
    from harness import tracking
    from harness.run.trial import _log_final
    from spikingformer import evaluate
    from spikingformer.training.engine import FitResult

    out = tmp_path / "out"
    digits = write(tmp_path / "digits.yaml", {"recipe": "digits", "data": {"train_size": 512}})  # learns: spikes live
    assert main(["--config", str(digits), "--out", str(out), "--epochs", "2", "--energy-batches", "2"]) == 0
    assert "energy" in capsys.readouterr().out
    cli = json.loads((out / "result.json").read_text())
    config = load_config(digits, epochs=2)
    fitted = {k: v for k, v in cli.items() if k != "final"}
    fitted.update(last_checkpoint=out / "last.pt", best_checkpoint=out / "best.pt")
    store = tracking.Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = store.client.create_run(store.experiment_id("cli-vs-trial")).info.run_id
    _log_final(store, run_id, config, FitResult(**fitted), 2, None)  # what rank 0 of a Ray trial does last
    logged = store.client.get_run(run_id).data.metrics
    assert cli["final"] == pytest.approx({k: logged[k] for k in cli["final"]}, rel=1e-12)
    assert {evaluate.ENERGY_MJ, evaluate.figure(evaluate.ENERGY_MJ, "common"), evaluate.SOPS_G} <= cli["final"].keys()
    assert cli["final"][evaluate.FIRING_RATE_MEAN] > 0  # the reloaded network's spikes are alive
    assert json.loads((out / evaluate.ENERGY_ARTIFACT).read_text())["totals"]["energy_mJ"] == pytest.approx(
        cli["final"][evaluate.ENERGY_MJ], rel=1e-12)
