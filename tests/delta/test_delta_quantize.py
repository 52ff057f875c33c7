"""DeltaActivation: grid values, straight-through and LSQ gradients, step initialisation."""

from __future__ import annotations

import math

import pytest
import torch

from edgeadapt.delta import DeltaActivation
from edgeadapt.errors import ConfigError, InputError


def _quantiser() -> DeltaActivation:
    return DeltaActivation(3, init_step=torch.tensor([0.1, 0.25, 0.5]))


def test_values_lie_on_the_per_channel_grid() -> None:
    q = _quantiser()
    x = torch.randn(2, 3, 5, 5) * 3
    y = q(x)
    units = y / q.step.view(1, 3, 1, 1)
    assert torch.allclose(units, units.round(), atol=1e-5)
    assert torch.equal(units.round(), (x / q.step.view(1, 3, 1, 1)).round())
    assert (y - x).abs().max() <= q.step.max() / 2 + 1e-6


def test_change_within_a_bin_gives_an_exact_zero_delta() -> None:
    q = _quantiser()
    x = torch.rand(1, 3, 4, 4)
    nudged = q(x) + 0.01 * q.step.view(1, 3, 1, 1)  # stays in the same bin
    assert torch.equal(q(nudged) - q(q(x)), torch.zeros_like(x))


def test_straight_through_gradient_has_input_shape_and_is_identity() -> None:
    q = _quantiser()
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    q(x).sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    assert torch.equal(x.grad, torch.ones_like(x))


def test_step_gets_the_lsq_gradient() -> None:
    q = _quantiser()
    x = torch.randn(2, 3, 4, 4)
    q(x).sum().backward()
    grad = q.log_step.grad
    assert grad is not None and grad.shape == (3,) and bool((grad != 0).all())
    # d/dlog q of Σ q·round(x/q) = q · Σ (round(x/q) - x/q), times LSQ's 1/sqrt(elements/C).
    v = x / q.step.detach().view(1, 3, 1, 1)
    expected = q.step.detach() * (v.round() - v).sum((0, 2, 3)) / math.sqrt(2 * 4 * 4)
    assert torch.allclose(grad, expected, atol=1e-5)


def test_step_learns() -> None:
    q = _quantiser()
    before = q.log_step.detach().clone()
    opt = torch.optim.SGD(q.parameters(), lr=0.1)
    x = torch.randn(4, 3, 4, 4)
    (q(x) - x).pow(2).mean().backward()
    opt.step()
    assert not torch.equal(before, q.log_step.detach())
    assert bool((q.step > 0).all())  # log-space parametrisation keeps it positive


def test_init_step_from_activation_statistics() -> None:
    q = DeltaActivation(2)
    x = torch.stack([torch.linspace(0, 10, 1000), torch.zeros(1000)]).T.reshape(1000, 2)
    q.init_step_from(x, bits=4, quantile=1.0)
    assert q.step[0].item() == pytest.approx(10 / 15, rel=1e-5)
    assert q.step[1].item() == pytest.approx(10 / 15, rel=1e-5)  # dead channel borrows


def test_bad_arguments_raise_typed_errors() -> None:
    with pytest.raises(ConfigError):
        DeltaActivation(3, init_step=-1.0)
    with pytest.raises(ConfigError):
        DeltaActivation(3, init_step=torch.ones(2))
    with pytest.raises(InputError, match="channels in dim 1"):
        _quantiser()(torch.randn(2, 4, 3, 3))
