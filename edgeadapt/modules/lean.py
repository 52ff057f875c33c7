"""A memory-lean frozen path: gradients flow through, activations are not kept.

PyTorch's autograd keeps the input of a frozen conv and of an eval-mode BN, and the float
output of every ReLU, even where nothing there trains. Backward through a frozen layer only
needs its weights (conv: the transposed conv of the gradient; BN in eval mode: a per-channel
scale) and, for a ReLU, which elements were positive: one bit each. The TinyTL / EcoTTA memory
savings assume exactly that, so this module makes it true:

- `LeanConv2d`: keeps only its (frozen) weight; backward is the transposed convolution.
  Forward and backward run a quarter of the batch at a time, so oneDNN's scratch (about one
  output) is a quarter too.
- `LeanBatchNorm2d`: eval-mode BN as a per-channel affine; keeps a C-element scale.
- `LeanReLU` / `LeanReLU6` / `lean_relu`: keep a bit-packed mask (1 bit per element, not 32).
- `lean_test_norm`: a BN on test statistics (training mode) that keeps its output instead of
  its input, which it needs just as much; where the output is held anyway (the next op's
  input), the input can be freed at once. Used inside EcoTTA's recomputation
  (`edgeadapt.modules.meta`), where it may also overwrite that output with its input's
  gradient (`consuming_outputs`).
- `frozen_prefix`: frozen layers at the start of a network (a stem) whose output remembers how
  it was made, so a consumer that recomputes in backward can rebuild it from the network's
  input (held by the caller anyway) instead of keeping it (`rebuilder`).
- Pieces for hand-written backwards (`edgeadapt.modules.frozen_block`): `conv_input_grad`
  (the transposed convolution by quarters, in place or accumulated), `pack_positive` and
  `masked_grad` (a ReLU's mask made and applied a sixteenth of the batch at a time).

The lean layers subclass the layers they replace, so parameter names, `state_dict` keys and
`isinstance` checks are unchanged. A layer whose weights train must not be made lean;
`make_lean` only swaps layers whose parameters are all frozen.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgeadapt.errors import EdgeAdaptError
from edgeadapt.modules.stream_norm import (
    StreamBatchNorm2d,
    bn_stream_weight,
    stream_moments,
    stream_state,
    stream_state_as,
)

__all__ = [
    "LeanBatchNorm2d",
    "LeanConv2d",
    "LeanReLU",
    "LeanReLU6",
    "consuming_outputs",
    "conv_input_grad",
    "frozen_prefix",
    "lean_relu",
    "lean_test_norm",
    "make_lean",
    "masked_grad",
    "pack_bits",
    "pack_positive",
    "rebuilder",
    "unpack_bits",
]


_MASK_CHUNKS = 16  # pieces of the batch a mask is made or applied in, a byte per element


def pack_bits(mask: Tensor) -> Tensor:
    """Pack a bool tensor into uint8, 8 elements per byte (shape is not kept). Element i of
    each group of 8 is bit i. Works in place on one byte per group: the temporaries are an
    eighth of the mask, not the mask's size again (this runs inside the forward's peak)."""
    flat = mask.reshape(-1)
    flat = flat.view(torch.uint8) if flat.dtype == torch.bool else flat.to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = F.pad(flat, (0, pad))
    rows = flat.view(-1, 8)
    packed = rows[:, 0].clone()
    for i in range(1, 8):
        packed |= rows[:, i] << i
    return packed


def pack_positive(x: Tensor) -> Tensor:
    """`pack_bits(x > 0)`, a sixteenth of the batch at a time where each piece packs into
    whole bytes: the byte-per-element comparison is a sixteenth of a feature map, not a
    quarter."""
    n = x.shape[0] if x.dim() else 1
    per = x.numel() // max(n, 1)
    if n < 2 or per % 8 or not x.is_contiguous():
        return pack_bits(x > 0)
    step = -(-n // _MASK_CHUNKS)
    return torch.cat([pack_bits(x[i : i + step] > 0) for i in range(0, n, step)])


def unpack_bits(packed: Tensor, shape: torch.Size) -> Tensor:
    """Inverse of `pack_bits`: a bool tensor of `shape`."""
    numel = 1
    for d in shape:
        numel *= d
    shifts = torch.arange(8, dtype=torch.uint8, device=packed.device)
    bits = packed.reshape(-1, 1).bitwise_right_shift(shifts).bitwise_and_(1)
    return bits.view(-1)[:numel].view(torch.bool).view(shape)


class _FrozenConv2dFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):  # type: ignore[override]
        ctx.save_for_backward(weight)
        ctx.conf = (x.shape, stride, padding, dilation, groups)
        return _by_quarters(
            lambda xs: F.conv2d(xs, weight, bias, stride, padding, dilation, groups), x
        )

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        (weight,) = ctx.saved_tensors
        grad_x = conv_input_grad(grad_out, weight, *ctx.conf)
        return grad_x, None, None, None, None, None, None


def conv_input_grad(
    grad_out: Tensor,
    weight: Tensor,
    in_shape,
    stride,
    padding,
    dilation,
    groups,
    out: Tensor | None = None,
    accumulate: bool = False,
) -> Tensor:
    """The gradient of a convolution's input (of `in_shape`) given its output's: the
    transposed convolution, a quarter of the batch at a time (`_by_quarters`). Not
    torch.nn.grad.conv2d_input (the same numbers), which hands oneDNN an expanded stand-in
    input that it copies out in full. With `out` (of `in_shape`) written there, or with
    `accumulate` added to it; `out` may be `grad_out` itself where the shapes match (each
    quarter is read before it is written)."""
    extra = _output_padding(in_shape, grad_out.shape, weight.shape, stride, padding, dilation)
    return _by_quarters(
        lambda gs: F.conv_transpose2d(gs, weight, None, stride, padding, extra, groups, dilation),
        grad_out,
        out,
        accumulate,
    )


_CHUNKS = 4  # pieces of the batch a frozen conv runs in (`_by_quarters`)


def _by_quarters(fn, x: Tensor, out: Tensor | None = None, accumulate: bool = False) -> Tensor:
    """`fn` over the batch of `x` a quarter at a time, written into one result (`out` if given,
    added to it with `accumulate`). oneDNN's convolutions take about one more output of
    scratch, which at the step's peak counts as much as an activation; in quarters it is a
    quarter. Each sample gets the same kernel (on ResNet-20's shapes bit-identical results;
    elsewhere oneDNN may pick another algorithm for the smaller batch, equal up to float
    rounding), for ~10% more time."""
    n = x.shape[0]
    step = -(-n // _CHUNKS)
    if out is None:
        if step >= n:
            return fn(x)
        first = fn(x[:step])
        out = first.new_empty((n, *first.shape[1:]))
        out[:step] = first
        del first
        start = step
    else:
        start = 0
    for i in range(start, n, step):
        if accumulate:
            out[i : i + step] += fn(x[i : i + step])
        else:
            out[i : i + step] = fn(x[i : i + step])
    return out


def _output_padding(in_shape, out_shape, weight_shape, stride, padding, dilation) -> tuple:
    """What conv_transpose2d must add to give back the conv's input size exactly."""
    return tuple(
        in_shape[2 + i]
        - (
            (out_shape[2 + i] - 1) * stride[i]
            - 2 * padding[i]
            + dilation[i] * (weight_shape[2 + i] - 1)
            + 1
        )
        for i in range(2)
    )


