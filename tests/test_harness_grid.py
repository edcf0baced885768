"""Grids (harness.experiment.grid): expansion into rows, ids, paper references, impossible points, planning, the table
by axes and the report's figures against each axis; a real sqlite MLflow store, no Ray (the CLI runs of a
grid on a real Ray are in test_grid_e2e.py)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
import yaml

from harness import results, tracking
from harness.experiment import load_experiment
from harness.experiment.grid import NO_REFERENCE
from harness.run.specs import path_name, trial_specs
from spikingformer._validation import ConfigError

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
GRIDS = sorted((EXPERIMENTS / "grid").glob("*.yaml"))


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def table_grid(tmp_path: Path, table: str | dict, axes: dict, **grid) -> Path:
    """A grid over the paper tables in experiments/ (absolute paths, so the file may live anywhere)."""
    tables = {k: str(EXPERIMENTS / v) for k, v in table.items()} if isinstance(table, dict) else None
    tables = tables or str(EXPERIMENTS / table)
    return write(tmp_path, {"name": "g", "grid": {"table": tables, "axes": axes, **grid}})


def test_time_step_grid_over_the_cifar10_table() -> None:
    experiment = load_experiment(EXPERIMENTS / "grid" / "cifar10-T.yaml")
    assert [r.id for r in experiment.rows] == [f"4-384/T={t}" for t in (1, 2, 4, 6, 8)]
    assert [experiment.train_config(r).model.kwargs["T"] for r in experiment.rows] == [1, 2, 4, 6, 8]
    referenced = {r.id: (r.reference, r.paper.top1) for r in experiment.rows if r.reference}
    assert referenced == {"4-384/T=4": ("4-384", 95.61)}  # T=4 is the paper's row; the others have none
    assert all(r.paper.source == NO_REFERENCE for r in experiment.rows if not r.reference)
    point = experiment.train_config(experiment.row("4-384/T=4"))  # the table's recipe and row
    assert (point.data.dataset, point.schedule.epochs) == ("cifar10", 300)
    assert point.model.name == "spikingformer_cifar_4_384"
    assert experiment.resources_for(experiment.rows[0]).cpus_per_worker == 8  # the table's resources


def test_depth_width_points_find_the_paper_rows_of_other_model_names() -> None:
    """4-384 at depth 2 builds the 2-384 network (another registered name): equal, so it carries 78.34."""
    experiment = load_experiment(EXPERIMENTS / "grid" / "cifar100-depth-width.yaml")
    assert len(experiment.rows) == 9 and experiment.rows[0].point == {"depth": 2, "embed_dim": 256}
    referenced = {r.id: (r.reference, r.paper.top1) for r in experiment.rows if r.reference}
    assert referenced == {
        "4-384/depth=2/embed_dim=384": ("2-384", 78.34),
        "4-384/depth=4/embed_dim=256": ("4-256", 77.43),
        "4-384/depth=4/embed_dim=384": ("4-384", 79.09),
    }


def test_impossible_points_are_named_or_skipped(tmp_path: Path, capsys) -> None:
    """CIFAR-10's 4-384 has 12 heads: width 256 is impossible, reported with the point's id."""
    path = table_grid(tmp_path, "cifar10.yaml", {"model.kwargs.embed_dim": [256, 384, 500]}, base="4-384")
    with pytest.raises(ConfigError, match=r"2 impossible grid point\(s\) \(--skip-invalid drops them\)") as err:
        load_experiment(path)
    assert "row 4-384/embed_dim=256.model" in str(err.value) and "not divisible by num_heads=12" in str(err.value)
    assert "4-384/embed_dim=384" not in str(err.value)
    experiment = load_experiment(path, skip_invalid=True)
    assert [r.id for r in experiment.rows] == ["4-384/embed_dim=384"]
    assert experiment.rows[0].reference == "4-384"
    assert capsys.readouterr().err.count("skipping an impossible grid point") == 2


def test_reproduce_names_an_impossible_point_before_ray_starts(tmp_path: Path, capsys) -> None:
    import ray

    from harness.cli import main

    path = table_grid(tmp_path, "cifar10.yaml", {"model.kwargs.embed_dim": [256]}, base="4-384")
    assert main(["reproduce", str(path), "--smoke", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]) == 2
    assert "row 4-384/embed_dim=256.model" in capsys.readouterr().err
    assert not ray.is_initialized()


def test_dataset_axis_picks_each_tables_recipe_and_numbers(tmp_path: Path) -> None:
    tables = {"cifar10": "cifar10.yaml", "cifar100": "cifar100.yaml"}
    path = table_grid(tmp_path, tables, {"dataset": ["cifar10", "cifar100"], "model.kwargs.T": [2, 4]}, base="4-384")
    experiment = load_experiment(path)
    configs = {r.id: experiment.train_config(r) for r in experiment.rows}
    assert list(configs) == ["4-384/dataset=cifar10/T=2", "4-384/dataset=cifar10/T=4",
                             "4-384/dataset=cifar100/T=2", "4-384/dataset=cifar100/T=4"]
    classes = {i: (c.data.dataset, c.model.kwargs["num_classes"], c.model.kwargs["num_heads"])
               for i, c in configs.items()}
    assert classes["4-384/dataset=cifar100/T=2"] == ("cifar100", 100, 8)
    assert classes["4-384/dataset=cifar10/T=2"] == ("cifar10", 10, 12)
    assert {r.id: r.paper.top1 for r in experiment.rows if r.reference} == {
        "4-384/dataset=cifar10/T=4": 95.61, "4-384/dataset=cifar100/T=4": 79.09,
    }


def test_joined_keys_take_each_value_together(tmp_path: Path) -> None:
    """A DVS model's T with its frames: each point equals the paper's T=10 or T=16 row."""
    path = table_grid(tmp_path, "cifar10-dvs.yaml", {"model.kwargs.T,data.frames": [10, 16]}, base="2-256-T16")
    experiment = load_experiment(path)
    configs = {r.id: experiment.train_config(r) for r in experiment.rows}
    assert {i: (c.model.kwargs["T"], c.data.frames) for i, c in configs.items()} == {
        "2-256-T16/T=10": (10, 10), "2-256-T16/T=16": (16, 16),
    }
    assert [(r.reference, r.paper.top1) for r in experiment.rows] == [("2-256-T10", 79.9), ("2-256-T16", 81.3)]


def test_every_row_is_a_base_by_default_and_the_grid_file_overrides_the_table(tmp_path: Path) -> None:
    data = {"name": "g", "train": {"schedule": {"epochs": 30}}, "resources": {"cpus_per_worker": 2},
            "grid": {"table": str(EXPERIMENTS / "cifar10.yaml"), "axes": {"model.kwargs.T": [4]}}}
    experiment = load_experiment(write(tmp_path, data))
    assert [r.id for r in experiment.rows] == ["4-256/T=4", "2-384/T=4", "4-384/T=4", "4-384-400E/T=4"]
    row = experiment.rows[0]
    assert experiment.train_config(row).schedule.epochs == 30 and experiment.resources_for(row).cpus_per_worker == 2
    assert all(r.reference is None for r in experiment.rows)  # 30 epochs is not the paper's protocol


BAD_GRIDS = [
    ({"axes": {"colour.T": [1]}}, r"grid\.axes: 'colour\.T' is not allowed \('dataset', a dotted TrainConfig key"),
    ({"axes": {"model.kwargs.T": []}}, r"grid\.axes\.model\.kwargs\.T: \[\] is not allowed \(a non-empty list"),
    ({"axes": {"model.kwargs.T": [2, 2]}}, r"distinct values"),
    ({"axes": {"dataset": ["cifar10"]}}, r"grid\.table: .*\(a mapping naming an experiment file for each dataset"),
    ({"axes": {"model.kwargs.T": [2]}, "base": "9-999"}, r"grid\.base: \['9-999'\] is not allowed \(row ids of"),
    ({"axes": {"model.kwargs.dept": [2]}}, r"row 4-256/dept=2\.model: .*unexpected keyword argument 'dept'"),
]


@pytest.mark.parametrize(("grid", "message"), BAD_GRIDS, ids=[m for _, m in BAD_GRIDS])
def test_bad_grids_name_the_key(tmp_path: Path, grid: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_experiment(write(tmp_path, {"name": "g", "grid": {"table": str(EXPERIMENTS / "cifar10.yaml"), **grid}}))


def test_rows_beside_a_table_are_refused(tmp_path: Path) -> None:
    grid = {"table": str(EXPERIMENTS / "demo.yaml"), "axes": {"optim.lr": [1e-3]}}
    data = {"name": "g", "recipe": "digits", "grid": grid}
    with pytest.raises(ConfigError, match=r"no \['recipe'\] beside it: the table gives those"):
        load_experiment(write(tmp_path, data))


@pytest.mark.parametrize("path", GRIDS, ids=[p.stem for p in GRIDS])
def test_example_grids_plan_under_smoke_with_their_ids(path: Path) -> None:
    """Every point of every example grid plans under --smoke (the e2e test runs some), ids usable as --rows,
    as folder names and in run keys."""
    experiment = load_experiment(path)
    ids = [r.id for r in experiment.rows]
    specs = trial_specs(experiment, name=f"{experiment.name}-smoke", rows=None, seeds=None, tracking_uri="sqlite:///x.db",
                 train_storage="/tmp/x", smoke=True)
    assert [s.row for s in specs] == ids and all(s.train["data"]["dataset"] == "synthetic" for s in specs)
    chosen = trial_specs(experiment, name=experiment.name, rows=ids[-1:], seeds=2, tracking_uri="sqlite:///x.db",
                  train_storage="/tmp/x")
    seed = experiment.train_config(experiment.rows[-1]).runtime.seed
    assert [s.run_key for s in chosen] == [f"{experiment.name}/{ids[-1]}/seed{k}" for k in (seed, seed + 1)]
    names = {path_name(i) for i in ids}
    assert len(names) == len(ids) and all("/" not in n and "=" not in n for n in names)


def test_table_groups_a_grid_by_its_axes(tmp_path: Path) -> None:
    """Finished points: the one equal to a paper row gets a verdict, the others 'no reference'; axes as columns."""
    experiment = load_experiment(EXPERIMENTS / "grid" / "cifar10-T.yaml")
    store = tracking.Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for row, top1 in (("4-384/T=2", 93.0), ("4-384/T=4", 95.5)):
        key = tracking.run_key(experiment.name, row, 42)
        run = store.open_trial_run(experiment.name, key, run_name=key, params={},
                                   tags={tracking.ROW: row, tracking.SEED: "42"})
        store.log_metrics(run.info.run_id, {"best_top1": top1, "last_top1": top1, "energy_mJ": 0.1 * top1})
        store.end(run.info.run_id, "FINISHED")
    rows = results.collect(experiment, store.uri)
    assert [(r.row_id, r.verdict) for r in rows] == [
        ("4-384/T=1", "NOT RUN"), ("4-384/T=2", NO_REFERENCE), ("4-384/T=4", "PASS"), ("4-384/T=6", "NOT RUN"),
        ("4-384/T=8", "NOT RUN"),
    ]
    text = results.render_markdown(rows)
    assert text.splitlines()[0].startswith("| row | T | paper row | paper top-1 | best top-1 |")
    assert "| 4-384/T=4 | 4 | 4-384 | 95.61 | 95.50 |" in text
    assert "| 4-384/T=2 | 2 | no reference | n/a | 93.00 |" in text
    parsed = list(csv.DictReader(io.StringIO(results.render_csv(rows))))
    assert (parsed[2]["point"], parsed[2]["reference"], parsed[1]["reference"]) == ("T=4", "4-384", "")


def test_report_draws_a_grid_against_each_axis(tmp_path: Path) -> None:
    from dashboards.report import write_report

    experiment = load_experiment(EXPERIMENTS / "grid" / "cifar100-depth-width.yaml")
    store = tracking.Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for row in ("4-384/depth=2/embed_dim=384", "4-384/depth=4/embed_dim=384", "4-384/depth=4/embed_dim=256"):
        key = tracking.run_key(experiment.name, row, 42)
        run = store.open_trial_run(experiment.name, key, run_name=key, params={},
                                   tags={tracking.ROW: row, tracking.SEED: "42"})
        store.log_metrics(run.info.run_id, {"best_top1": 78.0, "energy_mJ": 0.5})
        store.end(run.info.run_id, "FINISHED")
    reader = results.RunReader(store.uri)
    index = write_report(experiment, reader.rows(experiment), reader, tmp_path / "out")
    html = index.read_text()
    assert "Grid by axis" in html and "<th>depth</th>" in html and "<th>paper row</th>" in html
    drawn = sorted(p.name for p in (index.parent / "figures").glob("grid-*.png"))
    assert drawn == ["grid-energy-depth.png", "grid-energy-embed_dim.png", "grid-top1-depth.png",
                     "grid-top1-embed_dim.png"]
