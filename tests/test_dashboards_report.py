"""The report, as a reader sees it: rendered by ``sfh report`` and opened in headless Chromium.

Two sources. A partial experiment laid out in MLflow as the harness writes it (fast, deterministic): one row
finished (two seeds, per-epoch metrics and gaps to the authors' curve, final figures, ``energy_layers.json``
costed at the firing rates of the authors' 8-512 energy log), one still running (two epochs, nothing final), one
never run. And a real demo run through ``sfh reproduce`` (slow). In the browser every figure must load and no
script may fail.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
from html import escape, unescape
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import yaml
from helpers.ray_nodes import RayNode

from dashboards.report import write_report
from harness import results, tracking
from harness.cli import main as sfh
from harness.experiment import load_experiment, tracked_name
from harness.reference.logs import load_energy_log
from spikingformer import build_model
from spikingformer.energy import energy_from_rates, profile_ops

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
#: One xdist worker for the module: its fixtures (a real demo run among them) are made once.
pytestmark = pytest.mark.xdist_group("dashboards-report")
REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = {
    "name": "dash-partial",
    "description": "Report test: one row finished, one running, one never run.",
    "paper": {"arxiv": "2304.11954v5", "table": "ImageNet-1K (test copy)", "source": "test"},
    "train": {"data": {"dataset": "imagenet"}},
    "rows": [
        {"id": "8-512", "model": {"name": "spikingformer_8_512"}, "reference_curve": "spikingformer-imagenet-8-512",
         "paper": {"top1": 74.79, "params_M": 29.68, "sops_G": 6.52, "energy_mJ": 7.46, "source": "README [R]"}},
        {"id": "8-768", "model": {"name": "spikingformer_8_768"}, "reference_curve": "spikingformer-imagenet-8-768",
         "paper": {"top1": 75.85, "energy_mJ": 13.68}},
        {"id": "8-384", "model": {"name": "spikingformer_8_384"}, "paper": {"top1": 72.45, "params_M": 16.81}},
    ],
}  # fmt: skip


def _energy_json() -> str:
    """Our 8-512 costed at the upstream log's per-layer rates (layers align in forward order)."""
    log = load_energy_log("spikingformer-imagenet-8-512")
    profile = profile_ops(build_model("spikingformer_8_512"))
    rates = {s.name: (None if u.rate == 1.0 else u.rate)
             for s, u in zip(profile.layers, log.layers, strict=True)}
    qkv = {a.name: (0.10, 0.04, 0.07) for a in profile.attention}
    return energy_from_rates(profile, rates, qkv).to_json()


def _log_run(
    store: tracking.Tracking,
    row: str,
    seed: int,
    epochs: int,
    final: dict | None = None,
    energy: str | None = None,
    name: str = EXPERIMENT["name"],
    status: str | None = None,
) -> None:
    key = tracking.run_key(name, row, seed)
    tags = {tracking.EXPERIMENT: name, tracking.ROW: row, tracking.SEED: str(seed)}
    run_id = store.open_trial_run(name, key, run_name=key, tags=tags, params={}).info.run_id
    store.log_text(run_id, yaml.safe_dump({"model": {"name": f"spikingformer_{row}"}}), "config.yaml")
    for epoch in range(epochs):
        top1 = 60 + 10 * epoch + seed
        metrics = {"epoch": epoch, "top1": top1, "train_loss": 6 - epoch, "eval_loss": 5 - epoch}
        if status is not None:
            metrics[results.GAP_TO_REFERENCE] = top1 - 65.0
        store.log_metrics(run_id, metrics, step=epoch)
    if status is not None:
        store.set_tags(run_id, {"sfh.reference": status})
    if final is not None:
        store.log_metrics(run_id, final)
        store.log_text(run_id, energy, "energy_layers.json")
        store.end(run_id, "FINISHED")


