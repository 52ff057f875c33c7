"""The temporal sparsity penalty: MAC-weighted mean |Δ| of quantised activations across frames.

Clip convention: a training batch holds N clips of T consecutive frames laid out along the
batch dim, clip-major: row n·T + t is frame t of clip n, so the batch is (N·T, C, H, W) and
the model sees ordinary images. `clip_length` = T tells the penalty where clips start.

For each `DeltaActivation` l with per-frame activation a_l (n_l elements per frame) and
fan-out F_l (MACs one non-zero delta triggers downstream), the penalty is

    Σ_l F_l · n_l · mean|a_l[t] - a_l[t-1]|  /  Σ_l F_l · n_l

i.e. a MAC-weighted average of per-layer mean |Δ|. Σ_l F_l · n_l is the dense MACs the
quantised activations drive, so were |Δ| a 0/1 "changed" indicator this would be the fraction
of those MACs delta inference performs (exactly for convs and linears consuming a quantiser
directly; pooling on the way makes it an estimate). |Δ| is the L1 relaxation of that
indicator; with `in_steps=True`, |Δ|/q counts grid steps, which is >= 1 for every change.

Activations are collected by forward hooks inside a context manager and the hooks are removed
on exit, so nothing is stored on the modules and `forward` stays export-friendly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from edgeadapt.delta.deltaify import delta_activations
from edgeadapt.delta.quantize import DeltaActivation
from edgeadapt.errors import ConfigError, InputError

__all__ = [
    "ActivationRecord",
    "collect_delta_activations",
    "forward_with_sparsity",
    "frame_deltas",
    "mac_weighted_mean",
    "step_like",
    "temporal_sparsity_loss",
]

ActivationRecord = tuple[DeltaActivation, Tensor]


@contextmanager
def collect_delta_activations(model: nn.Module) -> Iterator[list[ActivationRecord]]:
    """Record (quantiser, quantised output) for every `DeltaActivation` call inside the block.

    >>> with collect_delta_activations(model) as records:
    ...     logits = model(clips)
    >>> loss = task_loss(logits) + lam * temporal_sparsity_loss(records, clip_length=8)
    """
    quantisers = delta_activations(model)
    if not quantisers:
        raise ConfigError("model has no DeltaActivation; run edgeadapt.delta.deltaify first")
    records: list[ActivationRecord] = []
    handles = [
        q.register_forward_hook(lambda mod, _args, out: records.append((mod, out)))
        for q in quantisers
    ]
    try:
        yield records
    finally:
        for h in handles:
            h.remove()


def frame_deltas(act: Tensor, clip_length: int) -> Tensor:
    """(N·T, ...) clip-major activations -> (N, T-1, everything else flattened) differences
    between consecutive frames of each clip."""
    if act.shape[0] % clip_length:
        raise InputError(
            f"batch of {act.shape[0]} frames is not a whole number of clips of {clip_length}; "
            "lay clips out clip-major along the batch dim (row n*T + t = frame t of clip n)"
        )
    clips = act.reshape(act.shape[0] // clip_length, clip_length, -1)
    return clips[:, 1:] - clips[:, :-1]


def temporal_sparsity_loss(
    records: list[ActivationRecord], clip_length: int, *, in_steps: bool = False
) -> Tensor:
    """The MAC-weighted mean |Δ| between consecutive frames (see the module docstring).

    Zero when every clip's frames produce identical quantised activations. If no quantiser
    feeds a MAC layer (all fan-outs zero), layers are weighted by their size alone.
    """

    def layer(quantiser: DeltaActivation, act: Tensor) -> Tensor:
        values = act / step_like(quantiser, act) if in_steps else act
        return frame_deltas(values, clip_length).abs().mean()

    return mac_weighted_mean(records, clip_length, layer)


def mac_weighted_mean(
    records: list[ActivationRecord],
    clip_length: int,
    per_layer: Callable[[DeltaActivation, Tensor], Tensor],
) -> Tensor:
    """The mean over recorded layers of `per_layer(quantiser, activation)`, each weighted by
    the MACs its changes trigger downstream (fan-out MACs × values per frame); by size alone
    when no fan-out is known. Checks the records and the clip length first."""
    if clip_length < 2:
        raise ConfigError(f"clip_length must be >= 2 to have consecutive frames, got {clip_length}")
    if not records:
        raise InputError("no activations recorded; run the model inside collect_delta_activations")
    means, weights = [], []
    for quantiser, act in records:
        means.append(per_layer(quantiser, act))
        weights.append(float(quantiser.fan_out_macs) * act[0].numel())
    w = torch.tensor(weights, dtype=means[0].dtype, device=means[0].device)
    if float(w.sum()) == 0.0:
        w = torch.tensor([float(a[0].numel()) for _, a in records], dtype=w.dtype, device=w.device)
    return (torch.stack(means) * w).sum() / w.sum()


def step_like(quantiser: DeltaActivation, act: Tensor) -> Tensor:
    """The quantiser's per-channel step, shaped to divide `act`."""
    return quantiser.step.to(act.dtype).view(1, -1, *([1] * (act.dim() - 2)))


def forward_with_sparsity(
    model: nn.Module, clips: Tensor, clip_length: int, *, in_steps: bool = False
) -> tuple[Tensor, Tensor]:
    """Run `model` on a clip-major batch; return (output, temporal sparsity penalty)."""
    with collect_delta_activations(model) as records:
        out = model(clips)
    return out, temporal_sparsity_loss(records, clip_length, in_steps=in_steps)
