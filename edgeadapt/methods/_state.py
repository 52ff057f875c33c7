"""Helpers the base adapter uses: model fingerprints, atomic writes, BN statistic modes."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

if TYPE_CHECKING:
    from edgeadapt.modules.stream_norm import WindowSpec

__all__ = [
    "architecture_digest",
    "batchnorms_on_batch_stats",
    "no_running_stat_updates",
    "per_group_batch_statistics",
    "source_statistics",
    "stochastic_restore",
    "tensor_digest",
    "use_batch_statistics",
    "use_test_statistics",
    "weights_digest",
]


def architecture_digest(model: nn.Module) -> str:
    """sha256 of every state tensor's name, shape and dtype: equal iff same architecture."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
    return h.hexdigest()


def weights_digest(model: nn.Module) -> str:
    """sha256 of the state tensors' values: tells two checkpoints of one architecture apart."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


def tensor_digest(t: Tensor) -> str:
    """sha256 of one tensor's dtype, shape and values: equal iff bitwise the same tensor."""
    h = hashlib.sha256(f"{t.dtype}:{tuple(t.shape)};".encode())
    h.update(_tensor_bytes(t))
    return h.hexdigest()


def _tensor_bytes(t: Tensor) -> bytes:
    return t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()


def use_batch_statistics(bn: _BatchNorm) -> None:
    """Normalise with each batch's statistics and leave the running (source) statistics as
    they are: train mode without tracking. The source statistics stay in the state dict, so a
    fallback can still use them."""
    bn.train()
    bn.track_running_stats = False


def use_test_statistics(
    bns: Sequence[_BatchNorm], window: WindowSpec | None, own_from: int | None = None
) -> None:
    """Make `bns` (in forward order) normalise with test statistics: over about the last
    `window` samples of the stream (`edgeadapt.modules.stream_norm`; a pair grows the window
    from the first BN to the last; a batch of `own_from` or more on its own statistics), or
    with None each batch's own alone (the published rule, which needs batches of 2 or more)."""
    from edgeadapt.modules.stream_norm import stream_windows, use_stream_statistics

    if window is None:
        for bn in bns:
            use_batch_statistics(bn)
        return
    for bn, size in zip(bns, stream_windows(window, len(bns))):
        if isinstance(bn, nn.BatchNorm2d):
            use_stream_statistics(bn, size, own_from)
        else:  # 1-d/3-d BNs: each batch's own statistics
            use_batch_statistics(bn)


def batchnorms_on_batch_stats(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.training]


@contextlib.contextmanager
def no_running_stat_updates(model: nn.Module) -> Iterator[None]:
    """Predict with batch statistics but change no running statistic."""
    touched = [m for m in batchnorms_on_batch_stats(model) if m.track_running_stats]
    for m in touched:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in touched:
            m.track_running_stats = True


@contextlib.contextmanager
def source_statistics(model: nn.Module) -> Iterator[None]:
    """Temporarily normalise with the stored running statistics (eval-mode BN)."""
    touched = batchnorms_on_batch_stats(model)
    for m in touched:
        m.eval()
    try:
        yield
    finally:
        for m in touched:
            m.train()


@contextlib.contextmanager
def per_group_batch_statistics(model: nn.Module, groups: int) -> Iterator[None]:
    """BNs on test statistics normalise each of `groups` equal, contiguous slices of the
    batch with that slice's own statistics (mixed into the stream's, for stream BNs): one forward of G stacked batches computes what
    G separate forwards would (CoTTA's augmented views, in one pass on a big device)."""
    touched = batchnorms_on_batch_stats(model)
    for m in touched:
        m.forward = _grouped_forward(m, groups)  # instance attribute: shadows the class method
    try:
        yield
    finally:
        for m in touched:
            del m.forward


def _grouped_forward(bn: _BatchNorm, groups: int):
    from edgeadapt.modules.stream_norm import StreamBatchNorm2d, bn_stream_weight

    def forward(x: Tensor) -> Tensor:
        n, c = x.shape[0] // groups, x.shape[1]
        if isinstance(bn, StreamBatchNorm2d) and bn_stream_weight(bn, n) < 1:
            # Each group mixed into the stream's statistics on its own, as separate forwards
            # would (which update the stream only where the caller lets them).
            return torch.cat([StreamBatchNorm2d.forward(bn, g) for g in x.chunk(groups)])
        # (G·N, C, ...) -> (N, G·C, ...): each group's channels become channels of their own.
        folded = (
            x.reshape(groups, n, *x.shape[1:]).transpose(0, 1).reshape(n, groups * c, *x.shape[2:])
        )
        weight = bn.weight.repeat(groups) if bn.weight is not None else None
        bias = bn.bias.repeat(groups) if bn.bias is not None else None
        y = F.batch_norm(folded, None, None, weight, bias, training=True, eps=bn.eps)
        return y.reshape(n, groups, *x.shape[1:]).transpose(0, 1).reshape(x.shape)

    return forward


@torch.no_grad()
def stochastic_restore(
    params: list[Tensor], anchors: list[Tensor], prob: float, generator: torch.Generator
) -> None:
    """Return each element of `params` to its `anchors` value with probability `prob` (CoTTA's
    stochastic restore): what adaptation wrote slowly fades unless the stream keeps asking
    for it, so long runs cannot drift far from the anchor."""
    for p, a in zip(params, anchors, strict=True):
        restore = torch.rand(p.shape, generator=generator) < prob
        p.copy_(torch.where(restore.to(p.device), a, p))
