"""What a reproduction costs: ``sfh plan`` (real steps in trials on the session's Ray head, synthetic data on a
paper table), the projection's arithmetic, the launch limit of ``sfh reproduce``, and the energy readers on a
machine without counters."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.ray_nodes import RayNode

from harness import tracking
from harness.cli import main
from harness.cost import measuring_trial
from harness.cost.measure import Measured
from harness.cost.plans import latest_plan
from harness.cost.power import EnergyMeter, meter_for, rapl_counter
from harness.cost.projection import Plan, project, render, schedule
from harness.experiment import load_experiment
from harness.formatting import format_money
from harness.run.specs import trial_specs
from spikingformer.training.step_cost import StepCost

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"


def sfh(*args: object) -> int:
    return main([str(a) for a in args])


def sfh_plan(head: RayNode, *args: object) -> str:
    """``sfh plan`` in a process of its own joining the session's Ray head, as a cluster user runs it; returns its
    stdout. (The plan on a private local Ray is the end-to-end demo test's.)"""
    command = [str(Path(sys.executable).parent / "sfh"), "plan", *map(str, args), "--address", head.address]
    done = subprocess.run(command, cwd=REPO, env=head.driver_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    return done.stdout


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tracking.Tracking:
    return tracking.Tracking(f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}")


def check_consistent(projection: Plan) -> None:
    """Every figure positive, each row's training the sum of its parts, the totals the sums of the rows."""
    for r in projection.rows:
        c = r.cost
        assert c["step_s"] > 0 and c["img_per_s"] > 0 and c["eval_batch_s"] > 0 and c["peak_mem_mb"] > 0
        expected = r.epochs * r.steps_per_epoch * c["step_s"] + r.evaluations * r.eval_batches * c["eval_batch_s"]
        assert r.train_s == pytest.approx(expected) and r.train_s > 0
        assert r.startup_s > 0 and r.final_s > 0
        assert r.trial_s == pytest.approx(r.startup_s + r.train_s + r.final_s)
        assert r.device_hours == pytest.approx(r.seeds * r.workers * r.train_s / 3600)
    assert projection.device_hours == pytest.approx(sum(r.device_hours for r in projection.rows))
    longest = max(r.trial_s for r in projection.rows)
    serial = sum(r.trial_s * r.seeds for r in projection.rows)
    assert projection.launch_s + longest <= projection.wall_s <= projection.launch_s + serial + 1e-9


@pytest.mark.ray
def test_plan_the_demo_then_the_launch_limit(ray_head: RayNode, store: tracking.Tracking, tmp_path: Path,
                                             capsys) -> None:
    out = tmp_path / "plan.json"
    printed = sfh_plan(ray_head, EXPERIMENTS / "demo.yaml", "--rows", "spikingformer", "--steps", "2", "--format",
                       "json", "--out", out, "--tracking-uri", store.uri, "--storage", tmp_path / "ray")
    projection = Plan.from_json(out.read_text())
    assert json.loads(printed) == json.loads(out.read_text())  # progress goes to stderr
    (row,) = projection.rows
    assert row.cost["data"] == "digits" and row.cost["batch"] == 32 and row.cost["precision"] == "fp32"
    # Measured in a trial on Ray, as the demo's trial runs: one worker of one CPU, after Ray's own start-up.
    assert row.cost["device"] == "cpu (1 threads)" and projection.capacity["CPU"] >= 2
    assert projection.launch_s > 0 and row.startup_s > row.cost["setup_s"] > 0
    assert (row.steps_per_epoch, row.epochs, row.eval_batches) == (1437 // 32, 6, 3)  # the demo's split
    check_consistent(projection)
    assert projection.energy_kWh is None and "n/a" in row.energy_basis and "--watts" in row.energy_basis
    # Logged to the experiment's parent run, and read back as the latest plan.
    assert latest_plan(store, "demo") == projection
    (parent,) = store.client.search_runs([store.find_experiment("demo")], "tags.`sfh.command` = 'plan'")
    assert parent.data.tags[tracking.KIND] == "parent" and parent.info.status == "FINISHED"
    assert parent.data.metrics["plan.device_hours"] == pytest.approx(projection.device_hours)

    # sfh reproduce prints the projection and refuses above --max-device-hours, before Ray starts.
    assert sfh("reproduce", EXPERIMENTS / "demo.yaml", "--rows", "spikingformer", "--max-device-hours", "1e-9",
               "--tracking-uri", store.uri, "--storage", tmp_path / "ray") == 2
    captured = capsys.readouterr()
    assert "plan (cpu (1 threads), 2 timed steps a row): 1 trial(s) projected at" in captured.out
    assert "--max-device-hours 1e-09: not launched, the plan projects" in captured.err
    # A row the plan does not cover is refused under a limit too.
    assert sfh("reproduce", EXPERIMENTS / "demo.yaml", "--max-device-hours", "100", "--tracking-uri", store.uri,
               "--storage", tmp_path / "ray") == 2
    assert "rows spikformer have no plan" in capsys.readouterr().err
    assert store.trial_runs("demo") == []


@pytest.mark.ray
def test_plan_a_paper_table_on_synthetic_data_and_project_the_full_run(ray_head: RayNode, store: tracking.Tracking,
                                                                      tmp_path: Path) -> None:
    """CIFAR-10's first row measured at the smoke batch on synthetic data, then scaled to the full table."""
    cifar = load_experiment(EXPERIMENTS / "cifar10.yaml")
    first = cifar.rows[0].id
    printed = sfh_plan(ray_head, EXPERIMENTS / "cifar10.yaml", "--smoke", "--rows", first, "--steps", "2", "--format",
                       "json", "--tracking-uri", store.uri, "--storage", tmp_path / "ray")
    smoke = Plan.from_json(printed)
    assert smoke.experiment == "cifar10-smoke" and smoke.rows[0].cost["data"].startswith("synthetic [3, 32, 32]")
    check_consistent(smoke)
    measured = {first: Measured(StepCost(**smoke.rows[0].cost), None, "n/a: no counter")}
    specs = trial_specs(cifar, name="cifar10", rows=[first], seeds=2, tracking_uri=store.uri, train_storage="")
    full = project(specs, measured, experiment="cifar10", file="cifar10.yaml", device="cpu", steps=2,
                        capacity={"CPU": 3.0, "GPU": 0.0}, watts=250.0, price_per_device_hour=2.5)
    (row,) = full.rows
    config = cifar.train_config(cifar.rows[0])
    assert row.steps_per_epoch == 50_000 // config.data.batch_size and row.epochs == config.schedule.total_epochs
    # CIFAR-10 asks 8 CPUs a worker, more than this machine's: the seeds run one after the other on a cluster
    # of one trial's size, which a note says.
    assert row.seeds == 2 and full.trials_side_by_side == 1 and full.wall_s == pytest.approx(2 * row.trial_s)
    assert any("a cluster of one such trial" in note for note in full.notes)
    check_consistent(full)
    assert row.energy_kWh == pytest.approx(row.device_hours * 0.25) and "estimated from --watts 250" in row.energy_basis
    # A price per device-hour: each row's cost and the table's total, in the user's currency.
    table = render(full)
    assert "| kWh | cost |" in table and f"| {format_money(row.device_hours * 2.5)} |" in table
    assert f"{format_money(full.device_hours * 2.5)} at 2.5 per device-hour." in table
    assert Plan.from_json(full.to_json()).price_per_device_hour == 2.5


def test_schedule_places_trials_as_the_cluster_allows() -> None:
    one_cpu = {"CPU": 1.01}
    assert schedule([(10.0, one_cpu)] * 3, {"CPU": 3.0}) == (20.0, 2)  # 2 fit at once (3.03 > 3): the third waits
    assert schedule([(10.0, one_cpu), (5.0, one_cpu), (5.0, one_cpu)], {"CPU": 2.5}) == (10.0, 2)
    assert schedule([(4.0, {"CPU": 1, "GPU": 8}), (4.0, {"CPU": 1, "GPU": 8})], {"CPU": 9, "GPU": 8}) == (8.0, 1)


def test_measurements_side_by_side_start_their_timed_steps_by_groups() -> None:
    # 5 rows, 2 at a time: the first two wait for each other, then the next two, the last for itself alone.
    assert [measuring_trial.group_end(a, rows=5, side=2) for a in range(5)] == [2, 2, 4, 4, 5]
    assert [measuring_trial.group_end(a, rows=3, side=1) for a in range(3)] == [1, 2, 3]


def test_energy_readers_without_counters_say_why(tmp_path: Path) -> None:
    meter = meter_for(torch.device("cpu"))
    if Path("/sys/class/powercap").is_dir():
        pytest.skip("this host exposes RAPL; the n/a path is for hosts without it")
    assert meter.counter is None and meter.lap() is None
    assert meter.source == "n/a: the kernel exposes no RAPL counters here (/sys/class/powercap absent)"
    assert rapl_counter(tmp_path)[1] == f"no RAPL package zone under {tmp_path}"


def test_rapl_counters_are_summed_over_packages_and_unwrapped(tmp_path: Path) -> None:
    """Real reads of a powercap-shaped folder: two packages, one wrapping past its range."""
    for n, (start, top) in enumerate([(1_000_000, 10_000_000), (9_500_000, 10_000_000)]):
        zone = tmp_path / f"intel-rapl:{n}"
        (zone / "intel-rapl:0:0").mkdir(parents=True)  # a sub-zone (core), not counted
        (zone / "name").write_text(f"package-{n}\n")
        (zone / "energy_uj").write_text(str(start))
        (zone / "max_energy_range_uj").write_text(str(top))
    counter, reason = rapl_counter(tmp_path)
    assert reason == "" and "package-0, package-1" in counter.source
    meter = EnergyMeter(counter)
    (tmp_path / "intel-rapl:0" / "energy_uj").write_text("3000000")  # +2 J
    (tmp_path / "intel-rapl:1" / "energy_uj").write_text("500000")  # wrapped: +1 J
    assert meter.lap() == pytest.approx(3.0)
    assert meter.lap() == pytest.approx(0.0)