class _MaskedPassFn(torch.autograd.Function):
    """y = f(x) for a piecewise-identity f (ReLU, ReLU6); backward needs only where f' = 1."""

    @staticmethod
    def forward(ctx, x, lower, upper):  # type: ignore[override]
        # The mask is packed and dropped before the output exists: one fewer byte per element
        # alive at once.
        if upper is None and lower == 0.0:
            ctx.save_for_backward(pack_positive(x))
        else:
            inside = x > lower if upper is None else (x > lower) & (x < upper)
            ctx.save_for_backward(pack_bits(inside))
            del inside
        ctx.shape = x.shape
        return x.clamp(min=lower, max=upper)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        (packed,) = ctx.saved_tensors
        return masked_grad(grad_out, packed, in_place=False), None, None


def masked_grad(grad: Tensor, packed: Tensor, in_place: bool) -> Tensor:
    """`grad` where the mask `pack_bits` packed (of `grad`'s shape) is set, else 0; written
    over `grad` with `in_place`. The mask is unpacked a sixteenth of the batch at a time (a
    byte per element: a quarter of a float feature map at once otherwise)."""
    out = grad if in_place else torch.empty_like(grad, memory_format=torch.contiguous_format)
    n = grad.shape[0] if grad.dim() else 1
    per = grad.numel() // max(n, 1)
    step = -(-n // _MASK_CHUNKS) if per % 8 == 0 and grad.is_contiguous() else n
    zero = grad.new_zeros(())
    for i in range(0, n, step):
        g, o = (grad, out) if step >= n else (grad[i : i + step], out[i : i + step])
        bits = packed if step >= n else packed[i * per // 8 : (i + step) * per // 8]
        # Not g * mask: multiplying by a bool tensor makes a float copy of it first.
        torch.where(unpack_bits(bits, g.shape), g, zero, out=o)
    return out


def lean_relu(x: Tensor) -> Tensor:
    """ReLU that keeps a 1-bit mask for backward where `x` needs a gradient."""
    return _MaskedPassFn.apply(x, 0.0, None) if x.requires_grad else F.relu(x)


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


_consume = False  # see `consuming_outputs`


@contextlib.contextmanager
def consuming_outputs():
    """Inside, the output-keeping norms (`lean_test_norm`) made may overwrite the output they
    keep with their input's gradient in backward: one feature map fewer alive there. Only for
    a graph that is back-propagated once and whose norms' outputs nothing else holds by then
    (EcoTTA's recomputation, `edgeadapt.modules.meta`)."""
    global _consume
    before, _consume = _consume, True
    try:
        yield
    finally:
        _consume = before


def _normalised(y: Tensor, gamma: Tensor, beta: Tensor, consume: bool) -> Tensor:
    """x̂ = (y − β) / γ per channel, in `y`'s own memory when `consume`. A channel with γ = 0
    gets x̂ = y − β: it has no input gradient then (its scale is 0), and the callers never let
    a trained γ be 0, whose gradient needs x̂."""
    safe = torch.where(gamma == 0, torch.ones_like(gamma), gamma).view(1, -1, 1, 1)
    b = beta.view(1, -1, 1, 1)
    return (y.sub_(b) if consume else y - b).div_(safe)


def _channel_dot(a: Tensor, b: Tensor) -> Tensor:
    """Σ a·b per channel (dim 1) of two (N, C, H, W) tensors, a sixteenth of the batch at a
    time: the products take a sixteenth of a feature map, not a whole one."""
    step = max(1, -(-a.shape[0] // _MASK_CHUNKS))
    total = a.new_zeros(a.shape[1])
    for i in range(0, a.shape[0], step):
        total += (a[i : i + step] * b[i : i + step]).sum(dim=(0, 2, 3))
    return total


class _OutputKeepingNormFn(torch.autograd.Function):
    """A BN on the batch's own statistics that keeps its output y for backward, not its input:
    the normalised input is x̂ = (y − β) / γ (Rota Bulò et al., "In-Place Activated BatchNorm",
    CVPR 2018). The forward is PyTorch's kernel, as F.batch_norm runs it, so y is
    bit-identical; the gradients are equal up to float rounding:
    dx = γ·r·(dy − mean(dy) − x̂·mean(dy·x̂)), means per channel, r = 1/sqrt(var + eps);
    dγ = Σ dy·x̂, dβ = Σ dy.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps):  # type: ignore[override]
        c = x.shape[1]
        y, _mean, r = torch.native_batch_norm(x, weight, bias, None, None, True, 0.0, eps)
        gamma = weight if weight is not None else x.new_ones(c)
        beta = bias if bias is not None else x.new_zeros(c)
        ctx.save_for_backward(y, gamma, beta, r)
        ctx.consume = _consume
        return y

    @staticmethod
    def backward(ctx, dy):  # type: ignore[override]
        y, gamma, beta, r = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        k = dy.shape[1] / dy.numel()  # 1 / elements per channel
        # One buffer of the input's size (y's own when consuming): x̂, then dx.
        buf = _normalised(y, gamma, beta, ctx.consume)
        del y
        s_dy = dy.sum(dim=(0, 2, 3))
        s_dyx = _channel_dot(buf, dy)
        grad_x = None
        if need_x:
            buf.mul_((-k * s_dyx).view(1, -1, 1, 1)).add_(dy)
            grad_x = buf.sub_((k * s_dy).view(1, -1, 1, 1)).mul_((gamma * r).view(1, -1, 1, 1))
        del buf
        return grad_x, s_dyx if need_w else None, s_dy if need_b else None, None


class _FixedStatsNormFn(torch.autograd.Function):
    """A BN on constant statistics (a stream BN below full weight, `stream_norm`) whose affine
    trains, keeping its output y for backward, not its input. y = x·s + t with s = γ /
    sqrt(var + eps) and t = β − mean·s, computed as StreamBatchNorm2d computes it (so y is
    bit-identical); x̂ = (y − β) / γ. dx = dy·s, dγ = Σ dy·x̂, dβ = Σ dy."""

    @staticmethod
    def forward(ctx, x, weight, bias, mean, var, eps):  # type: ignore[override]
        scale = torch.rsqrt(var + eps)
        if weight is not None:
            scale = scale * weight
        shift = -mean * scale
        if bias is not None:
            shift = shift + bias
        # x·s + t with the sum in place: the same numbers, one feature map fewer.
        y = torch.mul(x, scale.view(1, -1, 1, 1)).add_(shift.view(1, -1, 1, 1))
        c = x.shape[1]
        gamma = weight if weight is not None else x.new_ones(c)
        beta = bias if bias is not None else x.new_zeros(c)
        ctx.save_for_backward(y, gamma, beta, scale)
        ctx.consume = _consume
        return y

    @staticmethod
    def backward(ctx, dy):  # type: ignore[override]
        y, gamma, beta, scale = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        s_dyx = None
        if need_w:
            xhat = _normalised(y, gamma, beta, ctx.consume)
            s_dyx = _channel_dot(xhat, dy)
            del xhat
        grad_x = None
        if need_x:
            grad_x = torch.mul(dy, scale.view(1, -1, 1, 1), out=y if ctx.consume else None)
        del y
        return grad_x, s_dyx, dy.sum(dim=(0, 2, 3)) if need_b else None, None, None, None


def lean_test_norm(bn: nn.BatchNorm2d, x: Tensor) -> Tensor:
    """`bn` applied to `x`, keeping its output for backward instead of its input: a BN in
    training mode that is not updating its running statistics (a recomputation), on a 4-d
    input, with a gradient to compute and no trained γ at 0. On the batch's own statistics
    `_OutputKeepingNormFn`; on a stream's below full weight (`stream_norm`: constants) with a
    trained affine `_FixedStatsNormFn` (a frozen one keeps only a per-channel scale by itself).
    Anything else runs the layer's own forward."""
    params = [p for p in (bn.weight, bn.bias) if p is not None]
    trains = any(p.requires_grad for p in params)
    updates = bn.track_running_stats and bn.running_mean is not None
    usable = bn.training and torch.is_grad_enabled() and x.dim() == 4 and not updates
    if not usable or not (x.requires_grad or trains):
        return type(bn).forward(bn, x)
    if trains and bn.weight is not None and bool((bn.weight == 0).any()):
        return type(bn).forward(bn, x)
    if isinstance(bn, StreamBatchNorm2d):
        alpha = bn_stream_weight(bn, x.shape[0])
        if alpha < 1.0:  # constant statistics: frozen, the layer keeps only a scale itself
            if not trains:
                return type(bn).forward(bn, x)
            mean, var = stream_moments(x, bn.running_mean, bn.running_var, alpha)
            return _FixedStatsNormFn.apply(x, bn.weight, bn.bias, mean, var, bn.eps)
    return _OutputKeepingNormFn.apply(x, bn.weight, bn.bias, bn.eps)


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
        # x * scale keeps only `scale` (C elements) for backward, never x; the shift is added
        # in place (the product is no one else's): one feature map fewer, the same numbers.
        return (x * scale.view(1, -1, 1, 1).detach()).add_(shift.view(1, -1, 1, 1).detach())


class LeanReLU(nn.ReLU):
    """ReLU that keeps a 1-bit mask for backward instead of its float output."""

    def forward(self, x: Tensor) -> Tensor:
        return lean_relu(x)


class LeanReLU6(nn.ReLU6):
    """ReLU6 that keeps a 1-bit mask for backward."""

    def forward(self, x: Tensor) -> Tensor:
        return _MaskedPassFn.apply(x, 0.0, 6.0) if x.requires_grad else F.relu6(x)


_REBUILD = "_edgeadapt_rebuild"  # the attribute `frozen_prefix` sets on its output


class _Rebuild:
    """How `frozen_prefix` made a tensor: its layers, their input, and the stream statistics
    they normalised with (`stream_norm`), before the forward updated them."""

    def __init__(self, layers: tuple[nn.Module, ...], x: Tensor, stream: list) -> None:
        self.layers, self.x, self.stream, self.version = layers, x, stream, x._version

    def __call__(self) -> Tensor:
        """The tensor again, bit for bit: the same kernels on the same input and statistics,
        no running statistic changed."""
        if self.x._version != self.version:
            raise EdgeAdaptError(
                "the input of a frozen prefix was modified in place between forward and "
                "backward; backward needs it unchanged (pass a copy, or modify it after the step)"
            )
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.no_grad())
            stack.enter_context(stream_state_as(self.stream))
            for m in self.layers:  # as `no_running_stat_updates`, which lives above this layer
                for bn in m.modules():
                    if (
                        isinstance(bn, nn.modules.batchnorm._BatchNorm)
                        and bn.training
                        and bn.track_running_stats
                    ):
                        bn.track_running_stats = False
                        stack.callback(setattr, bn, "track_running_stats", True)
            out = self.x
            for layer in self.layers:
                out = layer(out)
        return out


def frozen_prefix(x: Tensor, *layers: nn.Module) -> Tensor:
    """`layers` applied to `x` in turn. Where nothing there needs a gradient (`x` needs none,
    no parameter trains), the output remembers how it was made (`rebuilder`): a consumer that
    recomputes in backward (EcoTTA's `MetaPart`) then keeps nothing for it, as `x` (a
    network's input) is the caller's and held anyway. The memo is a reference to `x` and a
    copy of the layers' stream statistics (2·C floats a BN), gone with the output. While
    tracing (export, TorchScript) it is the plain composition."""
    recordable = (
        type(x) is Tensor
        and not x.requires_grad
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
        and not any(p.requires_grad for m in layers for p in m.parameters())
    )
    stream = [s for m in layers for s in stream_state(m)] if recordable else []
    out = x
    for layer in layers:
        out = layer(out)
    if recordable and type(out) is Tensor and not out.requires_grad:
        setattr(out, _REBUILD, _Rebuild(layers, x, stream))
    return out


def rebuilder(t: Tensor) -> Callable[[], Tensor] | None:
    """What rebuilds `t` if `frozen_prefix` made it (a call gives it again), else None."""
    return getattr(t, _REBUILD, None)


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
