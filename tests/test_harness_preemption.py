"""SIGTERM to `sfh reproduce` through Ray: the trial checkpoints inside its epoch and stops, the command exits 143
naming `sfh resume`, and the resume continues from that batch (not the epoch's start) to a FINISHED run with
every epoch logged once."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
from helpers.driver import REPO, SFH, Driver
from helpers.ray_nodes import RayNode, wait_for

from harness import tracking
from spikingformer.checkpoints.training import load_checkpoint

pytestmark = pytest.mark.ray


#: One digits row, 16 updates per epoch (seconds each), 8 epochs so that SIGTERM after the first lands in
#: training; no in-epoch checkpoint except the one SIGTERM asks for.
EXPERIMENT = """
name: stop
paper: {arxiv: "-", table: preemption test, source: "-"}
recipe: digits
train:
  data: {train_size: 256, eval_size: 60, batch_size: 16}
  schedule: {epochs: 8}
  runtime: {device: cpu, amp: none, checkpoint_every_minutes: null, lif_backend: spikingjelly}
resources: {num_workers: 1, use_gpu: false, cpus_per_worker: 1}
rows:
  - id: ok
    model: {name: spikingformer_cifar_2_384, kwargs: {embed_dim: 32, depth: 1, num_heads: 2, T: 1}}
"""


def test_sigterm_to_the_driver_checkpoints_mid_epoch_and_resume_goes_on_from_there(ray_head: RayNode,
                                                                                   tmp_path: Path) -> None:
    """On the session's head, a cluster that outlives the driver: the stop flag the first driver left there must
    not stop the resumed one."""
    experiment = tmp_path / "stop.yaml"
    experiment.write_text(EXPERIMENT)
    storage, name = tmp_path / "ray", "stop"
    store = tracking.Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}")
    common = ["--storage", str(storage), "--address", ray_head.address]
    launch = Driver(["reproduce", experiment, *common, "--tracking-uri", store.uri], tmp_path / "driver.log",
                    env=ray_head.driver_env())

    def run():
        runs = [r for r in store.trial_runs(name) if r.data.tags[tracking.RUN_KEY] == f"{name}/ok/seed0"]
        return runs[0] if runs else None

    def epochs_logged() -> list[int]:
        found = run()
        if found is None:
            return []
        return sorted(m.step for m in store.client.get_metric_history(found.info.run_id, tracking.EPOCH_KEY))

    with launch as driver:
        try:
            wait_for(lambda: "epoch 1/8" in launch.out() or driver.poll() is not None, 600, "the first epoch")
        except TimeoutError:
            pytest.fail(f"no epoch logged; the driver said:\n{launch.out()[-3000:]}")
        assert driver.poll() is None, launch.out()[-3000:]
        driver.send_signal(signal.SIGTERM)
        code = driver.wait(timeout=300)
    out = launch.out()
    assert code == 143, out
    assert "stopped by SIGTERM" in out and f"sfh resume {name} --storage {storage}" in out, out
    stopped = run()
    assert stopped.info.status == "KILLED" and stopped.data.tags[tracking.FAILURE_KIND] == "stopped", out
    assert "SIGTERM to the driver" in stopped.data.tags[tracking.FAILURE]
    saved = load_checkpoint(next((storage / name / "train").glob("*/sfh_in_epoch")))
    epoch, batches = saved["epoch"], saved["position"]["batches"]
    assert 0 < batches < 16, "the stop landed on an epoch boundary: nothing shows the in-epoch checkpoint"
    assert f"after {batches} batch(es) of epoch {epoch}" in stopped.data.tags[tracking.FAILURE]

    resumed = subprocess.run([str(SFH), "resume", name, *common], cwd=REPO, env=ray_head.driver_env(),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    finished = run()
    assert finished.info.status == "FINISHED"
    assert finished.data.tags["sfh.resume.from"].endswith(f"(epoch {epoch}, batch {batches})")
    assert epochs_logged() == list(range(8))  # every epoch once
