"""Lower a deltaified, fx-traced conv net (a torchvision ResNet, ...) to the fast `FastPlan`.

`deltaify` returns a traceable model as a `torch.fx.GraphModule` with a `DeltaActivation`
after every ReLU call site. This walks that graph and accepts what the fast runtime's kernels
run: Conv2d (plain, square) with an optional BatchNorm2d, at most two such branches and one
quantised map added together (a residual block, its downsample conv included), ReLU, then the
quantiser; MaxPool2d over a quantised map; and at the end global average pooling, flatten and
one Linear. Anything else is refused with the op it met, so a model either lowers exactly or
not at all. torchvision's resnet18/34/50 (BasicBlock and Bottleneck) are this vocabulary.

Two convs into one activation (conv2 and the downsample conv of a block) get integer weights
on one shared per-channel scale (`joint_integer_weights`): their sum is one exact integer
accumulator, and the runtime adds the downsample's deltas into the same buffer.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, fx, nn

from edgeadapt.delta.errors import NotDeltaifiedError
from edgeadapt.delta.fast_plan import (
    ConvBranch,
    ConvSpec,
    FastPlan,
    PoolSpec,
    check_plain_conv,
    fold_bn,
    joint_integer_weights,
    lower_cifar_resnet,
    make_spec,
    stem_spec,
)
from edgeadapt.delta.quantize import DeltaActivation
from edgeadapt.errors import ConfigError

__all__ = ["lower_for_fast_runtime", "lower_graph"]

_ADDS = {operator.add, operator.iadd, torch.add}
_RELUS = {torch.relu, torch.nn.functional.relu, torch.relu_}


@dataclass
class _KMap:  # a quantised map (a plan layer), or the frame (index -1)
    index: int


@dataclass
class _Branch:  # conv [+ BN] on a k map, not yet quantised
    name: str
    conv: nn.Conv2d
    source: int
    bn: nn.BatchNorm2d | None = None


@dataclass
class _Sum:  # conv branches and quantised maps added together
    branches: list[_Branch] = field(default_factory=list)
    maps: list[int] = field(default_factory=list)


@dataclass
class _Relu:
    value: _Sum


@dataclass
class _Pooled:  # global average of the last k map
    index: int


@dataclass
class _Logits:
    linear: nn.Linear
    source: int


class _Lowering:
    def __init__(self, gm: fx.GraphModule, act_max: int, mean, std) -> None:
        self.modules = dict(gm.named_modules())
        self.act_max, self.mean, self.std = act_max, mean, std
        self.layers: list[ConvSpec | PoolSpec] = []
        self.values: dict[fx.Node, object] = {}

    def refuse(self, node: fx.Node, why: str) -> ConfigError:
        return ConfigError(
            f"the fast delta runtime cannot lower {node.op} {node.target!r} ({node.name}): {why}. "
            "It runs plain Conv2d [+ BatchNorm2d] -> [residual add] -> ReLU -> DeltaActivation, "
            "MaxPool2d, global average pooling and one Linear; use to_delta_runtime otherwise"
        )

    def step_of(self, index: int) -> Tensor:
        return self.layers[index].step

    def as_sum(self, node: fx.Node, value: object) -> _Sum:
        if isinstance(value, _Branch):
            return _Sum(branches=[value])
        if isinstance(value, _Sum):
            return value
        if isinstance(value, _KMap) and value.index >= 0:
            return _Sum(maps=[value.index])
        raise self.refuse(node, f"adds or activates a {type(value).__name__.strip('_')}")

    def visit(self, node: fx.Node) -> object:
        args = [self.values.get(a) if isinstance(a, fx.Node) else a for a in node.args]
        if node.op == "placeholder":
            return _KMap(-1)
        if node.op == "call_module":
            return self.visit_module(node, self.modules[str(node.target)], args)
        if node.op == "call_function" and node.target in _ADDS and node.kwargs:
            raise self.refuse(node, f"an add with {dict(node.kwargs)} (a plain sum only)")
        if node.op == "call_function" and node.target in _ADDS and len(args) == 2:
            a, b = self.as_sum(node, args[0]), self.as_sum(node, args[1])
            return _Sum(a.branches + b.branches, a.maps + b.maps)
        if node.op == "call_method" and node.target in ("add", "add_") and len(args) == 2:
            a, b = self.as_sum(node, args[0]), self.as_sum(node, args[1])
            return _Sum(a.branches + b.branches, a.maps + b.maps)
        if (node.op == "call_function" and node.target in _RELUS) or (
            node.op == "call_method" and node.target in ("relu", "relu_")
        ):
            return _Relu(self.as_sum(node, args[0]))
        flatten = node.op == "call_function" and node.target is torch.flatten
        if flatten and isinstance(args[0], _Pooled):
            return args[0]
        if node.op == "call_method" and node.target == "mean" and isinstance(args[0], _KMap):
            dims = args[1] if len(args) > 1 else node.kwargs.get("dim")
            if tuple(dims or ()) in ((2, 3), (-2, -1)) and not node.kwargs.get("keepdim"):
                return _Pooled(args[0].index)
        if node.op == "output" and isinstance(args[0], _Logits):
            return args[0]
        raise self.refuse(node, "not an op the runtime has a kernel for")

    def visit_module(self, node: fx.Node, mod: nn.Module, args: list) -> object:
        src = args[0] if args else None
        if isinstance(mod, nn.Conv2d) and isinstance(src, _KMap):
            check_plain_conv(str(node.target), mod)
            return _Branch(str(node.target), mod, src.index)
        if isinstance(mod, nn.BatchNorm2d) and isinstance(src, _Branch) and src.bn is None:
            return _Branch(src.name, src.conv, src.source, mod)
        if isinstance(mod, nn.ReLU):
            return _Relu(self.as_sum(node, src))
        if isinstance(mod, DeltaActivation) and isinstance(src, _Relu):
            return _KMap(self.add_conv_layer(node, src.value, mod.step.detach()))
        if isinstance(mod, nn.MaxPool2d) and isinstance(src, _KMap) and src.index >= 0:
            return _KMap(self.add_pool(node, mod, src.index))
        global_pool = isinstance(mod, nn.AdaptiveAvgPool2d) and mod.output_size in (1, (1, 1))
        if global_pool and isinstance(src, _KMap):
            return _Pooled(src.index)
        if isinstance(mod, nn.Flatten) and isinstance(src, _Pooled):
            return src
        if isinstance(mod, nn.Linear) and isinstance(src, _Pooled):
            return _Logits(mod, src.index)
        if isinstance(mod, nn.Conv2d | nn.ReLU | nn.BatchNorm2d) or isinstance(src, _Relu):
            raise self.refuse(node, "its input is not what this op needs here")
        raise self.refuse(node, "not an op the runtime has a kernel for")

    def add_pool(self, node: fx.Node, mod: nn.MaxPool2d, source: int) -> int:
        k, s, p, d = mod.kernel_size, mod.stride, mod.padding, mod.dilation
        plain = not mod.ceil_mode and not mod.return_indices
        if not all(isinstance(v, int) for v in (k, s, p, d)) or d != 1 or not plain:
            raise self.refuse(node, "square, undilated, floor-mode max pools only")
        spec = PoolSpec(str(node.target), k, s, p, source, self.step_of(source).float().clone())
        self.layers.append(spec)
        return len(self.layers) - 1

    def add_conv_layer(self, node: fx.Node, value: _Sum, step_out: Tensor) -> int:
        branches, maps = value.branches, value.maps
        if not 1 <= len(branches) <= 2 or len(maps) > 1:
            raise self.refuse(
                node, f"{len(branches)} conv branches and {len(maps)} maps added; the kernels "
                "take one or two convs plus at most one identity map",
            )  # fmt: skip
        if any(b.source < 0 for b in branches):
            if len(branches) > 1 or maps:
                raise self.refuse(node, "the frame feeds a conv that is not alone")
            b = branches[0]
            spec = stem_spec(b.name, b.conv, b.bn, step_out, self.mean, self.std)
        else:
            spec = self.joint_spec(node, branches, maps, step_out)
        self.layers.append(spec)
        return len(self.layers) - 1

    def joint_spec(self, node, branches: list[_Branch], maps: list[int], step_out) -> ConvSpec:
        # The larger kernel streams through the fused epilogue; the other only accumulates.
        branches = sorted(branches, key=lambda b: -b.conv.kernel_size[0])
        folded = [fold_bn(b.conv, b.bn) for b in branches]
        parts = []
        for b, (w, _) in zip(branches, folded):
            step_in = self.step_of(b.source).double()
            k_in = torch.full((w.shape[1],), float(self.act_max), dtype=torch.float64)
            parts.append((w * step_in.view(1, -1, 1, 1), k_in))
        weights, scale = joint_integer_weights(parts)
        main, bias = branches[0], sum(b for _, b in folded)
        extra = None
        if len(branches) == 2:
            other = branches[1]
            extra = ConvBranch(
                weights[1], other.conv.stride[0], other.conv.padding[0], other.source
            )
        shortcut = maps[0] if maps else None
        if shortcut is not None and self.layers[shortcut].out_channels != weights[0].shape[0]:
            raise self.refuse(node, "an identity shortcut with a different channel count")
        return make_spec(
            main.name, main.conv, weights[0], scale, bias, step_out, main.source,
            shortcut=shortcut, branch=extra,
        )  # fmt: skip


@torch.no_grad()
def lower_graph(
    gm: nn.Module,
    *,
    act_max: int = 255,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
) -> FastPlan:
    """Lower a deltaified traceable model (`deltaify`'s `GraphModule`, eval-mode BN) to the
    integer `FastPlan`; see the module docstring for what it accepts. Frames are uint8, the
    model's normalisation (pixel/255 - mean)/std is folded into the first conv."""
    if not isinstance(gm, fx.GraphModule):
        raise NotDeltaifiedError(
            f"expected deltaify's torch.fx.GraphModule, got {type(gm).__name__}; deltaify the "
            "model first (edgeadapt.delta.deltaify)"
        )
    if act_max < 1:
        raise ConfigError(f"act_max must be >= 1, got {act_max}")
    if not any(isinstance(m, DeltaActivation) for m in gm.modules()):
        raise NotDeltaifiedError("the model has no DeltaActivation; deltaify it first")
    low = _Lowering(gm, act_max, mean, std)
    result = None
    for node in gm.graph.nodes:
        result = low.values[node] = low.visit(node)
    if not isinstance(result, _Logits) or not low.layers:
        raise ConfigError("the model does not end in global pooling and a Linear head")
    stem = low.layers[0]
    if not isinstance(stem, ConvSpec) or stem.source >= 0:
        raise ConfigError("the model's first layer must be a conv on the frame")
    if result.source != len(low.layers) - 1:
        raise ConfigError("the head must read the last quantised map")
    return FastPlan(
        layers=tuple(low.layers),
        head_weight=result.linear.weight.detach().float().clone(),
        head_bias=(
            torch.zeros(result.linear.out_features)
            if result.linear.bias is None
            else result.linear.bias.detach().float().clone()
        ),
        act_max=float(act_max),
        in_channels=stem.weight.shape[1],
    )


def lower_for_fast_runtime(
    model: nn.Module,
    *,
    act_max: int = 255,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
) -> FastPlan:
    """A deltaified `CifarResNet` (`lower_cifar_resnet`) or traceable model (`lower_graph`:
    torchvision ResNets, ...) as the fast runtime's integer `FastPlan`."""
    from edgeadapt.models.cifar_resnet import CifarResNet

    if isinstance(model, CifarResNet):
        return lower_cifar_resnet(model, act_max=act_max, mean=mean, std=std)
    if isinstance(model, fx.GraphModule):
        return lower_graph(model, act_max=act_max, mean=mean, std=std)
    raise ConfigError(
        f"the fast delta runtime lowers a deltaified CifarResNet or a deltaified traceable "
        f"model (deltaify returns a torch.fx.GraphModule for those); got "
        f"{type(model).__name__}. Use to_delta_runtime for other models"
    )


def check_lowerable(model: nn.Module, size: tuple[int, int] = (64, 64)) -> None:
    """Raise the lowering's typed error now if `model` (not yet deltaified) has something the
    fast runtime cannot run: it is deltaified on one random `size` input and lowered, which
    takes well under a second for a ResNet-18, before any footage is decoded."""
    from edgeadapt.delta.deltaify import deltaify
    from edgeadapt.models.cifar_resnet import CifarResNet

    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ConfigError(f"{type(model).__name__} has no Conv2d: the fast runtime runs conv nets")
    if any(isinstance(m, DeltaActivation) for m in model.modules()):
        lower_for_fast_runtime(model)  # deltaified already: lower it as it is
        return
    if isinstance(model, CifarResNet):
        return  # lower_cifar_resnet checks it as it lowers; nothing here can fail later
    gen = torch.Generator().manual_seed(0)
    example = torch.rand(1, convs[0].in_channels, *size, generator=gen)
    probe = deltaify(model, example, quantile=1.0)
    if not isinstance(probe, fx.GraphModule):
        raise ConfigError(
            f"{type(model).__name__} cannot be traced by torch.fx, and the fast runtime lowers "
            "traced graphs (or CifarResNet): use the PyTorch delta runtime (drop fast)"
        )
    lower_graph(probe.eval())
