"""Preemption inside an epoch: a stop request (SIGTERM) checkpoints at the next update and stops; a kill loses at
most one checkpoint interval; either way the resumed run equals the uninterrupted one, sample for sample."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.training import AUGMENTED, Crash, untimed

from spikingformer._validation import deep_merge
from spikingformer.checkpoints.training import load_checkpoint
from spikingformer.config import TrainConfig
from spikingformer.data.loaders import ResumableSampler
from spikingformer.training.engine import Callback, fit
from spikingformer.training.preemption import Preempted, StopRequest, stop_on_signals

#: 64 digits at batch 16: 4 updates per epoch, 2 epochs; no time-based checkpoints (the test decides when).
BASE = deep_merge(AUGMENTED, {"data": {"train_size": 64, "eval_size": 32}, "schedule": {"epochs": 2},
                              "runtime": {"checkpoint_every_minutes": None, "lif_backend": "spikingjelly"}})


class AtUpdate:
    """A stop-request poller that answers at the ``n``-th update boundary (or raises ``crash`` there)."""

    def __init__(self, n: int, crash: bool = False) -> None:
        self.n, self.crash, self.calls = n, crash, 0

    def __call__(self) -> str | None:
        self.calls += 1
        if self.calls == self.n:
            if self.crash:
                raise Crash
            return "test stop"
        return None


class Positions(Callback):
    def __init__(self) -> None:
        self.checkpoints: list[tuple[int, int]] = []

    def on_checkpoint(self, epoch: int, batches: int, checkpoint_path: Path | None) -> None:
        self.checkpoints.append((epoch, batches))


def assert_same_run(a: Path, b: Path, straight, resumed) -> None:
    first, second = load_checkpoint(a / "last.pt"), load_checkpoint(b / "last.pt")
    for part in ("model", "ema", "optimizer"):
        assert str(first[part].keys()) == str(second[part].keys())
    assert resumed.weights_sha256 == straight.weights_sha256
    assert untimed(resumed.history) == untimed(straight.history)
    assert (resumed.best_top1, resumed.ema_top1) == (straight.best_top1, straight.ema_top1)


@pytest.mark.parametrize(("workers", "accum"), [(0, 1), (2, 1), (0, 2)])
def test_stop_mid_epoch_then_resume_equals_the_uninterrupted_run(tmp_path: Path, workers: int, accum: int) -> None:
    config = TrainConfig.from_dict(deep_merge(BASE, {"data": {"num_workers": workers},
                                                      "optim": {"grad_accum_steps": accum}}))
    straight = fit(config, checkpoint_dir=tmp_path / "straight")
    stop_at = 4 // accum + 1  # the first update of epoch 1
    with pytest.raises(Preempted) as stopped:
        fit(config, checkpoint_dir=tmp_path / "split", stop=StopRequest(pollers=(AtUpdate(stop_at),)))
    assert (stopped.value.epoch, stopped.value.batches) == (1, accum) and stopped.value.reason == "test stop"
    saved = load_checkpoint(tmp_path / "split")
    assert saved["epoch"] == 1 and saved["position"]["batches"] == accum and len(saved["history"]) == 1
    resumed = fit(config, checkpoint_dir=tmp_path / "split", resume_from=tmp_path / "split")
    assert_same_run(tmp_path / "straight", tmp_path / "split", straight, resumed)


def test_a_kill_loses_at_most_one_checkpoint_interval(tmp_path: Path) -> None:
    """Checkpoints every 3 updates; a crash at update 8 (epoch 1, after its last batch) resumes from update 6."""
    config = TrainConfig.from_dict(deep_merge(BASE, {"runtime": {"checkpoint_every_updates": 3}}))
    straight = fit(config, checkpoint_dir=tmp_path / "straight")
    positions = Positions()
    with pytest.raises(Crash):
        fit(config, checkpoint_dir=tmp_path / "split", callbacks=[positions],
            stop=StopRequest(pollers=(AtUpdate(8, crash=True),)))
    assert positions.checkpoints == [(0, 3), (1, 2)]  # updates 3 and 6; epoch 0's end is a checkpoint too
    saved = load_checkpoint(tmp_path / "split")
    lost = 8 - saved["num_updates"]
    assert saved["position"]["batches"] == 2 and 0 < lost <= 3
    resumed = fit(config, checkpoint_dir=tmp_path / "split", resume_from=tmp_path / "split")
    assert_same_run(tmp_path / "straight", tmp_path / "split", straight, resumed)


def test_the_sampler_resumes_at_its_position_without_repeats_or_gaps() -> None:
    data = list(range(50))
    whole = ResumableSampler(data, num_replicas=2, rank=1, shuffle=True, seed=3)
    whole.set_epoch(4)
    order = list(whole)
    resumed = ResumableSampler(data, num_replicas=2, rank=1, shuffle=True, seed=3)
    resumed.set_epoch(4)
    resumed.skip(10)
    assert list(resumed) == order[10:] and len(resumed) == len(order) == 25
    assert list(resumed) == order  # the skip holds for one epoch only


def test_in_epoch_checkpoint_settings_are_validated() -> None:
    from spikingformer._validation import ConfigError

    for key, value in (("checkpoint_every_updates", 0), ("checkpoint_every_minutes", 0.0)):
        with pytest.raises(ConfigError, match=rf"runtime\.{key}: {value} is not allowed"):
            TrainConfig.from_dict(deep_merge(BASE, {"runtime": {key: value}}))
    assert TrainConfig.from_dict(AUGMENTED).runtime.checkpoint_every_minutes == 10.0


def test_sigterm_sets_the_stop_request_and_the_old_handler_comes_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    stop = StopRequest()
    with stop_on_signals(stop):
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested() and stop.reason == "SIGTERM received"
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.train  # three training processes and one in-process run
def test_sigterm_to_a_torchrun_free_training_process_checkpoints_and_resume_finishes(tmp_path: Path) -> None:
    """``python -m spikingformer.train`` under SIGTERM: it checkpoints inside the epoch, exits with its own
    code and says how to resume; resuming finishes the run with the uninterrupted weights."""
    three_epochs = TrainConfig.from_dict(deep_merge(BASE, {"schedule": {"epochs": 3}, "data": {"train_size": 160}}))
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps(three_epochs.to_dict()))  # JSON is YAML
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "spikingformer.train", "--config", str(config), "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("epoch 1/3"):  # the first epoch is logged: SIGTERM inside the second
            proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=600)
    text = "".join(lines)
    assert code == 143, text
    assert "checkpointed" in text and f"--resume {out}" in text, text
    assert load_checkpoint(out)["position"] is not None
    done = subprocess.run([*cmd, "--resume", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert fit(three_epochs).weights_sha256 == json.loads((out / "result.json").read_text())["weights_sha256"]
