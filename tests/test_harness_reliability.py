"""The experiment lock, the tracking store's safe creation, and the driver-side checks that need no Ray.

Real processes and files throughout: a holder is a real subprocess (killed with SIGKILL to leave a stale lock),
two real processes create one MLflow sqlite store at once.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers.ray_nodes import free_port, wait_for

from harness import tracking
from harness.cli import EXIT_LOCKED, main
from harness.experiment import Experiment, load_experiment
from harness.run import lock
from harness.run.cluster import check_reachable
from harness.run.specs import check_data_folders, trial_specs

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "experiments" / "demo.yaml"

#: A driver stand-in: takes the lock of experiment "x" under argv[1], says so, then waits to be killed.
_HOLDER = """
import sys, time
from harness.run import lock
with lock.hold(sys.argv[1], "x", "experiment x"):
    print("held", flush=True)
    time.sleep(600)
"""


def _holder(storage: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(storage)], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_driver_is_refused_naming_the_holder_and_a_killed_one_is_taken_over(tmp_path: Path,
                                                                                      capsys) -> None:
    holder = _holder(tmp_path)
    try:
        record = json.loads((tmp_path / "x" / lock.LOCK_FILE).read_text())
        assert record["pid"] == holder.pid and record["host"] == socket.gethostname()
        with pytest.raises(lock.LockHeld) as refused, lock.hold(str(tmp_path), "x", "experiment x"):
            pass
        text = str(refused.value)
        assert f"pid {holder.pid} on {socket.gethostname()}" in text and "sfh resume" in text
        assert "experiment x is already running" in text
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    # The holder died without releasing: its pid is gone from this host, so the lock is stale at once.
    with lock.hold(str(tmp_path), "x", "experiment x") as taken:
        assert json.loads(taken.path.read_text())["pid"] == os.getpid()
    err = capsys.readouterr().err
    assert f"taking over the lock {tmp_path / 'x' / lock.LOCK_FILE}" in err and "is no longer running" in err
    assert not (tmp_path / "x" / lock.LOCK_FILE).exists(), "a released lock is removed"


def test_a_lock_from_another_host_is_stale_only_without_heartbeat(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "x"
    folder.mkdir()
    path = folder / lock.LOCK_FILE
    path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "pid_started": None, "since": "earlier",
                                "command": "sfh reproduce x.yaml", "token": "theirs"}))
    with pytest.raises(lock.LockHeld, match="pid 1 on elsewhere"):  # fresh heartbeat: cannot tell it died
        lock.ExperimentLock(folder, "experiment x").acquire()
    old = time.time() - lock.STALE_AFTER_S - 5
    os.utime(path, (old, old))
    taken = lock.ExperimentLock(folder, "experiment x")
    taken.acquire()
    try:
        assert "has not refreshed it for" in capsys.readouterr().err
    finally:
        taken.release()


def test_the_heartbeat_keeps_the_lock_fresh(tmp_path: Path) -> None:
    held = lock.ExperimentLock(tmp_path, "experiment x", heartbeat=0.2)
    held.acquire()
    try:
        old = time.time() - 100
        os.utime(held.path, (old, old))
        wait_for(lambda: time.time() - held.path.stat().st_mtime < 5, 10, "a heartbeat")
    finally:
        held.release()
    assert not held.path.exists()


def test_the_cli_refuses_a_locked_experiment_at_once(tmp_path: Path, capsys) -> None:
    holder = _holder(tmp_path / "ray")
    try:
        # The experiment folder of demo-smoke is locked by another process: refused before MLflow or Ray.
        (tmp_path / "ray" / "x").rename(tmp_path / "ray" / "demo-smoke")
        began = time.monotonic()
        code = main(["reproduce", str(DEMO), "--smoke", "--storage", str(tmp_path / "ray"),
                     "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
        assert code == EXIT_LOCKED and time.monotonic() - began < 30
        err = capsys.readouterr().err
        assert "experiment demo-smoke is already running" in err and f"pid {holder.pid}" in err
        assert not (tmp_path / "mlflow.db").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)


_CREATE = """
import sys
from harness.tracking import Tracking
store = Tracking(sys.argv[1])
print(store.experiment_id("e" + sys.argv[2]))
"""


def test_two_processes_create_one_sqlite_store_at_once(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    procs = [subprocess.Popen([sys.executable, "-c", _CREATE, uri, str(k)], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for k in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for proc, (_out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    assert {e.name for e in tracking.Tracking(uri).client.search_experiments()} >= {"e0", "e1"}


def test_scientific_notation_is_a_number_and_row_errors_name_the_row(tmp_path: Path) -> None:
    text = DEMO.read_text().replace("train:\n  runtime:", "train:\n  optim: {lr: 1e-4, weight_decay: 5E-2}\n  runtime:")
    path = tmp_path / "demo.yaml"
    path.write_text(text)
    experiment = load_experiment(path)
    config = experiment.train_config(experiment.rows[0])
    assert config.optim.lr == pytest.approx(1e-4) and config.optim.weight_decay == pytest.approx(0.05)
    data = yaml.safe_load(DEMO.read_text())
    data["rows"][1]["paper"] = {"top1": "high"}
    with pytest.raises(ValueError, match=r"demo.yaml: row spikformer\.paper\.top1: 'high'"):
        Experiment.from_dict(data, where="demo.yaml")


def test_missing_data_folders_fail_before_ray_naming_the_rows(tmp_path: Path) -> None:
    experiment = load_experiment(REPO / "experiments" / "cifar10.yaml")
    specs = trial_specs(experiment, name="cifar10", rows=None, seeds=1, tracking_uri="sqlite:///unused.db",
                 train_storage=str(tmp_path), data_root=str(tmp_path / "data"))
    with pytest.raises(FileNotFoundError) as missing:
        check_data_folders(specs)
    text = str(missing.value)
    assert f"cifar10 data folder {tmp_path / 'data' / 'cifar10'} does not exist" in text
    assert all(row.id in text for row in experiment.rows) and "--skip-data-check" in text
    batches = tmp_path / "data" / "cifar10" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    (batches / "batches.meta").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="lacks data_batch_1, data_batch_2"):
        check_data_folders(specs)


def test_an_unreachable_address_fails_within_the_limit() -> None:
    began = time.monotonic()
    with pytest.raises(ConnectionError, match="no Ray head answers there after 2 s"):
        check_reachable(f"127.0.0.2:{free_port('127.0.0.2')}", timeout=2)
    assert time.monotonic() - began < 15


def test_deterministic_worker_errors_end_a_trial_and_lost_workers_are_retried() -> None:
    """What Ray Train hands back (each failed rank's own exception) decides whether a retry can help."""
    from ray.exceptions import ActorDiedError
    from ray.train import WorkerGroupError

    from harness.run.trial import deterministic_cause, first_line

    nan = WorkerGroupError("rank 0 failed", {0: FloatingPointError("epoch 0: training loss is nan"),
                                             1: RuntimeError("Connection closed by peer")})
    assert deterministic_cause(nan) == "rank 0: FloatingPointError: epoch 0: training loss is nan"
    data = WorkerGroupError("rank 1 failed", {1: FileNotFoundError("cifar10 data folder /x does not exist")})
    assert deterministic_cause(data) == "rank 1: FileNotFoundError: cifar10 data folder /x does not exist"
    lost = WorkerGroupError("rank 1 died", {1: ActorDiedError()})
    assert deterministic_cause(lost) is None
    assert deterministic_cause(WorkerGroupError("gloo", {0: RuntimeError("Connection reset by peer")})) is None
    assert first_line(nan) == "rank 0 failed"


def test_a_restarted_rank_resumes_from_the_newest_intact_of_the_checkpoints_ray_train_keeps(tmp_path: Path) -> None:
    """Ray Train keeps the last two reported checkpoints: with both files of the newest cut short, the rank
    resumes from the older one, tags the run with where from and what was skipped (their storage paths), and
    drops the broken local copies so they are never reported again."""
    import ray.train
    import torch

    from harness.run.trial import _resume_point
    from spikingformer.checkpoints.training import save_checkpoint

    run = tmp_path / "storage" / "run"
    older, newest = run / "checkpoint_2026-12-01_10-00-00.000001", run / "checkpoint_2026-12-01_10-05-00.000001"
    for folder, epoch in ((older, 0), (newest, 1)):
        for name in ("last.pt", "best.pt"):
            save_checkpoint({"epoch": epoch, "model": {"w": torch.zeros(256)}}, folder / name)
    for name in ("last.pt", "best.pt"):
        (newest / name).write_bytes((newest / name).read_bytes()[:100])
    work, scratch = tmp_path / "scratch" / "checkpoints", tmp_path / "scratch"
    work.mkdir(parents=True)
    resume = _resume_point(ray.train.Checkpoint(str(newest)), "", work, scratch)
    assert resume.path == scratch / "older-0" / "last.pt"
    assert resume.tags["sfh.resume.from"] == f"{older / 'last.pt'} (epoch 0)"
    skipped = resume.tags["sfh.resume.skipped"]
    assert f"cannot read checkpoint {newest / 'last.pt'}: it is truncated or corrupt" in skipped
    assert f"cannot read checkpoint {newest / 'best.pt'}: it is truncated or corrupt" in skipped
    assert not list(work.iterdir()), "the unreadable local copies are gone"
    assert (newest / "last.pt").stat().st_size == 100, "the storage itself is left as it is"


def test_a_restarted_rank_resumes_from_the_in_epoch_checkpoint_when_it_got_further(tmp_path: Path) -> None:
    """Rank 0's in-epoch checkpoint in the Train storage beats Ray's epoch-end one when it is further on, and
    is found with no Ray checkpoint at all (a kill inside the first epoch)."""
    import ray.train
    import torch

    from harness.run.trial import IN_EPOCH, _resume_point, upload_in_epoch
    from spikingformer.checkpoints.training import save_checkpoint

    run = tmp_path / "storage" / "run"
    epoch_end = run / "checkpoint_2026-12-01_10-00-00.000001"
    save_checkpoint({"epoch": 0, "model": {"w": torch.zeros(4)}}, epoch_end / "last.pt")
    local = save_checkpoint({"epoch": 1, "position": {"batches": 3}, "model": {"w": torch.ones(4)}},
                            tmp_path / "work-of-rank0" / "last.pt")
    upload_in_epoch(local, str(run / IN_EPOCH))
    scratch = tmp_path / "scratch"
    (scratch / "checkpoints").mkdir(parents=True)
    resume = _resume_point(ray.train.Checkpoint(str(epoch_end)), str(run / IN_EPOCH), scratch / "checkpoints",
                           scratch)
    assert resume.path == scratch / IN_EPOCH / "last.pt"
    assert resume.tags["sfh.resume.from"] == f"{run / IN_EPOCH / 'last.pt'} (epoch 1, batch 3)"
    assert not list((run / IN_EPOCH).glob(".*.tmp"))
    alone = _resume_point(None, str(run / IN_EPOCH), scratch / "checkpoints", tmp_path / "scratch2")
    assert alone.tags["sfh.resume.from"].endswith("(epoch 1, batch 3)")
    assert _resume_point(None, str(tmp_path / "nothing"), scratch / "checkpoints", tmp_path / "scratch3") is None
