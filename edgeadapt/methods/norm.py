"""BN test-batch statistics (Schneider et al., "Improving robustness against common
corruptions by covariate shift adaptation", NeurIPS 2020; Nado et al. 2020).

Every BN normalises with test statistics (each batch's own, mixed into the stream's for
batches smaller than `stat_window`: `edgeadapt.modules.stream_norm`); nothing trains.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from edgeadapt._registry import register_method
from edgeadapt.config import NormConfig
from edgeadapt.methods._state import use_test_statistics
from edgeadapt.methods.base import Adapter

__all__ = ["NormAdapter"]


class NormAdapter(Adapter):
    def configure(self, model: nn.Module, example_input: Tensor) -> nn.Module:
        model.eval()
        model.requires_grad_(False)
        bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
        use_test_statistics(bns, self.config.stat_window, self.config.own_statistics_from)
        return model


register_method(NormConfig, NormAdapter)
