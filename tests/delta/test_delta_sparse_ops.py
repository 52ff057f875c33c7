"""Sparse delta compute equals dense compute; MAC counts match hand-computed cases."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from delta.geometries import GEOMETRIES
from torch import nn

from edgeadapt.delta import (
    DeltaConv2d,
    DeltaLinear,
    conv2d_delta_,
    conv2d_macs,
    pixel_delta,
    sparse_conv2d,
    sparse_linear,
    write_pixels_,
)

SPARSITIES = [0.0, 0.5, 0.9, 0.99, 1.0]


def _delta(shape, sparsity: float, pattern: str, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    if pattern == "element":
        keep = torch.rand(shape, generator=gen) >= sparsity
    elif pattern == "pixel":
        keep = (torch.rand(shape[0], 1, *shape[2:], generator=gen) >= sparsity).expand(shape)
    else:
        keep = (torch.rand(1, shape[1], 1, 1, generator=gen) >= sparsity).expand(shape)
    return x * keep


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("sparsity", SPARSITIES)
@pytest.mark.parametrize("pattern", ["element", "pixel", "channel"])
def test_sparse_conv_equals_dense(geometry, sparsity: float, pattern: str) -> None:
    k, stride, padding, dilation = geometry
    dx = _delta((2, 5, 9, 11), sparsity, pattern, seed=k + stride + padding)
    weight = torch.randn(4, 5, k, k, dtype=torch.float64)
    dense = F.conv2d(dx, weight, None, stride, padding, dilation)
    sparse, macs = sparse_conv2d(dx, weight, stride, padding, dilation)
    assert sparse.shape == dense.shape
    torch.testing.assert_close(sparse, dense, rtol=0, atol=1e-12)
    assert 0 <= macs <= conv2d_macs(tuple(dx.shape), tuple(weight.shape), stride, padding, dilation)
    if sparsity == 1.0:
        assert macs == 0


@pytest.mark.parametrize("sparsity", SPARSITIES)
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_delta_from_two_frames_accumulates_in_place(sparsity: float, layout) -> None:
    x_prev = torch.randn(1, 6, 8, 8, dtype=torch.float64)
    x = x_prev + _delta((1, 6, 8, 8), sparsity, "pixel", seed=3)
    weight = torch.randn(7, 6, 3, 3, dtype=torch.float64)
    base = torch.randn(1, 7, 8, 8, dtype=torch.float64)
    y = base.clone(memory_format=layout)
    delta = pixel_delta(x, x_prev)
    assert delta.pix.numel() == int((x != x_prev).any(1).sum())
    conv2d_delta_(y, delta, weight, 1, 1)
    expected = base + F.conv2d(x - x_prev, weight, None, 1, 1)
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-12)
    write_pixels_(x_prev, x, delta.pix)
    assert torch.equal(x_prev, x)


@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_sparse_linear_equals_dense(sparsity: float) -> None:
    dx = _delta((3, 20, 1, 1), sparsity, "channel", seed=5).flatten(1)
    weight = torch.randn(7, 20, dtype=torch.float64)
    dy, macs = sparse_linear(dx, weight)
    torch.testing.assert_close(dy, dx @ weight.t(), rtol=0, atol=1e-12)
    assert macs == 3 * int(dx.ne(0).any(0).sum()) * 7


def test_mac_counts_hand_computed() -> None:
    # 3x3 conv, 2 -> 4 channels, 5x5 map, padding 1: dense = 4·2·9·25 = 1800 MACs.
    assert conv2d_macs((1, 2, 5, 5), (4, 2, 3, 3), 1, 1) == 1800
    # Stride 2: 3x3 outputs -> 4·2·9·9 = 648.
    assert conv2d_macs((1, 2, 5, 5), (4, 2, 3, 3), 2, 1) == 648
    dx = torch.zeros(1, 2, 5, 5, dtype=torch.float64)
    dx[0, 0, 2, 2] = 1.0  # one changed element: fan-out 3·3·4 = 36 MACs
    _, macs = sparse_conv2d(dx, torch.randn(4, 2, 3, 3, dtype=torch.float64), 1, 1)
    assert macs == 36
    dx[0, 1, 2, 2] = 1.0  # same pixel, second channel: 72
    assert sparse_conv2d(dx, torch.randn(4, 2, 3, 3, dtype=torch.float64), 1, 1)[1] == 72
    # Linear 10 -> 5 with 3 changed features: 15 of 50.
    dl = torch.zeros(1, 10, dtype=torch.float64)
    dl[0, [1, 4, 7]] = 2.0
    assert sparse_linear(dl, torch.randn(5, 10, dtype=torch.float64))[1] == 15


def test_layer_mac_counters_hand_computed() -> None:
    torch.manual_seed(0)
    conv = DeltaConv2d(nn.Conv2d(2, 4, 3, padding=1).double(), sparse_threshold=0.5)
    x = torch.rand(1, 2, 5, 5, dtype=torch.float64)
    conv(x)
    assert (conv.last_macs.dense, conv.last_macs.performed) == (1800, 1800)  # anchor frame
    x2 = x.clone()
    x2[0, 0, 2, 2] += 1.0
    conv(x2)
    assert (conv.last_macs.dense, conv.last_macs.performed) == (1800, 36)
    conv(x2)
    assert conv.last_macs.performed == 0  # nothing changed, nothing computed
    assert (conv.macs.dense, conv.macs.performed) == (5400, 1836)
    lin = DeltaLinear(nn.Linear(10, 5).double())
    v = torch.rand(1, 10, dtype=torch.float64)
    lin(v)
    v2 = v.clone()
    v2[0, [1, 4]] -= 0.5
    out = lin(v2)
    assert (lin.last_macs.dense, lin.last_macs.performed) == (50, 10)
    torch.testing.assert_close(out, F.linear(v2, lin.weight, lin.bias), rtol=0, atol=1e-12)


def test_layer_goes_dense_above_threshold() -> None:
    conv = DeltaConv2d(nn.Conv2d(2, 4, 3, padding=1).double(), sparse_threshold=0.1)
    x = torch.rand(1, 2, 5, 5, dtype=torch.float64)
    conv(x)
    y = conv(x + 1.0)  # everything changed: a dense pass, which re-anchors exactly
    assert conv.last_macs.performed == conv.last_macs.dense
    assert torch.equal(y, F.conv2d(x + 1.0, conv.weight, conv.bias, 1, 1))
