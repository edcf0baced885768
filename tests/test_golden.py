"""Every family against the upstream code's own outputs: the golden fixtures of ``tests/golden/``.

``tests/golden/make_golden.py`` ran each upstream model file (spikingjelly 0.0.0.0.12) at a small configuration and
kept its weights, input, logits, loss, gradients and the spikes of every LIF call; ``manifest.json`` names the
repository, commit and sha256 of every upstream file. Here the upstream state dict goes through the project's
upstream checkpoint import into the registered model, which must give the same eval and train-mode logits
(1e-5), loss, spike counts (equal, call by call) and every parameter's gradient (1e-4 relative), on both LIF
backends. Every LIF call of every case fires: a silent layer would prove nothing. A perturbed model (a surrogate
alpha, ``detach_reset``, a threshold, QKFormer's per-sample neuron) must fail the comparison.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
from helpers.golden import CASES, MANIFEST, Golden, load
from torch import nn

from spikingformer.checkpoints.upstream import convert_upstream_state_dict
from spikingformer.neurons import MultiStepLIF, set_lif_backend

#: Fewest spikes any LIF call of a fixture fires (the generator calibrates every case to it).
MIN_SPIKES = 100
LOGITS_ATOL = 1e-5
GRAD_RTOL = 1e-4


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """These networks are tiny: one thread runs them several times faster than two fighting over them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class SpikeCalls:
    """The spike count of every LIF call of ``model``, in call order."""

    def __init__(self, model: nn.Module) -> None:
        self.counts: list[int] = []
        self.handles = [m.register_forward_hook(self._hook) for m in model.modules() if isinstance(m, MultiStepLIF)]

    def _hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        self.counts.append(int(output.detach().sum()))

    def take(self) -> list[int]:
        counts, self.counts = self.counts, []
        return counts

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def spike_mismatches(mode: str, ours: list[int], upstream: list[list]) -> list[str]:
    if len(ours) != len(upstream):
        return [f"{mode}: {len(ours)} LIF calls, upstream {len(upstream)}"]
    return [f"{mode} spikes of {name} (call {i}): {got}, upstream {count}"
            for i, (got, (name, count, _)) in enumerate(zip(ours, upstream, strict=True)) if got != count]


def close(what: str, got: torch.Tensor, expected: torch.Tensor, atol: float = LOGITS_ATOL) -> list[str]:
    error = (got.detach() - expected).abs().max().item()
    return [] if error <= atol else [f"{what} differ by {error:.3g} (> {atol:g})"]


def gradient_mismatches(model: nn.Module, golden: Golden) -> list[str]:
    """Every parameter's gradient against upstream's, renamed (and reshaped) by the upstream import's key rules."""
    expected = convert_upstream_state_dict(model, {**golden.under("state"), **golden.under("grad")})
    params = dict(model.named_parameters())
    largest = max(expected[name].norm() for name in params)
    out = []
    for name, param in params.items():
        got, reference = param.grad, expected[name]
        if name.endswith("conv.bias"):  # a bias before a train-mode BN: its exact gradient is 0, both are rounding
            if max(got.norm(), reference.norm()) > 1e-6 * largest:
                out.append(f"gradient of {name} is not ~0: {got.norm():.3g}, upstream {reference.norm():.3g}")
            continue
        if got is None or reference.norm() <= 1e-6 * largest:
            out.append(f"no gradient reaches {name}")
            continue
        relative = ((got - reference).norm() / reference.norm()).item()
        if relative > GRAD_RTOL:
            out.append(f"gradient of {name} differs by {relative:.3g} relative (> {GRAD_RTOL:g})")
    return out


def compare(model: nn.Module, golden: Golden, backend: str = "spikingjelly") -> list[str]:
    """Every way ``model`` departs from the upstream run of ``golden``: eval logits and spikes, then train-mode
    logits, spikes, loss and gradients. Empty when it computes what upstream computed."""
    set_lif_backend(model, backend, "cpu")
    calls = SpikeCalls(model)
    spikes = golden.entry["spikes"]
    x, labels = golden.input, golden.tensors["labels"]
    with torch.no_grad():
        out = close("eval logits", model.eval()(x), golden.tensors["logits_eval"])
    out += spike_mismatches("eval", calls.take(), spikes["eval"])
    logits = model.train()(x)
    out += close("train-mode logits", logits, golden.tensors["logits_train"])
    out += spike_mismatches("train", calls.take(), spikes["train"])
    calls.close()
    loss = golden.criterion()(logits, labels)
    out += close("loss", loss, golden.tensors["loss"])
    model.zero_grad()
    loss.backward()
    return out + gradient_mismatches(model, golden)


