"""Every paper table's first row and every example grid's first point, as ``sfh reproduce --smoke`` plans it,
trains a step and is measured (in process: ``helpers.smoke``); one table of each peer family runs the whole way
through ``sfh reproduce --smoke`` on Ray, and ``sfh compare`` lines them up under each paper's energy convention and
the common one.

Through Ray: the drivers side by side against the session's head,
each with its own sqlite store; Spikingformer's own path through Ray is the end-to-end demo tests'. A driver
of a 224x224 or T=16 row and its trial hold ~4 GB, and a dozen of them cost ~15 minutes of this 2-core
machine, hence one table per peer family there.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.ray_nodes import RayNode
from helpers.runs import check_finished_trial, runs_by_key
from helpers.smoke import train_smoke_row

from harness import results, tracking
from harness.experiment import load_experiment
from harness.results import family_lines

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXPERIMENTS = REPO / "experiments"
#: Every paper table and every example grid (each grid's first point).
SMOKED = sorted(p for p in EXPERIMENTS.glob("*.yaml") if p.stem != "demo") + sorted(
    p for p in (EXPERIMENTS / "grid").glob("*.yaml") if p.stem != "digits")
#: One table per family whose smoke also measures the memory-inclusive estimate and NeuroBench's metrics.
MEASURED_IN_FULL = ("cifar10", "sdt-cifar10", "spikformer-cifar10", "qkformer-cifar10")
#: Through Ray, side by side: one table of each peer family.
THROUGH_RAY = ("sdt-cifar10", "spikformer-cifar10", "qkformer-cifar10")


@pytest.mark.train
@pytest.mark.parametrize("path", SMOKED, ids=lambda p: p.stem)
def test_first_row_trains_a_step_and_is_measured(path: Path, tmp_path: Path) -> None:
    """The memory-inclusive estimate and NeuroBench's metrics once per family (its CIFAR-10 table): they cost
    minutes on a 224x224 or T=16 model here, and what they measure is the family's, not the table's."""
    experiment = load_experiment(path)
    train_smoke_row(experiment, experiment.rows[0].id, tmp_path, memory_and_neurobench=path.stem in MEASURED_IN_FULL)


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
