"""Source: the model as shipped, no adaptation. The baseline every method must beat."""

from __future__ import annotations

from torch import Tensor, nn

from edgeadapt._registry import register_method
from edgeadapt.config import SourceConfig
from edgeadapt.methods.base import Adapter

__all__ = ["SourceAdapter"]


class SourceAdapter(Adapter):
    def configure(self, model: nn.Module, example_input: Tensor) -> nn.Module:
        model.eval()  # BN on the stored source statistics
        model.requires_grad_(False)
        return model


register_method(SourceConfig, SourceAdapter)
