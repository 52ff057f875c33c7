"""Tiny models shared by the delta tests (fixtures only: tests import nothing from here)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PlainCNN(nn.Module):
    """Module ReLU, functional relu, ReLU6, global pool and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, stride=2)
        self.conv3 = nn.Conv2d(8, 4, 1)
        self.act3 = nn.ReLU6()
        self.fc = nn.Linear(4, 5)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act1(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = self.act3(self.conv3(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class BasicBlock(nn.Module):
    """torchvision-style: one ReLU module called twice, residual add, optional downsample."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class TinyResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
        self.relu = nn.ReLU()
        self.layer1 = BasicBlock(8, 8)
        self.layer2 = BasicBlock(8, 16, stride=2)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer2(self.layer1(self.relu(self.stem(x))))
        return self.fc(x.mean((2, 3)))


class ThreeConv(nn.Module):
    """The streaming test net: 3 convs (3x3, strided 3x3, 1x1) on 16x16 frames."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, stride=2)
        self.conv3 = nn.Conv2d(8, 4, 1)
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.conv3(self.relu2(self.conv2(self.relu1(self.conv1(x)))))


class Untraceable(nn.Module):
    """Data-dependent Python control flow: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.act = nn.SiLU()
        self.conv2 = nn.Conv2d(6, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.conv1(x))
        if float(x.mean()) > 1e9:  # never true; only there to defeat tracing
            x = x * 2
        return self.conv2(x)


def _init(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial eval-mode statistics
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture
def plain_cnn() -> nn.Module:
    torch.manual_seed(0)
    return _init(PlainCNN())


@pytest.fixture
def tiny_resnet() -> nn.Module:
    torch.manual_seed(0)
    return _init(TinyResNet())


@pytest.fixture
def three_conv() -> nn.Module:
    torch.manual_seed(0)
    return ThreeConv()


@pytest.fixture
def untraceable() -> nn.Module:
    torch.manual_seed(0)
    return Untraceable()


@pytest.fixture
def example() -> Tensor:
    return torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: a thread pool only adds sync overhead (and stalls on a busy 2-core box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
