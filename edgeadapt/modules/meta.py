"""EcoTTA meta networks (Song et al., "EcoTTA: Memory-Efficient Continual Test-time
Adaptation via Self-distilled Regularization", CVPR 2023).

A part of the frozen network f becomes  x -> adapter_bn(f(x)) + adapter_conv(x):
a BN on the part's output plus a conv block (conv -> BN -> ReLU, stride matching the part's
downsampling) on its input, added as a residual. The attributes are not called `meta`,
which breaks `ExportedProgram.module()`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MetaConvBlock", "MetaPart"]


class _RecomputedConvBlockFn(torch.autograd.Function):
    """conv -> BN (batch statistics) -> ReLU that keeps only its input for backward.

    Backward recomputes the block from the input: twice the (small) compute of the block,
    but none of its three intermediate activations is kept.
    """

    @staticmethod
    def forward(ctx, x, conv_w, bn_w, bn_b, stride, padding, eps):  # type: ignore[override]
        z = F.conv2d(x, conv_w, None, stride, padding)
        mean = z.mean(dim=(0, 2, 3))
        var = z.var(dim=(0, 2, 3), unbiased=False)
        zn = (z - mean.view(1, -1, 1, 1)) * torch.rsqrt(var.view(1, -1, 1, 1) + eps)
        out = F.relu(zn * bn_w.view(1, -1, 1, 1) + bn_b.view(1, -1, 1, 1))
        ctx.save_for_backward(x, conv_w, bn_w, bn_b)
        ctx.conf = (stride, padding, eps)
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    def backward(ctx, grad_out, _grad_mean, _grad_var):  # type: ignore[override]
        x, conv_w, bn_w, bn_b = ctx.saved_tensors
        stride, padding, eps = ctx.conf
        inputs = [
            t.detach().requires_grad_(need)
            for t, need in zip((x, conv_w, bn_w, bn_b), ctx.needs_input_grad[:4])
        ]
        wanted = [t for t in inputs if t.requires_grad]
        with torch.enable_grad():
            z = F.conv2d(inputs[0], inputs[1], None, stride, padding)
            out = F.relu(F.batch_norm(z, None, None, inputs[2], inputs[3], True, 0.0, eps))
            grads = iter(torch.autograd.grad(out, wanted, grad_out)) if wanted else iter(())
        return (*(next(grads) if t.requires_grad else None for t in inputs), None, None, None)


class MetaConvBlock(nn.Module):
    """conv (k×k, stride s, no bias) -> BN -> ReLU, added as a residual.

    Its BN starts at a small γ so the block adds almost nothing at first. Not γ = 0: with
    β = 0 too the ReLU's input would be exactly 0, where its gradient is 0, and the block could
    never start learning.
    """

    INIT_SCALE = 1e-2

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, kernel_size: int = 1
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels)
        nn.init.constant_(self.bn.weight, self.INIT_SCALE)

    def forward(self, x: Tensor) -> Tensor:
        needs_graph = torch.is_grad_enabled() and (
            x.requires_grad or self.conv.weight.requires_grad
        )
        if not (self.training and needs_graph):
            return F.relu(self.bn(self.conv(x)))
        out, mean, var = _RecomputedConvBlockFn.apply(
            x,
            self.conv.weight,
            self.bn.weight,
            self.bn.bias,
            self.conv.stride,
            self.conv.padding,
            self.bn.eps,
        )
        if self.bn.track_running_stats and self.bn.running_mean is not None:
            self._update_running_stats(mean, var, n=out.numel() // out.shape[1])
        return out

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, var: Tensor, n: int) -> None:
        bn = self.bn
        bn.num_batches_tracked += 1
        momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
        bn.running_mean.lerp_(mean, momentum)
        bn.running_var.lerp_(var * n / max(n - 1, 1), momentum)  # running var is unbiased


class _RecomputedPartFn(torch.autograd.Function):
    """A whole part (frozen layers + meta network) that keeps only its input for backward and
    recomputes the rest there: one more forward of the part per step, and the meta BN's
    input (a full feature map) is never kept."""

    @staticmethod
    def forward(ctx, part, x, *params):  # type: ignore[override]
        ctx.part = part
        ctx.save_for_backward(x, *params)
        return part._compute(x)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        from edgeadapt.methods._state import no_running_stat_updates

        x, *params = ctx.saved_tensors
        part = ctx.part
        xd = x.detach().requires_grad_(ctx.needs_input_grad[1])
        wanted = ([xd] if xd.requires_grad else []) + [p for p in params if p.requires_grad]
        with torch.enable_grad(), no_running_stat_updates(part):
            out = part._compute(xd)
            grads = list(torch.autograd.grad(out, wanted, grad_out, allow_unused=True))
        grad_x = grads.pop(0) if xd.requires_grad else None
        grad_params = [grads.pop(0) if p.requires_grad else None for p in params]
        return (None, grad_x, *grad_params)


class MetaPart(nn.Module):
    """A part of the frozen network wrapped with its meta network.

    With `recompute`, a training step keeps only the part's input for backward (see
    `_RecomputedPartFn`); the output is the same either way.
    """

    def __init__(
        self,
        frozen: nn.Module,
        in_channels: int,
        out_channels: int,
        stride: int,
        kernel_size: int = 1,
        recompute: bool = True,
    ) -> None:
        super().__init__()
        self.frozen = frozen
        self.adapter_bn = nn.BatchNorm2d(out_channels)
        self.adapter_conv = MetaConvBlock(in_channels, out_channels, stride, kernel_size)
        self.recompute = recompute

    def _compute(self, x: Tensor) -> Tensor:
        return self.adapter_bn(self.frozen(x)) + self.adapter_conv(x)

    def forward(self, x: Tensor) -> Tensor:
        params = [p for p in self.parameters() if p.requires_grad]
        if (
            self.recompute
            and self.training
            and torch.is_grad_enabled()
            and (params or x.requires_grad)
        ):
            return _RecomputedPartFn.apply(self, x, *params)
        return self._compute(x)

    @torch.no_grad()
    def calibrate_identity(self, mean: Tensor, var: Tensor) -> None:
        """Start adapter_bn as the identity for outputs with these channel statistics:
        γ = sqrt(var + eps), β = mean, running stats = (mean, var)."""
        bn = self.adapter_bn
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        bn.weight.copy_(torch.sqrt(var + bn.eps))
        bn.bias.copy_(mean)
