"""The authors' curves as repository data: what the extracted files hold, how the extractor makes them, how a trial's
epoch lines up with them, and how the convergence guard judges a run against them."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import pytest
import yaml

from harness.experiment import discover, load_experiment
from harness.reference import extract
from harness.reference.curves import REFERENCE_DIR, ReferenceCurve, available, gap, load_curve
from harness.reference.guard import STOPPED, ConvergenceGuard, GuardSpec, status_text
from harness.reference.logs import load_energy_log, parse_dvs_log, parse_energy_log, parse_mae_log, parse_timm_log
from spikingformer._validation import ConfigError

REPO = Path(__file__).resolve().parents[1]

#: (epochs logged, best epoch, best top-1) as each log's own summary prints them ("Best metric", "Max accuracy",
#: "max_test_acc1").
LOGGED = {
    "spikingformer-imagenet-8-512": (310, 297, 74.792),
    "spikingformer-imagenet-8-768": (310, 287, 75.848),
    "spikingformer-cifar10-dvs-2-256-t16": (106, 93, 81.3),
    "qkformer-imagenet-10-384": (200, 199, 78.854),
    "qkformer-imagenet-10-512": (200, 196, 82.083),
    "qkformer-imagenet-10-768": (200, 191, 84.293),
    "qkformer-cifar10-4-384": (410, 395, 96.21),
    "qkformer-cifar100-4-384": (410, 400, 81.22),
    "qkformer-cifar10-dvs-2-256-t16": (106, 90, 84.1),
}


@pytest.mark.parametrize("name", sorted(LOGGED))
def test_extracted_curves_match_the_logs_summaries_and_carry_provenance(name: str) -> None:
    curve = load_curve(name)
    n, best_epoch, best_top1 = LOGGED[name]
    assert list(curve.epochs) == list(range(n)) and curve.total_epochs == n
    assert curve.best == (best_epoch, pytest.approx(best_top1))
    assert all(v is not None and v > 0 for v in curve.eval_loss + curve.train_loss)
    source = curve.source
    assert re.fullmatch(r"[0-9a-f]{64}", source.sha256) and re.fullmatch(r"[0-9a-f]{8}", source.commit)
    assert source.repository in ("zhouchenlin2096/Spikingformer", "zhouchenlin2096/QKFormer")
    manifest = yaml.safe_load((REFERENCE_DIR / "SOURCES.yaml").read_text())["curves"][name]
    assert manifest["source"] == {k: getattr(source, k) for k in ("repository", "commit", "path", "sha256")}
    assert curve.band_pp > 0 and curve.dataset in curve.band_derivation


def test_every_published_log_is_attached_to_the_rows_it_reproduces() -> None:
    attached = {(e.name, r.id): e.reference_for(r).name for e in discover(REPO / "experiments") for r in e.rows
                if r.reference_curve is not None}
    assert attached == {
        ("imagenet", "8-512"): "spikingformer-imagenet-8-512", ("imagenet", "8-768"): "spikingformer-imagenet-8-768",
        ("cifar10-dvs", "2-256-T16"): "spikingformer-cifar10-dvs-2-256-t16",
        ("qkformer-imagenet", "10-384"): "qkformer-imagenet-10-384",
        ("qkformer-imagenet", "10-512"): "qkformer-imagenet-10-512",
        ("qkformer-imagenet", "10-768"): "qkformer-imagenet-10-768",
        ("qkformer-cifar10", "4-384"): "qkformer-cifar10-4-384",
        ("qkformer-cifar100", "4-384"): "qkformer-cifar100-4-384",
        ("qkformer-cifar10-dvs", "2-256-T16"): "qkformer-cifar10-dvs-2-256-t16",
    }  # fmt: skip
    assert sorted(set(attached.values())) == available() == sorted(LOGGED)


def test_the_dataset_bands_are_the_documented_derivation() -> None:
    bands = {load_curve(n).dataset: load_curve(n).band_pp for n in LOGGED}
    assert bands == {"imagenet": 0.7, "cifar10-dvs": 4.3, "cifar10": 0.7, "cifar100": 1.3}
    docs = (REPO / "docs" / "convergence.md").read_text()
    for dataset, band in bands.items():
        assert f"| {dataset} | {band} |" in docs


@pytest.mark.parametrize(("name", "macs_G", "acs_G", "energy_mJ"),
                         [("spikingformer-imagenet-8-512", 0.3473, 6.5175, 7.4635),
                          ("spikingformer-imagenet-8-768", 0.5210, 12.5137, 13.6589)])
def test_energy_logs_as_data(name: str, macs_G: float, acs_G: float, energy_mJ: float) -> None:
    log = load_energy_log(name)
    assert (log.macs_G, log.acs_G, log.energy_mJ) == pytest.approx((macs_G, acs_G, energy_mJ), abs=1e-4)
    assert len(log.layers) == 54  # 5 tokenizer convs + 8 blocks x 6 convs + head
    # The per-layer energies plus the attention matmuls' ACs add up to the logged total.
    assert sum(layer.energy_mJ for layer in log.layers) + 0.9 * log.ssa_acs_G == pytest.approx(log.energy_mJ)
    assert load_energy_log("qkformer-cifar10-4-384") is None


TIMM = ("Train: {e} [ 780/781 (100%)]  Loss:  2.1 ({loss:.4f})  Time: 0.1s,  4/s  (0.1s,  3/s)  LR: {lr:.3e}  Data: 0\n"
        "Test: [ 156/156]  Time: 0.0 (0.0)  Loss:  0.2 ({eval:.4f})  Acc@1: 100.0 ({top1:.4f})  Acc@5: 100.0 (99.0)\n")
MAE = ("[10:00:00.1] Epoch: [{e}]  [   0/5004]  eta: 1:00:00  lr: {lr:.6f}  loss: 6.0 (6.0)\n"
       "[10:00:00.2] Averaged stats: lr: {lr:.6f}  loss: 5.5 ({loss:.4f})\n"
       "[10:00:00.3] * Acc@1 {top1:.3f} Acc@5 12.688 loss {eval:.3f}\n")


def _timm_log(top1: list[float]) -> str:
    lines = []
    for e, t in enumerate(top1):
        line = TIMM.format(e=e, loss=3 - e * 0.1, lr=1e-3 * min(1, (e + 1) / 2), eval=2 - e * 0.1, top1=t)
        lines.append("".join(f"{p}{x}\n" for x in line.splitlines() for p in ("INFO:train:", "")))
    return "".join(lines)


def test_parsers_read_each_format() -> None:
    curve = parse_timm_log(_timm_log([10.0, 20.0, 30.0]), "t")  # every line twice, once with INFO:train:
    assert [(e.epoch, e.top1, e.lr) for e in curve.epochs] == [(0, 10.0, 5e-4), (1, 20.0, 1e-3), (2, 30.0, 1e-3)]
    mae = parse_mae_log("".join(MAE.format(e=e, lr=1e-4 * (e + 1), loss=6 - e, top1=5.0 * e, eval=5 - e)
                                for e in range(3)), "m")
    assert [(e.epoch, e.top1, e.train_loss, e.eval_loss) for e in mae.epochs] == [
        (0, 0.0, 6.0, 5.0), (1, 5.0, 5.0, 4.0), (2, 10.0, 4.0, 3.0)]
    for parse in (parse_timm_log, parse_dvs_log, parse_mae_log):
        with pytest.raises(ValueError, match="no completed epoch"):
            parse("Creating model\n", "x")
    with pytest.raises(ValueError, match="not an upstream energy log"):
        parse_energy_log("")


def test_extractor_finds_logs_by_hash_and_writes_curves_with_their_band(tmp_path: Path) -> None:
    logs, out = tmp_path / "logs" / "any" / "depth", tmp_path / "experiments" / "reference"
    logs.mkdir(parents=True)
    out.mkdir(parents=True)
    top1 = [50.0 + 40 * (1 - math.exp(-e / 3)) + (0.3 if e % 2 else -0.3) for e in range(20)]
    text = _timm_log(top1)
    (logs / "renamed.log").write_text(text)
    sha = hashlib.sha256(text.encode()).hexdigest()
    source = {"repository": "someone/repo", "commit": "0123abcd", "path": "logs/train.log", "sha256": sha}
    manifest = {"curves": {"toy": {"label": "toy (log)", "dataset": "cifar10", "test_images": 10000,
                                   "format": "timm", "source": source}}}
    (out / "SOURCES.yaml").write_text(yaml.safe_dump(manifest))
    row = {"id": "r", "model": {"name": "spikingformer_cifar_4_384"}, "reference_curve": "toy", "paper": {"top1": 89.0}}
    (out.parent / "table.yaml").write_text(yaml.safe_dump({"rows": [row]}))
    assert extract.extract(tmp_path / "logs", out) == [out / "toy.json"]
    curve = ReferenceCurve.from_json((out / "toy.json").read_text(), "toy")
    assert curve.top1 == pytest.approx(top1) and curve.source.sha256 == sha and curve.warmup_epochs == 1
    sigma, _, _ = extract.eval_spread(parse_timm_log(text, "toy"), 10000)
    assert sigma == pytest.approx(0.3, abs=0.02)  # the alternating +-0.3 scatter dominates 10,000 images' spread
    expected = 3 * sigma + abs(89.0 - max(top1))
    assert curve.band_pp == math.ceil(expected * 10 - 1e-9) / 10
    (logs / "renamed.log").write_text(text + "changed")
    with pytest.raises(FileNotFoundError, match="no file with the sha256 of toy"):
        extract.extract(tmp_path / "logs", out)


def _curve(top1: list[float], band: float = 1.0, warmup: int = 0) -> ReferenceCurve:
    n = len(top1)
    return ReferenceCurve("synthetic", "synthetic", "digits", tuple(range(n)), tuple(top1), (None,) * n, (None,) * n,
                          warmup, band, "test")


def test_alignment_by_fraction_of_the_schedule() -> None:
    curve = _curve([10.0 * (e + 1) for e in range(10)])  # 10 epochs: top-1 10, 20, ..., 100
    assert curve.top1_at(0.5) == 50.0 and curve.top1_at(1.0) == 100.0 and curve.top1_at(0.01) == 10.0
    assert curve.top1_at(0.25) == pytest.approx(25.0)  # between epochs 1 and 2
    # A 5-epoch trial's epoch k sits at (k+1)/5: reference epoch 2k+1.
    assert [gap(curve, k, 5, 0.0)[0] for k in range(5)] == pytest.approx([20.0, 40.0, 60.0, 80.0, 100.0])
    reference, delta, band = gap(curve, 1, 5, 37.0)
    assert (reference, delta) == (pytest.approx(40.0), pytest.approx(-3.0))
    assert band == pytest.approx(1.0 + 10.0)  # the dataset band plus one reference epoch's change there


def test_guard_flags_and_stops_after_its_patience_and_survives_a_resume() -> None:
    curve = _curve([50.0, 60.0, 70.0, 80.0], band=2.0, warmup=1)
    spec = GuardSpec(curve, stop_when_behind=True, patience=2)
    spec = GuardSpec.from_mapping(json.loads(json.dumps(spec.to_mapping())))  # as it travels to the trial
    guard = ConvergenceGuard(spec, total_epochs=4, warmup_epochs=0)
    warm = guard.judge({"epoch": 0, "top1": 10.0})  # 40 points below, but inside the reference's warmup: not judged
    assert warm["gap_to_reference"] == -40.0 and math.isnan(warm["behind_since_epoch"]) and guard.stopped is None
    first = guard.judge({"epoch": 1, "top1": 40.0})  # 20 points below 60: behind
    assert guard.status(first) == "behind by 20.0 points since epoch 2" and guard.stopped is None
    assert guard.judge({"epoch": 2, "top1": math.nan}) == {}  # no evaluation this epoch: nothing judged
    second = guard.judge({"epoch": 2, "top1": 45.0})
    assert guard.stopped == f"{STOPPED} (behind by 25.0 points since epoch 2)" == guard.status(second)
    resumed = ConvergenceGuard(spec, total_epochs=4, warmup_epochs=0)
    resumed.replay([{"epoch": 0, "top1": 10.0}, {"epoch": 1, "top1": 40.0}])
    assert resumed.behind == [1] and resumed.stopped is None
    on_track = ConvergenceGuard(GuardSpec(curve, stop_when_behind=False, patience=1), 4, 0)
    assert on_track.status(on_track.judge({"epoch": 1, "top1": 59.0})) == "on track"
    assert on_track.judge({"epoch": 2, "top1": 0.0}) and on_track.stopped is None  # flagged, never stopped
    assert status_text(math.nan, math.nan) == "not judged yet"


def test_a_row_naming_a_missing_curve_or_stopping_without_one_is_refused(tmp_path: Path) -> None:
    base = {"name": "x", "recipe": "digits", "paper": {"arxiv": "1", "table": "t", "source": "s"}}
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump({**base, "rows": [{"id": "a", "model": {"name": "spikingformer_cifar_2_384"},
                                                       "reference_curve": "imagenet-8-512"}]}))
    with pytest.raises(ConfigError, match=r"row a\.reference_curve: .*no file .* curves here: qkformer-cifar10-4-384"):
        load_experiment(path)
    path.write_text(yaml.safe_dump({**base, "rows": [{"id": "a", "model": {"name": "spikingformer_cifar_2_384"},
                                                       "guard": {"stop_when_behind": True}}]}))
    with pytest.raises(ConfigError, match=r"row a\.guard\.stop_when_behind: True is not allowed \(only with a "):
        load_experiment(path)
