"""``make optuna-dashboard`` serves the searches' Optuna storage on localhost only, and headless Chromium sees a
study's trials there: their numbers, states (a PRUNED one among them) and the MLflow run id attribute."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from helpers.ray_nodes import free_port
from helpers.serving import wait_until_serving

from dashboards.optuna_ui import dashboard_command, main
from harness.run.study import MLFLOW_RUN_ID

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def test_dashboard_command_binds_localhost_with_the_venvs_executable(tmp_path: Path) -> None:
    command = dashboard_command(f"sqlite:///{tmp_path / 'optuna.db'}", 8091)
    assert Path(command[0]).name == "optuna-dashboard" and Path(command[0]).is_file()
    assert command[1:] == [f"sqlite:///{tmp_path / 'optuna.db'}", "--host", "127.0.0.1", "--port", "8091"]


def test_a_missing_storage_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--study-storage", f"sqlite:///{tmp_path / 'none.db'}"]) == 1
    assert f"no Optuna storage at sqlite:///{tmp_path / 'none.db'}: run a search first" in capsys.readouterr().err


def _study(url: str) -> optuna.Study:
    """A search's study as the searcher writes it: objective names, a finished and a PRUNED trial, run ids."""
    study = optuna.create_study(storage=url, study_name="ui-search", direction="maximize")
    study.set_metric_names(["top1"])
    for number, (epochs, state) in enumerate(((3, optuna.trial.TrialState.COMPLETE),
                                               (1, optuna.trial.TrialState.PRUNED))):
        trial = study.ask()
        trial.suggest_float("optim.lr", 1e-4, 1e-2, log=True)
        for epoch in range(epochs):
            trial.report(40.0 + 10 * epoch - 20 * number, epoch)
        trial.set_user_attr(MLFLOW_RUN_ID, f"run{number:030d}")
        study.tell(trial, 60.0 if state == optuna.trial.TrialState.COMPLETE else None, state=state)
    return study


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="headless Chromium missing: run `make test-deps`")
@pytest.mark.browser
def test_optuna_dashboard_shows_the_studys_trials_in_headless_chromium(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = _study(url)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "dashboards.optuna_ui", "--study-storage", url, "--port",
                               str(port)], cwd=REPO, start_new_session=True, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/api/meta", 60, "optuna-dashboard")
        study_id = study._study_id
        page = f"http://127.0.0.1:{port}/dashboard/studies/{study_id}/trials"
        command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync",
                   f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=15000", "--dump-dom",
                   page]
        dom = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout
        text = re.sub(r"<[^>]+>", " ", dom)
        assert "ui-search" in text, text[:2000]
        assert re.search(r"Trial\s+0\b", text) and re.search(r"Trial\s+1\b", text), text[:2000]
        assert "Pruned" in text or "PRUNED" in text, text[:2000]
        assert MLFLOW_RUN_ID in text and f"run{0:030d}" in text, text[:2000]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert f"optuna-dashboard for {url} at http://127.0.0.1:{port}" in server.stdout.read()
