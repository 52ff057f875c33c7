"""CoTTA's test-time augmentations, batched: every sample of every view draws its own
colour, affine, flip and noise parameters from the adapter's generator.

Drawing and applying are separate so a program can apply them: an exported training program
takes the raw random numbers (`ViewDraws`) as inputs, and a device fills them from its own
generator, while eager PyTorch draws them here. Both apply them with `apply_augmentation`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ViewDraws", "augment", "augmented_views", "draw_views", "views_from_draws"]

# The per-sample columns of ViewDraws.uniform, raw numbers in [0, 1), and the ranges they map to
# (CoTTA's CIFAR recipe: colour jitter with gamma, affine ±15°/±1/16/0.9–1.1, flip).
BRIGHTNESS, CONTRAST, SATURATION, GAMMA, ANGLE, SCALE, SHIFT_X, SHIFT_Y, FLIP = range(9)
PER_SAMPLE = 9
RANGES = {BRIGHTNESS: (0.6, 1.4), CONTRAST: (0.7, 1.3), SATURATION: (0.5, 1.5),
          GAMMA: (0.7, 1.3), ANGLE: (-15, 15), SCALE: (0.9, 1.1),
          SHIFT_X: (-1 / 8, 1 / 8), SHIFT_Y: (-1 / 8, 1 / 8)}  # fmt: skip
BLUR_SIGMA = (0.001, 0.25)  # one per view
NOISE_STD = 0.005


class ViewDraws(NamedTuple):
    """The random numbers of `count` views of an (N, C, H, W) batch, before scaling:
    uniform (count, N, 9) in [0, 1), blur (count, 1) in [0, 1), noise (count, N, C, H, W)
    standard normal."""

    uniform: Tensor
    blur: Tensor
    noise: Tensor


def _scaled(u: Tensor, column: int) -> Tensor:
    lo, hi = RANGES[column]
    return u[:, column] * (hi - lo) + lo


def _draw_one(shape: Sequence[int], gen: torch.Generator, dtype: torch.dtype) -> ViewDraws:
    # The order of the draws is the order CoTTA's recipe applies them in; keep it, so seeded
    # streams (and the committed benchmark runs) reproduce.
    n, c = shape[0], shape[1]
    uniform = torch.full((n, PER_SAMPLE), 0.5)
    columns = [BRIGHTNESS, CONTRAST, *([SATURATION] if c == 3 else []), GAMMA, ANGLE, SCALE]
    for column in columns:
        uniform[:, column] = torch.rand(n, generator=gen)
    uniform[:, SHIFT_X : SHIFT_Y + 1] = torch.rand(2 * n, generator=gen).view(n, 2)
    blur = torch.rand(1, generator=gen)
    uniform[:, FLIP] = torch.rand(n, generator=gen)
    noise = torch.randn(tuple(shape), generator=gen, dtype=dtype)
    return ViewDraws(uniform, blur, noise)


def draw_views(
    shape: Sequence[int], gen: torch.Generator, count: int, dtype: torch.dtype = torch.float32
) -> ViewDraws:
    """The draws of `count` views of a batch shaped `shape`, from `gen` (on the CPU, so a seed
    gives the same numbers on any device)."""
    views = [_draw_one(shape, gen, dtype) for _ in range(count)]
    return ViewDraws(*(torch.stack([getattr(v, f) for v in views]) for f in ViewDraws._fields))


def apply_augmentation(
    x: Tensor, uniform: Tensor, blur_sigma: float | Tensor, noise: Tensor
) -> Tensor:
    """One augmented view of a batch of images in [0, 1] from its draws: `uniform` (N, 9) raw,
    `blur_sigma` already scaled (a float in eager, a 0-d tensor in a program), `noise` (N, C,
    H, W) standard normal. Plain tensor ops only, so programs export it."""
    n, c = x.shape[:2]
    shape = (n, 1, 1, 1)
    u = uniform.to(dtype=x.dtype, device=x.device)
    out = x * _scaled(u, BRIGHTNESS).view(shape)
    gray = out.mean(dim=1, keepdim=True) if c == 3 else out
    level = gray.mean(dim=(2, 3), keepdim=True)
    out = (out - level) * _scaled(u, CONTRAST).view(shape) + level
    if c == 3:
        gray = out.mean(dim=1, keepdim=True)
        out = gray + (out - gray) * _scaled(u, SATURATION).view(shape)
    out = out.clamp(1e-6, 1.0) ** _scaled(u, GAMMA).view(shape)

    angle = _scaled(u, ANGLE) * math.pi / 180
    scale = _scaled(u, SCALE)
    shift_x, shift_y = _scaled(u, SHIFT_X), _scaled(u, SHIFT_Y)  # ±1/16 of the image
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1
    )
    grid = F.affine_grid(theta, list(out.shape), align_corners=False)
    out = F.grid_sample(out, grid, mode="bilinear", padding_mode="border", align_corners=False)

    k = torch.arange(-2, 3, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(k**2) / (2 * blur_sigma**2))
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

    flip = u[:, FLIP] < 0.5
    out = torch.where(flip.view(shape), out.flip(3), out)
    out = out + noise.to(dtype=x.dtype, device=x.device) * NOISE_STD
    return out.clamp(0, 1)


def blur_sigma(raw: Tensor) -> Tensor:
    """The blur's σ from its raw draw in [0, 1)."""
    lo, hi = BLUR_SIGMA
    return raw * (hi - lo) + lo


def augment(x: Tensor, gen: torch.Generator) -> Tensor:
    """One augmented view of a batch of images in [0, 1], drawn from `gen`."""
    d = _draw_one(x.shape, gen, x.dtype)
    return apply_augmentation(x, d.uniform, float(blur_sigma(d.blur)), d.noise)


def views_from_draws(
    x: Tensor,
    draws: ViewDraws,
    mean: Sequence[float] | Tensor | None = None,
    std: Sequence[float] | Tensor | None = None,
) -> Tensor:
    """The views `draws` describe, stacked view after view: (count·N, C, H, W).

    With the per-channel `mean` and `std` it was normalised with, `x` is normalised input: the
    views are taken on its pixels in [0, 1] and normalised back, as the model expects. The
    blur's σ stays a tensor here (a program computes it); `augment` rounds it to a float."""
    count = draws.uniform.shape[0]
    sigmas = blur_sigma(draws.blur)
    if torch.compiler.is_exporting():
        pick = [sigmas[i, 0] for i in range(count)]
    else:  # eager: the float σ `augment` uses, so both paths give identical views
        pick = [float(sigmas[i, 0]) for i in range(count)]
    if mean is not None:
        mean, std = (torch.as_tensor(v, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
                     for v in (mean, std))  # fmt: skip
    pixels = x if mean is None else x * std + mean
    views = torch.cat([apply_augmentation(pixels, draws.uniform[i], pick[i], draws.noise[i])
                       for i in range(count)])  # fmt: skip
    return views if mean is None else (views - mean) / std


def augmented_views(
    x: Tensor,
    gen: torch.Generator,
    count: int,
    mean: Sequence[float] | Tensor | None = None,
    std: Sequence[float] | Tensor | None = None,
) -> Tensor:
    """`count` augmented views of the batch `x`, drawn from `gen`, stacked view after view:
    (count·N, C, H, W); `mean`/`std` as in `views_from_draws`."""
    return views_from_draws(x, draw_views(x.shape, gen, count, x.dtype), mean, std)
