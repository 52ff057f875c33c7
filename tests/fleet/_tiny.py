"""A tiny fleet for the tests: the registry's tiny ResNet, EcoTTA, two short domains of random
images. Library classes only, so Flower's simulation engine can ship it to its workers."""

from __future__ import annotations

import numpy as np
import torch

from edgeadapt.bench.sources import GeneratedSource
from edgeadapt.config import EcoTTAConfig
from edgeadapt.fleet import CorruptionFleet
from edgeadapt.models import create_model

BATCH = 8


def tiny_fleet(
    images_per_domain: int = 16,
    corruptions: tuple[str, ...] = ("none", "gaussian_noise"),
    severity: int = 3,
) -> CorruptionFleet:
    torch.manual_seed(0)
    model = create_model("tiny_resnet")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(40) % 10
    return CorruptionFleet(
        model=model, config=EcoTTAConfig(), source=GeneratedSource(images, labels),
        labels=labels, corruptions=corruptions,
        images_per_domain=images_per_domain, batch_size=BATCH, severity=severity, delta=0.1,
        input_shape=(3, 32, 32),
    )  # fmt: skip
