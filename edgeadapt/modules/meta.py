"""EcoTTA meta networks (Song et al., "EcoTTA: Memory-Efficient Continual Test-time
Adaptation via Self-distilled Regularization", CVPR 2023).

A part of the frozen network f becomes  x -> adapter_bn(f(x)) + adapter_conv(x):
a BN on the part's output plus a conv block (conv -> BN -> ReLU, stride matching the part's
downsampling) on its input, added as a residual. The attributes are not called `meta`,
which breaks `ExportedProgram.module()`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgeadapt.modules.frozen_block import (
    block_backward,
    block_forward,
    block_vjp,
    residual_layers,
)
from edgeadapt.modules.lean import consuming_outputs, lean_relu, lean_test_norm, rebuilder
from edgeadapt.modules.stream_norm import (
    StreamBatchNorm2d,
    bn_stream_weight,
    stream_moments,
    stream_state,
    stream_state_as,
)

__all__ = ["MetaConvBlock", "MetaPart", "recomputations", "recomputing"]

# Recomputations inside a backward in progress, and how many have begun: edgeadapt.memory's
# tracker reads them to tell a recomputation's memory from the backward's.
_recompute_depth = 0
_recompute_count = 0


@contextlib.contextmanager
def recomputing() -> Iterator[None]:
    """Mark a recomputation inside a backward (for memory measurement; no other effect)."""
    global _recompute_depth, _recompute_count
    if _recompute_depth == 0:
        _recompute_count += 1
    _recompute_depth += 1
    try:
        yield
    finally:
        _recompute_depth -= 1


def recomputations() -> int:
    """0 outside a recomputation; inside one, the number of the outermost, counting from 1."""
    return _recompute_count if _recompute_depth else 0


class _RecomputedConvBlockFn(torch.autograd.Function):
    """conv -> BN (test statistics) -> ReLU that keeps only its input for backward.

    Backward recomputes the block from the input: twice the (small) compute of the block,
    but none of its three intermediate activations is kept. The BN normalises with the batch's
    statistics mixed into the stream's (`stream_norm`; weight `alpha`, 1 for the batch's own
    alone); the stream's are passed in as they were before this forward updates them.
    """

    @staticmethod
    def forward(ctx, x, conv_w, bn_w, bn_b, run_mean, run_var, alpha, stride, padding, eps):  # type: ignore[override]
        z = F.conv2d(x, conv_w, None, stride, padding)
        mean, var = stream_moments(z, run_mean, run_var, alpha)
        zn = (z - mean.view(1, -1, 1, 1)) * torch.rsqrt(var.view(1, -1, 1, 1) + eps)
        out = F.relu(zn * bn_w.view(1, -1, 1, 1) + bn_b.view(1, -1, 1, 1))
        ctx.save_for_backward(x, conv_w, bn_w, bn_b, run_mean, run_var)
        ctx.conf = (alpha, stride, padding, eps)
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    def backward(ctx, grad_out, _grad_mean, _grad_var):  # type: ignore[override]
        x, conv_w, bn_w, bn_b, run_mean, run_var = ctx.saved_tensors
        alpha, stride, padding, eps = ctx.conf
        inputs = [
            t.detach().requires_grad_(need)
            for t, need in zip((x, conv_w, bn_w, bn_b), ctx.needs_input_grad[:4])
        ]
        wanted = [t for t in inputs if t.requires_grad]
        with torch.enable_grad(), recomputing():
            z = F.conv2d(inputs[0], inputs[1], None, stride, padding)
            if alpha >= 1.0:
                zn = F.batch_norm(z, None, None, inputs[2], inputs[3], True, 0.0, eps)
            else:
                mean, var = stream_moments(z, run_mean, run_var, alpha)
                scale = torch.rsqrt(var + eps) * inputs[2]
                zn = z * scale.view(1, -1, 1, 1) + (inputs[3] - mean * scale).view(1, -1, 1, 1)
            out = F.relu(zn)
            with _without_onednn():  # see there: less scratch, the same input gradient
                grads = iter(torch.autograd.grad(out, wanted, grad_out)) if wanted else iter(())
        return (*(next(grads) if t.requires_grad else None for t in inputs), *([None] * 6))


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
        bn = self.bn
        stream = isinstance(bn, StreamBatchNorm2d)
        alpha = bn_stream_weight(bn, x.shape[0]) if stream else 1.0
        has_stats = bn.running_mean is not None and bn.running_var is not None
        tracked = bn.track_running_stats and has_stats
        # Copies: the stream update below would otherwise change what backward recomputes with.
        # Used while not tracking too (a recomputation): the stream's statistics, not zeros.
        run_mean = bn.running_mean.clone() if has_stats else x.new_zeros(bn.num_features)
        run_var = bn.running_var.clone() if has_stats else x.new_ones(bn.num_features)
        out, mean, var = _RecomputedConvBlockFn.apply(
            x, self.conv.weight, bn.weight, bn.bias, run_mean, run_var, alpha,
            self.conv.stride, self.conv.padding, bn.eps,
        )  # fmt: skip
        if tracked:
            n = out.numel() // out.shape[1]
            self._update_running_stats(mean, var, n, stream=stream, alpha=alpha)
        return out

    def _graph(self, x: Tensor) -> Tensor:
        """The block with an ordinary (lean) graph: its BN keeps its input, its ReLU a 1-bit
        mask. For a recomputation that back-propagates at once (`MetaPart`)."""
        return lean_relu(self.bn(self.conv(x)))

    @torch.no_grad()
    def _update_running_stats(
        self, mean: Tensor, var: Tensor, n: int, stream: bool, alpha: float
    ) -> None:
        bn = self.bn
        if stream:  # the mixture becomes the stream's statistics, as StreamBatchNorm2d does:
            # a batch alone (α = 1) through F.batch_norm at momentum 1, whose variance is unbiased
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var * n / max(n - 1, 1) if alpha >= 1.0 else var)
            return
        bn.num_batches_tracked += 1
        momentum = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
        bn.running_mean.lerp_(mean, momentum)
        bn.running_var.lerp_(var * n / max(n - 1, 1), momentum)  # running var is unbiased


class _RecomputedPartFn(torch.autograd.Function):
    """A whole part (frozen layers + meta network) that keeps only its input for backward and
    recomputes the rest there, one piece at a time (`MetaPart._recomputed_grads`): one more
    forward of the part per step, and the meta BN's input (a full feature map) is never kept.
    Not even the input where a frozen stem made it from the network's input and it needs no
    gradient (the first part of a `CifarResNet`): it is rebuilt then (`lean.frozen_prefix`)."""

    @staticmethod
    def forward(ctx, part, x, *params):  # type: ignore[override]
        ctx.part = part
        ctx.stream = stream_state(part)  # what this forward normalises with, before it updates
        # An input a frozen stem made from the network's input is rebuilt, not kept.
        ctx.rebuild = None if x.requires_grad else rebuilder(x)
        if ctx.rebuild is None:
            ctx.save_for_backward(x)
        return part._compute(x)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        from edgeadapt.methods._state import no_running_stat_updates

        part = ctx.part
        with no_running_stat_updates(part), stream_state_as(ctx.stream), recomputing():
            # In a list, so that the callee can free a rebuilt input once it is done with it.
            xs = list(ctx.saved_tensors) if ctx.rebuild is None else [ctx.rebuild()]
            grad_x, grads = part._recomputed_grads(xs, grad_out, ctx.needs_input_grad[1])
        return (None, grad_x, *(grads.get(id(p)) for p in part._trained()))


class _Tap(torch.autograd.Function):
    """Identity on `x` whose backward puts the gradient of `x` in `box`. The gradient flows
    through the tap, not to `x`, so nothing holds `x` once the graph built on it no longer
    needs it (a leaf that required grad would be held until the backward ends)."""

    @staticmethod
    def forward(ctx, x, anchor, box):  # type: ignore[override]
        ctx.box = box
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        ctx.box.append(grad)
        return None, None, None


class _Seed(torch.autograd.Function):
    """A scalar whose backward hands `grad` to `out`: back-propagating from it is the
    vector-Jacobian product with `grad`, and `out` itself need not stay alive meanwhile."""

    @staticmethod
    def forward(ctx, out, grad):  # type: ignore[override]
        ctx.save_for_backward(grad)
        return out.new_zeros(())

    @staticmethod
    def backward(ctx, _grad):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad, None


def _record(
    fn, inputs: list[Tensor], need_input: bool, lean_norms: bool = True, consume: bool = False
):
    """Run `fn` with a graph on the tensor popped from `inputs`, so that nothing here holds it
    once the graph no longer needs it (an argument passed directly would be held by the
    caller until the call returns). Returns its output in a one-element list, for the same
    reason, and what `_backprop` needs. With `lean_norms`, its BNs on test statistics keep
    their outputs (`_lean_norms`), and with `consume` overwrite them with their input
    gradients in backward (`consuming_outputs`: only where nothing else holds those outputs)."""
    x = inputs.pop()
    module = getattr(fn, "__self__", fn)
    own = [p for p in module.parameters() if p.requires_grad]
    box: list[Tensor] = []
    anchor = x.new_empty(0, requires_grad=True) if need_input else None
    norms = _lean_norms(module) if lean_norms else contextlib.nullcontext()
    eat = consuming_outputs() if consume else contextlib.nullcontext()
    with torch.enable_grad(), norms, eat:
        xin = _Tap.apply(x, anchor, box) if need_input else x
        del x
        outs = [fn(xin)]
    return outs, (anchor, box, own)


@contextlib.contextmanager
def _lean_norms(module: nn.Module) -> Iterator[None]:
    """The BNs in `module` run `lean_test_norm`: on the batch's own statistics they keep their
    outputs, not their inputs, so in a block the conv output each normalises is freed at once
    (at the block's busiest moment one feature map fewer is alive)."""
    bns = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    bns = [m for m in bns if "forward" not in m.__dict__]  # not already patched
    for m in bns:  # an instance attribute shadows the class's forward
        m.forward = functools.partial(lean_test_norm, m)
    try:
        yield
    finally:
        for m in bns:
            del m.forward


def _backprop(outs: list[Tensor], grads_out: list[Tensor], recorded, grads: dict[int, Tensor]):
    """Back-propagate the gradient popped from `grads_out` through the graph recorded on the
    output popped from `outs`: the parameters' gradients are added to `grads` (by id), the
    input's is returned. Neither the output nor the gradient is held meanwhile."""
    anchor, box, own = recorded
    with torch.enable_grad():
        root = _Seed.apply(outs.pop(), grads_out.pop())
    wanted = ([anchor] if anchor is not None else []) + own
    if not root.requires_grad or not wanted:
        return None
    found = torch.autograd.grad(root, wanted, allow_unused=True)
    for p, gp in zip(own, found[1:] if anchor is not None else found):
        if gp is not None:
            grads[id(p)] = grads[id(p)] + gp if id(p) in grads else gp
    return box.pop() if box else None


def _vjp(fn, inputs: list[Tensor], grads_out: list[Tensor], need_input: bool, grads, **kw):
    """`_record` then `_backprop`: the input's gradient (if `need_input`) given the output's."""
    outs, recorded = _record(fn, inputs, need_input, **kw)
    return _backprop(outs, grads_out, recorded, grads)


@contextlib.contextmanager
def _without_onednn() -> Iterator[None]:
    """Convolutions' backward on PyTorch's own CPU kernels. For the meta conv block's 1×1 conv
    oneDNN's backward takes about two feature maps of scratch, and is slower; PyTorch's gives
    the same input gradient and the weight gradient up to float rounding."""
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


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
        if torch.is_grad_enabled():
            return self.adapter_bn(self.frozen(x)) + self.adapter_conv(x)
        # No graph (a recomputed part's forward, or inference): adapter_bn last, so that its
        # output and temporaries are not alive while the meta block runs, and the sum in
        # place. The same numbers: the three share no state.
        frozen = self.frozen(x)
        meta = self.adapter_conv(x)
        return self.adapter_bn(frozen).add_(meta)

    def _trained(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def forward(self, x: Tensor) -> Tensor:
        params = self._trained()
        if (
            self.recompute
            and self.training
            and torch.is_grad_enabled()
            and (params or x.requires_grad)
        ):
            return _RecomputedPartFn.apply(self, x, *params)
        return self._compute(x)

    def _recomputed_grads(
        self, xs: list[Tensor], grad_out: Tensor, need_x: bool
    ) -> tuple[Tensor | None, dict[int, Tensor]]:
        """Gradients of the part's input (popped from `xs`; if `need_x`) and of its trained
        parameters (by id), given its output's, recomputed one piece at a time so that at most
        one piece's working memory is alive: the frozen path forward without a graph (keeping
        each block's input), adapter_bn, the frozen blocks last to first, then the meta conv
        block, each back-propagated and freed before the next. A frozen residual block is
        back-propagated by hand (`frozen_block`: about two feature maps besides its input);
        any other piece through a lean graph rebuilt from its input: convs keep their weights,
        ReLUs 1-bit masks, BNs on test statistics their outputs (`_lean_norms`), which the meta
        block's BN overwrites with its input gradient (`consuming_outputs`)."""
        pieces = list(self.frozen) if isinstance(self.frozen, nn.Sequential) else [self.frozen]
        through = need_x or any(p.requires_grad for p in self.frozen.parameters())
        grads: dict[int, Tensor] = {}
        if not through:  # parameters' gradients only: the input can go after its first use
            return None, self._parameter_grads(pieces, xs, grad_out, grads)
        x = xs.pop()
        # Tensors travel in one-element lists, so that the callee that consumes one holds its
        # only reference (see `_record`).
        inputs = [x]
        with torch.no_grad():
            for piece in pieces[:-1]:
                inputs.append(piece(inputs[-1]))
        residual = residual_layers(pieces[-1])
        if residual is not None:  # a frozen residual block: back-propagated by hand, later
            out, tape = block_forward(pieces[-1], residual, inputs[-1])
            ys = [out]
            del out
        else:  # the last block's graph is recorded before adapter_bn's backward runs
            outs, last = _record(pieces[-1], inputs, len(pieces) > 1 or need_x)
            ys = [outs[0].detach()]
        # adapter_bn's input is held anyway (the frozen graph's output): it keeps that.
        g = [_vjp(self.adapter_bn, ys, [grad_out], True, grads, lean_norms=False)]
        if residual is not None:
            g = [block_backward(residual, tape, inputs, g)]
        else:
            g = [_backprop(outs, g, last, grads)]
        for i in reversed(range(len(pieces) - 1)):
            residual = residual_layers(pieces[i])
            if residual is not None:
                g = [block_vjp(pieces[i], residual, inputs, g)]
            else:
                g = [_vjp(pieces[i], inputs, g, i > 0 or need_x, grads)]
        grad_c = self._meta_block_grads(x, grad_out, need_x, grads)
        grad_x = g.pop()
        if grad_x is not None and grad_c is not None:
            grad_x.add_(grad_c)  # ours alone (a tap's gradient): in place
        return (grad_x if need_x else None), grads

    def _parameter_grads(
        self, pieces: list[nn.Module], xs: list[Tensor], grad_out: Tensor, grads: dict
    ) -> dict[int, Tensor]:
        """`_recomputed_grads` where no gradient flows into the frozen path: the meta block
        first, then the frozen path forward, which frees the part's input after its first
        piece, then adapter_bn."""
        self._meta_block_grads(xs[0], grad_out, False, grads)
        with torch.no_grad():
            h = xs.pop()
            for piece in pieces:
                h = piece(h)
        ys = [h]
        del h
        _vjp(self.adapter_bn, ys, [grad_out], False, grads, lean_norms=False)
        return grads

    def _meta_block_grads(
        self, x: Tensor, grad_out: Tensor, need_x: bool, grads: dict
    ) -> Tensor | None:
        """The meta conv block's part: its parameters' gradients into `grads`, its input's
        returned (if `need_x`). Its graph is back-propagated once and its BN's output held by
        nothing else: the BN may overwrite it with its input gradient (`consuming_outputs`)."""
        outs, recorded = _record(self.adapter_conv._graph, [x], need_x, consume=True)
        with _without_onednn():
            return _backprop(outs, [grad_out], recorded, grads)

    @torch.no_grad()
    def calibrate_identity(self, mean: Tensor, var: Tensor) -> None:
        """Start adapter_bn as the identity for outputs with these channel statistics:
        γ = sqrt(var + eps), β = mean, running stats = (mean, var)."""
        bn = self.adapter_bn
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
        bn.weight.copy_(torch.sqrt(var + bn.eps))
        bn.bias.copy_(mean)
