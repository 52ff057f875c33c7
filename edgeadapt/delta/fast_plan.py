"""The integer model the fast delta runtime executes, and its dense PyTorch reference.

A deltaified CIFAR ResNet (`deltaify` / `deltaify_modules` of a `CifarResNet`, here) or a
traceable conv net such as torchvision's ResNets (`fast_lower.lower_graph`) is lowered to a
list of conv layers (and max pools) over integer activations: every map is held as quantiser steps k (the
`DeltaActivation` grid, clamped to `act_max` steps), the camera frame as its uint8 pixel
values (input normalisation folded into the stem's weights and a per-pixel bias map, which
keeps the zero padding exact). BN is folded, each input channel's step is folded into the
weights, and the weights are rounded to integers per output channel with the scale chosen
so that sum |w|·k_max <= 2^23. Then every partial sum of any conv, in any order, including a
delta's increments on top of a stored accumulator, is an integer below 2^24: float32 holds it
exactly, so delta accumulation needs neither float64 nor re-anchoring, and ordinary float32
vector FMAs compute it.

Per output pixel the epilogue is float32 in a fixed order (`_epilogue`):
v = acc·scale + bias [+ k_in·q_in of the shortcut]; k = min(round(relu(v)·(1/q)), act_max),
with 1/q rounded to float32 once (DeltaActivation divides; the difference is a tie moving
by at most one step, far below the quantisation itself).
`reference_forward` evaluates the same integer model densely with PyTorch (float64 convs,
exact for these integers), which is what the runtime must equal bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgeadapt.delta.errors import NotDeltaifiedError
from edgeadapt.delta.quantize import DeltaActivation
from edgeadapt.errors import ConfigError, InputError

__all__ = [
    "ACC_BOUND",
    "ConvBranch",
    "ConvSpec",
    "FastPlan",
    "PoolSpec",
    "lower_cifar_resnet",
    "reference_forward",
]

# Largest sum |w|·k_max per output channel: a stored accumulator plus any partial sum of
# increments then stays below 2^24, where float32 integers are exact.
ACC_BOUND = 2**23


@dataclass(frozen=True)
class ConvBranch:
    """A second conv adding into a layer's accumulator (a ResNet's downsample shortcut). Its
    integer weights share the layer's per-channel scale, so the sum stays one exact integer."""

    weight: Tensor  # (O, C, K, K) float32, integer values
    stride: int
    padding: int
    source: int  # index of the layer whose k map is its input


@dataclass(frozen=True)
class ConvSpec:
    """One conv of the integer model, with its folded BN, ReLU and output quantiser."""

    name: str  # the module path in the source model, e.g. "layer2.0.conv1"
    weight: Tensor  # (O, C, K, K) float32, integer values
    scale: Tensor  # (O,) float32: real output = acc · scale
    bias: Tensor  # (O,) float32 (the stem's per-pixel bias map comes from `stem_bias_map`)
    step: Tensor  # (O,) float32: the output quantiser's steps q
    inv_step: Tensor  # (O,) float32: 1/q, rounded once (a multiply per value, not a divide)
    stride: int
    padding: int
    source: int  # index of the layer whose k map is the input; -1: the frame
    shortcut: int | None = None  # index of the layer whose k map is added (residual)
    shortcut_stride: int = 1
    shortcut_front: int = 0  # zero channels padded in front of the shortcut (option A)
    # Stem only: the BN-folded float64 weights and the per-channel input offset mean/std,
    # for the per-pixel bias of the normalisation under zero padding.
    offset_weight: Tensor | None = None
    offset: Tensor | None = None
    branch: ConvBranch | None = None  # a second conv into the same accumulator

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])


@dataclass(frozen=True)
class PoolSpec:
    """A max pool over a k map. Max commutes with the per-channel quantiser, so its output is
    a k map on the same steps, computed exactly on the integers."""

    name: str
    kernel: int
    stride: int
    padding: int
    source: int
    step: Tensor  # (C,) the source's steps, unchanged

    @property
    def out_channels(self) -> int:
        return int(self.step.shape[0])


