"""End to end through ``sfh``: a real Ray cluster on loopback, real MLflow (sqlite and a server), real kills.

One Ray head for the whole module (``ray start --block`` on 127.0.0.2, its process group stopped at the
end); every command joins it with ``--address``. Slow: minutes on a 2-core CPU.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from harness import tracking
from harness.cli import main

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXPERIMENTS = REPO / "experiments"
PAPER_FILES = ("imagenet", "cifar10", "cifar100", "cifar10-dvs", "dvs128-gesture")
HOST = "127.0.0.2"
#: Logical CPUs of the test head: more than the cores, so the five smoke trials overlap their start-up waits.
LOGICAL_CPUS = 6


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def descendants(root: int) -> dict[int, str]:
    """pid -> command line of every live descendant of ``root`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = {}, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        try:
            found[pid] = (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        todo += children.get(pid, [])
    return found


def wait_for(condition: Callable[[], object], timeout: float, what: str, every: float = 0.3) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")


class Head:
    """A Ray head started by this test session, and everything it spawned."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port(HOST)
        self.address = f"{HOST}:{self.port}"
        self.lines: list[str] = []
        ports = {"--ray-client-server-port": free_port(), "--dashboard-port": free_port(),
                 "--dashboard-agent-listen-port": free_port()}
        self.proc = subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", "--block", f"--node-ip-address={HOST}", f"--port={self.port}",
             f"--num-cpus={LOGICAL_CPUS}", "--disable-usage-stats", *[f"{k}={v}" for k, v in ports.items()]],
            # Loopback only, so no token auth (a joining driver would need RAY_AUTH_MODE=token and the token).
            env={**os.environ, "RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "disabled"}, cwd=tmp,
            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True).start()
        wait_for(lambda: self.proc.poll() is not None or any("Ray runtime started" in x for x in self.lines),
                 120, "the Ray head")
        assert self.proc.poll() is None, "".join(self.lines)

    def processes(self, title: str) -> list[int]:
        """Pids of this cluster's processes whose command line contains ``title`` (e.g. a Train worker)."""
        return sorted(pid for pid, cmdline in descendants(self.proc.pid).items() if title in cmdline)

    def stop(self) -> None:
        """SIGKILL the head's process tree: nothing in a test cluster needs a graceful exit."""
        tree = self.processes("")
        os.killpg(self.proc.pid, signal.SIGKILL)
        for pid in tree:  # what left the group (Ray's agents start sessions of their own)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Head]:
    cluster = Head(tmp_path_factory.mktemp("ray"))
    yield cluster
    cluster.stop()


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


def test_smoke_every_paper_table(head: Head, tmp_path: Path) -> None:
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


def test_reproduce_against_an_mlflow_server(head: Head, mlflow_server: str, tmp_path: Path, capsys) -> None:
    code = sfh("reproduce", EXPERIMENTS / "demo.yaml", "--smoke", "--seeds", "2", "--rows", "spikingformer",
               "--address", head.address, "--storage", tmp_path / "ray", "--tracking-uri", mlflow_server)
    out = capsys.readouterr().out
    assert code == 0, out
    server = tracking.Tracking(mlflow_server)
    runs = runs_by_key(server, "demo-smoke")
    assert sorted(runs) == ["demo-smoke/spikingformer/seed0", "demo-smoke/spikingformer/seed1"]
    for run in runs.values():
        check_finished_trial(server, run)
    assert "| spikingformer | n/a |" in out and "| 2/2 | n/a |" in out
    for seed in (0, 1):  # the progress lines, in place of Tune's tables
        assert f"spikingformer seed{seed}" in out and "epoch 1/1  top-1" in out and "done in" in out
    assert "Trial status" not in out and "Number of trials" not in out
    # Run again: every (row, seed) is FINISHED, so nothing trains and no run is added.
    assert sfh("reproduce", EXPERIMENTS / "demo.yaml", "--smoke", "--seeds", "2", "--rows", "spikingformer",
               "--tracking-uri", mlflow_server, "--storage", tmp_path / "ray") == 0
    assert "already FINISHED" in capsys.readouterr().out
    assert len(server.trial_runs("demo-smoke")) == 2


def test_a_row_larger_than_the_cluster_fails_before_training(head: Head, store: tracking.Tracking, tmp_path: Path,
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


def test_worker_and_driver_kills_then_resume(head: Head, store: tracking.Tracking, tmp_path: Path, capsys) -> None:
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
        workers = wait_for(lambda: head.processes("RayTrainWorker"), 30, "the Train workers")
        assert len(workers) == 2
        os.kill(workers[-1], signal.SIGKILL)
        wait_for(lambda: set(head.processes("RayTrainWorker")) - set(workers), 120, "a restarted worker group")
        wait_for(lambda: epochs_logged("single") >= 1, 300, "the first epoch of the second row")
        driver.kill()
        driver.wait(timeout=30)
        wait_for(lambda: not head.processes("RayTrainWorker"), 120, "the dead driver's workers to go")
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
    parents = [r for r in store.client.search_runs([store.find_experiment(name)], f"tags.`{tracking.KIND}` = 'parent'")]
    assert [p.info.status for p in parents] == ["FINISHED"]
