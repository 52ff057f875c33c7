"""Backbones from timm, built untrained (``pretrained=False``).

timm is optional and imported only inside the factories, as torchvision is
(`torchvision_models`). timm needs torchvision, whose PyPI wheels are built against PyPI's
CUDA torch: with the CPU torch build they fail to import (see the README, "Backbones").
"""

from __future__ import annotations

import torch
from torch import nn

from edgeadapt.models._registry import register_model

__all__ = ["timm_mobilenetv3_small", "timm_resnet18"]


def _create(name: str, timm_name: str, num_classes: int) -> nn.Module:
    try:
        import timm
    # timm imports torchvision: a torchvision built for another torch fails with a
    # RuntimeError about its C++ operators, not an ImportError.
    except (ImportError, RuntimeError) as exc:
        raise ImportError(
            f"model {name!r} needs timm (and a torchvision matching your torch "
            f"{torch.__version__}), which could not be imported ({exc}); `pip install timm`"
        ) from exc
    return timm.create_model(timm_name, pretrained=False, num_classes=num_classes)


def timm_resnet18(num_classes: int = 1000) -> nn.Module:
    """timm ResNet-18 (``resnet18``), untrained."""
    return _create("timm_resnet18", "resnet18", num_classes)


def timm_mobilenetv3_small(num_classes: int = 1000) -> nn.Module:
    """timm MobileNetV3-Small (``mobilenetv3_small_100``), untrained."""
    return _create("timm_mobilenetv3_small", "mobilenetv3_small_100", num_classes)


register_model("timm_resnet18", timm_resnet18, description="timm ResNet-18 (needs timm)")
register_model(
    "timm_mobilenetv3_small",
    timm_mobilenetv3_small,
    description="timm MobileNetV3-Small 1.0 (needs timm)",
)
