"""A memory-lean frozen path: gradients flow through, activations are not kept.

PyTorch's autograd keeps the input of a frozen conv and of an eval-mode BN, and the float
output of every ReLU, even where nothing there trains. Backward through a frozen layer only
needs its weights (conv: the transposed conv of the gradient; BN in eval mode: a per-channel
scale) and, for a ReLU, which elements were positive: one bit each. The TinyTL / EcoTTA memory
savings assume exactly that, so this module makes it true:

- `LeanConv2d`: keeps only its (frozen) weight; backward is `conv2d_input`.
- `LeanBatchNorm2d`: eval-mode BN as a per-channel affine; keeps a C-element scale.
- `LeanReLU` / `LeanReLU6`: keep a bit-packed mask (1 bit per element, not 32).

Each subclasses the layer it replaces, so parameter names, `state_dict` keys and
`isinstance` checks are unchanged. A layer whose weights train must not be made lean;
`make_lean` only swaps layers whose parameters are all frozen.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "LeanBatchNorm2d",
    "LeanConv2d",
    "LeanReLU",
    "LeanReLU6",
    "make_lean",
    "pack_bits",
    "unpack_bits",
]

_BIT_WEIGHTS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


def pack_bits(mask: Tensor) -> Tensor:
    """Pack a bool tensor into uint8, 8 elements per byte (shape is not kept)."""
    flat = mask.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = F.pad(flat, (0, pad))
    return (flat.view(-1, 8) * _BIT_WEIGHTS.to(flat.device)).sum(1, dtype=torch.uint8)


def unpack_bits(packed: Tensor, shape: torch.Size) -> Tensor:
    """Inverse of `pack_bits`: a bool tensor of `shape`."""
    shifts = torch.arange(8, dtype=torch.uint8, device=packed.device)
    bits = (packed.unsqueeze(1) >> shifts) & 1
    numel = 1
    for d in shape:
        numel *= d
    return bits.reshape(-1)[:numel].view(shape).bool()


class _FrozenConv2dFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):  # type: ignore[override]
        ctx.save_for_backward(weight)
        ctx.conf = (x.shape, stride, padding, dilation, groups)
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        (weight,) = ctx.saved_tensors
        shape, stride, padding, dilation, groups = ctx.conf
        grad_x = torch.nn.grad.conv2d_input(
            shape, weight, grad_out, stride, padding, dilation, groups
        )
        return grad_x, None, None, None, None, None, None


class _MaskedPassFn(torch.autograd.Function):
    """y = f(x) for a piecewise-identity f (ReLU, ReLU6); backward needs only where f' = 1."""

    @staticmethod
    def forward(ctx, x, lower, upper):  # type: ignore[override]
        y = x.clamp(min=lower, max=upper)
        inside = x > lower if upper is None else (x > lower) & (x < upper)
        ctx.save_for_backward(pack_bits(inside))
        ctx.shape = x.shape
        return y

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        (packed,) = ctx.saved_tensors
        mask = unpack_bits(packed, ctx.shape)
        return grad_out * mask, None, None


class LeanConv2d(nn.Conv2d):
    """A frozen Conv2d that keeps nothing but its weight for backward."""

    def forward(self, x: Tensor) -> Tensor:
        if (
            self.weight.requires_grad
            or self.padding_mode != "zeros"
            or isinstance(self.padding, str)
        ):
            return super().forward(x)  # trainable or unusual padding: the ordinary path
        bias = self.bias.detach() if self.bias is not None else None
        return _FrozenConv2dFn.apply(
            x, self.weight.detach(), bias, self.stride, self.padding, self.dilation, self.groups
        )


class LeanBatchNorm2d(nn.BatchNorm2d):
    """An eval-mode, frozen BN written as a per-channel affine, which autograd keeps lean.

    In training mode, or when its affine parameters train, it is an ordinary BN.
    """

    def forward(self, x: Tensor) -> Tensor:
        trains = self.affine and self.weight.requires_grad
        if self.training or trains or self.running_mean is None or self.running_var is None:
            return super().forward(x)
        scale = torch.rsqrt(self.running_var + self.eps)
        shift = -self.running_mean * scale
        if self.affine:
            scale = scale * self.weight
            shift = shift * self.weight + self.bias
        # x * scale keeps only `scale` (C elements) for backward, never x.
        return x * scale.view(1, -1, 1, 1).detach() + shift.view(1, -1, 1, 1).detach()


class LeanReLU(nn.ReLU):
    """ReLU that keeps a 1-bit mask for backward instead of its float output."""

    def forward(self, x: Tensor) -> Tensor:
        return _MaskedPassFn.apply(x, 0.0, None) if x.requires_grad else F.relu(x)


class LeanReLU6(nn.ReLU6):
    """ReLU6 that keeps a 1-bit mask for backward."""

    def forward(self, x: Tensor) -> Tensor:
        return _MaskedPassFn.apply(x, 0.0, 6.0) if x.requires_grad else F.relu6(x)


_SWAPS: tuple[tuple[type[nn.Module], type[nn.Module]], ...] = (
    (nn.Conv2d, LeanConv2d),
    (nn.BatchNorm2d, LeanBatchNorm2d),
    (nn.ReLU6, LeanReLU6),
    (nn.ReLU, LeanReLU),
)


def make_lean(module: nn.Module, skip: tuple[type[nn.Module], ...] = ()) -> int:
    """Swap, in place, the frozen Conv2d / BatchNorm2d / ReLU / ReLU6 layers of `module` for
    their lean twins. Layers with a trainable parameter, and subtrees of a type in `skip`, are
    left alone. Returns how many layers were swapped.

    The swap changes the class only (`__class__`), so weights, buffers, hooks and names stay.
    Functional activations (`F.relu`) inside a model's forward cannot be swapped and keep
    their float outputs; the memory report shows them.
    """
    swapped = 0

    def visit(m: nn.Module) -> None:
        nonlocal swapped
        if skip and isinstance(m, skip):
            return
        for base, lean in _SWAPS:
            if type(m) is base and not any(p.requires_grad for p in m.parameters(recurse=False)):
                m.__class__ = lean
                swapped += 1
                break
        for child in m.children():
            visit(child)

    visit(module)
    return swapped
