"""The convergence guard end to end: a tiny DDP model (2 ranks) trained through ``sfh reproduce`` on the session's
Ray head against a synthetic reference curve it cannot meet (99.9 % from the first epoch). The guard flags it on the
progress line and in MLflow, stops it after its patience on both ranks, and the table and report give the verdict
and the gap curve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers.ray_nodes import RayNode

from harness import results, tracking
from harness.cli import main
from harness.experiment import load_experiment
from harness.reference.curves import ReferenceCurve

pytestmark = pytest.mark.ray

EPOCHS = 4
EXPERIMENT = {
    "name": "guarded",
    "paper": {"arxiv": "-", "table": "convergence guard test", "source": "-"},
    "recipe": "digits",
    "train": {"data": {"eval_size": 120}, "runtime": {"device": "cpu", "amp": "none"},
              "schedule": {"epochs": EPOCHS}},
    "resources": {"num_workers": 2, "use_gpu": False, "cpus_per_worker": 1},
    "guard": {"stop_when_behind": True, "patience": 2},
    "rows": [{"id": "tiny", "model": {"name": "spikingformer_cifar_2_384"}, "reference_curve": "unreachable.json"}],
}


def test_a_trial_behind_an_unreachable_curve_is_flagged_stopped_and_judged(
    ray_head: RayNode, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    n = 10
    curve = ReferenceCurve("unreachable", "unreachable (synthetic)", "digits", tuple(range(n)), (99.9,) * n,
                           (None,) * n, (None,) * n, 0, 0.5, "synthetic: no tiny model reaches 99.9 % in 2 epochs")
    (tmp_path / "unreachable.json").write_text(curve.to_json())
    path = tmp_path / "guarded.yaml"
    path.write_text(yaml.safe_dump(EXPERIMENT, sort_keys=False))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["reproduce", path, "--address", ray_head.address, "--storage", tmp_path / "ray", "--tracking-uri", uri,
            "--energy-batches", "1"]
    assert main([str(a) for a in args]) == 0
    out = capsys.readouterr().out
    assert "epoch 1/4  top-1" in out and "behind by" in out and "since epoch 1" in out  # flagged at once
    assert "stopped: behind the reference after" in out

    (run,) = tracking.Tracking(uri).trial_runs("guarded")
    client = tracking.Tracking(uri).client
    assert run.info.status == "FINISHED"
    status = run.data.tags["sfh.reference"]
    assert status.startswith("stopped: behind the reference (behind by ") and status.endswith("since epoch 1)")
    epochs = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train_loss"))  # the epoch is the step
    assert epochs == [0, 1]  # stopped after its patience of 2 evaluated epochs, of 4
    gaps = [m.value for m in client.get_metric_history(run.info.run_id, "gap_to_reference")]
    top1 = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "top1")}
    assert len(gaps) == 2 and all(g < -0.5 for g in gaps)
    assert sorted(gaps) == sorted(v - 99.9 for v in top1.values())  # pytest.approx not needed: same floats
    assert run.data.metrics["stopped_behind_reference"] == 1.0
    assert 0 < run.data.metrics["best_top1"] < 99.9 and run.data.metrics["energy_mJ"] > 0  # final figures measured
    assert 0 < run.data.metrics["firing_rate_mean"] < 1  # the spikes are alive

    experiment = load_experiment(path)
    (row,) = results.collect(experiment, uri)
    assert row.verdict == "stopped: behind the reference"
    assert main(["table", str(path), "--tracking-uri", uri]) == 0
    table = capsys.readouterr().out
    assert "| stopped: behind the reference | seed 0: stopped: behind the reference (behind by" in table
    assert main(["report", str(path), "--tracking-uri", uri, "--out", str(tmp_path / "reports")]) == 0
    page = (tmp_path / "reports" / "guarded" / "index.html").read_text()
    assert 'src="figures/gap-tiny.png"' in page and (tmp_path / "reports/guarded/figures/gap-tiny.png").is_file()
    assert "unreachable (synthetic), 10 epochs, drawn on this row&#x27;s 4 epochs" in page
    assert json.loads((tmp_path / "unreachable.json").read_text())["band_pp"] == 0.5
