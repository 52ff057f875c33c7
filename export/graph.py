"""The graphs that get exported: an adapter's prediction, written with plain tensor ops.

Two things in the SDK's eager graphs do not export: the memory-lean frozen ops and EcoTTA's
recompute are custom autograd Functions, and a BN on batch statistics lowers to a train-mode
op (`_native_batch_norm_legit_functional`) that ExecuTorch cannot run. So export works on a
copy of the adapter's network with the lean layers turned back into ordinary ones, recompute
off, and every BN that normalises with batch statistics replaced by `PlainBatchNorm2d`, the
same arithmetic as mean/var/rsqrt ops. The caller's model and adapter are never touched.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    "PlainBatchNorm2d",
    "PlainStreamBatchNorm2d",
    "Statistics",
    "inference_module",
    "plain_copy",
    "replace_batchnorms",
]

# "adapter": each BN normalises as the adapter predicts (BNs the adapter runs on batch
# statistics use the statistics of the exported program's input batch); "running": every BN
# uses its stored running statistics (works for a batch of one).
Statistics = Literal["adapter", "running"]


class PlainBatchNorm2d(nn.Module):
    """BatchNorm2d as plain tensor ops, on batch statistics or on the stored running ones.

    It holds the original BN's own `weight`/`bias` parameters (same names, same objects), so a
    training program's parameter names match the adapter's. Running statistics are not updated:
    a program has no place to keep them that the runtime would write back.
    """

    def __init__(self, bn: _BatchNorm, *, batch_statistics: bool) -> None:
        super().__init__()
        self.eps = float(bn.eps)
        self.batch_statistics = batch_statistics
        self.weight = bn.weight
        self.bias = bn.bias
        if not batch_statistics:
            if bn.running_mean is None or bn.running_var is None:
                raise ValueError("a BN without running statistics can only use batch statistics")
            self.register_buffer("running_mean", bn.running_mean.detach().clone())
            self.register_buffer("running_var", bn.running_var.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        if self.batch_statistics:
            mean = x.mean(dim=(0, 2, 3), keepdim=True)
            centred = x - mean
            # Biased variance, as BN normalises with; (c * c) rather than pow keeps the op set
            # to what every ExecuTorch kernel library has.
            var = (centred * centred).mean(dim=(0, 2, 3), keepdim=True)
            y = centred * torch.rsqrt(var + self.eps)
        else:
            scale = torch.rsqrt(self.running_var + self.eps).view(1, -1, 1, 1)
            y = (x - self.running_mean.view(1, -1, 1, 1)) * scale
        if self.weight is not None:
            y = y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return y


class PlainStreamBatchNorm2d(nn.Module):
    """`StreamBatchNorm2d` (edgeadapt.modules.stream_norm) as plain tensor ops.

    The batch's statistics are mixed into the stream's with α = min(1, N / window), N being
    the program's fixed batch, and with `update` the program writes the mixture back into its
    `running_mean` / `running_var`, which the runtime keeps from one call to the next (their
    initial values go in the file: `mutable_buffers`). Below full weight the statistics are
    constants for backward, as in eager; at full weight the BN is `PlainBatchNorm2d` on batch
    statistics and leaves the buffers alone (outputs at that batch never read them).
    Without `update` (prediction programs) it normalises as `adapter.frozen()` predicts.
    """

    def __init__(self, bn: _BatchNorm, *, update: bool) -> None:
        super().__init__()
        self.eps, self.window, self.update = float(bn.eps), int(bn.window), update
        self.own_from = bn.own_from
        self.weight = bn.weight
        self.bias = bn.bias
        self.register_buffer("running_mean", bn.running_mean.detach().clone())
        self.register_buffer("running_var", bn.running_var.detach().clone())

    def alpha(self, x: Tensor) -> float:
        from edgeadapt.modules.stream_norm import bn_stream_weight

        return bn_stream_weight(self, x.shape[0])

    def statistics(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The mixed (mean, variance) for `x`, constants, written back with `update`. α < 1."""
        alpha, x = self.alpha(x), x.detach()
        rm, rv = self.running_mean, self.running_var
        mean = (1 - alpha) * rm + alpha * x.mean(dim=(0, 2, 3))
        second = (1 - alpha) * (rv + rm * rm) + alpha * (x * x).mean(dim=(0, 2, 3))
        var = (second - mean * mean).clamp_min(0.0)
        if self.update:
            self.running_mean.copy_(mean)
            self.running_var.copy_(var)
        return mean, var

    def affine(self, mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
        """(scale, shift) per channel that normalise with (mean, var) and apply γ, β."""
        from edgeadapt.modules.stream_norm import normalising_affine

        return normalising_affine(mean, var, self.weight, self.bias, self.eps)

    def forward(self, x: Tensor) -> Tensor:
        if self.alpha(x) >= 1.0:
            mean = x.mean(dim=(0, 2, 3), keepdim=True)
            centred = x - mean
            y = centred * torch.rsqrt(
                (centred * centred).mean(dim=(0, 2, 3), keepdim=True) + self.eps
            )
            if self.weight is not None:
                y = y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
            return y
        scale, shift = self.affine(*self.statistics(x))
        # x · scale keeps x for backward only where γ trains (its gradient reads x).
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)


