"""ResNets for 32×32 inputs with option-A shortcuts.

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016, section 4.2:
three stages of basic blocks (16/32/64 channels), depth 6n+2, and parameter-free shortcuts
that subsample and zero-pad channels ("option A"). Parameter and buffer names follow
akamaster/pytorch_resnet_cifar10 so its checkpoints (and ours fine-tuned from them) load as is.

The layout serves the rest of the SDK:
- every activation is its own `nn.ReLU` module, so memory-lean versions can be swapped in;
- stages are `nn.Sequential`s of blocks, so a backbone can be cut at names like ``"layer2.1"``;
- pooling is a plain mean in `forward`, which saves nothing for backward;
- for memory only (the numbers are the same): the stem is a `frozen_prefix`, whose output a
  recomputing consumer rebuilds from the image; blocks name their layers (`residual_layers`)
  for a hand-written frozen backward; a forward without a graph frees each layer's input
  as soon as it has run and sums the shortcut in place.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from edgeadapt.errors import ConfigError
from edgeadapt.models._registry import register_model
from edgeadapt.modules.lean import frozen_prefix
from edgeadapt.normalization import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "CIFAR_MEAN",
    "CIFAR_STD",
    "BasicBlock",
    "CifarResNet",
    "Normalize",
    "PadShortcut",
    "resnet8",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "tiny_resnet",
]

# The akamaster weights were trained with the ImageNet statistics, not CIFAR-10's own;
# the shared checkpoints expect exactly these (see shared/README.md).
CIFAR_MEAN = IMAGENET_MEAN
CIFAR_STD = IMAGENET_STD


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, for callers who want normalisation inside the model.

    The backbones here take normalised inputs; prepend this with
    ``nn.Sequential(Normalize(), model)`` to feed them images in [0, 1].
    """

    def __init__(self, mean: Sequence[float] = CIFAR_MEAN, std: Sequence[float] = CIFAR_STD):
        super().__init__()
        if len(mean) != len(std):
            raise ConfigError(f"mean has {len(mean)} channels but std has {len(std)}")
        if any(s <= 0 for s in std):
            raise ConfigError(f"every std must be positive, got {tuple(std)}")
        # Non-persistent: constants, not weights, so checkpoints stay loadable with or without it.
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample by `stride`, then zero-pad channels up to `out_channels`.

    The padding is split across both ends of the channel axis, as in akamaster's
    ``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))``; the trained
    weights depend on where the original channels land.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ConfigError(
                f"an option-A shortcut can only widen ({in_channels} -> {out_channels} channels)"
            )
        self.stride = stride
        self.pad_front = (out_channels - in_channels) // 2
        self.pad_back = out_channels - in_channels - self.pad_front

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back))

    def add_input_grad(self, grad_x: torch.Tensor, grad_out: torch.Tensor) -> None:
        """grad_x += the gradient of the input given the output's, in place (no temporary
        of either size; `edgeadapt.modules.frozen_block`)."""
        kept = grad_out[:, self.pad_front : grad_out.shape[1] - self.pad_back]
        grad_x[:, :, :: self.stride, :: self.stride].add_(kept)

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad=({self.pad_front}, {self.pad_back})"


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN pairs plus a parameter-free shortcut, ReLU after the sum."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = PadShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One statement a layer, so that each layer's input is freed as soon as it has run.
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu1(out)
        out = self.conv2(out)
        out = self.bn2(out)
        shortcut = self.shortcut(x)
        graph = torch.is_grad_enabled() and (out.requires_grad or shortcut.requires_grad)
        if graph or type(out) is not torch.Tensor or out is x:
            # Out of place with a graph (a memory-lean BN may keep its output for backward),
            # while tracing (export), or if the layers were all identities.
            return self.relu2(out + shortcut)
        # No graph: the sum in place (the same numbers, one feature map fewer).
        return self.relu2(out.add_(shortcut))

    def residual_layers(self) -> tuple[list[nn.Module], nn.Module, nn.Module]:
        """(chain, shortcut, post): forward is post(chain(x) + shortcut(x)), the chain's layers
        applied in turn (`edgeadapt.modules.frozen_block` back-propagates it frozen)."""
        return [self.conv1, self.bn1, self.relu1, self.conv2, self.bn2], self.shortcut, self.relu2


