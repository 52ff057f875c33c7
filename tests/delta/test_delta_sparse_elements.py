"""The element-sparse conv path equals F.conv2d and counts exactly the element MACs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from delta.geometries import GEOMETRIES
from torch import nn

from edgeadapt.delta import (
    DeltaConv2d,
    conv2d_elements_,
    element_delta,
    element_weight_rows,
    sparse_linear,
)
from edgeadapt.errors import InputError


def _sparse(shape, density: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    return x * (torch.rand(shape, generator=gen) < density)


def _valid_pairs(dx: torch.Tensor, k: int, stride: int, padding: int, dilation: int) -> int:
    """Σ over non-zero elements of the outputs each one reaches, by brute force."""
    ones = torch.ones(1, 1, k, k, dtype=torch.float64)
    reach = F.conv_transpose2d(
        torch.ones(1, 1, *F.conv2d(dx[:1, :1], ones, None, stride, padding, dilation).shape[2:]),
        ones.float(),
        None,
        stride,
        padding,
        dilation=dilation,
    )
    reach = reach[..., : dx.shape[2], : dx.shape[3]]
    reach = F.pad(reach, (0, dx.shape[3] - reach.shape[3], 0, dx.shape[2] - reach.shape[2]))
    return int((dx.ne(0) * reach.double()).sum())


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("groups", [1, 4])  # 4 = depthwise below (4 channels)
@pytest.mark.parametrize("density", [0.0, 0.05, 0.4, 1.0])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_element_conv_equals_dense(geometry, groups: int, density: float, layout) -> None:
    k, stride, padding, dilation = geometry
    dx = _sparse((2, 4, 9, 11), density, seed=k + 3 * stride + groups)
    weight = torch.randn(8, 4 // groups, k, k, dtype=torch.float64)
    base = torch.randn_like(F.conv2d(dx, weight, None, stride, padding, dilation, groups))
    y = base.clone(memory_format=layout)
    macs = conv2d_elements_(
        y,
        element_delta(dx),
        element_weight_rows(weight, groups),
        k,
        stride,
        padding,
        dilation,
        groups,
    )
    expected = base + F.conv2d(dx, weight, None, stride, padding, dilation, groups)
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-12)
    pairs = _valid_pairs(dx, k, stride, padding, dilation)
    outs_per_group = 8 // groups
    if stride == 1:  # taps falling off the borders are multiplied by zero, and counted
        assert pairs * outs_per_group <= macs <= int(dx.ne(0).sum()) * k * k * outs_per_group
    else:  # exactly the element count: each non-zero × the outputs it reaches
        assert macs == pairs * outs_per_group


def test_element_delta_of_two_frames_and_budget() -> None:
    x_prev = torch.randn(1, 3, 5, 5, dtype=torch.float64)
    x = x_prev.clone()
    x[0, 1, 2, 3] += 0.5
    x[0, 2, 0, 0] -= 1.0
    delta = element_delta(x, x_prev)
    assert delta.index.tolist() == [1 * 25 + 2 * 5 + 3, 2 * 25]
    weight = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    y = torch.zeros(1, 4, 5, 5, dtype=torch.float64)
    rows = element_weight_rows(weight)
    # Two elements × 9 taps × 4 outputs = 72 MACs performed (the corner's 5 lost taps × 0).
    assert conv2d_elements_(y, delta, rows, 3, 1, 1, max_macs=71) is None
    assert torch.equal(y, torch.zeros_like(y))  # declined: untouched
    assert conv2d_elements_(y, delta, rows, 3, 1, 1) == 72
    torch.testing.assert_close(y, F.conv2d(x - x_prev, weight, None, 1, 1), rtol=0, atol=1e-12)
    with pytest.raises(InputError, match="weight rows"):
        conv2d_elements_(y, delta, element_weight_rows(weight[:, :2]), 3, 1, 1)


@pytest.mark.parametrize("groups", [1, 6])
def test_layer_takes_element_path_and_stays_exact(groups: int) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 6, 3, padding=1, groups=groups).double()
    layer = DeltaConv2d(conv, sparse_threshold=1.0, element_cost=1.0)
    x = torch.rand(1, 6, 8, 8, dtype=torch.float64)
    layer(x)
    for step in range(20):
        x = x + _sparse(x.shape, 0.05, seed=step)
        changed = int((x != layer.x_prev).sum())
        torch.testing.assert_close(layer(x), conv(x), rtol=0, atol=1e-12)
        assert layer.last_path == "element"
        # Each changed element: 9 taps (stride 1: border taps × 0 count too) × 6/groups outputs.
        assert layer.last_macs.performed == changed * 9 * (6 // groups)
    assert layer.macs.performed < layer.macs.dense / 3


def test_batched_linear_with_scattered_changes_is_element_sparse() -> None:
    dx = torch.zeros(8, 32, dtype=torch.float64)
    dx[torch.arange(8), torch.arange(8) * 4] = torch.randn(8, dtype=torch.float64)  # 1 per row
    weight = torch.randn(5, 32, dtype=torch.float64)
    dy, macs = sparse_linear(dx, weight)
    torch.testing.assert_close(dy, dx @ weight.t(), rtol=0, atol=1e-12)
    assert macs == 8 * 5  # the column union would cost 8 rows × 8 features × 5
