"""Every method adapts torchvision's ResNet-18 and MobileNetV2 (no pretrained weights).

torchvision's wheels must match the installed torch; where they cannot be installed (the
CPU-only torch build used in CI), these tests skip.
"""

from __future__ import annotations

import pytest
import torch
from tiny import METHODS, tiny_config

from edgeadapt.api import wrap
from edgeadapt.models import create_model

pytest.importorskip("torchvision", reason="torchvision not installed (optional; must match torch)")


@pytest.mark.parametrize("name", ["tv_resnet18", "tv_mobilenet_v2"])
@pytest.mark.parametrize("method", METHODS)
def test_torchvision_backbones_adapt(name, method):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10)
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    adapter = wrap(model, tiny_config(method), example_input=x[:2])
    before = {k: v.clone() for k, v in adapter.state_dict().items()}
    for _ in range(2):
        out = adapter(x)
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    trained = set(adapter.adapter_state_keys())
    for k, v in adapter.state_dict().items():
        if k not in trained:
            assert torch.equal(v, before[k]), k
    moved = [
        n
        for n, p in adapter.named_parameters()
        if p.requires_grad and not torch.equal(p, before[n])
    ]
    assert bool(moved) == (method not in ("source", "norm"))
