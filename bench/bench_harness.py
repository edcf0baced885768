"""What the orchestration costs: the demo through ``sfh reproduce`` against the same rows run standalone.

Harness: ``sfh reproduce experiments/demo.yaml`` in a subprocess, end to end (driver start, a private local
Ray, one Tune trial per row with a one-worker TorchTrainer each, MLflow, the energy pass, the table), on
fresh storage and a fresh tracking store; once with trials side by side (as ``make demo`` runs it, though
make's install step and table file are not timed) and once with ``--max-concurrent 1``. Standalone: each
row's TrainConfig through ``spikingformer.training.engine.fit`` in this process, one after the other, with one torch
thread (what a one-CPU Ray worker gets). The overhead ratio compares the two serial schedules; the load
average says how busy the shared machine was.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from harness.experiment import load_experiment
from spikingformer.training.engine import fit

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "experiments" / "demo.yaml"


def standalone_seconds() -> float:
    experiment = load_experiment(DEMO)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        began = time.perf_counter()
        for row in experiment.rows:
            fit(experiment.train_config(row))
        return time.perf_counter() - began
    finally:
        torch.set_num_threads(threads)


def harness_seconds(*flags: str) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    with tempfile.TemporaryDirectory(prefix="bench-harness-") as tmp:
        command = [str(Path(sys.executable).with_name("sfh")), "reproduce", str(DEMO), *flags,
                   "--storage", f"{tmp}/ray", "--tracking-uri", f"sqlite:///{tmp}/mlflow.db"]
        began = time.perf_counter()
        subprocess.run(command, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - began


def run() -> list[dict]:
    rows = len(load_experiment(DEMO).rows)
    context = {"experiment": "demo", "rows": rows, "device": f"cpu ({os.cpu_count()} cores)",
               "load_avg_1min_before": os.getloadavg()[0]}
    concurrent = harness_seconds()
    serial = harness_seconds("--max-concurrent", "1")
    standalone = standalone_seconds()
    context["load_avg_1min_after"] = os.getloadavg()[0]
    return [
        {"name": "demo via sfh reproduce, trials side by side (wall)", "value": concurrent, "unit": "s", **context},
        {"name": "demo via sfh reproduce --max-concurrent 1 (wall)", "value": serial, "unit": "s", **context},
        {"name": "demo rows via engine.fit, one after the other, 1 thread (wall)", "value": standalone, "unit": "s",
         **context},
        {"name": "harness overhead ratio, serial (sfh / standalone)", "value": serial / standalone, "unit": "x",
         **context},
        {"name": "harness fixed cost per trial, serial", "value": (serial - standalone) / rows, "unit": "s",
         **context},
        {"name": "demo via sfh reproduce side by side vs standalone serial (ratio)", "value": concurrent / standalone,
         "unit": "x", **context},
    ]
