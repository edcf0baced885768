"""A chain on a real Slurm: Debian's slurmctld, slurmd and munge, one node on this machine, configured in the
test's own folder (installed by the fixture when missing: a failure to install fails the test).

The demo's Spikingformer row (on 384 of the digits, so that an epoch takes seconds) is submitted with a
two-minute time limit. Slurm's warning signal (SIGUSR1, a
minute ahead) stops the driver and the job requeues itself; the test then lifts the time limit to an hour, and
once the next run has trained an epoch it requeues the job from outside, as a preemption does; the chain then
runs until every epoch is trained. At the end
the run is FINISHED, it is the only MLflow run of its key, every epoch is logged once and no epoch was trained
twice: each interruption cost at most the epoch in flight (the checkpoint interval).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from helpers.ray_nodes import wait_for
from helpers.slurm_cluster import LocalSlurm, install

from harness import tracking

pytestmark = [pytest.mark.ray, pytest.mark.train, pytest.mark.slurm]

REPO = Path(__file__).resolve().parents[1]
SFH = Path(sys.executable).parent / "sfh"
#: The chain's Ray node (loopback addresses other tests do not use).
RAY_IP = "127.0.0.9"
EPOCHS = 12
NAME = f"demo-e{EPOCHS}"
KEY = f"{NAME}/spikingformer/seed0"


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory):
    install()
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    yield cluster
    cluster.stop()
    _end_ray_of(RAY_IP)


def _end_ray_of(ip: str) -> None:
    """What a job killed mid-start may leave: the Ray processes of the chain's address, by pid."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if f"{ip}:" in text or f"--node-ip-address={ip}" in text:
            try:
                os.kill(int(cmdline.parent.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


def _events(chain: Path) -> list[tuple[float, str]]:
    """(time, text) of each line of the chain's events.log."""
    lines = (chain / "events.log").read_text().splitlines() if (chain / "events.log").exists() else []
    out = []
    for line in lines:
        stamp, _, text = line.partition(" ")
        out.append((datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp(), text))
    return out


def _epochs_printed(chain: Path, job: str) -> list[int]:
    """The epochs the drivers reported as trained, in order, over every run of the job."""
    out = chain / f"job-{job}.out"
    text = out.read_text() if out.exists() else ""
    return [int(m) for m in re.findall(rf"^spikingformer seed0\s+epoch (\d+)/{EPOCHS}\b", text, flags=re.M)]


def test_a_chain_goes_through_its_time_limit_and_a_requeue_and_trains_every_epoch_once(slurm: LocalSlurm,
                                                                                        tmp_path: Path) -> None:
    env = {**slurm.env(), "PYTHONPATH": str(REPO)}
    storage, uri = tmp_path / "ray", f"sqlite:///{tmp_path / 'mlflow.db'}"
    # The demo on spikingjelly's neurons: the fused LIF's kernels are compiled at first use, which another process
    # of the machine may be doing right then (minutes on a busy 2-core machine, the trial waiting on its lock).
    demo = yaml.safe_load((REPO / "experiments" / "demo.yaml").read_text())
    demo["train"]["runtime"]["lif_backend"] = "spikingjelly"
    demo["train"]["data"] = {"train_size": 384, "eval_size": 120}
    experiment = tmp_path / "demo.yaml"
    experiment.write_text(yaml.safe_dump(demo))
    submitted = time.time()
    submit_args = [str(experiment), "--rows", "spikingformer", "--epochs", str(EPOCHS), "--time", "2",
                   "--signal-lead", "60", "--cpus-per-node", "2", "--ray-node-ip", RAY_IP, "--storage", str(storage),
                   "--tracking-uri", uri]
    done = subprocess.run([str(SFH), "slurm", "submit", *submit_args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    job = re.search(r"submitted job (\d+)", done.stdout).group(1)
    chain = storage / "slurm" / NAME
    assert (chain / "job.sbatch").is_file() and (chain / "ray-token").stat().st_mode & 0o077 == 0

    def said(text: str, since: float = 0.0) -> bool:
        return any(text in line and at >= since for at, line in _events(chain))

    def status() -> str:
        return subprocess.run([str(SFH), "slurm", "status", NAME, "--storage", str(storage)], env=env,
                              capture_output=True, text=True, timeout=300).stdout

    try:
        # 1. Slurm's warning before the time limit: the driver stops and the job requeues itself.
        wait_for(lambda: said("SIGUSR1") and said("requeued"), 600, "the time limit's SIGUSR1 and the requeue",
                 every=5)
        first_requeue = max(at for at, line in _events(chain) if "requeued" in line)
        trained_before = len(_epochs_printed(chain, job))
        # From here the job's time limit is an hour (an administrator's change): the runs that follow end by the
        # test's requeue and by finishing, not by more warnings, whatever the machine's load.
        slurm.run("scontrol", "update", f"JobId={job}", "TimeLimit=60")
        # 2. Once a later run has trained an epoch, a requeue from outside (what a preemption does).
        wait_for(lambda: len(_epochs_printed(chain, job)) > trained_before, 600, "an epoch after the requeue",
                 every=3)
        slurm.run("scontrol", "requeue", job)
        requeued_at = time.time()
        wait_for(lambda: said("SIGTERM", requeued_at - 2), 120, "the job to see the requeue's SIGTERM", every=2)
        # 3. The chain runs until every epoch is trained; a job that starts now finds nothing left and ends.
        wait_for(lambda: said("done:"), 900, "the chain to finish", every=5)
        chain_status = status()
    except TimeoutError:
        print((chain / f"job-{job}.out").read_text()[-6000:])
        raise
    assert int(slurm.job(job)["Restarts"]) >= 2
    assert slurm.job(job)["JobState"] == "COMPLETED"
    assert first_requeue > submitted

    store = tracking.Tracking(uri)
    [run] = store.trial_runs(NAME)  # one MLflow run for the key, through every job of the chain
    assert run.data.tags[tracking.RUN_KEY] == KEY and run.info.status == "FINISHED"
    history = store.client.get_metric_history(run.info.run_id, tracking.EPOCH_KEY)
    assert sorted(int(m.step) for m in history) == list(range(EPOCHS))  # every epoch logged once
    # No epoch was trained twice: the epochs the drivers printed only go up, each run going on after the last
    # checkpoint (a driver stopping as an epoch ends may not print that epoch's line: MLflow has it, above).
    printed = _epochs_printed(chain, job)
    assert printed == sorted(set(printed)) and printed[-1] == EPOCHS, printed

    assert f"{KEY:<40} FINISHED    epochs {EPOCHS}/{EPOCHS}" in chain_status
    assert "next: done (all 1 (row, seed) run(s) FINISHED)" in chain_status
    assert f"job {job}: COMPLETED, requeued" in chain_status

    # A job of a chain with nothing left ends at once: no Ray, no requeue.
    again = subprocess.run([str(SFH), "slurm", "submit", *submit_args], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    second = re.search(r"submitted job (\d+)", again.stdout).group(1)
    wait_for(lambda: slurm.job(second)["JobState"] == "COMPLETED", 300, "the second chain's job to end", every=2)
    assert slurm.job(second)["Restarts"] == "0"
    assert said(f"job {second} run 0: done: all 1 (row, seed) run(s) FINISHED")
    assert not said(f"job {second} run 0: reproduce") and not said(f"job {second} run 0: resume")
    cancelled = subprocess.run([str(SFH), "slurm", "cancel", NAME, "--storage", str(storage)], env=env,
                               capture_output=True, text=True, timeout=300)
    assert cancelled.returncode == 0 and f"{NAME}: cancelled" in cancelled.stdout
    assert "next: stop (cancelled by `sfh slurm cancel`" in status()

    # What it cost: submit to the first epoch, and per interruption the training since the last checkpoint.
    ends = sorted(m.timestamp / 1000 for m in history)
    starts = [at for at, line in _events(chain) if " with Ray at " in line]
    print(f"\nsubmit to first epoch: {ends[0] - submitted:.0f} s; epochs at "
          f"{', '.join(f'{e - submitted:.0f}' for e in ends)} s")
    for at, line in _events(chain):
        if "SIGUSR1" in line or "SIGTERM" in line:
            since = max([e for e in ends if e < at] + [s for s in starts if s < at] + [submitted])
            print(f"{line.split(':')[0]} {line.split(' (')[0].split(': ')[-1]} at {at - submitted:.0f} s: "
                  f"{at - since:.0f} s since the last checkpoint or driver start")
