"""The lean frozen ops equal PyTorch's; the package imports light."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
from torch import nn

from edgeadapt.modules.lean import make_lean, pack_bits, unpack_bits


@pytest.mark.parametrize("shape", [(1,), (7,), (8,), (3, 5, 7), (2, 4, 9, 9)])
def test_bit_packing_round_trips(shape):
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(0)) > 0.5
    packed = pack_bits(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == (mask.numel() + 7) // 8
    assert torch.equal(unpack_bits(packed, mask.shape), mask)


def test_lean_path_equals_the_stock_path():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=4), nn.BatchNorm2d(8), nn.ReLU6(),
        nn.Conv2d(8, 4, 1),
    ).eval()  # fmt: skip
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    net.requires_grad_(False)
    lean = copy.deepcopy(net)
    assert make_lean(lean) == 7
    x = torch.randn(4, 3, 15, 15, requires_grad=True) * 3
    y_ref = net(x)
    (g_ref,) = torch.autograd.grad(y_ref.square().sum(), x)
    y = lean(x)
    (g,) = torch.autograd.grad(y.square().sum(), x)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(g, g_ref)
    assert lean.state_dict().keys() == net.state_dict().keys()


def test_make_lean_leaves_trainable_layers_alone():
    net = nn.Sequential(nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1))
    net[0].requires_grad_(False)
    assert make_lean(net) == 1
    assert type(net[1]) is nn.Conv2d


def test_import_is_light():
    code = "import sys, edgeadapt; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_public_api_resolves():
    import edgeadapt

    for name in edgeadapt.__all__:
        assert getattr(edgeadapt, name) is not None
