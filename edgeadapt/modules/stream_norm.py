"""Batch normalisation that works on a stream of small batches.

A BN on test-batch statistics (`norm`, Tent, EATA, CoTTA, EcoTTA's meta networks) normalises
each batch with its own mean and variance. On a single frame those are the frame's spatial
statistics: a frame normalised by itself loses its per-channel means, and after global pooling
the last such layer outputs its β for every input, so predictions become constant. RoTTA's
robust BN (Yuan et al., CVPR 2023) instead keeps statistics that every batch nudges.

Here a batch of N samples is normalised with a mixture of the stream's statistics (weight
1 − α) and its own (weight α), α = min(1, N / window): the statistics of about the last
`window` samples. A batch of `window` samples or more uses its own statistics alone, exactly
as the published methods do; smaller batches fold into the stream's. So does a batch of
`own_from` samples or more (AdaptConfig.own_statistics_from, 64 by default): the long windows
that single frames need lag behind a continual stream that batches of 64 follow by themselves
(benchmarks/cifar10c/tune_stream_b64.md). The mixture is taken of
first and second moments, so its variance also counts how the frames' means differ (mixing
variances, as RBN does, would at batch 1 normalise with the within-frame spread alone). The
stream's statistics start from the source model's running statistics and live in the BN's own
`running_mean` / `running_var`.

Below the full weight the statistics are constants for backward: the batch's share of them
is α (1/64 for one frame), so the gradient through them is that small, and without it backward
keeps nothing for a frozen BN (the normalisation is x·a + c with constant a and c), as for one
on fixed statistics; a BN whose affine trains keeps its input for the affine's gradient. At
full weight the gradient is the published methods' own, through the batch's statistics.

Memory: nothing beyond those buffers (2·C floats per layer, which every BN has).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgeadapt.errors import ConfigError

__all__ = [
    "StreamBatchNorm2d",
    "WindowSpec",
    "bn_stream_weight",
    "normalising_affine",
    "stream_moments",
    "stream_state",
    "stream_state_as",
    "stream_weight",
    "stream_windows",
    "use_stream_statistics",
]


# Samples the statistics span: one number for every layer, or (first, last) for windows that
# grow geometrically from the first BN to the last in forward order.
WindowSpec = int | tuple[int, int]


def stream_windows(spec: WindowSpec, count: int) -> list[int]:
    """The window of each of `count` BNs in forward order.

    Why grow with depth: a corruption shifts the early layers' statistics for every class
    alike, so they may follow the stream closely, while deep layers' statistics depend on the
    class in view, and a short window there learns a run of one class as "the domain" (on a
    class-correlated stream that costs more than a slow start; benchmarks/cifar10c/tune_stream.md).
    """
    if isinstance(spec, int):
        return [spec] * count
    first, last = spec
    if count == 1:
        return [last]
    return [round(first * (last / first) ** (i / (count - 1))) for i in range(count)]


def stream_weight(batch: int, window: int, own_from: int | None = None) -> float:
    """α, the weight of a batch of `batch` samples in statistics over about `window`; 1 (its
    own statistics alone) for a batch of `own_from` samples or more."""
    if own_from is not None and batch >= own_from:
        return 1.0
    return min(1.0, batch / window)


def bn_stream_weight(bn: nn.Module, batch: int) -> float:
    """α of a batch of `batch` samples in stream BN `bn` (`StreamBatchNorm2d` or its export
    twin), by its window and threshold."""
    return stream_weight(batch, bn.window, bn.own_from)


def stream_moments(
    x: Tensor, running_mean: Tensor, running_var: Tensor, alpha: float
) -> tuple[Tensor, Tensor]:
    """Per-channel (mean, biased variance) of `x` (N, C, H, W) mixed with the running ones,
    the batch weighing `alpha`: differentiable in `x` at alpha 1 (the batch's own statistics),
    constants below it (see the module docstring)."""
    if alpha >= 1.0:
        return x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)
    with torch.no_grad():
        rm, rv = running_mean, running_var
        mean = (1 - alpha) * rm + alpha * x.mean(dim=(0, 2, 3))
        second = (1 - alpha) * (rv + rm * rm) + alpha * (x * x).mean(dim=(0, 2, 3))
        return mean, (second - mean * mean).clamp_min(0.0)


class StreamBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d on stream statistics (see the module docstring).

    In training mode it normalises with the mixture and, while `track_running_stats` is set,
    makes the mixture the stream's statistics (`no_running_stat_updates` predicts without
    that). In eval mode it normalises with the stream's statistics as they are. Made from an
    existing BN by `use_stream_statistics` (a class swap: names, weights and buffers stay).
    """

    window: int = 64  # samples the statistics span; set per layer by use_stream_statistics
    own_from: int | None = None  # a batch this large uses its own statistics alone

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        alpha = bn_stream_weight(self, x.shape[0])
        update = self.track_running_stats
        if alpha >= 1.0:  # the published rule, with PyTorch's own kernel
            stats = (self.running_mean, self.running_var) if update else (None, None)
            return F.batch_norm(x, *stats, self.weight, self.bias, True, 1.0, self.eps)
        mean, var = stream_moments(x, self.running_mean, self.running_var, alpha)
        if update:
            with torch.no_grad():
                self.running_mean.copy_(mean)
                self.running_var.copy_(var)
        scale, shift = normalising_affine(mean, var, self.weight, self.bias, self.eps)
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)


def normalising_affine(
    mean: Tensor, var: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float
) -> tuple[Tensor, Tensor]:
    """(scale, shift) per channel that normalise with (mean, var) and then apply γ, β."""
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias
    return scale, shift


def use_stream_statistics(bn: nn.BatchNorm2d, window: int, own_from: int | None = None) -> None:
    """Make `bn` normalise on stream statistics over about `window` samples, starting from its
    running (source) statistics, and a batch of `own_from` samples or more (None: never) with
    its own statistics alone; in place, training mode, tracking on."""
    if bn.running_mean is None or bn.running_var is None:
        raise ConfigError(
            f"{type(bn).__name__}({bn.num_features}) keeps no running statistics, which stream "
            "statistics start from; use stat_window=None (each batch's own statistics, batches "
            "of 2 or more) for this model"
        )
    if window < 1:
        raise ConfigError(f"the statistics window must be >= 1 sample, got {window}")
    bn.__class__ = StreamBatchNorm2d
    bn.window = int(window)
    bn.own_from = None if own_from is None else int(own_from)
    bn.track_running_stats = True
    bn.train()


def stream_state(module: nn.Module) -> list[tuple[StreamBatchNorm2d, Tensor, Tensor]]:
    """Copies of the stream statistics of every stream BN in `module` (2·C floats each)."""
    return [
        (m, m.running_mean.detach().clone(), m.running_var.detach().clone())
        for m in module.modules()
        if isinstance(m, StreamBatchNorm2d) and m.running_mean is not None
    ]


@contextlib.contextmanager
def stream_state_as(saved: list[tuple[StreamBatchNorm2d, Tensor, Tensor]]) -> Iterator[None]:
    """Run with the stream statistics `stream_state` copied, then put the current ones back:
    a recomputation in backward normalises as its forward did, before that forward's update."""
    current = [(m, m.running_mean.clone(), m.running_var.clone()) for m, _, _ in saved]
    with torch.no_grad():
        for m, mean, var in saved:
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
    try:
        yield
    finally:
        with torch.no_grad():
            for m, mean, var in current:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
