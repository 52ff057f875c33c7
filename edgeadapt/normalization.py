"""The per-channel input statistics the shipped models expect, defined once.

The akamaster CIFAR ResNets (and the checkpoints fine-tuned from them in ../shared) were
trained on inputs normalised with the ImageNet statistics, not CIFAR-10's own; the video and
data paths feed those same models. Kept free of torch so light imports stay light.
"""

from __future__ import annotations

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