@dataclass(frozen=True)
class FastPlan:
    """The lowered network: convs and max pools in execution order, then global mean and a
    linear head."""

    layers: tuple[ConvSpec | PoolSpec, ...]
    head_weight: Tensor  # (classes, C) float32
    head_bias: Tensor  # (classes,) float32
    act_max: float  # activations are clamped to this many steps
    in_channels: int

    @property
    def out_step(self) -> Tensor:
        return self.layers[-1].step

    @property
    def out_channels(self) -> int:
        return self.layers[-1].out_channels


def stem_bias_map(spec: ConvSpec, h: int, w: int) -> Tensor:
    """The stem's bias at each output pixel (Ho, Wo, O) float32: BN bias minus the conv of the
    normalisation offset, which differs at the border where zero padding cuts taps off."""
    if spec.offset is None or spec.offset_weight is None:
        raise ConfigError(f"{spec.name} is not a stem layer")
    const = spec.offset.view(1, -1, 1, 1).expand(1, -1, h, w)
    shift = F.conv2d(const, spec.offset_weight, None, spec.stride, spec.padding)
    out = spec.bias.double().view(1, -1, 1, 1) - shift
    return out[0].permute(1, 2, 0).float().contiguous()


def head(plan: FastPlan, sums: Tensor, npix: int) -> Tensor:
    """Logits from the per-channel sums of the last k map (float64, exact integers)."""
    pooled = sums.float().view(1, -1) * plan.out_step.view(1, -1) / npix
    return F.linear(pooled, plan.head_weight, plan.head_bias)


def _quantiser(mod: nn.Module, where: str) -> DeltaActivation:
    if isinstance(mod, nn.Sequential) and isinstance(mod[-1], DeltaActivation):
        return mod[-1]
    raise NotDeltaifiedError(
        f"{where} is {type(mod).__name__}, not an activation followed by a DeltaActivation; "
        "deltaify the CifarResNet first (edgeadapt.delta.deltaify or deltaify_modules)"
    )


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> tuple[Tensor, Tensor]:
    """The conv's float64 weights and bias with an eval-mode BN after it folded in."""
    if bn is None:
        w = conv.weight.double()
        b = torch.zeros(w.shape[0], dtype=torch.float64)
        return w, b if conv.bias is None else b + conv.bias.double()
    if bn.running_mean is None or bn.running_var is None or bn.weight is None:
        raise ConfigError(
            f"{bn} has no running statistics or no affine weights to fold; the fast runtime "
            "folds an eval-mode BatchNorm2d(track_running_stats=True, affine=True)"
        )
    g = bn.weight.double() / (bn.running_var.double() + bn.eps).sqrt()
    w = conv.weight.double() * g.view(-1, 1, 1, 1)
    b = bn.bias.double() - bn.running_mean.double() * g
    if conv.bias is not None:
        b = b + conv.bias.double() * g
    return w, b


def _integer_weights(w: Tensor, k_in: Tensor) -> tuple[Tensor, Tensor]:
    """Round w (O, C, K, K) float64 to integers per output channel so sum |w|·k_in <= bound."""
    (wq,), scale = joint_integer_weights([(w, k_in)])
    return wq, scale


def joint_integer_weights(parts: list[tuple[Tensor, Tensor]]) -> tuple[list[Tensor], Tensor]:
    """Round several convs (w (O, C_i, K_i, K_i) float64, k_in (C_i,)) that add into one
    accumulator to integers on one per-output-channel scale, so that the sum over all of them
    of |w|·k_in stays <= ACC_BOUND: (integer weights float32, scale (O,) float32)."""
    mass = sum((w.abs() * k.view(1, -1, 1, 1)).sum((1, 2, 3)) for w, k in parts)
    # Rounding can add up to half a unit per tap: leave that much room under the bound.
    room = ACC_BOUND - sum(0.5 * float(k.sum()) * w.shape[2] * w.shape[3] for w, k in parts)
    if room <= 0:
        shapes = ", ".join(str(tuple(w.shape)) for w, _ in parts)
        raise ConfigError(f"layer too wide for exact float32 accumulation: {shapes}")
    scale = torch.where(mass > 0, mass / room, torch.ones_like(mass)).float()
    out = [(w / scale.double().view(-1, 1, 1, 1)).round() for w, _ in parts]
    used = sum((wq.abs() * k.view(1, -1, 1, 1)).sum((1, 2, 3)) for wq, (_, k) in zip(out, parts))
    if bool((used > ACC_BOUND).any()):  # cannot happen with the room above; kept as a guard
        raise ConfigError("integer weights exceed the exact-accumulation bound")
    return [wq.float() for wq in out], scale


