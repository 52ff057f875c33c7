"""Backbones by name: ``create_model("resnet20", checkpoint=...)`` and ``list_models("resnet*")``.

Importing this package registers every backbone; torchvision is imported only when a
``tv_*`` model is created.
"""

from __future__ import annotations

import os

from torch import nn

from edgeadapt.errors import ConfigError

# Imported for their register_model calls as much as for their names.
from edgeadapt.models import cifar_resnet, torchvision_models  # noqa: F401
from edgeadapt.models._registry import get_model_entry, list_models, register_model
from edgeadapt.models.checkpoints import load_checkpoint
from edgeadapt.models.cifar_resnet import CIFAR_MEAN, CIFAR_STD, CifarResNet, Normalize

__all__ = [
    "CIFAR_MEAN",
    "CIFAR_STD",
    "CifarResNet",
    "Normalize",
    "create_model",
    "get_model_entry",
    "list_models",
    "load_checkpoint",
    "register_model",
]


def create_model(
    name: str,
    *,
    num_classes: int = 10,
    checkpoint: str | os.PathLike[str] | None = None,
) -> nn.Module:
    """Build the registered backbone `name`, with weights from `checkpoint` if given.

    The model comes back in training mode, on the CPU, expecting inputs normalised by the
    caller (for the CIFAR models: `CIFAR_MEAN`, `CIFAR_STD`).

    Raises:
        UnknownNameError: `name` is not registered (the message lists close matches).
        ConfigError: `num_classes` is not a positive int.
        FileNotFoundError, CheckpointMismatchError: see `load_checkpoint`.
        ImportError: a ``tv_*`` model was asked for and torchvision is missing.
    """
    entry = get_model_entry(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive int, got {num_classes!r}")
    model = entry.factory(num_classes=num_classes)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model
