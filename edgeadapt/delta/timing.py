"""Wall-clock dense vs. delta timing of single layers at given temporal sparsities.

Honest numbers for this machine: the delta side is the real `DeltaConv2d` / `DeltaLinear`
forward (Δx, non-zero detection, gather, matmul, scatter, state copies), timed against the
dense layer recomputing W·x + b on the same input, in the same dtype. On CPUs with fast dense
GEMM the wall-clock ratio is usually well below the MAC ratio; both are reported.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from edgeadapt.delta.layers import DeltaConv2d, DeltaLayer, DeltaLinear
from edgeadapt.errors import ConfigError

__all__ = ["TimingResult", "time_delta_layer", "time_delta_layers"]

Op = Literal["linear", "conv1x1", "conv3x3"]
Pattern = Literal["pixel", "element", "channel"]


@dataclass(frozen=True)
class TimingResult:
    """One measurement: median seconds per call of the dense and the delta layer."""

    op: str
    sparsity: float  # requested fraction of Δx that is exactly zero
    dense_s: float
    delta_s: float
    mac_ratio: float  # dense MACs / MACs the delta layer performed

    @property
    def speedup(self) -> float:
        """dense_s / delta_s: > 1 means the delta layer is faster on this machine."""
        return self.dense_s / self.delta_s


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: allocator, thread pool
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _change_mask(
    shape: tuple[int, ...], sparsity: float, pattern: Pattern, gen: torch.Generator
) -> Tensor:
    if pattern == "element":
        return torch.rand(shape, generator=gen) >= sparsity
    if len(shape) == 2 or pattern == "channel":  # a linear's features behave like channels
        size = (1, shape[1]) + (1,) * (len(shape) - 2)
        return (torch.rand(size, generator=gen) >= sparsity).expand(shape)
    return (torch.rand((1, 1, *shape[2:]), generator=gen) >= sparsity).expand(shape)


def time_delta_layer(
    op: Op,
    sparsity: float,
    *,
    channels: int = 64,
    size: int = 32,
    pattern: Pattern = "pixel",
    dtype: torch.dtype = torch.float64,
    repeats: int = 20,
    seed: int = 0,
    num_threads: int | None = None,
    conv_path: Literal["element", "pixel"] = "element",
) -> TimingResult:
    """Time one layer: `channels` in and out, a `size`×`size` map (linear: channels·16 wide).

    `pattern` says what is unchanged: whole pixels (all channels, typical of video), single
    elements, or whole channels. `num_threads` sets torch's intra-op threads for the
    measurement (restored afterwards); None keeps the current setting. `conv_path` picks
    the convs' sparse path (`DeltaConv2d`): element-sparse or whole changed pixels.
    """
    if not 0.0 <= sparsity <= 1.0:
        raise ConfigError(f"sparsity must be in [0, 1], got {sparsity}")
    gen = torch.Generator().manual_seed(seed)
    dense: nn.Module
    if op == "linear":
        dense = nn.Linear(channels * 16, channels * 16)
        shape: tuple[int, ...] = (1, channels * 16)
    elif op in ("conv1x1", "conv3x3"):
        k = 1 if op == "conv1x1" else 3
        dense = nn.Conv2d(channels, channels, k, padding=k // 2)
        shape = (1, channels, size, size)
    else:
        raise ConfigError(f"op must be 'linear', 'conv1x1' or 'conv3x3', got {op!r}")
    dense = dense.to(dtype).eval()
    # Always sparse (threshold 1.0; the other path priced out): we time the sparse path itself.
    costs = (1.0, 1e3) if conv_path == "element" else (1e3, 1.0)
    delta: DeltaLayer = (
        DeltaLinear(dense, sparse_threshold=1.0)
        if isinstance(dense, nn.Linear)
        else DeltaConv2d(dense, sparse_threshold=1.0, element_cost=costs[0], pixel_cost=costs[1])
    )
    x0 = torch.rand(shape, generator=gen, dtype=dtype)
    change = torch.rand(shape, generator=gen).to(dtype)
    x1 = x0 + _change_mask(shape, sparsity, pattern, gen) * change
    # Alternate between two frames so every timed call sees the same sparse Δx (±).
    frames = itertools.cycle((x1, x0))
    threads = torch.get_num_threads()
    try:
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        with torch.no_grad():
            delta(x0)
            dense_s = _median_time(lambda: dense(x1), repeats)
            delta_s = _median_time(lambda: delta(next(frames)), repeats)
    finally:
        torch.set_num_threads(threads)
    return TimingResult(op, sparsity, dense_s, delta_s, delta.last_macs.ratio)


def time_delta_layers(
    ops: tuple[Op, ...] = ("linear", "conv1x1", "conv3x3"),
    sparsities: tuple[float, ...] = (0.5, 0.9, 0.99),
    **kwargs: Any,
) -> list[TimingResult]:
    """`time_delta_layer` over a grid of ops and sparsities (kwargs are passed through)."""
    return [time_delta_layer(op, s, **kwargs) for op in ops for s in sparsities]
