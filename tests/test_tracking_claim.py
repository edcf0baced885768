"""One trainer per tracking store: two drivers with two storage folders and one MLflow store refuse each other,
on sqlite and on a real `mlflow server`; a dead holder's claim is taken over (at once on its host, after its
heartbeat expires elsewhere), and a released claim frees the name."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from harness import tracking
from harness.cli import EXIT_LOCKED, main
from harness.run import claim
from harness.run.lock import LockHeld

REPO = Path(__file__).resolve().parents[1]

#: A driver stand-in: holds experiment argv[2]'s lock under storage argv[1] and its claim in store argv[3].
_HOLDER = """
import sys, time
from harness.run import claim
with claim.held(sys.argv[1], sys.argv[2], "experiment " + sys.argv[2], sys.argv[3]):
    print("held", flush=True)
    time.sleep(600)
"""


def _holder(storage: Path, name: str, uri: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(storage), name, uri], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.fixture(params=["sqlite", "server"])
def store_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mlflow.db'}"
    return request.getfixturevalue("mlflow_server")


def test_two_storages_one_store_refuse_each_other_and_a_killed_holder_is_taken_over(
        tmp_path: Path, store_uri: str, capsys) -> None:
    name = f"claim-{uuid.uuid4().hex[:8]}"
    holder = _holder(tmp_path / "storage-a", name, store_uri)
    try:
        with pytest.raises(LockHeld) as refused, claim.held(str(tmp_path / "storage-b"), name, "experiment", store_uri):
            pass
        text = str(refused.value)
        assert f"pid {holder.pid} on {socket.gethostname()}" in text and "against this MLflow store" in text
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    began = time.monotonic()
    with claim.held(str(tmp_path / "storage-b"), name, "experiment", store_uri):
        assert time.monotonic() - began < 10  # the dead pid on this host: no heartbeat wait
    assert "taking over the claim of experiment in the tracking store" in capsys.readouterr().err
    client = tracking.Tracking(store_uri).client
    assert client.get_experiment_by_name(claim.PREFIX + name) is None  # released: the name is free again


def test_a_claim_from_another_host_is_stale_only_without_heartbeat(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = tracking.Tracking(uri).client
    elsewhere = {claim.HOLDER_TAG + k: v for k, v in {
        "host": "elsewhere", "pid": "1", "pid_started": "", "since": "earlier", "command": "sfh reproduce x",
        "token": "t"}.items()}
    experiment_id = client.create_experiment(claim.PREFIX + "x",
                                             tags={**elsewhere, claim.HEARTBEAT_TAG: str(time.time())})
    with pytest.raises(LockHeld, match="pid 1 on elsewhere"):
        claim.TrackingClaim(client, "x", "experiment x").acquire()
    client.set_experiment_tag(experiment_id, claim.HEARTBEAT_TAG, str(time.time() - 120))
    taken = claim.TrackingClaim(client, "x", "experiment x", heartbeat=0.2)
    taken.acquire()
    try:
        assert taken.experiment_id != experiment_id
        first = float(client.get_experiment(taken.experiment_id).tags[claim.HEARTBEAT_TAG])
        time.sleep(1.0)
        assert float(client.get_experiment(taken.experiment_id).tags[claim.HEARTBEAT_TAG]) > first
    finally:
        taken.release()


def test_reproduce_refuses_before_ray_when_another_storage_holds_the_store(tmp_path: Path, capsys) -> None:
    import ray

    data = yaml.safe_load((REPO / "experiments" / "demo.yaml").read_text())
    data["name"] = name = f"claim-{uuid.uuid4().hex[:8]}"
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(yaml.safe_dump(data))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    holder = _holder(tmp_path / "storage-a", name, uri)
    try:
        code = main(["reproduce", str(experiment), "--storage", str(tmp_path / "storage-b"), "--tracking-uri", uri])
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    err = capsys.readouterr().err
    assert code == EXIT_LOCKED and f"experiment {name} is already running against this MLflow store" in err
    assert not ray.is_initialized()
    assert not (tmp_path / "storage-b" / name / "sfh.lock").exists()  # the storage lock was given back too