def check_plain_conv(name: str, conv: nn.Conv2d) -> None:
    """The convs the runtime's kernels take: dense, square, undilated, numeric padding."""
    if conv.groups != 1 or conv.dilation != (1, 1) or isinstance(conv.padding, str):
        raise ConfigError(f"{name}: the fast runtime supports plain convs, got {conv}")
    if conv.kernel_size[0] != conv.kernel_size[1] or conv.stride[0] != conv.stride[1]:
        raise ConfigError(f"{name}: square kernels and strides only, got {conv}")
    if conv.padding[0] != conv.padding[1]:
        raise ConfigError(f"{name}: equal padding on both axes only, got {conv}")
    if conv.padding_mode != "zeros":
        raise ConfigError(f"{name}: zero padding only, got padding_mode={conv.padding_mode!r}")


def stem_spec(
    name: str,
    conv: nn.Conv2d,
    bn: nn.BatchNorm2d | None,
    step_out: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
) -> ConvSpec:
    """The first conv, reading uint8 pixels: the input normalisation (pixel/255 - mean)/std
    is folded into its weights and a per-pixel bias (`stem_bias_map`)."""
    check_plain_conv(name, conv)
    c_in = conv.in_channels
    if len(mean) != c_in or len(std) != c_in:
        raise ConfigError(f"mean/std need {c_in} values, got {len(mean)}, {len(std)}")
    m = torch.tensor(tuple(mean), dtype=torch.float64)
    s = torch.tensor(tuple(std), dtype=torch.float64)
    w, b = fold_bn(conv, bn)
    wq, scale = _integer_weights(w / (255.0 * s).view(1, -1, 1, 1), torch.full((c_in,), 255.0))
    return make_spec(name, conv, wq, scale, b, step_out, -1, offset_weight=w, offset=m / s)


def make_spec(
    name: str,
    conv: nn.Conv2d,
    weight: Tensor,
    scale: Tensor,
    bias: Tensor,
    step_out: Tensor,
    source: int,
    **extra,
) -> ConvSpec:
    """A `ConvSpec` for `conv` with integer `weight` on `scale`, folded `bias` and the output
    quantiser's steps `step_out`; `extra`: the optional fields (shortcut, branch, ...)."""
    return ConvSpec(
        name=name,
        weight=weight,
        scale=scale,
        bias=bias.float(),
        step=step_out.detach().float().clone(),
        inv_step=(1.0 / step_out.detach().double()).float(),
        stride=conv.stride[0],
        padding=conv.padding[0],
        source=source,
        **extra,
    )


def _conv_spec(
    name: str,
    conv: nn.Conv2d,
    bn: nn.BatchNorm2d,
    step_in: Tensor,
    k_in_max: float,
    step_out: Tensor,
    source: int,
) -> ConvSpec:
    check_plain_conv(name, conv)
    w, b = fold_bn(conv, bn)
    w_in = w * step_in.double().view(1, -1, 1, 1)
    wq, scale = _integer_weights(w_in, torch.full((w.shape[1],), float(k_in_max)).double())
    return make_spec(name, conv, wq, scale, b, step_out, source)


