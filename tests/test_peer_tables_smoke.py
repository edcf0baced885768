"""Every Spike-driven Transformer and Spikformer paper table passes ``sfh reproduce --smoke``, and ``sfh compare``
lines their first rows up under both energy conventions.

The first row of each table, 1 epoch of 1 batch of synthetic data of the row's input shape on CPU, each
table's driver against one Ray head on loopback (``tests/ray_nodes.py``), two drivers at a time (eight side
by side ran the shared 24 GB machine out of memory), each with its own sqlite store. Slow: minutes on a
2-core CPU, like the other end-to-end tests.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ray_nodes import RayNode
from test_harness_e2e import check_finished_trial, runs_by_key

from harness import tracking
from harness.commands import compare
from harness.config import load_experiment

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
#: Drivers running at once (each driver and its trial hold about 1.5 GB).
AT_ONCE = 2
TABLES = (
    "sdt-imagenet", "sdt-cifar10", "sdt-cifar100", "sdt-cifar10-dvs", "sdt-dvs128-gesture",
    "spikformer-imagenet", "spikformer-cifar10", "spikformer-cifar100",
)


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayNode]:
    node = RayNode("127.0.0.2", num_cpus=2 * AT_ONCE, log=tmp_path_factory.mktemp("ray") / "head.log",
                   env={"RAY_AUTH_MODE": "disabled"})
    yield node
    node.stop()


def test_smoke_every_peer_table(head: RayNode, tmp_path: Path) -> None:
    firsts = {name: load_experiment(REPO / "experiments" / f"{name}.yaml").rows[0].id for name in TABLES}
    stores = {name: tracking.Tracking(f"sqlite:///{tmp_path / name}.db") for name in TABLES}
    began = time.monotonic()
    drivers: dict[str, subprocess.Popen] = {}
    outputs: dict[str, str] = {}
    names = list(TABLES)
    for start in range(0, len(names), AT_ONCE):
        batch = {
            name: subprocess.Popen(
                [str(BIN / "sfh"), "reproduce", str(REPO / "experiments" / f"{name}.yaml"), "--smoke", "--rows",
                 firsts[name], "--address", head.address, "--storage", str(tmp_path / "ray"), "--tracking-uri",
                 stores[name].uri],
                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )
            for name in names[start:start + AT_ONCE]
        }
        outputs.update({name: driver.communicate(timeout=1200)[0] for name, driver in batch.items()})
        drivers.update(batch)
    print(f"{len(TABLES)} smoke tables in {time.monotonic() - began:.0f} s")
    for name, first in firsts.items():
        out, store = outputs[name], stores[name]
        assert drivers[name].returncode == 0, out
        (run,) = runs_by_key(store, f"{name}-smoke").values()
        assert run.data.tags[tracking.RUN_KEY].startswith(f"{name}-smoke/{first}/seed")
        check_finished_trial(store, run)
        assert f"| {first} |" in out and "| 1/1 |" in out
    # the cross-family table (sfh compare): each first row under its paper's convention and the common ruler
    table = [
        line for name in TABLES
        for line in compare.lines(load_experiment(REPO / "experiments" / f"{name}.yaml"), stores[name].uri,
                                  name=f"{name}-smoke")
        if line.row == firsts[name]
    ]
    print(compare.render_markdown(table))
    assert [line.table for line in table] == [f"{name}-smoke" for name in TABLES]
    for line in table:
        assert line.result.energy_mJ > 0 and line.energy_common > 0 and line.sops_common >= 0
        if line.model.startswith(("sdt", "spikformer")):  # both families' papers count as the common ruler does
            assert line.result.energy_mJ == line.energy_common