@pytest.mark.parametrize("name", CASES)
def test_every_lif_call_of_the_fixture_fires(name: str) -> None:
    """Spikes well above a handful in every LIF call, in eval and in train mode, and never all of them."""
    for mode, calls in CASES[name]["spikes"].items():
        quiet = [(module, count) for module, count, _ in calls if count < MIN_SPIKES]
        assert not quiet, f"{name} {mode}: LIF calls firing fewer than {MIN_SPIKES} spikes: {quiet}"
        saturated = [module for module, count, shape in calls if count == np.prod(shape)]
        assert not saturated, f"{name} {mode}: LIF calls firing everywhere: {saturated}"


@pytest.mark.parametrize("backend", ["spikingjelly", "fused"])
@pytest.mark.parametrize("name", CASES)
def test_model_computes_what_upstream_computed(name: str, backend: str) -> None:
    golden = load(name)
    assert golden.entry["batch"] >= 2
    assert compare(golden.model(), golden, backend) == []


def test_every_family_and_dataset_variant_has_a_fixture() -> None:
    assert {case["model"] for case in CASES.values()} >= {
        "spikingformer_cifar_4_256", "spikingformer_8_384", "spikingformer_dvs_2_256",
        "spikformer_cifar_4_256", "spikformer_8_384",
        "sdt_cifar_2_512", "sdt_8_384", "sdt_dvs_2_256", "sdt_cifar10dvs_2_256",
        "qkformer_cifar_4_384", "qkformer_10_384", "qkformer_dvs_2_256", "qkformer_cifar10dvs_2_256",
    }  # fmt: skip
    assert any(case["kwargs"].get("mlp_ratio") == 1.0 for case in CASES.values() if case["model"].startswith("sdt"))


def test_manifest_names_every_upstream_file_by_commit_and_digest() -> None:
    assert MANIFEST["spikingjelly"] == "0.0.0.0.12" and MANIFEST["lif_backend"] == "torch"
    for name, case in CASES.items():
        assert case["repository"] in MANIFEST["repositories"], name
        assert all(len(digest) == 64 for digest in case["files"].values()), name


# ---------------------------------------------------------------- the comparison can fail


def perturb_lifs(model: nn.Module, change: Callable[[MultiStepLIF], None]) -> nn.Module:
    for module in model.modules():
        if isinstance(module, MultiStepLIF):
            change(module)
    return model


def set_alpha(lif: MultiStepLIF) -> None:
    lif.surrogate_function.alpha = 3.0


def keep_reset_gradient(lif: MultiStepLIF) -> None:
    lif.detach_reset = False


#: case -> (a perturbed model of the case, what tells it apart: the gradients alone, or the forward already)
NEGATIVE_CONTROLS: dict[str, tuple[Callable[[Golden], nn.Module], str]] = {
    "spikingformer_cifar": (lambda g: perturb_lifs(g.model(), set_alpha), "gradients"),
    "spikformer_cifar": (lambda g: perturb_lifs(g.model(), keep_reset_gradient), "gradients"),
    # SDSA's mask LIF at the default threshold 1.0, not upstream's 0.5: every nonzero sum of eroded K*V spikes
    # is 3 or more here, so both fire alike and only the surrogate gradients differ
    "sdt_cifar10dvs": (
        lambda g: perturb_lifs(g.model(), lambda lif: setattr(lif, "v_threshold", 1.0 if lif.v_threshold == 0.5
                                                                else lif.v_threshold)),
        "gradients",
    ),
    # the neuron upstream does not compute
    "qkformer_cifar": (lambda g: g.model(batch_coupled_proj_lif=False), "forward"),
    "qkformer_dvs128": (lambda g: g.model(batch_coupled_proj_lif=False), "forward"),
}


@pytest.mark.parametrize("name", NEGATIVE_CONTROLS)
def test_a_perturbed_model_fails_the_comparison(name: str) -> None:
    golden = load(name)
    perturbed, caught_by = NEGATIVE_CONTROLS[name]
    mismatches = compare(perturbed(golden), golden)
    assert mismatches, f"{name}: a perturbed model passed the golden comparison"
    forward = [m for m in mismatches if not m.startswith(("gradient", "no gradient"))]
    if caught_by == "gradients":
        assert forward == [], mismatches
    else:
        assert any("logits differ" in m for m in forward) and any("spikes of" in m for m in forward), mismatches
