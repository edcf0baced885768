"""``make mlflow-ui`` serves the harness's own store on localhost only, and opens where a user expects."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from helpers.chromium import CHROMIUM, Tab
from helpers.ray_nodes import free_port
from helpers.serving import wait_until_serving

from dashboards.mlflow_ui import main, ui_command
from harness import tracking


def test_ui_command_binds_localhost_and_keeps_artifacts_beside_the_store(tmp_path: Path) -> None:
    command = ui_command(f"sqlite:///{tmp_path / 'mlflow.db'}", 5001)
    assert Path(command[0]).name == "mlflow" and Path(command[0]).is_file()
    args = dict(zip(command[2::2], command[3::2], strict=True))
    assert args == {
        "--backend-store-uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--default-artifact-root": (tmp_path / "mlartifacts").as_uri(),
        "--host": "127.0.0.1",
        "--port": "5001",
        "--workers": "1",
    }


def test_a_tracking_server_is_not_started_again(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--tracking-uri", "http://mlflow.example:5000"]) == 0
    assert "is a tracking server" in capsys.readouterr().out



@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="headless Chromium missing: run `make test-deps`")
@pytest.mark.browser
def test_ui_opens_an_experiment_on_its_runs_table_with_top1(tmp_path: Path) -> None:
    """As a user: start ``make mlflow-ui``'s launcher; the experiment's printed link shows its runs with top-1,
    best first; from the printed list, a click into the experiment opens its runs table, not the GenAI overview."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store = tracking.Tracking(uri)
    store.describe("ui-demo", "Spikingformer vs Spikformer on digits")
    for row, top1 in (("spikformer", 15.56), ("spikingformer", 21.11)):
        run = store.open_trial_run("ui-demo", tracking.run_key("ui-demo", row, 0), run_name=f"{row} seed0",
                                   tags={tracking.EXPERIMENT: "ui-demo", tracking.ROW: row}, params={})
        store.log_metrics(run.info.run_id, {"best_top1": top1, "last_top1": top1 - 1, "energy_mJ": 0.01})
        store.end(run.info.run_id, "FINISHED")
    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "dashboards.mlflow_ui", "--tracking-uri", uri, "--port", str(port)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        printed = [ui.stdout.readline() for _ in range(5)]
        base, link = printed[1].strip(), printed[4].split(": ", 1)[1].strip()
        assert base.endswith("/#/experiments") and "viewStateShareKey=" in link and "ui-demo: " in printed[4]
        wait_until_serving(f"http://127.0.0.1:{port}/health", 120, "the MLflow UI")
        server = psutil.Process(ui.pid)  # the launcher became `mlflow ui`: its workers, and no job runner
        commands = [" ".join(p.cmdline()) for p in [server, *server.children(recursive=True)]]
        assert not [c for c in commands if "huey" in c or "jobs" in c], commands

        with Tab(tmp_path / "profile", free_port()) as tab:
            # The list as printed, then a click into the experiment. MLflow 3.17's UI keeps GenAI or Model training
            # per browser (its switch), not per experiment: one click on the switch, as the launcher says.
            tab.open(base)
            tab.wait_for_text("ui-demo")
            tab.click("Model training", "[role=button]")
            tab.wait_for_text("Model registry")  # the model-training side bar
            tab.click("ui-demo")
            page = tab.wait_for_text("Run Name", "Latency")
            assert "Run Name" in page and "Latency" not in page, page[:2000]  # runs, not the GenAI overview
            assert "Spikingformer vs Spikformer on digits" in page  # the description from the YAML

            tab.open(link)  # the experiment's link as printed: its trial runs with the final figures
            page = tab.wait_for_text("21.11")
            assert "best_top1" in page and "15.56" in page, page[:2000]
            assert page.index("spikingformer seed0") < page.index("spikformer seed0")  # best top-1 first
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)
