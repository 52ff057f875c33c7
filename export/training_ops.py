"""Plain-op layers whose backward keeps little: what makes a training program's arena small.

A training program is one graph, forward and backward together, and the memory planner
keeps every tensor the backward reads alive from its forward op to its backward op. aten's
derivative formulas decide what that is, so the ops are chosen for what their backward
reads:

- ReLU as `where(x > 0, x, 0)`: the backward reads the bool mask (1 byte an element), not
  the fp32 output (aten's relu backward reads the output, and the edge dialect copies it
  once more through an `alias_copy`).
- A BN on batch statistics as `x · a + c` with `a = γ·rsqrt(E[x²] − E[x]² + ε)`,
  `c = β − E[x]·a`: the backward reads its input x only, where the centred form reads the
  centred input and the normalised one (two fp32 maps).
- A BN on fixed statistics as `x · scale + shift` with constant scale and shift: the
  backward reads nothing but the constants.
- |d| as `where(d > 0, d, −d)`: the backward reads a bool mask, not d.
- EcoTTA's meta conv block (1×1 conv -> BN -> ReLU) at batch 1: BN folded into the conv
  with statistics from the input's moments, so its output is never kept.

The frozen convolutions need nothing else: the gradient to their input reads only their
weights, which are constants.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgeadapt.modules.stream_norm import normalising_affine

__all__ = [
    "FixedBatchNorm2d",
    "Int8WeightConv2d",
    "MaskReLU",
    "StatsBatchNorm2d",
    "int8_frozen_convs",
    "lean_abs",
    "make_lean_for_training",
]


class MaskReLU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.where(x > 0, x, 0.0)


def lean_abs(d: Tensor) -> Tensor:
    return torch.where(d > 0, d, -d)


class StatsBatchNorm2d(nn.Module):
    """BN on the input batch's statistics (over N, H, W), written so backward keeps only x.

    E[x²] − E[x]² loses a few bits to cancellation against the centred form; for activations
    of a trained network (|mean| of the order of the spread) that is ~1e-6 relative, well
    inside the program's verification tolerance. The variance is clamped at 0 so rounding can
    never make it negative."""

    def __init__(self, weight: nn.Parameter | None, bias: nn.Parameter | None, eps: float):
        super().__init__()
        self.weight, self.bias, self.eps = weight, bias, eps

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        var = ((x * x).mean(dim=(0, 2, 3), keepdim=True) - mean * mean).clamp_min(0.0)
        a = torch.rsqrt(var + self.eps)
        if self.weight is not None:
            a = a * self.weight.view(1, -1, 1, 1)
        c = -mean * a
        if self.bias is not None:
            c = c + self.bias.view(1, -1, 1, 1)
        return x * a + c


class FixedBatchNorm2d(nn.Module):
    """BN on stored statistics, frozen: one multiply-add by constants."""

    def __init__(self, scale: Tensor, shift: Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.view(1, -1, 1, 1).detach().clone())
        self.register_buffer("shift", shift.view(1, -1, 1, 1).detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale + self.shift


def _lean_bn(bn: nn.Module) -> nn.Module:
    trains = bn.weight is not None and bn.weight.requires_grad
    if bn.batch_statistics:
        return StatsBatchNorm2d(bn.weight, bn.bias, bn.eps)
    if trains:  # trainable affine on fixed statistics: keep the parameters
        return bn
    scale = torch.rsqrt(bn.running_var + bn.eps)
    shift = -bn.running_mean * scale
    if bn.weight is not None:
        scale, shift = scale * bn.weight, shift * bn.weight + bn.bias
    return FixedBatchNorm2d(scale, shift)


def make_lean_for_training(net: nn.Module) -> None:
    """In place: every `PlainBatchNorm2d` and `nn.ReLU` (and the meta networks' functional
    ReLU) becomes its lean form above. Call after trainable parameters are marked."""
    from edgeadapt.export.graph import PlainBatchNorm2d
    from edgeadapt.modules.meta import MetaConvBlock

    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, PlainBatchNorm2d):
                setattr(parent, name, _lean_bn(child))
            elif type(child) is nn.ReLU:
                setattr(parent, name, MaskReLU())
    lean_block = _lean_meta_conv_block()
    for m in net.modules():
        if type(m) is MetaConvBlock:
            m.__class__ = lean_block


@functools.cache
def _lean_meta_conv_block() -> type[nn.Module]:
    from edgeadapt.modules.meta import MetaConvBlock

    class LeanMetaConvBlock(MetaConvBlock):
        """MetaConvBlock's conv -> BN -> ReLU, with the mask ReLU. On stream statistics the
        BN folds into the conv (`_conv_on_stream_statistics`); on batch statistics it does for
        a 1×1 conv on a batch of one (`_folded_conv_bn`)."""

        def forward(self, x: Tensor) -> Tensor:
            from edgeadapt.export.graph import PlainStreamBatchNorm2d

            conv = self.conv
            if isinstance(self.bn, PlainStreamBatchNorm2d) and self.bn.alpha(x) < 1.0:
                return _conv_on_stream_statistics(x, conv, self.bn)
            foldable = (
                x.shape[0] == 1
                and conv.kernel_size == (1, 1)
                and conv.padding == (0, 0)
                and conv.groups == 1
                and conv.bias is None
            )
            y = _folded_conv_bn(x, conv, self.bn) if foldable else self.bn(conv(x))
            return torch.where(y > 0, y, 0.0)

    return LeanMetaConvBlock


def _folded_conv_bn(x: Tensor, conv: nn.Conv2d, bn: StatsBatchNorm2d) -> Tensor:
    """BN(conv(x)) on the batch statistics of conv(x), for a 1×1 conv and a batch of one,
    as one conv of x with BN-scaled weights, so the backward keeps x (which the weight
    gradient needs anyway) and not the conv's output.

    z = W·x per pixel, so E[z] = W·E[x] and E[z²] = diag(W·E[x xᵀ]·Wᵀ): the statistics come
    from the input's channel moments. E[x xᵀ] is the conv of the C planes of x with
    themselves (a C×C result), which reads x in place."""
    s = conv.stride
    xs = x[:, :, :: s[0], :: s[1]] if s != (1, 1) else x  # the pixels a 1×1 conv reads
    _, c, h, w = xs.shape
    weight = conv.weight.reshape(conv.out_channels, c)
    mean_x = xs.mean(dim=(0, 2, 3))
    planes = xs.reshape(c, 1, h, w)
    second = F.conv2d(planes, planes).reshape(c, c) / float(h * w)
    mean_z = weight @ mean_x
    var_z = (((weight @ second) * weight).sum(dim=1) - mean_z * mean_z).clamp_min(0.0)
    a, shift = normalising_affine(mean_z, var_z, bn.weight, bn.bias, bn.eps)
    scaled = (weight * a.view(-1, 1)).reshape(conv.weight.shape)
    # On the subsampled pixels with stride 1: the weight gradient then reads the small xs,
    # and the full-resolution x need not be kept.
    return F.conv2d(xs, scaled, shift)


def _conv_on_stream_statistics(x: Tensor, conv: nn.Conv2d, bn: nn.Module) -> Tensor:
    """ReLU(BN(conv(x))) with the BN on stream statistics, as one conv of x with BN-scaled
    weights: the statistics are constants for backward (`PlainStreamBatchNorm2d`), so the
    scale folds into the weights and backward keeps x (which the weight gradient reads
    anyway), never the conv's output. The statistics' own conv of x runs without gradient."""
    z = F.conv2d(x.detach(), conv.weight.detach(), None, conv.stride, conv.padding,
                 conv.dilation, conv.groups)  # fmt: skip
    scale, shift = bn.affine(*bn.statistics(z))
    weight = conv.weight * scale.view(-1, *([1] * (conv.weight.ndim - 1)))
    y = F.conv2d(x, weight, shift, conv.stride, conv.padding, conv.dilation, conv.groups)
    return torch.where(y > 0, y, 0.0)


class Int8WeightConv2d(nn.Module):
    """A frozen conv whose weights are stored int8 (symmetric, one scale per output channel,
    [-127, 127], as the XNNPACK quantizer stores conv weights) and dequantized in the graph.

    Activations stay fp32: a training program needs gradients through the frozen layers,
    and PT2E's quantize_per_tensor returns an int8 tensor that carries none.

    The fp32 weights exist only while their conv runs (the backward dequantizes again, see
    `training_passes`), and in chunks of output channels of at most `chunk_bytes`: a whole
    64×64×3×3 layer dequantized at once adds 144 KiB to the arena's peak, while each chunk
    adds instructions the runtime keeps tables for (ResNet-20 EcoTTA step at batch 1, arena +
    estimated runtime tables: whole layers 1.12 MB, 16 KiB chunks 1.12 MB, 40 KiB 1.04 MB)."""

    def __init__(self, conv: nn.Conv2d, chunk_bytes: int = 40 * 1024) -> None:
        super().__init__()
        from edgeadapt.modules.int8 import int8_weight

        w = conv.weight.detach()
        q, scale = int8_weight(w)
        per_channel = 4 * w[0].numel()
        step = max(1, chunk_bytes // per_channel) if conv.groups == 1 else w.shape[0]
        self.bounds = [(i, min(i + step, w.shape[0])) for i in range(0, w.shape[0], step)]
        for k, (lo, hi) in enumerate(self.bounds):
            self.register_buffer(f"weight_int8_{k}", q[lo:hi].clone())
            self.register_buffer(f"weight_scale_{k}", scale[lo:hi].view(-1, 1, 1, 1).clone())
        bias = None if conv.bias is None else conv.bias.detach().clone()
        self.register_buffer("bias", bias)
        self.stride, self.padding = conv.stride, conv.padding
        self.dilation, self.groups = conv.dilation, conv.groups

    def forward(self, x: Tensor) -> Tensor:
        outs = []
        for k, (lo, hi) in enumerate(self.bounds):
            # int8 × fp32 promotes to fp32 in one op: no fp32 copy of the int8 weights first.
            weight = getattr(self, f"weight_int8_{k}") * getattr(self, f"weight_scale_{k}")
            bias = None if self.bias is None else self.bias[lo:hi]
            outs.append(
                F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)
            )
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)


def int8_frozen_convs(net: nn.Module) -> int:
    """Replace, in place, every conv whose weights do not train by `Int8WeightConv2d`;
    returns how many. Call after trainable parameters are marked."""
    count = 0
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            frozen = not any(p.requires_grad for p in child.parameters())
            if type(child) is nn.Conv2d and frozen and child.padding_mode == "zeros":
                setattr(parent, name, Int8WeightConv2d(child))
                count += 1
    return count
