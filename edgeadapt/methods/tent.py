"""Tent (Wang et al., "Tent: Fully Test-time Adaptation by Entropy Minimization", ICLR 2021).

BN layers normalise with test-batch statistics; only their affine parameters train, by
minimising the entropy of the predictions.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from edgeadapt._registry import register_method
from edgeadapt.config import TentConfig
from edgeadapt.losses import entropy
from edgeadapt.methods._state import use_test_statistics
from edgeadapt.methods.base import Adapter
from edgeadapt.modules.lean import make_lean
from edgeadapt.modules.stream_norm import WindowSpec

__all__ = ["TentAdapter", "configure_bn_affine"]


def configure_bn_affine(
    model: nn.Module,
    lean: bool = False,
    stat_window: WindowSpec | None = None,
    own_statistics_from: int | None = None,
) -> nn.Module:
    """Freeze everything but BN affine parameters; BN on test statistics (over about
    `stat_window` samples; None: each batch's own); optionally make the frozen convs and ReLUs
    memory-lean."""
    model.eval()
    model.requires_grad_(False)
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    use_test_statistics(bns, stat_window, own_statistics_from)
    for m in bns:
        if m.affine:
            m.weight.requires_grad_(True)
            m.bias.requires_grad_(True)
    if lean:
        make_lean(model)
    return model


class TentAdapter(Adapter):
    config: TentConfig

    def configure(self, model: nn.Module, example_input: Tensor) -> nn.Module:
        return configure_bn_affine(
            model, self.config.lean, self.config.stat_window, self.config.own_statistics_from
        )

    def loss(self, x: Tensor) -> tuple[Tensor | None, Tensor]:
        logits = self.model(x)
        return entropy(logits).mean(), logits


register_method(TentConfig, TentAdapter)
