"""The upstream log parsers reproduce the facts SPEC section 7 (training) and section 5 (energy) read off the logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from dashboards.upstream_logs import (
    UPSTREAM_RUNS,
    find_upstream,
    parse_dvs_log,
    parse_energy_log,
    parse_timm_log,
)


@pytest.fixture(scope="module")
def logs(shared_dir: Path) -> Path:
    return shared_dir / "reference" / "upstream_logs"


def _run(model: str, dataset: str, time_steps: int):
    run = find_upstream(model, dataset, time_steps)
    assert run is not None
    return run


def test_imagenet_8_512(logs: Path) -> None:
    curve = _run("spikingformer_8_512", "imagenet", 4).curve(logs)
    assert len(curve.epochs) == 310
    assert [e.epoch for e in curve.epochs] == list(range(310))
    assert (curve.best.epoch, curve.best.top1) == (297, pytest.approx(74.792))
    assert (curve.final.epoch, curve.final.top1) == (309, pytest.approx(74.546))
    assert curve.epochs[0].lr == pytest.approx(1e-6)  # warmup start, SPEC 6.1
    assert curve.final.lr == pytest.approx(1e-5)  # cooldown at min_lr


def test_imagenet_8_768(logs: Path) -> None:
    curve = _run("spikingformer_8_768", "imagenet", 4).curve(logs)
    assert len(curve.epochs) == 310
    assert (curve.best.epoch, curve.best.top1) == (287, pytest.approx(75.848))
    assert curve.final.top1 == pytest.approx(75.512)


def test_cifar10dvs_t16(logs: Path) -> None:
    curve = _run("spikingformer_dvs_2_256", "cifar10-dvs", 16).curve(logs)
    assert len(curve.epochs) == 106
    assert (curve.best.epoch, curve.best.top1) == (93, pytest.approx(81.3))
    assert (curve.final.epoch, curve.final.top1) == (105, pytest.approx(80.7))
    assert curve.epochs[0].top1 == pytest.approx(34.5)


@pytest.mark.parametrize(
    ("model", "macs_G", "acs_G", "energy_mJ", "ssa_acs_G"),
    [("spikingformer_8_512", 0.3473, 6.5175, 7.4635, None), ("spikingformer_8_768", 0.5210, 12.5137, 13.6589, 0.0351)],
)
def test_energy_logs(logs: Path, model: str, macs_G: float, acs_G: float, energy_mJ: float, ssa_acs_G) -> None:
    energy = _run(model, "imagenet", 4).energy(logs)
    assert energy is not None
    assert len(energy.layers) == 54  # 5 tokenizer convs + 8 blocks x 6 convs + head
    assert (energy.macs_G, energy.acs_G, energy.energy_mJ) == pytest.approx((macs_G, acs_G, energy_mJ), abs=1e-4)
    if ssa_acs_G is not None:
        assert energy.ssa_acs_G == pytest.approx(ssa_acs_G, abs=1e-4)
    # The per-layer energies plus the SSA matmul ACs add up to the logged total (SPEC 5).
    assert sum(layer.energy_mJ for layer in energy.layers) + 0.9 * energy.ssa_acs_G == pytest.approx(energy.energy_mJ)
    first, head = energy.layers[0], energy.layers[-1]
    assert (first.kind, first.rate, head.name, head.rate) == ("Conv2d", 1.0, "head", 1.0)


def test_energy_768_rates_match_spec(logs: Path) -> None:
    layers = {layer.name: layer for layer in _run("spikingformer_8_768", "imagenet", 4).energy(logs).layers}
    rates = [layers[f"patch_embed.proj{i}_conv"].rate for i in (1, 2, 3, 4)]
    assert rates == pytest.approx([0.198, 0.132, 0.121, 0.130], abs=1e-3)
    assert layers["block[0].attn.q_conv"].rate == pytest.approx(0.147, abs=1e-3)


def test_unknown_configuration_has_no_upstream() -> None:
    assert find_upstream("spikingformer_8_384", "imagenet", 4) is None
    assert find_upstream("spikingformer_dvs_2_256", "cifar10-dvs", 10) is None
    assert len({run.train_log for run in UPSTREAM_RUNS}) == len(UPSTREAM_RUNS)


def test_parsers_reject_text_without_epochs() -> None:
    for parse in (parse_timm_log, parse_dvs_log):
        with pytest.raises(ValueError, match="no completed epoch"):
            parse("Creating model\n", "x")
    with pytest.raises(ValueError, match="not an upstream energy log"):
        parse_energy_log("")


def test_timm_parser_ignores_the_duplicated_info_lines() -> None:
    line_train = "Train: 0 [4447/4448 (100%)]  Loss:  6.9 (6.5000)  Time: 0.6s,  472/s  (0.6s,  474/s)  LR: 1.000e-06"
    line_test = "Test: [ 173/173]  Time: 0.4 (0.2)  Loss:  6.6 (6.6871)  Acc@1:  0.0 ( 0.9460)  Acc@5:  0.5 ( 3.2880)"
    text = "\n".join(f"{p}{line}" for line in (line_train, line_test) for p in ("INFO:train:", ""))
    curve = parse_timm_log(text, "x")
    (epoch,) = curve.epochs
    assert (epoch.top1, epoch.top5, epoch.eval_loss, epoch.train_loss, epoch.lr) == (0.946, 3.288, 6.6871, 6.5, 1e-6)
