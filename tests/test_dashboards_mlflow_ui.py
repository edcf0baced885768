"""``make mlflow-ui`` serves the harness's own store on localhost only (starting the server is checked by hand)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dashboards.mlflow_ui import main, ui_command


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
