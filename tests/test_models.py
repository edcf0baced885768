"""Model registry, parameter counts (upstream's classes, counted), input checks and forward-pass invariants.

ImageNet-size models are only counted, never run: their forwards are too slow for the suite.
"""

from __future__ import annotations

import csv
import io
import sys

import pytest
import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

import harness.cli
import spikingformer
from spikingformer import MODEL_CONFIGS, Spikformer, Spikingformer, build_model
from spikingformer.data.pixel_stats import CIFAR_MEAN, CIFAR_STD
from spikingformer.models.layers import SeqDropPath

#: The upstream classes' counts less their never-called LayerNorms (4 x dim per block), which our models omit.
EXPECTED_PARAMS = {
    "spikingformer_8_384": 16_816_024,
    "spikingformer_8_512": 29_689_384,
    "spikingformer_8_768": 66_338_632,
    "spikingformer_cifar_4_256": 4_152_106,
    "spikingformer_cifar_2_384": 5_762_746,
    "spikingformer_cifar_4_384": 9_320_122,
    "spikingformer_dvs_2_256": 2_566_923,
    "spikformer_8_384": 16_816_024,
    "spikformer_8_512": 29_689_384,
    "spikformer_8_768": 66_338_632,
    "spikformer_cifar_4_256": 4_155_178,
    "spikformer_cifar_2_384": 5_765_050,
    "spikformer_cifar_4_384": 9_324_730,
    # QKFormer: the upstream code's counts (it builds nothing unused)
    "qkformer_10_384": 16_473_688,
    "qkformer_10_512": 29_079_336,
    "qkformer_10_768": 64_962_760,
    "qkformer_cifar_4_384": 6_706_234,
    "qkformer_cifar10dvs_2_256": 1_504_138,
    "qkformer_dvs_2_256": 1_999_371,
    # SDT: the upstream code's count less talking_heads (8 x 8 per block)
    "sdt_8_384": 16_816_024,
    "sdt_6_512": 23_373_352,
    "sdt_8_512": 29_689_384,
    "sdt_10_512": 36_005_416,
    "sdt_8_768": 66_338_632,
    "sdt_cifar_2_512": 10_233_418,
    "sdt_dvs_2_256": 2_566_923,
    "sdt_cifar10dvs_2_256": 2_566_666,
}

#: Other class counts of the same configs (CIFAR100, CIFAR10-DVS).
EXPECTED_PARAMS_OTHER_HEADS = [
    ("spikingformer_cifar_4_256", 100, 4_175_236),
    ("spikingformer_cifar_2_384", 100, 5_797_396),
    ("spikingformer_cifar_4_384", 100, 9_354_772),
    ("spikingformer_dvs_2_256", 10, 2_566_666),
    ("qkformer_cifar_4_384", 100, 6_740_884),
    ("sdt_cifar_2_512", 100, 10_279_588),
]

SMALL = [name for name, (_, cfg) in MODEL_CONFIGS.items() if cfg["layout"] != "imagenet"]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def tiny(family: type = Spikingformer, **overrides) -> nn.Module:
    """A CIFAR-layout model small enough to run in well under a second."""
    return family(**{"embed_dim": 64, "depth": 2, "num_heads": 4, **overrides})


def test_every_registered_model_has_an_expected_count() -> None:
    assert set(EXPECTED_PARAMS) == set(MODEL_CONFIGS)


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_param_count_matches_spec(name: str) -> None:
    assert n_params(timm.create_model(name)) == EXPECTED_PARAMS[name]


@pytest.mark.parametrize(("name", "num_classes", "expected"), EXPECTED_PARAMS_OTHER_HEADS)
def test_param_count_with_other_heads(name: str, num_classes: int, expected: int) -> None:
    assert n_params(timm.create_model(name, num_classes=num_classes)) == expected


@pytest.mark.parametrize("name", SMALL)
def test_forward_shape(name: str) -> None:
    overrides = {"T": 4, "num_classes": 10} if MODEL_CONFIGS[name][1]["layout"] == "dvs" else {}
    model = timm.create_model(name, **overrides).eval()
    batch = 2 if model.input_kind == "static" else 1
    with torch.no_grad():
        logits = model(torch.rand(batch, *model.input_shape))
    assert logits.shape == (batch, model.num_classes)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(
    ("name", "shape", "expected"),
    [
        ("spikingformer_dvs_2_256", (1, 16, 2, 64, 64), "[B, 16, 2, 128, 128]"),  # wrong frame size
        ("spikingformer_dvs_2_256", (1, 10, 2, 128, 128), "[B, 16, 2, 128, 128]"),  # T mismatch
        ("spikingformer_dvs_2_256", (16, 2, 128), "[B, 16, 2, 128, 128]"),  # no batch axis, one frame
        ("spikingformer_cifar_4_256", (2, 1, 32, 32), "[B, 3, 32, 32]"),  # grey image to an RGB model
        ("spikformer_cifar_4_256", (2, 4, 3, 32, 32), "[B, 3, 32, 32]"),  # frames to a static model
        ("spikingformer_8_384", (1, 3, 32, 32), "[B, 3, 224, 224]"),  # CIFAR image to ImageNet model
    ],
)
def test_bad_input_shape_states_the_expected_shape(name: str, shape: tuple[int, ...], expected: str) -> None:
    model = build_model(name)
    with pytest.raises(ValueError, match=expected.replace("[", r"\[")):
        model(torch.zeros(shape))


