"""The LIF neuron, under each backend, against spikingjelly's multi-step LIF formulas written out by hand."""

from __future__ import annotations

import pytest
import torch

from spikingformer.neurons import MultiStepLIF


def reference_lif(x: torch.Tensor, tau: float, v_th: float, alpha: float = 4.0) -> torch.Tensor:
    """Charge H = V + (X - V)/tau, fire H >= v_th (sigmoid surrogate), hard reset with detached spike."""

    class Heaviside(torch.autograd.Function):
        @staticmethod
        def forward(ctx, u):
            ctx.save_for_backward(u)
            return (u >= 0).to(u.dtype)

        @staticmethod
        def backward(ctx, grad):
            (u,) = ctx.saved_tensors
            s = torch.sigmoid(alpha * u)
            return grad * alpha * s * (1 - s)

    v = torch.zeros_like(x[0])
    out = []
    for t in range(x.shape[0]):
        h = v + (x[t] - v) / tau
        s = Heaviside.apply(h - v_th)
        v = h * (1 - s.detach())
        out.append(s)
    return torch.stack(out)


@pytest.mark.parametrize("backend", ["spikingjelly", "fused"])
@pytest.mark.parametrize("tau,v_th", [(2.0, 1.0), (2.0, 0.5), (1.5, 1.0)])
def test_lif_matches_formulas(tau: float, v_th: float, backend: str) -> None:
    x = (torch.randn(6, 64, 32) * 2.0 + 1.0).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    lif = MultiStepLIF(tau, v_th)
    lif.backend = backend
    spikes = lif(x)
    spikes_ref = reference_lif(x_ref, tau, v_th)
    assert torch.equal(spikes, spikes_ref)
    assert 0 < spikes.mean() < 1
    g = torch.randn_like(spikes)
    spikes.backward(g)
    spikes_ref.backward(g)
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-6, rtol=0)


@pytest.mark.parametrize("backend", ["spikingjelly", "fused"])
def test_first_step_needs_tau_times_threshold(backend: str) -> None:
    lif = MultiStepLIF(2.0, 1.0)
    lif.backend = backend
    x = torch.tensor([[1.99], [0.0]])
    assert lif(x).sum() == 0
    lif.reset()
    assert lif(torch.tensor([[2.0]])).item() == 1.0
