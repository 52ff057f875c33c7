"""ImageNet-style backbones from torchvision, built untrained (``weights=None``).

torchvision is optional and imported only inside the factories, so ``import edgeadapt.models``
never pays for it and the names list even where it is missing; creating one then raises an
`ImportError` that says what to install.
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch import nn

from edgeadapt.models._registry import register_model

__all__ = ["tv_mobilenet_v2", "tv_resnet18", "tv_resnet50"]


def _torchvision_models(name: str) -> ModuleType:
    try:
        import torchvision.models
    # A torchvision built for another torch fails at import with a RuntimeError about its
    # C++ operators, not an ImportError; both mean "install the matching build".
    except (ImportError, RuntimeError) as exc:
        raise ImportError(
            f"model {name!r} needs torchvision, which could not be imported ({exc}); "
            f"`pip install torchvision` in the build matching your torch {torch.__version__}"
        ) from exc
    return torchvision.models


def tv_resnet18(num_classes: int = 1000) -> nn.Module:
    """torchvision ResNet-18, untrained."""
    return _torchvision_models("tv_resnet18").resnet18(weights=None, num_classes=num_classes)


def tv_resnet50(num_classes: int = 1000) -> nn.Module:
    """torchvision ResNet-50, untrained."""
    return _torchvision_models("tv_resnet50").resnet50(weights=None, num_classes=num_classes)


def tv_mobilenet_v2(num_classes: int = 1000) -> nn.Module:
    """torchvision MobileNetV2, untrained."""
    models = _torchvision_models("tv_mobilenet_v2")
    return models.mobilenet_v2(weights=None, num_classes=num_classes)


register_model("tv_resnet18", tv_resnet18, description="torchvision ResNet-18 (needs torchvision)")
register_model("tv_resnet50", tv_resnet50, description="torchvision ResNet-50 (needs torchvision)")
register_model(
    "tv_mobilenet_v2", tv_mobilenet_v2, description="torchvision MobileNetV2 (needs torchvision)"
)
