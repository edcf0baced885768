"""End to end through ``sfh``: a real Ray cluster on loopback, real MLflow (sqlite and a server), real kills.

The session's Ray head (``ray_head`` in tests/conftest.py: ``ray start --block`` on loopback, its process group
stopped at the end); every command joins it with ``--address``, except one that starts the private local Ray.
Slow: minutes on a 2-core CPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from helpers.driver import REPO, SFH, Driver
from helpers.ray_nodes import PRIVATE_LOCAL_RAY, SESSION_HEAD_CPUS, RayNode, wait_for
from helpers.runs import check_finished_trial, runs_by_key

from harness import tracking
from harness.cli import main
from harness.run.cluster import LOCAL_NODE_IP

pytestmark = pytest.mark.ray

EXPERIMENTS = REPO / "experiments"
TRAIN_WORKER = "RayTrainWorker"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tracking.Tracking:
    return tracking.Tracking(f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}")


def sfh(*args: str) -> int:
    return main([str(a) for a in args])


@PRIVATE_LOCAL_RAY
def test_reproduce_on_the_private_local_ray_against_an_mlflow_server(mlflow_server: str, tmp_path: Path,
                                                                    capsys) -> None:
    """Without --address: a private Ray of its own on 127.0.0.2 (the trials' node, as their runs record)."""
    # A plan first (one timed step): the launch prints its projection and the table its plan-vs-actual ratio. The
    # system-metrics monitor samples often enough for seconds-long trials.
    # Both in processes of their own, as users run them.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    planned = subprocess.run(
        [str(SFH), "plan", str(EXPERIMENTS / "demo.yaml"), "--smoke", "--seeds", "2", "--rows", "spikingformer",
         "--steps", "1", "--tracking-uri", mlflow_server, "--storage", str(tmp_path / "plan")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert planned.returncode == 0, planned.stdout + planned.stderr
    env["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"] = "0.2"
    driver = subprocess.run(
        [str(SFH), "reproduce", str(EXPERIMENTS / "demo.yaml"), "--smoke", "--seeds", "2", "--rows",
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
    assert re.search(r"^\| spikingformer \| .*\| 2/2 \|", out, re.M), out  # the row, both seeds finished
    # What it cost: the plan's projection before the launch; each run's training time and device-hours, its
    # energy or (no counters, as here) n/a with the reason, MLflow's system metrics; the ratio to the plan.
    assert "plan (cpu (1 threads), 1 timed steps a row): 2 trial(s) projected at" in out
    for run in runs.values():
        metrics, source = run.data.metrics, run.data.tags["sfh.energy.source"]
        assert metrics["train_time_s"] > 0 and metrics["device_hours"] == pytest.approx(metrics["train_time_s"] / 3600)
        assert ("energy_kWh" in metrics) != source.startswith("n/a: "), source
        assert "system/cpu_utilization_percentage" in metrics
    assert re.search(r"\| spikingformer \| 2 \| \S+ / \S+ \| \d+\.\d\d \| ", out), out
    for seed in (0, 1):  # the progress lines, in place of Tune's tables
        assert f"spikingformer seed{seed}" in out and "epoch 1/1  top-1" in out and "done in" in out
    assert "Trial status" not in out and "Number of trials" not in out
    # Run again: every (row, seed) is FINISHED, so nothing trains and no run is added.
    assert sfh("reproduce", EXPERIMENTS / "demo.yaml", "--smoke", "--seeds", "2", "--rows", "spikingformer",
               "--tracking-uri", mlflow_server, "--storage", tmp_path / "ray") == 0
    assert "already FINISHED" in capsys.readouterr().out
    assert len(server.trial_runs("demo-smoke")) == 2


def test_a_row_larger_than_the_cluster_fails_before_training(ray_head: RayNode, store: tracking.Tracking,
                                                             tmp_path: Path, capsys) -> None:
    """The resource check runs once Ray is up (no data is needed to know the row cannot fit)."""
    code = sfh("reproduce", EXPERIMENTS / "imagenet.yaml", "--rows", "8-384", "--address", ray_head.address,
               "--storage", tmp_path / "ray", "--tracking-uri", store.uri, "--skip-data-check")
    assert code == 2
    assert f"cannot be scheduled (CPU: needs 64.01, cluster has {SESSION_HEAD_CPUS})" in capsys.readouterr().err
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
EPOCHS = 5


def reported_epochs(storage: Path, row: str) -> list[int]:
    """Epochs Tune received for ``row``'s trial from its latest trial process (after a restore, the resumed one)."""
    (result,) = storage.glob(f"chaos-e{EPOCHS}/{row}-seed0-*/result.json")
    lines = [json.loads(line) for line in result.read_text().splitlines()]
    return [int(r["epoch"]) for r in lines if r["pid"] == lines[-1]["pid"]]


def test_worker_and_driver_kills_then_resume(ray_head: RayNode, store: tracking.Tracking, tmp_path: Path,
                                             capsys) -> None:
    """SIGKILL a DDP worker mid-trial (Ray Train restarts the group from the last checkpoint), then SIGKILL the
    driver mid-way through the next row: its lock stays, naming a pid that is gone. Truncate the newest checkpoint
    of that row. ``sfh resume`` takes the lock over, skips the truncated file (named on the run) and finishes from an
    intact one: every row finishes, no epoch is trained twice, one MLflow run per (row, seed)."""
    experiment = tmp_path / "chaos.yaml"
    experiment.write_text(yaml.safe_dump(CHAOS))
    storage = tmp_path / "ray"
    name = f"chaos-e{EPOCHS}"
    launch = Driver(["reproduce", experiment, "--epochs", EPOCHS, "--max-concurrent", "1", "--address",
                     ray_head.address, "--storage", storage, "--tracking-uri", store.uri], tmp_path / "driver.log",
                    env=ray_head.driver_env())
    with launch as driver:
        def epochs_logged(row: str) -> int:
            run = runs_by_key(store, name).get(f"{name}/{row}/seed0")
            return len(store.client.get_metric_history(run.info.run_id, tracking.EPOCH_KEY)) if run else 0

        wait_for(lambda: epochs_logged("ddp") >= 1, 300, "the first epoch of the DDP row")
        workers = wait_for(lambda: ray_head.pids(TRAIN_WORKER), 30, "the Train workers")
        assert len(workers) == 2
        os.kill(workers[-1], signal.SIGKILL)
        wait_for(lambda: set(ray_head.pids(TRAIN_WORKER)) - set(workers), 120, "a restarted worker group")
        wait_for(lambda: epochs_logged("single") >= 2, 300, "two epochs of the second row")
        driver.kill()
        driver.wait(timeout=30)
        wait_for(lambda: not ray_head.pids(TRAIN_WORKER), 120, "the dead driver's workers to go")
        logged_before_kill = epochs_logged("single")
    ddp_reports = reported_epochs(storage, "ddp")  # the restarted group went on from its checkpoint
    assert ddp_reports == list(range(EPOCHS)), (ddp_reports, launch.out())
    assert logged_before_kill < EPOCHS
    held = json.loads((storage / name / "sfh.lock").read_text())
    assert held["pid"] == driver.pid
    (single_run,) = (storage / name / "train").glob(f"{name}-single-seed0-*")
    newest = sorted(p for p in single_run.glob("checkpoint_*") if p.is_dir())[-1] / "last.pt"  # not Train's snapshot
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    capsys.readouterr()

    assert sfh("resume", name, "--address", ray_head.address, "--storage", storage) == 0
    captured = capsys.readouterr()
    out, err = captured.out, captured.err
    assert f"taking over the lock {storage / name / 'sfh.lock'}" in err and "is no longer running" in err
    assert "| ddp | n/a |" in out and "| single | n/a |" in out and out.count("| 1/1 | n/a |") == 2
    assert reported_epochs(storage, "ddp") == ddp_reports  # the finished row did not run again
    resumed = reported_epochs(storage, "single")  # from an intact checkpoint before the truncated newest one
    assert resumed == list(range(resumed[0], EPOCHS)) and logged_before_kill - 2 <= resumed[0] < logged_before_kill
    runs = runs_by_key(store, name)
    assert sorted(runs) == [f"{name}/ddp/seed0", f"{name}/single/seed0"]
    for run in runs.values():
        check_finished_trial(store, run)
    assert runs[f"{name}/ddp/seed0"].data.tags["sfh.world_size"] == "2"
    skipped = runs[f"{name}/single/seed0"].data.tags["sfh.resume.skipped"]
    assert f"cannot read checkpoint {newest}: it is truncated or corrupt" in skipped
    assert str(newest) not in runs[f"{name}/single/seed0"].data.tags["sfh.resume.from"]
    for row in ("ddp", "single"):  # the resumed trial went on in its own Train run, not a new one
        assert len(list((storage / name / "train").glob(f"{name}-{row}-seed0-*"))) == 1, row
    # This run's trials' scratch folders (named after the Train storage, so another run's leftovers are not ours)
    train_storage = f"{storage.resolve()}/{name}/train"
    scratch = Path(tempfile.gettempdir()) / f"sfh-trials-{os.getuid()}"
    mine = f"{name}-*-{hashlib.sha256(train_storage.encode()).hexdigest()[:8]}"
    assert not list(scratch.glob(mine)), "a trial's worker scratch outlived it"
    parents = [r for r in store.client.search_runs([store.find_experiment(name)], f"tags.`{tracking.KIND}` = 'parent'")]
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert not (storage / name / "sfh.lock").exists()


#: Two rows on digits: `ok` trains, `nan` diverges in its first epoch (SGD at lr 1e30). Written as text so that
#: the CLI reads `1e30` (YAML 1.1 would make it a string) and `--epochs` leaves room to interrupt `ok`.
RELIABILITY = """
name: rely
paper: {arxiv: "-", table: reliability tests, source: "-"}
recipe: digits
train:
  data: {train_size: 128, eval_size: 60, batch_size: 16}
  runtime: {device: cpu, amp: none}
resources: {num_workers: 1, use_gpu: false, cpus_per_worker: 1}
rows:
  - id: ok
    model: {name: spikingformer_cifar_2_384}
  - id: nan
    model: {name: spikingformer_cifar_2_384}
    train: {optim: {opt: sgd, lr: 1e30}}
"""


def _epochs_logged(store: tracking.Tracking, name: str, row: str) -> int:
    run = runs_by_key(store, name).get(f"{name}/{row}/seed0")
    return len(store.client.get_metric_history(run.info.run_id, tracking.EPOCH_KEY)) if run else 0


def _status(store: tracking.Tracking, name: str, row: str) -> str | None:
    run = runs_by_key(store, name).get(f"{name}/{row}/seed0")
    return run.info.status if run else None


def test_one_driver_per_experiment_nan_fails_once_and_ctrl_c_kills(ray_head: RayNode, store: tracking.Tracking,
                                                                   tmp_path: Path) -> None:
    """A second launch of a running experiment is refused at once; a NaN trial fails in one attempt with its
    reason on its run; Ctrl-C marks the parent and the unfinished trial KILLED, exits 130 and names `sfh resume`."""
    experiment = tmp_path / "rely.yaml"
    experiment.write_text(RELIABILITY)
    storage, name = tmp_path / "ray", "rely-e30"
    command = ["reproduce", str(experiment), "--epochs", "30", "--address", ray_head.address, "--storage", str(storage),
               "--tracking-uri", store.uri]
    launch = Driver(command, tmp_path / "driver.log", env=ray_head.driver_env())
    with launch as driver:
        wait_for(lambda: _status(store, name, "ok") == "RUNNING", 300, "the first driver's trials")
        began = time.monotonic()
        second = subprocess.run([str(SFH), *command], cwd=REPO, env=ray_head.driver_env(), capture_output=True,
                                text=True, timeout=300)
        print(f"second launch refused after {time.monotonic() - began:.1f} s (process start included)")
        assert second.returncode == 75, second.stdout + second.stderr
        assert f"experiment {name} is already running" in second.stderr and f"pid {driver.pid}" in second.stderr
        # The driver's line, not the MLflow status: the trial records its failure before Tune hears of it.
        wait_for(lambda: "FAILED after" in launch.out(), 300, "the NaN trial to fail")
        wait_for(lambda: _epochs_logged(store, name, "ok") >= 1, 300, "an epoch of the healthy row")
        driver.send_signal(signal.SIGINT)
        code = driver.wait(timeout=300)
    out = launch.out()
    assert code == 130, out
    assert f"sfh resume {name} --storage {storage}" in out and f"make resume NAME={name}" in out, out
    assert "Tuner.restore" not in out and "retrying" not in out, out  # the NaN trial had one attempt
    assert "nan seed0              FAILED after" in out and "training loss is nan" in out, out
    runs = runs_by_key(store, name)
    nan, ok = runs[f"{name}/nan/seed0"], runs[f"{name}/ok/seed0"]
    assert nan.data.tags[tracking.FAILURE_KIND] == "deterministic"
    assert "FloatingPointError: epoch 0: training loss is nan" in nan.data.tags[tracking.FAILURE]
    failure = Path(store.client.download_artifacts(nan.info.run_id, tracking.FAILURE_ARTIFACT, str(tmp_path)))
    assert "FloatingPointError: epoch 0: training loss is nan" in failure.read_text()  # with the worker traceback
    seconds = (nan.info.end_time - nan.info.start_time) / 1000
    print(f"NaN trial: FAILED {seconds:.1f} s after its run opened")  # the figure in the closing note
    assert not store.client.get_metric_history(nan.info.run_id, tracking.EPOCH_KEY)  # no epoch of a diverged run
    assert ok.info.status == "KILLED" and ok.data.tags[tracking.FAILURE_KIND] == "interrupted"
    logged = sorted(m.step for m in store.client.get_metric_history(ok.info.run_id, tracking.EPOCH_KEY))
    assert logged == list(range(len(logged))), "an epoch logged twice or skipped"
    parent = store.client.get_run(ok.data.tags[tracking.PARENT_RUN_ID])
    assert parent.info.status == "KILLED"
    table = format_table_of(experiment, store, name)
    assert "- nan seed 0: FAILED: rank 0: FloatingPointError: epoch 0: training loss is nan" in table
    assert "- ok seed 0: KILLED: interrupted (Ctrl-C) before it finished" in table
    assert not (storage / name / "sfh.lock").exists()


def format_table_of(experiment: Path, store: tracking.Tracking, name: str) -> str:
    from harness.experiment import load_experiment
    from harness.results import format_table

    return format_table(load_experiment(experiment), store.uri, name=name)
