"""The fast exact delta runtime on torchvision's own ResNet-18 and ResNet-50 (no pretrained
weights): they lower (7x7 stem, max pool, downsample convs, BasicBlock and Bottleneck), and
every frame's logits and maps equal the dense integer reference bit for bit.

Runs in CI's vision environment (torchvision needs PyPI's CUDA torch, which runs on a CPU);
elsewhere it skips, as tests/test_torchvision.py does. tests/delta/test_delta_fast_graph.py
covers the same code on replicas of torchvision's structure everywhere.
"""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from edgeadapt.delta import (
    FastDeltaConfig,
    deltaify,
    fast_reference_forward,
    to_fast_delta_runtime,
)
from edgeadapt.delta.fast_native import compiler_found
from edgeadapt.delta.fast_plan import PoolSpec
from edgeadapt.models import create_model

if not os.environ.get("EDGEADAPT_REQUIRE_VISION"):
    pytest.importorskip(
        "torchvision", reason="torchvision not installed (optional; must match torch)"
    )
pytestmark = pytest.mark.skipif(
    not compiler_found(), reason="no C++ compiler: the fast runtime's kernels cannot build"
)

H, W = 50, 66  # the stem, the pool and four strided stages meet ragged edges


def _frames(count: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    frame = torch.randint(0, 256, (H, W, 3), generator=gen, dtype=torch.uint8)
    out = []
    for t in range(count):
        frame = frame.clone()
        i, j = 4 + 2 * t, 6 + 3 * t  # a patch moving across a static scene
        frame[i : i + 8, j : j + 8] = torch.randint(0, 256, (8, 8, 3), generator=gen).byte()
        out.append(frame)
    return out


@pytest.mark.parametrize("name", ["tv_resnet18", "tv_resnet50"])
def test_torchvision_resnets_run_bit_exact_in_the_fast_runtime(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).eval()
    for m in model.modules():  # trained-looking BN statistics, so the folding is exercised
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    example = torch.rand(2, 3, H, W, generator=torch.Generator().manual_seed(1))
    runtime = to_fast_delta_runtime(
        deltaify(model, example, quantile=1.0).eval(), FastDeltaConfig(input_threshold=0)
    )
    layers = runtime.plan.layers
    assert isinstance(layers[1], PoolSpec)
    downsampled = [s.name for s in layers if not isinstance(s, PoolSpec) and s.branch is not None]
    assert len(downsampled) == (4 if name == "tv_resnet50" else 3)
    for t, frame in enumerate(_frames(8)):
        logits = runtime(frame)
        want, maps = fast_reference_forward(runtime.plan, frame)
        assert torch.equal(logits, want), f"frame {t}"
        if t in (0, 7):
            for layer, got, ref in zip(runtime.layer_names, runtime.layer_maps(), maps):
                assert torch.equal(got, ref), f"frame {t}, {layer}"
    assert runtime.last_macs().performed < runtime.last_macs().dense / 2
