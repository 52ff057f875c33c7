"""Probe, not shipped: EcoTTA trained on augmentation-averaged soft pseudo-labels of its own
adapted model (CoTTA's views, no EMA teacher) instead of single-view entropy. Asks whether the
views, which cost forward passes only, close EcoTTA's gap to CoTTA. Extra corruptions only:

    python benchmarks/cifar10c/probe_aug_labels.py bench \\
      --checkpoint ../shared/models/resnet20_cifar10jpeg.pt --data /tmp/c10c \\
      --corruptions extra --protocol long-term --rounds 10 --n-images 2000 \\
      --methods ecotta_aug --overrides '{"ecotta_aug": {"views": 4}}' --json aug4.json

Any `edgeadapt` command line works; this file only registers the `ecotta_aug` method first.
"""

from __future__ import annotations

import dataclasses
import sys

import torch

from edgeadapt._registry import register_method
from edgeadapt.bench.cifar import CIFAR_MEAN, CIFAR_STD
from edgeadapt.cli import main
from edgeadapt.config import EcoTTAConfig
from edgeadapt.methods._augment import augmented_views
from edgeadapt.methods._state import per_group_batch_statistics
from edgeadapt.methods.ecotta import EcoTTAAdapter


@dataclasses.dataclass(frozen=True, kw_only=True)
class EcoTTAAugConfig(EcoTTAConfig):
    method: str = dataclasses.field(default="ecotta_aug", init=False)
    views: int = 8  # augmented views averaged into each pseudo-label


class EcoTTAAugAdapter(EcoTTAAdapter):
    def loss(self, x):  # type: ignore[override]
        logits, reg = self._forward_with_parts(x)
        n, v = x.shape[0], self.config.views
        with torch.no_grad():  # views cost forward passes, nothing kept for backward
            views = augmented_views(x, self.generator, v, CIFAR_MEAN, CIFAR_STD)
            with per_group_batch_statistics(self.model, v):
                target = self.model(views).softmax(1).view(v, n, -1).mean(0)
        soft_ce = -(target * logits.log_softmax(1)).sum(1).mean()
        return soft_ce + self.config.reg_weight * reg, logits


register_method(EcoTTAAugConfig, EcoTTAAugAdapter)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
