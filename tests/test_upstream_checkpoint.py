"""Upstream checkpoint import: key mapping per family, strictness, and timm's pretrained path.

The key lists are the state-dict layouts of upstream's own model files at full size, written by
``tests/golden/make_golden.py`` into ``tests/golden/upstream_layouts.json``. That the imported
weights compute upstream's logits and gradients is ``test_golden.py``'s part (fixtures made by the upstream code);
here a golden state dict goes through timm's own pretrained path as a training-script file.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable

import pytest
import timm
import torch
from helpers.golden import GOLDEN, load

from spikingformer import build_model, load_upstream_state_dict

#: Our registered models whose upstream layouts these tests load (QKFormer's and SDT's: their own test modules).
FAMILIES = ("spikingformer_8_384", "spikingformer_cifar_4_384", "spikingformer_dvs_2_256", "spikformer_cifar_4_384",
            "spikformer_8_384")


@pytest.fixture(scope="module")
def upstream_keys() -> dict[str, dict[str, list[int]]]:
    layouts = json.loads((GOLDEN / "upstream_layouts.json").read_text())
    return {name: layouts[name]["state_dict"] for name in FAMILIES}


def fake_upstream(keys: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """Random tensors with the upstream names and shapes (positive running_var, integer counters)."""
    state = {}
    for key, shape in keys.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.randint(1, 10_000, shape)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape) + 0.5
        else:
            state[key] = torch.randn(shape)
    return state


def fingerprints(tensors) -> Counter[str]:
    """The multiset of tensor contents, regardless of names and of a [out, in] -> [out, in, 1] reshape."""
    return Counter(hashlib.sha1(t.detach().contiguous().numpy().tobytes()).hexdigest() for t in tensors)


@pytest.mark.parametrize("family", FAMILIES)
def test_upstream_checkpoint_loads(upstream_keys, family: str) -> None:
    upstream = fake_upstream(upstream_keys[family])
    model = build_model(family)
    load_upstream_state_dict(model, upstream)
    ours = model.state_dict()
    # every used upstream value landed somewhere, and nothing else is in the model
    used = [v for k, v in upstream.items() if not model.UPSTREAM_UNUSED.fullmatch(k)]
    assert len(used) == len(ours) and len(used) < len(upstream)
    assert fingerprints(used) == fingerprints(ours.values())
    assert torch.equal(ours["head.weight"], upstream["head.weight"])
    projection = "q_linear" if family == "spikformer_cifar_4_384" else "q_conv"
    assert torch.equal(
        ours["blocks.1.attn.q.conv.weight"].flatten(1), upstream[f"block.1.attn.{projection}.weight"].flatten(1)
    )


WRAPPERS: dict[str, Callable[[dict], dict]] = {
    "raw": lambda sd: sd,
    "timm": lambda sd: {"epoch": 284, "arch": "vit_snn", "state_dict": sd, "optimizer": {}},
    "ddp": lambda sd: {f"module.{k}": v for k, v in sd.items()},
    "timm+ddp": lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "version": 2},
    "model": lambda sd: {"model": sd},
    "ema": lambda sd: {"state_dict_ema": sd},
}


@pytest.mark.parametrize("wrapper", WRAPPERS)
def test_checkpoint_wrappers(upstream_keys, wrapper: str) -> None:
    upstream = fake_upstream(upstream_keys["spikingformer_dvs_2_256"])
    model = build_model("spikingformer_dvs_2_256")
    load_upstream_state_dict(model, WRAPPERS[wrapper](upstream))
    assert torch.equal(
        model.state_dict()["tokenizer.4.conv_bn.bn.running_var"], upstream["patch_embed.proj4_bn.running_var"]
    )


def test_timm_checkpoint_prefers_state_dict_over_ema(upstream_keys) -> None:
    upstream = fake_upstream(upstream_keys["spikingformer_dvs_2_256"])
    ema = {k: torch.zeros_like(v) for k, v in upstream.items()}
    model = build_model("spikingformer_dvs_2_256")
    load_upstream_state_dict(model, {"state_dict_ema": ema, "state_dict": upstream})
    assert torch.equal(model.head.weight.detach(), upstream["head.weight"])


@pytest.fixture
def dvs_checkpoint(upstream_keys) -> dict[str, torch.Tensor]:
    return fake_upstream(upstream_keys["spikingformer_dvs_2_256"])


def load_error(checkpoint: dict, name: str = "spikingformer_dvs_2_256") -> str:
    with pytest.raises(ValueError) as err:
        load_upstream_state_dict(build_model(name), checkpoint)
    return str(err.value)


def test_unexpected_key_is_named(dvs_checkpoint) -> None:
    dvs_checkpoint["block.0.attn.extra_conv.weight"] = torch.zeros(3)
    assert "'block.0.attn.extra_conv.weight'" in load_error(dvs_checkpoint)


def test_key_mapping_outside_the_model_is_named(dvs_checkpoint) -> None:
    dvs_checkpoint["block.2.attn.q_conv.weight"] = torch.zeros(256, 256, 1)  # a third block
    message = load_error(dvs_checkpoint)
    assert "'block.2.attn.q_conv.weight'" in message and "blocks.2.attn.q.conv.weight" in message


def test_missing_key_is_named(dvs_checkpoint) -> None:
    del dvs_checkpoint["block.1.attn.q_conv.weight"]
    assert "blocks.1.attn.q.conv.weight" in load_error(dvs_checkpoint)


def test_wrong_shape_is_named_with_both_shapes(dvs_checkpoint) -> None:
    dvs_checkpoint["head.weight"] = torch.zeros(10, 256)  # a CIFAR10-DVS head into the Gesture model
    message = load_error(dvs_checkpoint)
    assert "'head.weight'" in message and "[10, 256]" in message and "[11, 256]" in message


def test_wrong_family_is_rejected(upstream_keys) -> None:
    """The CIFAR Spikingformer tokenizer is ``block{i}_*``; an ImageNet-style checkpoint must not load."""
    checkpoint = fake_upstream(upstream_keys["spikingformer_dvs_2_256"])
    assert "'patch_embed.proj_conv.weight'" in load_error(checkpoint, "spikingformer_cifar_4_256")


def test_not_a_checkpoint() -> None:
    assert "state_dict" in load_error({"epoch": 3, "args": {}})


# ---------------------------------------------------------------- through timm's own pretrained path


@pytest.mark.parametrize("case", ["spikingformer_cifar", "spikformer_cifar"])
def test_timm_pretrained_path_loads_an_upstream_file(case: str, tmp_path) -> None:
    """``pretrained=True`` with ``pretrained_cfg_overlay=dict(file=...)`` runs the family's checkpoint filter."""
    golden = load(case)
    path = tmp_path / "upstream.pth.tar"
    torch.save({"epoch": 299, "state_dict": golden.under("state")}, path)  # as upstream's timm train.py writes
    entry = golden.entry
    model = timm.create_model(entry["model"], pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                              **entry["kwargs"]).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(golden.input), golden.tensors["logits_eval"], rtol=0, atol=1e-5)

    # fine-tuning: another class count keeps every weight but the classifier, which timm drops
    transfer = timm.create_model(entry["model"], pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                                 **{**entry["kwargs"], "num_classes": 3})
    assert transfer.head.out_features == 3
    kept = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    assert all(torch.equal(transfer.state_dict()[k], v) for k, v in kept.items())


def test_timm_pretrained_path_rejects_another_family(tmp_path) -> None:
    path = tmp_path / "spikformer.pth"
    torch.save(load("spikformer_cifar").under("state"), path)
    with pytest.raises(ValueError, match="patch_embed"):
        timm.create_model("spikingformer_cifar_4_256", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                          embed_dim=32, depth=2, num_heads=4)
