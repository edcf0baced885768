"""One failure, one line: what happened and the next command, the traceback in a log file, no ANSI codes saved,
and no trial run left RUNNING when the driver fails."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from harness import tracking
from harness.cli import main
from harness.failures import diagnose, plain
from harness.run import sweep

RAY_OOM = ("\x1b[36mray::_Inner.train()\x1b[39m (pid=1234, ip=127.0.0.2)\nTask was killed due to the node running low "
           "on memory.\nMemory on the node (IP: 127.0.0.2, ID: ab12) where the task was running was 7.40GB / 7.77GB "
           "(0.952), which exceeds the memory usage threshold of 0.95.")


def test_each_known_cause_is_said_in_one_line_with_the_next_step() -> None:
    again = "`sfh resume demo`"
    oom = diagnose(RuntimeError(RAY_OOM), again)
    assert oom.startswith("out of memory: Task was killed due to the node running low on memory.")
    assert "smaller data.batch_size" in oom and oom.endswith(again) and "\x1b" not in oom and "\n" not in oom
    other = diagnose(RuntimeError("sync failed"), again)
    assert other == f"RuntimeError: sync failed; once the cause is fixed, {again}"
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/shared/ray/demo/trial/checkpoint")
        except OSError as inner:
            raise RuntimeError("Tune could not save its state") from inner
    except RuntimeError as outer:
        path = "/shared/ray/demo/trial/checkpoint"
        assert diagnose(outer, again) == f"disk full at {path}: free space there, then {again}"
    cut = diagnose(EOFError("Ran out of input"), again)
    assert cut.startswith("a state file was empty or cut short (Ran out of input)") and "free space" in cut


def test_plain_removes_terminal_codes() -> None:
    assert plain("\x1b[1m\x1b[31mboom\x1b[0m done\x1b[2K") == "boom done"


def test_an_unforeseen_error_ends_in_one_line_with_its_traceback_in_a_log(tmp_path: Path, monkeypatch,
                                                                           capsys) -> None:
    monkeypatch.chdir(tmp_path)
    demo = Path(__file__).resolve().parents[1] / "experiments" / "demo.yaml"
    (tmp_path / "afile").write_text("")
    code = main(["table", str(demo), "--tracking-uri", f"sqlite:///{tmp_path / 'afile' / 'mlflow.db'}"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith("sfh table: failed: ") and f"run `sfh table {demo}" in err
    log = Path(err.rsplit("(traceback: ", 1)[1].rstrip(")\n"))
    assert log.is_file() and log.parent == tmp_path / "runs" / "logs" and "Traceback" in log.read_text()


def test_resume_into_a_missing_parent_run_says_so_before_ray(tmp_path: Path, capsys) -> None:
    import ray

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    folder = tmp_path / "ray" / "demo"
    folder.mkdir(parents=True)
    demo = Path(__file__).resolve().parents[1] / "experiments" / "demo.yaml"
    (folder / sweep.INVOCATION).write_text(json.dumps({
        "experiment_file": str(demo), "experiment_yaml": demo.read_text(), "name": "demo", "tracking_uri": uri,
        "parent_run_id": "0" * 32, "skip_invalid": False}))
    assert main(["resume", "demo", "--storage", str(tmp_path / "ray")]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]  # after MLflow's own note creating the store
    assert line.startswith("sfh resume: error: ") and f"names the parent run {'0' * 32}, which the tracking" in line
    assert f"start again with `sfh reproduce {demo}`" in line and not ray.is_initialized()


def test_a_failing_driver_leaves_no_trial_run_running(tmp_path: Path) -> None:
    store = tracking.Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = store.start_parent("demo", {})
    trial = store.open_trial_run("demo", "demo/a/seed0", run_name="a seed0", tags={tracking.EXPERIMENT: "demo"},
                                 params={}).info.run_id
    with pytest.raises(RuntimeError), sweep.Drive(store, "demo", parent):
        raise RuntimeError("\x1b[31mTask was killed due to the node running low on memory.\x1b[0m")
    for run_id in (trial, parent):
        run = store.client.get_run(run_id)
        assert run.info.status == "FAILED"
        assert run.data.tags[tracking.FAILURE] == (
            "the driver failed: RuntimeError: Task was killed due to the node running low on memory.")