@pytest.mark.parametrize("family", [Spikingformer, Spikformer])
@pytest.mark.parametrize(
    ("embed_dim", "num_heads", "reason"),
    [(100, 4, "multiple of 8"), (64, 12, "not divisible by num_heads"), (0, 1, "multiple of 8")],
)
def test_bad_dims_fail_at_construction(family: type, embed_dim: int, num_heads: int, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        family(embed_dim=embed_dim, num_heads=num_heads)


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_drop_path_is_off_by_default(name: str) -> None:
    with torch.device("meta"):
        model = build_model(name)
    assert all(m.drop_prob == 0.0 for m in model.modules() if isinstance(m, SeqDropPath))


@pytest.mark.parametrize("family", [Spikingformer, Spikformer])
def test_drop_path_is_random_in_train_and_off_in_eval(family: type) -> None:
    model = tiny(family, drop_path_rate=0.5)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        train_outputs = [model.train()(x) for _ in range(3)]
        eval_outputs = [model.eval()(x) for _ in range(2)]
    assert any(not torch.equal(train_outputs[0], y) for y in train_outputs[1:])
    assert torch.equal(*eval_outputs)


@pytest.mark.parametrize("family", [Spikingformer, Spikformer])
def test_neurons_are_reset_every_forward(family: type) -> None:
    model = tiny(family).eval()
    x, other = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        first = model(x)
        model(other)
        again = model(x)
    assert torch.equal(first, again)


@pytest.mark.parametrize("family", [Spikingformer, Spikformer])
def test_conv_and_bn_see_time_folded_into_batch(family: type) -> None:
    T, B = 3, 2
    model = tiny(family, T=T).eval()
    batches: dict[str, int] = {}
    layers = (nn.Conv1d, nn.Conv2d, nn.modules.batchnorm._BatchNorm)
    for name, module in model.named_modules():
        if isinstance(module, layers):
            module.register_forward_hook(
                lambda m, inputs, out, name=name: batches.__setitem__(name, inputs[0].shape[0])
            )
    with torch.no_grad():
        model(torch.randn(B, 3, 32, 32))
    assert batches and set(batches.values()) == {T * B}, batches


def test_registered_through_timm() -> None:
    assert set(MODEL_CONFIGS) <= set(timm.list_models())
    assert "load_upstream_state_dict" in spikingformer.__all__


#: layout -> what timm.data.resolve_data_config must give a registered model of that layout
DATA_CONFIGS = {
    "cifar": dict(input_size=(3, 32, 32), mean=CIFAR_MEAN, std=CIFAR_STD, crop_pct=1.0, interpolation="bicubic"),
    "imagenet": dict(input_size=(3, 224, 224), mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, crop_pct=1.0,
                     interpolation="bicubic"),
    "dvs": dict(input_size=(2, 128, 128), mean=(0.0, 0.0), std=(1.0, 1.0), crop_pct=1.0, interpolation="nearest"),
}
DATA_CONFIGS["cifar10-dvs"] = {**DATA_CONFIGS["dvs"], "input_size": (2, 64, 64)}  # SDT resizes the frames to 64
#: Models whose own upstream data settings differ from their layout's: SDT evaluates ImageNet at crop_pct 0.95.
DATA_CONFIG_OVERRIDES = {name: {"crop_pct": 0.95} for name in ("sdt_8_384", "sdt_6_512", "sdt_8_512", "sdt_10_512",
                                                                "sdt_8_768")}


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_resolve_data_config_gives_the_dataset_settings(name: str) -> None:
    """timm's data config of each model is its own dataset's (CIFAR: 32x32 and the CIFAR mean/std)."""
    with torch.device("meta"):
        model = timm.create_model(name)
    config = timm.data.resolve_data_config({}, model=model)
    expected = {**DATA_CONFIGS[model.layout], **DATA_CONFIG_OVERRIDES.get(name, {})}
    assert {k: config[k] for k in expected} == expected
    assert model.pretrained_cfg["num_classes"] == model.num_classes
    assert model.pretrained_cfg["input_size"] == (model.in_chans, model.img_size, model.img_size)


def test_every_registration_is_a_register_model_function() -> None:
    """timm's convention: one greppable ``@register_model`` function per name in its family's file."""
    for name in MODEL_CONFIGS:
        entrypoint = timm.models.model_entrypoint(name)
        assert entrypoint.__name__ == name
        assert getattr(sys.modules[entrypoint.__module__], name) is entrypoint
        assert name in sys.modules[entrypoint.__module__].default_cfgs


def test_params_command_markdown(capsys) -> None:
    assert harness.cli.main(["params"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| model | params | paper | difference | upstream total")
    rows = {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])}
    assert set(rows) == set(MODEL_CONFIGS)
    for name, expected in EXPECTED_PARAMS.items():
        assert rows[name][0] == f"{expected:,}"
    assert rows["spikingformer_8_768"] == ["66,338,632", "66.34M", "-1,368", "66,363,208"]
    assert rows["spikformer_cifar_4_384"] == ["9,324,730", "9.32M", "+4,730", "9,330,874"]


def test_params_command_csv(capsys) -> None:
    assert harness.cli.main(["params", "--format", "csv"]) == 0
    rows = {r["model"]: r for r in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    assert {name: int(r["params"]) for name, r in rows.items()} == EXPECTED_PARAMS
    assert rows["spikingformer_8_512"]["upstream_total"] == "29705768"  # the upstream training log's figure
    assert rows["spikingformer_dvs_2_256"]["paper"] == "2570000"
