"""Vectorised image operations behind the corruptions; every one acts on a whole batch.

Each stands in for the per-image library call that `make_cifar_c.py` (Hendrycks & Dietterich
2019) used; the docstrings say which, and how close the stand-in is. Images are float arrays
(N, H, W, C) unless said otherwise.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "bilinear_sample",
    "clipped_zoom_matrix",
    "gaussian_blur",
    "motion_blur",
    "pil_box_matrix",
    "pil_resize_box",
]


def gaussian_blur(x: np.ndarray, sigma: float, mode: str = "nearest", truncate: float = 4.0):
    """skimage.filters.gaussian on each image (spatial axes 1, 2 only); same defaults."""
    from scipy.ndimage import gaussian_filter

    sigmas = (0.0, sigma, sigma) + (0.0,) * (x.ndim - 3)
    return gaussian_filter(x, sigmas, mode=mode, truncate=truncate)


def motion_blur(x: np.ndarray, radius: float, sigma: float, angles: np.ndarray) -> np.ndarray:
    """ImageMagick's MotionBlurImage(radius, sigma, angle), one angle (degrees) per image.

    Re-implements ImageMagick's algorithm rather than calling it (Wand needs a system
    library): a one-sided Gaussian line kernel of 2·ceil(radius)+1 taps, tap i sampling the
    pixel at the offset i·(cos, sin)(angle) rounded to whole pixels, edges clamped
    (ImageMagick's default "edge" virtual pixels). Checked against ImageMagick 6 through
    Wand: after truncation to uint8, under 1% of values differ, by one grey level.
    """
    n, h, w = x.shape[:3]
    width = int(2 * math.ceil(radius) + 1)
    taps = np.arange(width, dtype=np.float64)
    kernel = np.exp(-(taps**2) / (2.0 * sigma * sigma))
    kernel /= kernel.sum()
    theta = np.deg2rad(np.asarray(angles, dtype=np.float64))
    off_x = np.ceil(taps[:, None] * np.cos(theta)[None] - 0.5).astype(np.int64)  # (taps, N)
    off_y = np.ceil(taps[:, None] * np.sin(theta)[None] - 0.5).astype(np.int64)
    flat = x.reshape(n * h * w, -1)  # one flat gather per tap is the fastest numpy path
    base = (np.arange(n) * h * w)[:, None, None]
    rows, cols = np.arange(h)[None, :, None], np.arange(w)[None, None, :]
    out = np.zeros(flat.shape, dtype=np.float32)
    for i in range(width):
        r = np.clip(rows + off_y[i][:, None, None], 0, h - 1)
        c = np.clip(cols + off_x[i][:, None, None], 0, w - 1)
        out += np.float32(kernel[i]) * flat[(base + r * w + c).ravel()]
    return out.reshape(x.shape)


def clipped_zoom_matrix(size: int, zoom: float) -> np.ndarray:
    """The linear map (size × size) of `make_cifar_c.clipped_zoom` along one axis.

    clipped_zoom crops the centre ceil(size/zoom) pixels, enlarges them with
    scipy.ndimage.zoom(order=1) and trims the centre back to `size`; along each axis that is
    a fixed matrix A, so a 2-D zoom of image X is A @ X @ A.T. Built from scipy's coordinate
    rule (grid_mode=False: in = out · (in_len − 1) / (out_len − 1)).
    """
    crop = int(np.ceil(size / zoom))
    top = (size - crop) // 2
    out_len = round(crop * zoom)  # scipy.ndimage.zoom's output length
    trim = (out_len - size) // 2
    coord = np.arange(trim, trim + size) * ((crop - 1) / (out_len - 1) if out_len > 1 else 0.0)
    lo = np.minimum(np.floor(coord).astype(np.int64), crop - 1)
    frac = coord - lo
    mat = np.zeros((size, size))
    rows = np.arange(size)
    np.add.at(mat, (rows, top + lo), 1.0 - frac)
    np.add.at(mat, (rows, top + np.minimum(lo + 1, crop - 1)), frac)
    return mat


_MODES = {
    "reflect": lambda i, n: np.where(i < 0, -i - 1, np.where(i >= n, 2 * n - 1 - i, i)),
    "mirror": lambda i, n: np.abs(np.where(i >= n, 2 * n - 2 - i, i)),
}


def bilinear_sample(img: np.ndarray, ys: np.ndarray, xs: np.ndarray, mode: str) -> np.ndarray:
    """Bilinear interpolation of img (N, H, W, C) at per-image coordinates ys, xs (N, H, W).

    `mode` names the border rule as scipy does: "reflect" (d c b a | a b c d, what
    map_coordinates(mode="reflect") uses) or "mirror" (d c b | a b c d, OpenCV's
    BORDER_REFLECT_101). Valid for coordinates less than one image size outside.
    """
    n, h, w = img.shape[:3]
    fold = _MODES[mode]
    y0, x0 = np.floor(ys), np.floor(xs)
    fy, fx = (ys - y0)[..., None], (xs - x0)[..., None]
    y0, x0 = y0.astype(np.int64), x0.astype(np.int64)
    flat = img.reshape(n * h * w, -1)
    base = (np.arange(n) * h * w).reshape((n,) + (1,) * (ys.ndim - 1))

    def at(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        idx = base + np.clip(fold(yy, h), 0, h - 1) * w + np.clip(fold(xx, w), 0, w - 1)
        return flat[idx.ravel()].reshape(*ys.shape, -1)

    top = at(y0, x0) * (1 - fx) + at(y0, x0 + 1) * fx
    bottom = at(y0 + 1, x0) * (1 - fx) + at(y0 + 1, x0 + 1) * fx
    return (top * (1 - fy) + bottom * fy).astype(img.dtype)


_PIL_BITS = 22  # Pillow's PRECISION_BITS for 8-bit images (Resample.c)


def pil_box_matrix(in_size: int, out_size: int) -> np.ndarray:
    """Pillow's fixed-point BOX resampling coefficients (out_size × in_size, int64).

    Follows Resample.c's precompute_coeffs + normalize_coeffs_8bpc, so resizing with it
    reproduces `Image.resize(..., Image.BOX)` bit for bit (tested).
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    mat = np.zeros((out_size, in_size))
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        pos = (np.arange(xmin, xmax) - center + 0.5) / filterscale
        weights = ((pos > -0.5) & (pos <= 0.5)).astype(np.float64)
        if weights.sum():
            mat[xx, xmin:xmax] = weights / weights.sum()
    return np.trunc(mat * (1 << _PIL_BITS) + 0.5).astype(np.int64)


def _resample_axis(x: np.ndarray, coeffs: np.ndarray, axis: int) -> np.ndarray:
    # A float64 matmul (BLAS) is exact here: every product and sum is an integer < 2**53.
    moved = np.moveaxis(x.astype(np.float64), axis, -1)
    acc = (moved @ coeffs.T.astype(np.float64)).astype(np.int64) + (1 << (_PIL_BITS - 1))
    return np.moveaxis(np.clip(acc >> _PIL_BITS, 0, 255).astype(np.uint8), -1, axis)


def pil_resize_box(x: np.ndarray, size: int) -> np.ndarray:
    """`Image.resize((size, size), Image.BOX)` on each uint8 image of x (N, H, W, C).

    Pillow resamples horizontally, rounds to uint8, then vertically; so does this.
    """
    h, w = x.shape[1:3]
    if w != size:
        x = _resample_axis(x, pil_box_matrix(w, size), axis=2)
    if h != size:
        x = _resample_axis(x, pil_box_matrix(h, size), axis=1)
    return x
