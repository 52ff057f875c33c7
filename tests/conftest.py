"""Shared fixtures: a tiny model and fixed batches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeadapt.models import create_model


@pytest.fixture
def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return create_model("tiny_resnet")


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def example() -> torch.Tensor:
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
