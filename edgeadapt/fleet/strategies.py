"""Aggregation of the devices' adapter states: pure tensor math, no Flower.

Each update is a device's shared adapter state (name -> tensor) and the number of samples it
adapted on since the last round.

- `fedavg` (McMahan et al. 2017): the mean weighted by samples adapted, so a device that
  saw more of the stream counts more.
- `median`: the coordinate-wise median (Yin et al. 2018), unweighted: a minority of outlier
  devices (a broken camera, a diverged adapter) cannot drag it.
- `trimmed_mean`: per coordinate, drop the `trim` share of the lowest and of the highest
  values, average the rest (Yin et al. 2018); unweighted.

Integer tensors (a BN's `num_batches_tracked`) are counters, not weights: every strategy takes
their median, so the aggregate stays an integer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from edgeadapt.errors import ConfigError
from edgeadapt.fleet.config import check_strategy

__all__ = ["AGGREGATORS", "Update", "aggregate", "fedavg", "median", "trimmed_mean"]

Update = tuple[dict[str, Tensor], int]  # (shared state, samples adapted)


def _stack(updates: Sequence[Update], key: str) -> Tensor:
    return torch.stack([state[key].detach().to(torch.float64) for state, _ in updates])


def fedavg(updates: Sequence[Update], **_) -> dict[str, Tensor]:
    """The per-tensor mean weighted by samples adapted (equal weights when all adapted 0)."""
    counts = torch.tensor([float(n) for _, n in updates], dtype=torch.float64)
    weights = (
        counts / counts.sum() if counts.sum() > 0 else torch.full_like(counts, 1 / len(counts))
    )
    return _per_key(updates, lambda s: torch.tensordot(weights, s, dims=1))


def median(updates: Sequence[Update], **_) -> dict[str, Tensor]:
    """The coordinate-wise median (the mean of the two middle values for an even count)."""
    return _per_key(updates, lambda s: s.quantile(0.5, dim=0) if s.numel() else s.sum(0))


def trimmed_mean(updates: Sequence[Update], *, trim: float = 0.2, **_) -> dict[str, Tensor]:
    """Per coordinate, the mean of what is left after dropping floor(trim·N) values at each end."""
    n = len(updates)
    cut = math.floor(trim * n)

    def reduce(s: Tensor) -> Tensor:
        return s.sort(dim=0).values[cut : n - cut].mean(0)

    return _per_key(updates, reduce)


def _per_key(updates: Sequence[Update], reduce: Callable[[Tensor], Tensor]) -> dict[str, Tensor]:
    first = updates[0][0]
    out = {}
    for key, ref in first.items():
        stacked = _stack(updates, key)
        if ref.is_floating_point():
            out[key] = reduce(stacked).to(ref.dtype)
        else:  # counters: the median, rounded, keeps them integers
            out[key] = stacked.quantile(0.5, dim=0).round().to(ref.dtype)
    return out


AGGREGATORS: dict[str, Callable[..., dict[str, Tensor]]] = {
    "fedavg": fedavg,
    "median": median,
    "trimmed_mean": trimmed_mean,
}


def aggregate(strategy: str, updates: Sequence[Update], *, trim: float = 0.2) -> dict[str, Tensor]:
    """The aggregate of `updates` by `strategy` (one of `AGGREGATORS`).

    Raises ConfigError for an unknown strategy, no updates, or updates whose tensors differ in
    names or shapes (devices wrapped with different models or configs)."""
    check_strategy(strategy)
    if not updates:
        raise ConfigError("nothing to aggregate: no device sent its state this round")
    names = list(updates[0][0])
    for i, (state, count) in enumerate(updates):
        if list(state) != names or any(state[k].shape != updates[0][0][k].shape for k in names):
            raise ConfigError(
                f"device update {i} holds other tensors than update 0 (names or shapes differ); "
                "every device must wrap the same model with the same config"
            )
        if count < 0:
            raise ConfigError(f"device update {i} reports {count} samples; counts must be >= 0")
    return AGGREGATORS[strategy](updates, trim=trim)