def _unlean(net: nn.Module) -> None:
    """Turn the lean twins back into the layers they subclass (same weights and names)."""
    from edgeadapt.modules.lean import LeanBatchNorm2d, LeanConv2d, LeanReLU, LeanReLU6
    from edgeadapt.modules.meta import MetaPart

    back = {
        LeanConv2d: nn.Conv2d,
        LeanBatchNorm2d: nn.BatchNorm2d,
        LeanReLU: nn.ReLU,
        LeanReLU6: nn.ReLU6,
    }
    for m in net.modules():
        if type(m) in back:
            m.__class__ = back[type(m)]
        if isinstance(m, MetaPart):
            m.recompute = False


def replace_batchnorms(
    net: nn.Module, *, which: Literal["batch", "all"], update_stream: bool = False
) -> int:
    """Replace, in place, the 2-d BNs in training mode ("batch") or every 2-d BN ("all") by
    plain ops: `PlainStreamBatchNorm2d` for BNs on stream statistics (writing them back with
    `update_stream`), else `PlainBatchNorm2d`, on batch statistics where the BN was in training
    mode. Returns how many normalise with each batch's own statistics alone (those need
    batches of 2 or more)."""
    from edgeadapt.modules.stream_norm import StreamBatchNorm2d

    count = 0
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, nn.BatchNorm2d) or not (which == "all" or child.training):
                continue
            if isinstance(child, StreamBatchNorm2d) and child.training:
                setattr(parent, name, PlainStreamBatchNorm2d(child, update=update_stream))
            else:
                setattr(parent, name, PlainBatchNorm2d(child, batch_statistics=child.training))
                count += int(child.training)
    return count


def plain_copy(model: nn.Module) -> nn.Module:
    """A copy of an adapter's network (or of a plain model) without lean ops or recompute."""
    from edgeadapt.methods.base import Adapter

    net = copy.deepcopy(model.prediction_network() if isinstance(model, Adapter) else model)
    _unlean(net)
    return net


def inference_module(
    model: nn.Module, statistics: Statistics = "adapter"
) -> tuple[nn.Module, bool]:
    """The prediction graph of `model` (a plain model or an Adapter) as an exportable module,
    and whether it normalises with each batch's own statistics alone (then it needs batches of
    2 or more; BNs on stream statistics mix them into the stream's and take single frames).

    A plain model is exported in eval mode (its BNs on running statistics). An adapter is
    exported with its current weights; with `statistics="adapter"` its BNs normalise exactly
    as `adapter.frozen()` predicts (Tent's BNs and EcoTTA's meta BNs on the batch's statistics,
    EcoTTA's frozen BNs on the source statistics unless `frozen_bn="batch"`); with "running"
    every BN uses its running statistics (EcoTTA's meta BNs track them while adapting; Tent's
    BNs keep the source ones).
    """
    from edgeadapt.methods.base import Adapter

    if statistics not in ("adapter", "running"):
        raise ValueError(f"statistics must be 'adapter' or 'running', got {statistics!r}")
    net = plain_copy(model)
    net.requires_grad_(False)
    if not isinstance(model, Adapter) or statistics == "running":
        net.eval()
    batch = replace_batchnorms(net, which="batch") > 0
    net.eval()
    return net, batch