@torch.no_grad()
def lower_cifar_resnet(
    model: nn.Module,
    *,
    act_max: int = 255,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
) -> FastPlan:
    """Lower a deltaified `CifarResNet` (eval-mode BN) to the integer `FastPlan`.

    The model reads frames normalised as (pixel/255 - mean)/std; the plan reads uint8 pixels.
    Activations are clamped to `act_max` quantiser steps. deltaify calibrates 2**bits - 1
    steps to the 99.9th percentile by default, so 255 clamps the top 0.1% of every channel,
    which biases the logits; deltaify with `quantile=1.0` for this plan.
    """
    from edgeadapt.models.cifar_resnet import CifarResNet, PadShortcut

    if not isinstance(model, CifarResNet):
        raise ConfigError(
            f"the fast delta runtime lowers CifarResNet models (resnet20, ...); got "
            f"{type(model).__name__}. Use to_delta_runtime for other architectures"
        )
    if act_max < 1:
        raise ConfigError(f"act_max must be >= 1, got {act_max}")
    q = _quantiser(model.relu, "relu").step
    stem = stem_spec("conv1", model.conv1, model.bn1, q, mean, std)
    layers = [stem]
    for stage in range(len(model.widths)):
        for i, block in enumerate(getattr(model, f"layer{stage + 1}")):
            name = f"layer{stage + 1}.{i}"
            block_in = len(layers) - 1
            q1 = _quantiser(block.relu1, f"{name}.relu1").step
            q2 = _quantiser(block.relu2, f"{name}.relu2").step
            layers.append(
                _conv_spec(f"{name}.conv1", block.conv1, block.bn1, q, act_max, q1, block_in)
            )
            spec2 = _conv_spec(
                f"{name}.conv2", block.conv2, block.bn2, q1, act_max, q2, len(layers) - 1
            )
            sc = block.shortcut
            if isinstance(sc, PadShortcut):
                stride, front = sc.stride, sc.pad_front
            elif isinstance(sc, nn.Identity):
                stride, front = 1, 0
            else:
                raise ConfigError(f"{name}: unsupported shortcut {type(sc).__name__}")
            layers.append(
                ConvSpec(
                    **{
                        **spec2.__dict__,
                        "shortcut": block_in,
                        "shortcut_stride": stride,
                        "shortcut_front": front,
                    }
                )
            )
            q = q2
    return FastPlan(
        layers=tuple(layers),
        head_weight=model.linear.weight.detach().float().clone(),
        head_bias=model.linear.bias.detach().float().clone(),
        act_max=float(act_max),
        in_channels=model.conv1.in_channels,
    )


def _epilogue(acc: Tensor, spec: ConvSpec, bias: Tensor, shortcut: Tensor | None, kmax: float):
    """k = min(round(relu(acc·scale + bias [+ shortcut]) · (1/q)), kmax), NCHW float32."""
    v = acc * spec.scale.view(1, -1, 1, 1)
    v = v + bias
    if shortcut is not None:
        v = v + shortcut
    v = torch.relu(v)
    return torch.round(v * spec.inv_step.view(1, -1, 1, 1)).clamp_max(kmax)


@torch.no_grad()
def reference_forward(plan: FastPlan, frame: Tensor) -> tuple[Tensor, list[Tensor]]:
    """The integer model evaluated densely with PyTorch: (logits (1, classes), every layer's
    k map as (1, H, W, C) float32). `frame` is uint8 (H, W, C)."""
    if frame.dtype != torch.uint8 or frame.dim() != 3 or frame.shape[2] != plan.in_channels:
        raise InputError(
            f"expected a uint8 (H, W, {plan.in_channels}) frame, got "
            f"{frame.dtype} {tuple(frame.shape)}"
        )
    x = frame.permute(2, 0, 1)[None].double()
    maps: list[Tensor] = []
    for spec in plan.layers:
        if isinstance(spec, PoolSpec):  # the max of integers: exact in any precision
            src = maps[spec.source]
            maps.append(F.max_pool2d(src, spec.kernel, spec.stride, spec.padding))
            continue
        inp = x if spec.source < 0 else maps[spec.source].double()
        acc = F.conv2d(inp, spec.weight.double(), None, spec.stride, spec.padding)
        if spec.branch is not None:  # integers below 2^24 in float64: the sum is exact
            br = spec.branch
            src = x if br.source < 0 else maps[br.source].double()
            acc = acc + F.conv2d(src, br.weight.double(), None, br.stride, br.padding)
        acc = acc.float()
        if spec.offset is not None:
            bias = stem_bias_map(spec, *frame.shape[:2]).permute(2, 0, 1)[None]
        else:
            bias = spec.bias.view(1, -1, 1, 1)
        sc = None
        if spec.shortcut is not None:
            src = plan.layers[spec.shortcut]
            k = maps[spec.shortcut][:, :, :: spec.shortcut_stride, :: spec.shortcut_stride]
            sc = k * src.step.view(1, -1, 1, 1)
            back = acc.shape[1] - sc.shape[1] - spec.shortcut_front
            sc = F.pad(sc, (0, 0, 0, 0, spec.shortcut_front, back))
        maps.append(_epilogue(acc, spec, bias, sc, plan.act_max))
    last = maps[-1]
    logits = head(plan, last.double().sum((0, 2, 3)), last.shape[2] * last.shape[3])
    return logits, [k.permute(0, 2, 3, 1).contiguous() for k in maps]
