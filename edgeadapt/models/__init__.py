"""Backbones by name: ``create_model("resnet20", checkpoint=...)`` and ``list_models("resnet*")``;
``create_model("resnet20", pretrained=True)`` for the released weights (`list_pretrained()`).

Importing this package registers every backbone; torchvision (timm) is imported only when a
``tv_*`` (``timm_*``) model is created.
"""

from __future__ import annotations

import os

from torch import nn

from edgeadapt.errors import ConfigError

# Imported for their register_model calls as much as for their names.
from edgeadapt.models import cifar_resnet, timm_models, torchvision_models  # noqa: F401
from edgeadapt.models._registry import get_model_entry, list_models, register_model
from edgeadapt.models.checkpoints import load_checkpoint
from edgeadapt.models.cifar_resnet import CIFAR_MEAN, CIFAR_STD, CifarResNet, Normalize
from edgeadapt.models.pretrained import (
    fetch_pretrained,
    get_pretrained,
    list_pretrained,
    register_pretrained,
)

__all__ = [
    "CIFAR_MEAN",
    "CIFAR_STD",
    "CifarResNet",
    "Normalize",
    "create_model",
    "fetch_pretrained",
    "get_model_entry",
    "get_pretrained",
    "list_models",
    "list_pretrained",
    "load_checkpoint",
    "register_model",
    "register_pretrained",
]


def create_model(
    name: str,
    *,
    num_classes: int = 10,
    checkpoint: str | os.PathLike[str] | None = None,
    pretrained: bool = False,
) -> nn.Module:
    """Build the registered backbone `name`, with weights from `checkpoint` if given, or the
    released weights with `pretrained` (see `edgeadapt.models.pretrained`: they are fetched
    once into a cache and checked by sha256; set ``$EDGEADAPT_WEIGHTS_URL`` to a mirror where
    the release URL cannot be reached).

    The model comes back in training mode, on the CPU, expecting inputs normalised by the
    caller (for the CIFAR models: `CIFAR_MEAN`, `CIFAR_STD`).

    Raises:
        UnknownNameError: `name` is not registered (the message lists close matches).
        ConfigError: `num_classes` is not a positive int, or not the pretrained weights'
            classes; `pretrained` together with `checkpoint`.
        NoPretrainedWeightsError: `pretrained` for a model without weights (the message
            lists the models that have them).
        DownloadError, WeightsChecksumError: see `fetch_pretrained`.
        FileNotFoundError, CheckpointMismatchError: see `load_checkpoint`.
        ImportError: a ``tv_*`` model was asked for and torchvision is missing.
    """
    entry = get_model_entry(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive int, got {num_classes!r}")
    if pretrained and checkpoint is not None:
        raise ConfigError(
            "pass pretrained=True or checkpoint=PATH, not both: each gives the model its weights"
        )
    weights = get_pretrained(name) if pretrained else None  # before building or downloading
    if weights is not None and num_classes != weights.num_classes:
        raise ConfigError(
            f"the pretrained {name} weights predict {weights.num_classes} classes, not "
            f"num_classes={num_classes}; leave num_classes at {weights.num_classes}, or train "
            "for your classes (edgeadapt train-source) and pass checkpoint=PATH"
        )
    model = entry.factory(num_classes=num_classes)
    if weights is not None:
        checkpoint = fetch_pretrained(weights)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model
