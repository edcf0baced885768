"""Grids end to end through ``sfh`` on a real local Ray (the session's head) and real sqlite MLflow: the
digits grid's points train, are tracked under their generated ids, are not trained again, and come back as
a table by axes and a report. (The CIFAR example grids' first points are smoke-trained with the paper tables.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.ray_nodes import RayNode

from harness import tracking
from harness.cli import main

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[1]
GRIDS = REPO / "experiments" / "grid"
#: Two points of the digits grid, one epoch each (the grid is tracked apart as demo-grid-e1).
POINTS = ("spikingformer/T=1/embed_dim=32", "spikingformer/T=2/embed_dim=64")


def test_digits_grid_trains_tracks_and_reports_by_axes(ray_head: RayNode, tmp_path: Path, capsys) -> None:
    store = tracking.Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}")
    storage = tmp_path / "ray"
    args = ["reproduce", GRIDS / "digits.yaml", "--epochs", "1", "--rows", ",".join(POINTS), "--address",
            ray_head.address, "--storage", storage, "--tracking-uri", store.uri]
    assert main([str(a) for a in args]) == 0
    out = capsys.readouterr().out
    runs = {r.data.tags[tracking.RUN_KEY]: r for r in store.trial_runs("demo-grid-e1")}
    assert sorted(runs) == [f"demo-grid-e1/{p}/seed0" for p in POINTS]  # one MLflow run per (point, seed)
    assert all(r.info.status == "FINISHED" and r.data.metrics["energy_mJ"] > 0 for r in runs.values())
    assert {r.data.params["model.kwargs.T"] for r in runs.values()} == {"1", "2"}
    # Folders: one flat Tune trial folder and one Train run per point, no '/' or '=' in their names.
    trials = sorted(p.name for p in (storage / "demo-grid-e1").glob("spikingformer-*") if p.is_dir())
    assert [t.rsplit("-", 1)[0] for t in trials] == ["spikingformer-T-1-embed_dim-32-seed0",
                                                     "spikingformer-T-2-embed_dim-64-seed0"]
    assert len(list((storage / "demo-grid-e1" / "train").iterdir())) == 2
    # The table by axes: both points finished, no paper number for digits, the other four not run.
    assert "| row | T | embed_dim | paper row |" in out
    assert "| spikingformer/T=1/embed_dim=32 | 1 | 32 | no reference | n/a |" in out
    assert out.count("| no reference | no published log |\n") == 2 and out.count("| NOT RUN |") == 4
    # Run again: both points are FINISHED, nothing trains and no run is added.
    assert main([str(a) for a in args]) == 0
    assert capsys.readouterr().out.count("already FINISHED") == 2
    assert len(store.trial_runs("demo-grid-e1")) == 2
    reports = tmp_path / "reports"
    assert main(["report", str(GRIDS / "digits.yaml"), "--name", "demo-grid-e1", "--tracking-uri", store.uri,
                 "--out", str(reports)]) == 0
    figures = sorted(p.name for p in (reports / "demo-grid-e1" / "figures").glob("grid-*.png"))
    assert figures == ["grid-energy-T.png", "grid-energy-embed_dim.png", "grid-top1-T.png", "grid-top1-embed_dim.png"]