class CifarResNet(nn.Module):
    """Stem conv → stages ``layer1..layerK`` of `BasicBlock`s → global mean → ``linear``.

    Args:
        blocks_per_stage: blocks in each stage; one int for all stages or one per stage.
        widths: channels of each stage; the number of widths is the number of stages.
            The first stage keeps the resolution, every later one halves it.
        num_classes: outputs of the final ``linear`` layer.
        in_channels: channels of the input image.
    """

    def __init__(
        self,
        blocks_per_stage: int | Sequence[int],
        widths: Sequence[int] = (16, 32, 64),
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if isinstance(blocks_per_stage, int):
            blocks = (blocks_per_stage,) * len(widths)
        else:
            blocks = tuple(int(b) for b in blocks_per_stage)
        if not widths or len(blocks) != len(widths):
            raise ConfigError(
                f"need one block count per stage: got blocks {blocks} for widths {widths}"
            )
        if min(blocks) < 1 or min(widths) < 1:
            raise ConfigError(f"block counts and widths must be >= 1, got {blocks}, {widths}")
        _check_positive("num_classes", num_classes)
        _check_positive("in_channels", in_channels)
        self.blocks_per_stage = blocks
        self.widths = widths
        self.num_classes = num_classes
        self.num_features = widths[-1]  # width of the pooled features fed to `linear`

        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        channels = widths[0]
        for index, (width, count) in enumerate(zip(widths, blocks, strict=True)):
            stride = 1 if index == 0 else 2
            stage = [BasicBlock(channels, width, stride)]
            stage += [BasicBlock(width, width) for _ in range(count - 1)]
            self.add_module(f"layer{index + 1}", nn.Sequential(*stage))
            channels = width
        self.linear = nn.Linear(channels, num_classes)
        self.apply(_kaiming_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A frozen stem's output can be rebuilt from x in backward rather than kept (EcoTTA).
        out = frozen_prefix(x, self.conv1, self.bn1, self.relu)
        for index in range(len(self.widths)):
            stage = getattr(self, f"layer{index + 1}")
            if type(stage) is nn.Sequential and not _has_hooks(stage):
                # Block by block here, so that each block's input is freed once the block has
                # run; a stage called as a whole would hold its input until its last block.
                for block in stage:
                    out = block(out)
            else:
                out = stage(out)
        return self.linear(out.mean(dim=(2, 3)))


def _has_hooks(m: nn.Module) -> bool:
    """Whether calling `m` would run hooks (its own or global ones), which calling its children
    one by one would skip."""
    from torch.nn.modules import module as mod

    own = (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks, m._backward_pre_hooks)
    every = (
        mod._global_forward_hooks,
        mod._global_forward_pre_hooks,
        mod._global_backward_hooks,
        mod._global_backward_pre_hooks,
    )
    return any(own) or any(every)


def _check_positive(name: str, value: object) -> None:
    # bool is an int; `num_classes=True` is a bug, not one class.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive int, got {value!r}")


def _kaiming_init(module: nn.Module) -> None:
    # The initialisation akamaster trained from; BatchNorm keeps PyTorch's (1, 0).
    if isinstance(module, nn.Conv2d | nn.Linear):
        nn.init.kaiming_normal_(module.weight)


def resnet8(num_classes: int = 10) -> CifarResNet:
    """ResNet-8: one block per stage at the standard widths."""
    return CifarResNet(1, num_classes=num_classes)


def tiny_resnet(num_classes: int = 10) -> CifarResNet:
    """One block per stage at widths 4/8/16: a few thousand parameters, for fast tests."""
    return CifarResNet(1, widths=(4, 8, 16), num_classes=num_classes)


def resnet20(num_classes: int = 10) -> CifarResNet:
    """ResNet-20 (n=3), the backbone of the shared checkpoints."""
    return CifarResNet(3, num_classes=num_classes)


def resnet32(num_classes: int = 10) -> CifarResNet:
    """ResNet-32 (n=5)."""
    return CifarResNet(5, num_classes=num_classes)


def resnet44(num_classes: int = 10) -> CifarResNet:
    """ResNet-44 (n=7)."""
    return CifarResNet(7, num_classes=num_classes)


def resnet56(num_classes: int = 10) -> CifarResNet:
    """ResNet-56 (n=9)."""
    return CifarResNet(9, num_classes=num_classes)


register_model("resnet8", resnet8, description="CIFAR ResNet-8, 1 block/stage, 16/32/64")
register_model("tiny_resnet", tiny_resnet, description="CIFAR ResNet-8 at widths 4/8/16 (tests)")
register_model("resnet20", resnet20, description="CIFAR ResNet-20 (He et al. 2016, option A)")
register_model("resnet32", resnet32, description="CIFAR ResNet-32 (He et al. 2016, option A)")
register_model("resnet44", resnet44, description="CIFAR ResNet-44 (He et al. 2016, option A)")
register_model("resnet56", resnet56, description="CIFAR ResNet-56 (He et al. 2016, option A)")
