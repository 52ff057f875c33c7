"""Shared by the export tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # On a loaded 2-core machine PyTorch's intra-op threads stall small graphs (lowering and
    # eager steps run several times slower); results do not depend on it.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
