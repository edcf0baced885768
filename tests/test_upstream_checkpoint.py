"""Upstream checkpoint import: key mapping per family, strictness, and logit equivalence.

The key lists come from real upstream checkpoints (``reference/upstream_state_dict_keys.json``); the
equivalence tests load a randomly initialised transcription of the upstream network
(``upstream_reference.py``) into our models and compare logits.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable

import pytest
import timm
import torch
import upstream_reference as ref
from spikingjelly.activation_based import neuron
from torch import nn

from spikingformer import Spikformer, Spikingformer, build_model, load_upstream_state_dict

#: upstream family in the JSON -> our registered model with the same shapes
FAMILIES = {
    "spikingformer_imagenet_8_384": "spikingformer_8_384",
    "spikingformer_cifar10_4_384": "spikingformer_cifar_4_384",
    "spikingformer_dvs128_2_256": "spikingformer_dvs_2_256",
    "spikformer_cifar10_4_384": "spikformer_cifar_4_384",
    "spikformer_imagenet_8_384": "spikformer_8_384",
}


@pytest.fixture(scope="module")
def upstream_keys(shared_dir) -> dict[str, dict[str, list[int]]]:
    return json.loads((shared_dir / "reference" / "upstream_state_dict_keys.json").read_text())


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


def test_every_family_is_covered(upstream_keys) -> None:
    assert set(upstream_keys) == set(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_upstream_checkpoint_loads(upstream_keys, family: str) -> None:
    upstream = fake_upstream(upstream_keys[family])
    model = build_model(FAMILIES[family])
    load_upstream_state_dict(model, upstream)
    ours = model.state_dict()
    # every used upstream value landed somewhere, and nothing else is in the model
    used = [v for k, v in upstream.items() if not model.UPSTREAM_UNUSED.fullmatch(k)]
    assert len(used) == len(ours) and len(used) < len(upstream)
    assert fingerprints(used) == fingerprints(ours.values())
    assert torch.equal(ours["head.weight"], upstream["head.weight"])
    projection = "q_linear" if family == "spikformer_cifar10_4_384" else "q_conv"
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
    upstream = fake_upstream(upstream_keys["spikingformer_dvs128_2_256"])
    model = build_model("spikingformer_dvs_2_256")
    load_upstream_state_dict(model, WRAPPERS[wrapper](upstream))
    assert torch.equal(
        model.state_dict()["tokenizer.4.conv_bn.bn.running_var"], upstream["patch_embed.proj4_bn.running_var"]
    )


def test_timm_checkpoint_prefers_state_dict_over_ema(upstream_keys) -> None:
    upstream = fake_upstream(upstream_keys["spikingformer_dvs128_2_256"])
    ema = {k: torch.zeros_like(v) for k, v in upstream.items()}
    model = build_model("spikingformer_dvs_2_256")
    load_upstream_state_dict(model, {"state_dict_ema": ema, "state_dict": upstream})
    assert torch.equal(model.head.weight.detach(), upstream["head.weight"])


@pytest.fixture
def dvs_checkpoint(upstream_keys) -> dict[str, torch.Tensor]:
    return fake_upstream(upstream_keys["spikingformer_dvs128_2_256"])


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
    checkpoint = fake_upstream(upstream_keys["spikingformer_dvs128_2_256"])
    assert "'patch_embed.proj_conv.weight'" in load_error(checkpoint, "spikingformer_cifar_4_256")


def test_not_a_checkpoint() -> None:
    assert "state_dict" in load_error({"epoch": 3, "args": {}})


# ---------------------------------------------------------------- logit equivalence with the upstream forward

D, HEADS, DEPTH = 64, 4, 2

EQUIVALENCE = {
    "spikingformer_cifar": (
        lambda: ref.upstream_spikingformer("cifar", 3, D, HEADS, DEPTH, num_classes=10),
        lambda: Spikingformer(layout="cifar", embed_dim=D, depth=DEPTH, num_heads=HEADS),
        (3, 32, 32),
    ),
    "spikingformer_imagenet": (
        lambda: ref.upstream_spikingformer("imagenet", 3, D, HEADS, DEPTH, num_classes=10),
        lambda: Spikingformer(layout="imagenet", img_size=64, embed_dim=D, depth=DEPTH, num_heads=HEADS),
        (3, 64, 64),
    ),
    "spikingformer_dvs": (
        lambda: ref.upstream_spikingformer("dvs", 2, D, HEADS, DEPTH, num_classes=11),
        lambda: Spikingformer(
            layout="dvs",
            img_size=128,
            in_chans=2,
            num_classes=11,
            embed_dim=D,
            depth=DEPTH,
            num_heads=HEADS,
            T=4,
            tau=1.5,
        ),
        (4, 2, 128, 128),
    ),
    "spikformer_cifar": (
        lambda: ref.upstream_spikformer("cifar", 3, D, HEADS, DEPTH, num_classes=10),
        lambda: Spikformer(layout="cifar", embed_dim=D, depth=DEPTH, num_heads=HEADS),
        (3, 32, 32),
    ),
    "spikformer_imagenet": (
        lambda: ref.upstream_spikformer("imagenet", 3, D, HEADS, DEPTH, num_classes=10),
        lambda: Spikformer(layout="imagenet", img_size=64, embed_dim=D, depth=DEPTH, num_heads=HEADS),
        (3, 64, 64),
    ),
}


def equivalent_pair(case: str) -> tuple[nn.Module, nn.Module, torch.Tensor]:
    """A randomly weighted upstream network, our model loaded from its state_dict, and a batch of 2."""
    make_reference, make_ours, sample_shape = EQUIVALENCE[case]
    generator = torch.Generator().manual_seed(1)

    def inputs(batch: int) -> torch.Tensor:
        if case == "spikingformer_dvs":  # event counts
            return torch.randint(0, 4, (batch, *sample_shape), generator=generator).float()
        return torch.randn((batch, *sample_shape), generator=generator)

    upstream = make_reference()
    ref.randomize_(upstream, inputs(4), generator)
    ours = make_ours()
    load_upstream_state_dict(ours, upstream.state_dict())
    return upstream, ours.eval(), inputs(2)


@pytest.mark.parametrize("case", EQUIVALENCE)
def test_logits_match_the_upstream_forward(case: str) -> None:
    upstream, ours, x = equivalent_pair(case)
    rates = []
    hooks = [
        m.register_forward_hook(lambda m, i, out: rates.append(out.mean().item()))
        for m in upstream.modules()
        if isinstance(m, neuron.LIFNode)
    ]
    with torch.no_grad():
        expected, got = upstream(x), ours(x)
    for hook in hooks:
        hook.remove()

    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert all(0.0 < rate < 1.0 for rate in rates), f"a silent or saturated LIF layer: {rates}"
    assert not torch.allclose(expected[0], expected[1]), "logits do not depend on the input"


@pytest.mark.parametrize("case", EQUIVALENCE)
def test_train_mode_matches_the_upstream_including_gradients(case: str) -> None:
    """Batch statistics pooled over T*B, and surrogate gradients back through every layer to the first conv."""
    upstream, ours, x = equivalent_pair(case)
    expected, got = upstream.train()(x), ours.train()(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    expected.square().sum().backward()
    got.square().sum().backward()
    first_conv = [next(m for m in net.modules() if isinstance(m, nn.Conv2d)) for net in (upstream, ours)]
    torch.testing.assert_close(first_conv[1].weight.grad, first_conv[0].weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.head.weight.grad, upstream.head.weight.grad, rtol=1e-4, atol=1e-5)


#: upstream family in the JSON -> the equivalence case whose reference network transcribes it
TRANSCRIBED = {
    "spikingformer_imagenet_8_384": "spikingformer_imagenet",
    "spikingformer_cifar10_4_384": "spikingformer_cifar",
    "spikingformer_dvs128_2_256": "spikingformer_dvs",
    "spikformer_cifar10_4_384": "spikformer_cifar",
    "spikformer_imagenet_8_384": "spikformer_imagenet",
}


@pytest.mark.parametrize("family", TRANSCRIBED)
def test_reference_transcription_has_the_upstream_key_layout(upstream_keys, family: str) -> None:
    """The equivalence tests only prove the real mapping if the transcription names its tensors as upstream does."""

    def layout(keys: dict[str, tuple[int, ...]]) -> set[tuple[str, int]]:  # (name with block index folded, ndim)
        return {(re.sub(r"^block\.\d+\.", "block.*.", k), len(shape)) for k, shape in keys.items()}

    reference = EQUIVALENCE[TRANSCRIBED[family]][0]()
    ours = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert layout(ours) == layout(upstream_keys[family])


# ---------------------------------------------------------------- through timm's own pretrained path

#: equivalence case -> the registered model with its layout (built at the case's small width)
THROUGH_TIMM = {"spikingformer_cifar": "spikingformer_cifar_4_256", "spikformer_cifar": "spikformer_cifar_4_256"}


@pytest.mark.parametrize("case", THROUGH_TIMM)
def test_timm_pretrained_path_loads_an_upstream_file(case: str, tmp_path) -> None:
    """``pretrained=True`` with ``pretrained_cfg_overlay=dict(file=...)`` runs the family's checkpoint filter."""
    upstream, reference, x = equivalent_pair(case)
    path = tmp_path / "upstream.pth.tar"
    torch.save({"epoch": 299, "state_dict": upstream.state_dict()}, path)  # as upstream's timm train.py writes
    small = dict(embed_dim=D, depth=DEPTH, num_heads=HEADS)
    model = timm.create_model(
        THROUGH_TIMM[case], pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **small
    ).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), upstream(x), rtol=0, atol=1e-5)
        assert torch.equal(model(x), reference(x))

    # fine-tuning: another class count keeps every weight but the classifier, which timm drops
    transfer = timm.create_model(
        THROUGH_TIMM[case], pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), num_classes=3, **small
    )
    assert transfer.head.out_features == 3
    kept = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    assert all(torch.equal(transfer.state_dict()[k], v) for k, v in kept.items())


def test_timm_pretrained_path_rejects_another_family(tmp_path) -> None:
    upstream, _, _ = equivalent_pair("spikformer_cifar")
    path = tmp_path / "spikformer.pth"
    torch.save(upstream.state_dict(), path)
    with pytest.raises(ValueError, match="patch_embed"):
        timm.create_model("spikingformer_cifar_4_256", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                          embed_dim=D, depth=DEPTH, num_heads=HEADS)
