"""Every paper table's first row, as ``sfh reproduce --smoke`` plans it, trains a step and is measured; one
table of each peer family runs the whole way through ``sfh reproduce --smoke`` on Ray, and ``sfh compare``
lines them up under each paper's energy convention and the common one.

In process, per table: the row's smoke spec (1 epoch of 1 batch of synthetic data of the row's input shape),
``spikingformer.training.engine.fit`` and the final figures a trial logs (``spikingformer.evaluate.evaluate_run``),
spikes alive. Through Ray: the drivers side by side against the session's head,
each with its own sqlite store; Spikingformer's own path through Ray is the end-to-end demo tests'. A driver
of a 224x224 or T=16 row and its trial hold ~4 GB, and a dozen of them cost ~15 minutes of this 2-core
machine, hence one table per peer family there.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.ray_nodes import RayNode
from test_harness_e2e import check_finished_trial, runs_by_key
from test_timm_interface import firing_rates

from harness import results, tracking
from harness.experiment import load_experiment
from harness.results import family_lines
from harness.run.specs import trial_specs
from spikingformer import evaluate
from spikingformer.checkpoints.training import load_checkpoint
from spikingformer.data.loaders import build_eval_loader
from spikingformer.evaluate import evaluate_run
from spikingformer.models import build_model
from spikingformer.training.engine import fit

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXPERIMENTS = REPO / "experiments"
TABLES = sorted(p.stem for p in EXPERIMENTS.glob("*.yaml") if p.stem != "demo")
#: Through Ray, side by side: one table of each peer family.
THROUGH_RAY = ("sdt-cifar10", "spikformer-cifar10", "qkformer-cifar10")


@pytest.mark.train
@pytest.mark.parametrize("name", TABLES)
def test_first_row_trains_a_step_and_is_measured(name: str, tmp_path: Path) -> None:
    experiment = load_experiment(EXPERIMENTS / f"{name}.yaml")
    [spec] = trial_specs(experiment, name=f"{name}-smoke", rows=[experiment.rows[0].id], seeds=1, tracking_uri="-",
                  train_storage=str(tmp_path), smoke=True)
    config = spec.config
    result = fit(config, checkpoint_dir=tmp_path)
    assert math.isfinite(result.history[-1]["train_loss"]) and result.best_checkpoint is not None
    final = evaluate_run(config, result, energy_batches=spec.energy_batches)
    figures = final.metrics
    # An untrained network barely fires on eval statistics (SDT's not at all): SOPs may be 0 here, the encoder's
    # MACs are not.
    assert figures[evaluate.PARAMS] > 1e6 and figures[evaluate.ENERGY_MJ] > 0 and figures[evaluate.SOPS_G] >= 0
    assert 0 <= figures[evaluate.FIRING_RATE_MEAN] < 1
    for label in final.reports:  # every convention the family declares is measured
        assert figures[evaluate.figure(evaluate.ENERGY_MJ, label)] > 0
    # Its spikes are alive: the trained weights on a batch of the row's data, batch statistics, every LIF layer.
    model = build_model(config.model.name, **config.model.kwargs)
    model.load_state_dict(load_checkpoint(result.last_checkpoint)["model"])
    x, _ = next(iter(build_eval_loader(config)))
    rates = firing_rates(model.train(), x)
    assert rates and sum(r > 0 for r in rates) > len(rates) // 2, rates


@pytest.mark.ray
def test_one_table_per_peer_family_through_ray_and_compare(ray_head: RayNode, tmp_path: Path) -> None:
    firsts = {name: load_experiment(EXPERIMENTS / f"{name}.yaml").rows[0].id for name in THROUGH_RAY}
    stores = {name: tracking.Tracking(f"sqlite:///{tmp_path / name}.db") for name in THROUGH_RAY}
    began = time.monotonic()
    drivers = {
        name: subprocess.Popen(
            [str(BIN / "sfh"), "reproduce", str(EXPERIMENTS / f"{name}.yaml"), "--smoke", "--rows", firsts[name],
             "--address", ray_head.address, "--storage", str(tmp_path / "ray"), "--tracking-uri", stores[name].uri],
            cwd=REPO, env=ray_head.driver_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for name in THROUGH_RAY
    }
    outputs = {name: driver.communicate(timeout=900)[0] for name, driver in drivers.items()}
    print(f"{len(THROUGH_RAY)} smoke tables through Ray in {time.monotonic() - began:.0f} s")
    for name, first in firsts.items():
        out, store = outputs[name], stores[name]
        assert drivers[name].returncode == 0, out
        (run,) = runs_by_key(store, f"{name}-smoke").values()
        assert run.data.tags[tracking.RUN_KEY].startswith(f"{name}-smoke/{first}/seed")
        check_finished_trial(store, run)
        assert f"| {first} |" in out and "| 1/1 |" in out
        assert "NOT RUN" in out or len(load_experiment(EXPERIMENTS / f"{name}.yaml").rows) == 1
    # The cross-family table (sfh compare): each first row under its paper's convention and the common ruler.
    table = [
        line for name in THROUGH_RAY
        for line in family_lines(load_experiment(EXPERIMENTS / f"{name}.yaml"), stores[name].uri,
                                  name=f"{name}-smoke")
        if line.row == firsts[name]
    ]
    print(results.render_families_markdown(table))
    assert [line.table for line in table] == [f"{name}-smoke" for name in THROUGH_RAY]
    for line in table:
        assert line.result.energy_mJ > 0 and line.energy_common > 0 and line.sops_common >= 0
        if line.model.startswith(("sdt", "spikformer")):  # both families' papers count as the common ruler does
            assert line.result.energy_mJ == line.energy_common
