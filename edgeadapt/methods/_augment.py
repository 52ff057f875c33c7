"""CoTTA's test-time augmentations, batched: every sample of every view draws its own
colour, affine, flip and noise parameters from the adapter's generator."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["augment", "augmented_views"]


def _uniform(
    n: int, lo: float, hi: float, gen: torch.Generator, device: torch.device | None = None
) -> Tensor:
    # Drawn on the generator's device (CPU), then moved: the same numbers on any device.
    return (torch.rand(n, generator=gen) * (hi - lo) + lo).to(device)


def augment(x: Tensor, gen: torch.Generator) -> Tensor:
    """One augmented view of a batch of images in [0, 1] (CoTTA's CIFAR recipe: colour jitter
    with gamma, affine ±15°/±1/16/0.9–1.1, a light blur, horizontal flip, Gaussian noise)."""
    n, c = x.shape[:2]
    shape = (n, 1, 1, 1)
    dev = x.device
    out = x * _uniform(n, 0.6, 1.4, gen, dev).view(shape)  # brightness
    gray = out.mean(dim=1, keepdim=True) if c == 3 else out
    out = (out - gray.mean(dim=(2, 3), keepdim=True)) * _uniform(n, 0.7, 1.3, gen, dev).view(
        shape
    ) + gray.mean(dim=(2, 3), keepdim=True)  # contrast
    if c == 3:
        gray = out.mean(dim=1, keepdim=True)
        out = gray + (out - gray) * _uniform(n, 0.5, 1.5, gen, dev).view(shape)  # saturation
    out = out.clamp(1e-6, 1.0) ** _uniform(n, 0.7, 1.3, gen, dev).view(shape)  # gamma

    angle = _uniform(n, -15, 15, gen, dev) * math.pi / 180
    scale = _uniform(n, 0.9, 1.1, gen, dev)
    shift = _uniform(2 * n, -1 / 8, 1 / 8, gen, dev).view(
        n, 2
    )  # ±1/16 of the image = ±1/8 in [-1, 1]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta.to(x.dtype), list(out.shape), align_corners=False)
    out = F.grid_sample(out, grid, mode="bilinear", padding_mode="border", align_corners=False)

    sigma = float(_uniform(1, 0.001, 0.25, gen))
    k = torch.arange(-2, 3, dtype=x.dtype, device=dev)
    kernel = torch.exp(-(k**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    out = F.conv2d(
        F.pad(out, (2, 2, 0, 0), mode="replicate"),
        kernel.view(1, 1, 1, 5).repeat(c, 1, 1, 1),
        groups=c,
    )
    out = F.conv2d(
        F.pad(out, (0, 0, 2, 2), mode="replicate"),
        kernel.view(1, 1, 5, 1).repeat(c, 1, 1, 1),
        groups=c,
    )

    flip = (torch.rand(n, generator=gen) < 0.5).to(dev)
    out = torch.where(flip.view(shape), out.flip(3), out)
    out = out + torch.randn(out.shape, generator=gen, dtype=x.dtype).to(dev) * 0.005
    return out.clamp(0, 1)


def augmented_views(
    x: Tensor,
    gen: torch.Generator,
    count: int,
    mean: Sequence[float] | Tensor | None = None,
    std: Sequence[float] | Tensor | None = None,
) -> Tensor:
    """`count` augmented views of the batch `x`, stacked view after view: (count·N, C, H, W).

    With the per-channel `mean` and `std` it was normalised with, `x` is normalised input: the
    views are taken on its pixels in [0, 1] and normalised back, as the model expects."""
    if mean is None:
        return torch.cat([augment(x, gen) for _ in range(count)])
    mean, std = (torch.as_tensor(v, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
                 for v in (mean, std))  # fmt: skip
    views = torch.cat([augment(x * std + mean, gen) for _ in range(count)])
    return (views - mean) / std