@pytest.fixture(scope="module")
def partial(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An experiment file and a sqlite store holding its runs: 8-512 done, 8-768 running, 8-384 never run
    (but running in the ``--smoke`` variant)."""
    root = tmp_path_factory.mktemp("dash")
    path = root / "dash-partial.yaml"
    path.write_text(yaml.safe_dump(EXPERIMENT, sort_keys=False))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    store = tracking.Tracking(uri)
    energy = _energy_json()
    totals = json.loads(energy)["totals"]
    for seed in (0, 1):
        final = {"best_top1": 74.2 + seed * 0.4, "last_top1": 74.0 + seed * 0.3, **totals, "sops_G": totals["acs_G"]}
        _log_run(store, "8-512", seed, 4, final, energy, status="on track")
    _log_run(store, "8-768", 0, 2)
    _log_run(store, "8-768", 1, 1, final={}, energy='{"layers": [{}]}')  # an artifact in a format of old
    _log_run(store, "8-384", 0, 1, name="dash-partial-smoke")  # tracked apart by `sfh reproduce --smoke`
    return path, uri


@pytest.fixture(scope="module")
def rendered(partial: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``sfh report`` of the partial experiment, as ``make report`` runs it; returns the reports folder."""
    path, uri = partial
    out = tmp_path_factory.mktemp("reports")
    assert sfh(["report", str(path), "--tracking-uri", uri, "--out", str(out)]) == 0
    return out


def test_partial_experiment_renders(partial: tuple[Path, str], rendered: Path) -> None:
    path, uri = partial
    assert [r.verdict for r in results.collect(load_experiment(path), uri)] == ["PASS", "RUNNING", "NOT RUN"]
    index = rendered / "dash-partial" / "index.html"
    page = index.read_text()
    for verdict in ("PASS", "RUNNING", "NOT-RUN"):
        assert f'class="verdict {verdict}"' in page
    images = re.findall(r'<img src="([^"]+)"', page)
    assert {Path(src).name for src in images} == {
        "tradeoff-imagenet-energy.png",
        "tradeoff-imagenet-params.png",
        "curves-8-512.png",
        "gap-8-512.png",
        "curves-8-768.png",
        "energy-8-512-seed0.png",
        "energy-8-512-seed1.png",
    }
    assert all((index.parent / src).is_file() and not src.startswith("/") for src in images)
    assert "8-768 seed 0 (RUNNING): no energy pass logged yet" in page
    assert "8-768 seed 1: energy_layers.json lacks" in page
    assert "NOT RUN: no run of this row yet" in page
    assert "[M]" in unescape(page)  # the peers' evidence marks are listed
    listing = (rendered / "index.html").read_text()
    assert 'href="dash-partial/index.html"' in listing and 'href="dash-partial-smoke/index.html"' in listing
    smoke = (rendered / "dash-partial-smoke" / "index.html").read_text()
    assert smoke.count('class="verdict NOT-RUN"') == 2 and 'class="verdict RUNNING"' in smoke
    # Rows not run in this variant still show the authors' curve where a log ships: the target to reach.
    assert {Path(src).name for src in re.findall(r'<img src="figures/(curves-[^"]+)"', smoke)} == {
        "curves-8-384.png", "curves-8-512.png", "curves-8-768.png",
    }  # fmt: skip
    assert unescape(smoke).count("NOT RUN: no run of this row yet; the authors' run alone, as the target") == 2


def _cells(markdown_line: str) -> list[str]:
    return [cell.strip() for cell in markdown_line.strip().strip("|").split("|")]


def test_html_table_agrees_with_markdown_and_reference_curves_are_sourced(
    partial: tuple[Path, str], tmp_path: Path
) -> None:
    """A demo-sized value prints as in ``sfh table``; each authors' curve is named with its source and hash, a row
    without one says so, and the gap figure shows each seed's status."""
    path, uri = partial
    experiment = load_experiment(path)
    rows = results.collect(experiment, uri)
    rows[0] = dataclasses.replace(rows[0], sops_G=0.00252, energy_mJ=0.0123)
    rows[2] = dataclasses.replace(rows[2], paper=dataclasses.replace(rows[2].paper, sops_G=0.00252))
    reader = results.RunReader(uri)

    page = unescape(write_report(experiment, rows, reader, tmp_path / "out").read_text())
    markdown = results.render_markdown(rows).splitlines()[2:]
    for row, line in zip(rows, markdown, strict=True):
        for cell in _cells(line)[1:8]:  # paper top-1 .. energy: the numbers both tables print
            assert f"<td>{cell}</td>" in page, (row.row_id, cell)
    assert "<td>0.00252 / 6.52</td>" in page and "<td>n/a / 0.00252</td>" in page
    sha = json.loads((REPO / "experiments/reference/spikingformer-imagenet-8-512.json").read_text())["source"]["sha256"]
    assert ("zhouchenlin2096/Spikingformer@4378623b:origin_logs/imagenet/Spikingformer-on-Imagenet-512.text "
            f"(sha256 {sha[:12]}...)") in page
    assert "Spikingformer-8-512 (authors' log), 310 epochs, best 74.79 at epoch 297" in page
    assert page.count("no reference curve: the authors published no training log of this row") == 1  # 8-384
    assert "seed 0: on track; seed 1: on track" in page
    assert "8-768: no gap_to_reference logged" in page
    assert [r.convergence for r in rows] == ["seed 0: on track; seed 1: on track", "n/a", "no published log"]


def test_report_without_arguments_discovers_experiments(
    partial: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``sfh report`` alone (``make report``): every experiment file in ./experiments with runs, each variant."""
    path, uri = partial
    folder = tmp_path / "experiments"
    folder.mkdir()
    shutil.copy(path, folder / path.name)
    never = {**EXPERIMENT, "name": "dash-never-tracked"}
    (folder / "never.yaml").write_text(yaml.safe_dump(never, sort_keys=False))
    (folder / "recipe.yaml").write_text("model: {name: spikingformer_8_384}\n")  # a TrainConfig: skipped
    monkeypatch.chdir(tmp_path)
    assert sfh(["report", "--tracking-uri", uri]) == 0
    out = tmp_path / "runs" / "reports"
    assert sorted(p.parent.name for p in out.glob("*/index.html")) == ["dash-partial", "dash-partial-smoke"]
    listing = (out / "index.html").read_text()
    assert 'href="dash-partial/index.html"' in listing and "dash-never-tracked" not in listing
    captured = capsys.readouterr()
    assert "recipe.yaml: not an experiment file" in captured.err
    assert captured.out.splitlines()[-1] == str(Path("runs") / "reports" / "index.html")


DEMO = REPO / "experiments" / "demo.yaml"


@pytest.fixture(scope="module")
def demo_report(ray_head: RayNode, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real demo run through the harness (the session's Ray head + MLflow, first row only, one epoch), then
    ``sfh report`` of it."""
    root = tmp_path_factory.mktemp("demo")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    demo = load_experiment(DEMO)
    first = demo.rows[0].id
    for args in (
        ["reproduce", DEMO, "--epochs", "1", "--rows", first, "--energy-batches", "1", "--storage", root / "ray",
         "--address", ray_head.address],
        ["report", DEMO, "--out", root / "reports"],
    ):
        command = [sys.executable, "-m", "harness.cli", *map(str, args), "--tracking-uri", uri]
        done = subprocess.run(command, cwd=REPO, env=ray_head.driver_env(), capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root / "reports" / tracked_name(demo, epochs=1) / "index.html"


@pytest.mark.ray
def test_demo_run_report(demo_report: Path) -> None:
    experiment = load_experiment(DEMO)
    first, others = experiment.rows[0].id, experiment.rows[1:]
    page = demo_report.read_text()
    # the run row, judged against the demo's reference (this project's own run, not a paper)
    assert len(re.findall(r'<td class="verdict (?:PASS|WARN|FAIL)">', page)) == 1
    assert page.count('<td class="verdict NOT-RUN">NOT RUN</td>') == len(others)  # rows left out of this run
    dataset = experiment.train_config(experiment.rows[0]).data.dataset
    uri = f"sqlite:///{demo_report.parents[2] / 'mlflow.db'}"
    tracked = results.collect(experiment, uri, name=demo_report.parent.name)
    cells = _cells(results.render_markdown(tracked).splitlines()[2])
    for cell in cells[1:8]:  # demo-sized SOPs and energy print as in `sfh table`, not as 0.00
        assert f"<td>{escape(cell)}</td>" in page, cell
    names = sorted(Path(src).name for src in re.findall(r'<img src="([^"]+)"', page))
    assert names[:1] == [f"curves-{first}.png"] and re.fullmatch(rf"energy-{first}-seed\d+\.png", names[1])
    assert names[2:] == [f"tradeoff-{dataset}-energy.png", f"tradeoff-{dataset}-params.png"]


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="headless Chromium missing: run `make test-deps`")
@pytest.mark.parametrize("report", ["rendered", pytest.param("demo_report", marks=pytest.mark.ray)])
@pytest.mark.browser
def test_report_in_headless_chromium(report: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Open index.html from disk as a person would: every figure decodes, no script or resource error."""
    found = request.getfixturevalue(report)
    index = found / "dash-partial" / "index.html" if found.is_dir() else found
    dom, console = _chromium(index, tmp_path, "--dump-dom", "--virtual-time-budget=10000")
    body = re.search(r"<body[^>]*>", dom)
    assert body is not None, dom[:500]
    attrs = dict(re.findall(r'(data-[\w-]+)="([^"]*)"', body.group(0)))
    n = len(re.findall(r"<img ", dom))
    assert n >= 4 and attrs.get("data-images-ok") == f"{n}/{n}", attrs
    assert json.loads(unescape(attrs["data-errors"])) == []
    assert not [line for line in console.splitlines() if ":CONSOLE" in line], console
    shot = index.with_name("screenshot.png")  # kept beside the report, to look at
    _chromium(index, tmp_path, f"--screenshot={shot}", "--window-size=1400,2600", "--hide-scrollbars")
    pixels = matplotlib.image.imread(shot, format="png")[..., :3]
    assert pixels.shape[:2] == (2600, 1400), pixels.shape
    # Not blank: the dark header, the coloured verdicts and the figures give many colours and contrast.
    assert pixels.std() > 0.05 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200
    assert (pixels.max(axis=2) < 0.3).mean() > 0.01  # the header band (and text) are dark


def _chromium(page: Path, tmp: Path, *args: str) -> tuple[str, str]:
    """Run headless Chromium on a file, offline and profile-less; returns (stdout, stderr)."""
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp / 'chromium-profile'}", "--enable-logging=stderr", "--v=0", *args, page.as_uri(),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    return done.stdout, done.stderr
