"""Blur corruptions of CIFAR-10-C: defocus, glass, motion, zoom (standard) and gaussian (extra).

Parameters are `make_cifar_c.py`'s (Hendrycks & Dietterich 2019), for 32×32 images. Each
function maps uint8 images (N, 32, 32, 3) to floats on the 0..255 scale.
"""

from __future__ import annotations

import functools

import numpy as np

from edgeadapt.data import _ops

__all__ = ["defocus_blur", "gaussian_blur", "glass_blur", "motion_blur", "zoom_blur"]


def _disk(radius: float, alias_blur: float) -> np.ndarray:
    """make_cifar_c's anti-aliased disk: a 17×17 aliased disk smoothed by a 3×3 Gaussian.

    cv2.GaussianBlur(ksize=3, sigma) with its default reflect-101 border is reproduced with
    scipy; all-zero borders are cropped (exact: they add nothing) to keep the filter small.
    """
    from scipy.ndimage import correlate1d

    grid = np.arange(-8, 9) if radius <= 8 else np.arange(-radius, radius + 1)
    xx, yy = np.meshgrid(grid, grid)
    disk = ((xx**2 + yy**2) <= radius**2).astype(np.float32)
    disk /= disk.sum()
    taps = np.exp(-(np.arange(-1, 2) ** 2) / (2.0 * alias_blur**2))
    taps /= taps.sum()
    for axis in (0, 1):
        disk = correlate1d(disk, taps.astype(np.float32), axis=axis, mode="mirror")
    rows, cols = np.nonzero(disk)
    return disk[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def defocus_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import correlate

    radius, alias = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1))[severity - 1]
    kernel = _disk(radius, alias)[None, :, :, None]
    # cv2.filter2D correlates with a reflect-101 border, i.e. scipy's "mirror".
    out = correlate(x / np.float32(255), kernel, mode="mirror")
    return np.clip(out, 0, 1) * 255


def gaussian_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    sigma = (0.4, 0.6, 0.7, 0.8, 1.0)[severity - 1]
    return np.clip(_ops.gaussian_blur(x / np.float32(255), sigma), 0, 1) * 255


def glass_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Blur, jitter pixels locally, blur again.

    The original's "swap" `x[h, w], x[h', w'] = x[h', w'], x[h, w]` acts on numpy views, so it
    really copies x[h', w'] into x[h, w] and leaves x[h', w'] alone; the released CIFAR-10-C
    was made that way, so this copies too. The scan order (bottom-right to top-left, each step
    seeing the previous ones) is kept; only the batch axis is vectorised, by moving a
    per-image index map instead of pixels and gathering once at the end.
    """
    table = ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2))
    sigma, delta, iterations = table[severity - 1]  # blur sigma, max jitter, passes
    n, size = x.shape[0], x.shape[1]
    blurred = (_ops.gaussian_blur(x / 255.0, sigma) * 255).astype(np.uint8)
    positions = range(size - delta, delta, -1)
    # randint(-delta, delta) in the original: the upper bound is exclusive.
    jitter = rng.integers(-delta, delta, size=(iterations, len(positions), len(positions), 2, n))
    index = np.broadcast_to(np.arange(size * size), (n, size * size)).copy()
    batch = np.arange(n)
    for it in range(iterations):
        for a, h in enumerate(positions):
            for b, w in enumerate(positions):
                dy, dx = jitter[it, a, b]
                index[:, h * size + w] = index[batch, (h + dy) * size + (w + dx)]
    flat = blurred.reshape(n, size * size, -1)
    shuffled = np.take_along_axis(flat, index[..., None], axis=1).reshape(x.shape)
    return np.clip(_ops.gaussian_blur(shuffled / 255.0, sigma), 0, 1) * 255


def motion_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    radius, sigma = ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5))[severity - 1]
    angles = rng.uniform(-45, 45, size=x.shape[0])
    return _ops.motion_blur(x.astype(np.float32), radius, sigma, angles)


@functools.lru_cache(maxsize=8)
def _zoom_operator(size: int, severity: int) -> np.ndarray:
    top = (1.06, 1.11, 1.16, 1.21, 1.26)[severity - 1]
    factors = np.arange(1, top, 0.01)  # the same float steps as the original
    total = np.eye(size * size)
    for z in factors:
        a = _ops.clipped_zoom_matrix(size, z)
        total += np.kron(a, a)
    return (total / (len(factors) + 1)).astype(np.float32).T


def zoom_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Average of the image and its centre zooms by 1.00, 1.01, ... (up to 1.25).

    Every zoom is linear, so the whole average is one (H·W × H·W) matrix applied with a
    single matmul, instead of 26 scipy zooms per image.
    """
    size = x.shape[1]
    planes = (x / np.float32(255)).transpose(0, 3, 1, 2).reshape(-1, size * size)
    out = planes @ _zoom_operator(size, severity)
    out = out.reshape(x.shape[0], x.shape[3], size, size).transpose(0, 2, 3, 1)
    return np.clip(out, 0, 1) * 255
