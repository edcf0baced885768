"""End to end through ``sfh``: a real Ray cluster on loopback, real MLflow (sqlite and a server), real kills.

One Ray head for the whole module (``tests/ray_nodes.py``: ``ray start --block`` on 127.0.0.2, its process
group stopped at the end); every command joins it with ``--address``, except one that starts the private
local Ray. Slow: minutes on a 2-core CPU.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from ray_nodes import RayNode, free_port, wait_for

from harness import tracking
from harness.cli import main
from harness.cluster import LOCAL_NODE_IP

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXPERIMENTS = REPO / "experiments"
PAPER_FILES = ("imagenet", "cifar10", "cifar100", "cifar10-dvs", "dvs128-gesture")
HOST = "127.0.0.2"
#: Logical CPUs of the test head: more than the cores, so the five smoke trials overlap their start-up waits.
LOGICAL_CPUS = 6
TRAIN_WORKER = "RayTrainWorker"


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayNode]:
    # Loopback only, so no token auth (an in-process driver would need RAY_AUTH_MODE=token and the token).
    node = RayNode(HOST, num_cpus=LOGICAL_CPUS, log=tmp_path_factory.mktemp("ray") / "head.log",
                   env={"RAY_AUTH_MODE": "disabled"})
    yield node
    node.stop()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tracking.Tracking:
    return tracking.Tracking(f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}")


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """A real ``mlflow server`` on loopback, sqlite behind it, artifacts proxied."""
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_for(healthy, 120, "the MLflow server", every=1.0)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def sfh(*args: str) -> int:
    return main([str(a) for a in args])


def runs_by_key(store: tracking.Tracking, name: str) -> dict[str, object]:
    runs = store.trial_runs(name)
    keys = [r.data.tags[tracking.RUN_KEY] for r in runs]
    assert len(keys) == len(set(keys)), f"duplicate MLflow runs: {keys}"
    return {r.data.tags[tracking.RUN_KEY]: r for r in runs}


def check_finished_trial(store: tracking.Tracking, run) -> None:
    """A finished trial run holds its figures, params, provenance, artifacts and one entry per epoch."""
    assert run.info.status == "FINISHED"
    for key in ("best_top1", "last_top1", "params", "dense_flops_G", "sops_G", "macs_G", "acs_G", "energy_mJ",
                "firing_rate_mean"):
        assert key in run.data.metrics, key
    assert run.data.metrics["energy_mJ"] > 0 and 0 <= run.data.metrics["firing_rate_mean"] <= 1
    if run.data.params["model.name"].startswith("spikformer"):  # also costed with spike counts as ACs (equal
        # when its residual stream happens to stay binary, as in a barely trained model)
        assert 0 < run.data.metrics["energy_mJ_spike_counts"] <= run.data.metrics["energy_mJ"]
    else:
        assert "energy_mJ_spike_counts" not in run.data.metrics
    assert "model.name" in run.data.params and "resources.num_workers" in run.data.params
    tags = run.data.tags
    assert {"sfh.git_sha", "sfh.version.ray", "sfh.device", "sfh.lif", "sfh.paper_table"} <= set(tags)
    parent = store.client.get_run(tags[tracking.PARENT_RUN_ID])
    assert parent.data.tags[tracking.KIND] == "parent"
    assert {a.path for a in store.client.list_artifacts(run.info.run_id)} == {
        "config.yaml", "energy_layers.json", "energy.md",
    }
    epochs = sorted(m.step for m in store.client.get_metric_history(run.info.run_id, "epoch"))
    total = int(run.data.params["schedule.epochs"]) + int(run.data.params["schedule.cooldown_epochs"])
    assert epochs == list(range(total))


def test_smoke_every_paper_table(head: RayNode, tmp_path: Path) -> None:
    """Every table runs on CPU: its first row, synthetic data of the row's shape, 1 epoch of 1 batch.

    The five drivers run side by side (their trials' start-up is mostly waiting on process spawns), each
    with its own sqlite store.
    """
    from harness.config import load_experiment

    firsts = {name: load_experiment(EXPERIMENTS / f"{name}.yaml").rows[0].id for name in PAPER_FILES}
    stores = {name: tracking.Tracking(f"sqlite:///{tmp_path / name}.db") for name in PAPER_FILES}
    drivers = {
        name: subprocess.Popen(
            [str(BIN / "sfh"), "reproduce", str(EXPERIMENTS / f"{name}.yaml"), "--smoke", "--rows", first,
             "--address", head.address, "--storage", str(tmp_path / "ray"), "--tracking-uri", stores[name].uri],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for name, first in firsts.items()
    }
    outputs = {name: driver.communicate(timeout=900)[0] for name, driver in drivers.items()}
    for name, first in firsts.items():
        out, store = outputs[name], stores[name]
        assert drivers[name].returncode == 0, out
        (run,) = runs_by_key(store, f"{name}-smoke").values()
        assert run.data.tags[tracking.RUN_KEY].startswith(f"{name}-smoke/{first}/seed")
        check_finished_trial(store, run)
        assert f"| {first} |" in out and "| 1/1 |" in out and "NOT RUN" in out  # the other rows


def test_reproduce_on_the_private_local_ray_against_an_mlflow_server(mlflow_server: str, tmp_path: Path,
                                                                    capsys) -> None:
    """Without --address: a private Ray of its own on 127.0.0.2 (the trials' node, as their runs record)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    driver = subprocess.run(
        [str(BIN / "sfh"), "reproduce", str(EXPERIMENTS / "demo.yaml"), "--smoke", "--seeds", "2", "--rows",
         "spikingformer", "--storage", str(tmp_path / "ray"), "--tracking-uri", mlflow_server],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    out = driver.stdout
    assert driver.returncode == 0, out + driver.stderr
    assert f"Ray local at {LOCAL_NODE_IP}: 1 node(s)" in out
    server = tracking.Tracking(mlflow_server)
    runs = runs_by_key(server, "demo-smoke")
    assert sorted(runs) == ["demo-smoke/spikingformer/seed0", "demo-smoke/spikingformer/seed1"]
    for run in runs.values():
        check_finished_trial(server, run)
        assert run.data.tags["sfh.node"] == LOCAL_NODE_IP
    assert "| spikingformer | n/a |" in out and "| 2/2 | n/a |" in out
    for seed in (0, 1):  # the progress lines, in place of Tune's tables
        assert f"spikingformer seed{seed}" in out and "epoch 1/1  top-1" in out and "done in" in out
    assert "Trial status" not in out and "Number of trials" not in out
    # Run again: every (row, seed) is FINISHED, so nothing trains and no run is added.
    assert sfh("reproduce", EXPERIMENTS / "demo.yaml", "--smoke", "--seeds", "2", "--rows", "spikingformer",
               "--tracking-uri", mlflow_server, "--storage", tmp_path / "ray") == 0
    assert "already FINISHED" in capsys.readouterr().out
    assert len(server.trial_runs("demo-smoke")) == 2


def test_a_row_larger_than_the_cluster_fails_before_training(head: RayNode, store: tracking.Tracking, tmp_path: Path,
                                                             capsys) -> None:
    code = sfh("reproduce", EXPERIMENTS / "imagenet.yaml", "--rows", "8-384", "--address", head.address,
               "--storage", tmp_path / "ray", "--tracking-uri", store.uri)
    assert code == 2
    assert f"cannot be scheduled (CPU: needs 64.01, cluster has {LOGICAL_CPUS})" in capsys.readouterr().err
    assert store.trial_runs("imagenet") == []


CHAOS = {
    "name": "chaos",
    "paper": {"arxiv": "-", "table": "kill tests", "source": "-"},
    "recipe": "digits",
    "train": {"data": {"train_size": 256, "eval_size": 120}, "runtime": {"device": "cpu", "amp": "none"}},
    "resources": {"num_workers": 1, "use_gpu": False, "cpus_per_worker": 1},
    "rows": [
        {"id": "ddp", "model": {"name": "spikingformer_cifar_2_384"}, "resources": {"num_workers": 2}},
        {"id": "single", "model": {"name": "spikformer_cifar_2_384"}},
    ],
}
EPOCHS = 4


def reported_epochs(storage: Path, row: str) -> list[int]:
    """Epochs Tune received for ``row``'s trial from its latest trial process (after a restore, the resumed one)."""
    (result,) = storage.glob(f"chaos-e{EPOCHS}/{row}-seed0-*/result.json")
    lines = [json.loads(line) for line in result.read_text().splitlines()]
    return [int(r["epoch"]) for r in lines if r["pid"] == lines[-1]["pid"]]


def test_worker_and_driver_kills_then_resume(head: RayNode, store: tracking.Tracking, tmp_path: Path, capsys) -> None:
    """SIGKILL a DDP worker mid-trial (Ray Train restarts the group from the last checkpoint), then SIGKILL the
    driver mid-way through the next row, then ``sfh resume``: every row finishes, no epoch is trained twice,
    one MLflow run per (row, seed)."""
    experiment = tmp_path / "chaos.yaml"
    experiment.write_text(yaml.safe_dump(CHAOS))
    storage = tmp_path / "ray"
    name = f"chaos-e{EPOCHS}"
    log = (tmp_path / "driver.log").open("w")
    driver = subprocess.Popen(
        [str(BIN / "sfh"), "reproduce", str(experiment), "--epochs", str(EPOCHS), "--max-concurrent", "1",
         "--address", head.address, "--storage", str(storage), "--tracking-uri", store.uri],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        def epochs_logged(row: str) -> int:
            run = runs_by_key(store, name).get(f"{name}/{row}/seed0")
            return len(store.client.get_metric_history(run.info.run_id, "epoch")) if run else 0

        wait_for(lambda: epochs_logged("ddp") >= 1, 300, "the first epoch of the DDP row")
        workers = wait_for(lambda: head.pids(TRAIN_WORKER), 30, "the Train workers")
        assert len(workers) == 2
        os.kill(workers[-1], signal.SIGKILL)
        wait_for(lambda: set(head.pids(TRAIN_WORKER)) - set(workers), 120, "a restarted worker group")
        wait_for(lambda: epochs_logged("single") >= 1, 300, "the first epoch of the second row")
        driver.kill()
        driver.wait(timeout=30)
        wait_for(lambda: not head.pids(TRAIN_WORKER), 120, "the dead driver's workers to go")
        logged_before_kill = epochs_logged("single")
    finally:
        if driver.poll() is None:
            driver.kill()
        log.close()
    ddp_reports = reported_epochs(storage, "ddp")  # the restarted group went on from its checkpoint
    assert ddp_reports == list(range(EPOCHS)), (ddp_reports, (tmp_path / "driver.log").read_text())
    assert logged_before_kill < EPOCHS
    capsys.readouterr()

    assert sfh("resume", name, "--address", head.address, "--storage", storage) == 0
    out = capsys.readouterr().out
    assert "| ddp | n/a |" in out and "| single | n/a |" in out and out.count("| 1/1 | n/a |") == 2
    assert reported_epochs(storage, "ddp") == ddp_reports  # the finished row did not run again
    resumed = reported_epochs(storage, "single")  # from its last checkpoint: the last logged epoch or the one before
    assert resumed == list(range(resumed[0], EPOCHS)) and logged_before_kill - 1 <= resumed[0] <= logged_before_kill
    runs = runs_by_key(store, name)
    assert sorted(runs) == [f"{name}/ddp/seed0", f"{name}/single/seed0"]
    for run in runs.values():
        check_finished_trial(store, run)
    assert runs[f"{name}/ddp/seed0"].data.tags["sfh.world_size"] == "2"
    for row in ("ddp", "single"):  # the resumed trial went on in its own Train run, not a new one
        assert len(list((storage / name / "train").glob(f"{name}-{row}-seed0-*"))) == 1, row
    scratch = Path(tempfile.gettempdir()) / f"sfh-trials-{os.getuid()}"
    assert not list(scratch.glob(f"{name}-*")), "a trial's worker scratch outlived it"
    parents = [r for r in store.client.search_runs([store.find_experiment(name)], f"tags.`{tracking.KIND}` = 'parent'")]
    assert [p.info.status for p in parents] == ["FINISHED"]
