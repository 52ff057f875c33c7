"""Digital corruptions of CIFAR-10-C: brightness, contrast, elastic, pixelate, JPEG (standard)
and saturate (extra).

Parameters are `make_cifar_c.py`'s (Hendrycks & Dietterich 2019), for 32×32 images. Each
function maps uint8 images (N, 32, 32, 3) to floats (0..255) or uint8.
"""

from __future__ import annotations

import io

import numpy as np

from edgeadapt.data import _ops

__all__ = [
    "brightness",
    "contrast",
    "elastic_transform",
    "jpeg_compression",
    "pixelate",
    "saturate",
]


def brightness(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """V += c in HSV. With H and S fixed, RGB scales with V, so no HSV round trip is needed:
    rgb' = rgb · V'/V, and a black pixel (V = 0, S = 0) becomes grey V'."""
    c = (0.05, 0.1, 0.15, 0.2, 0.3)[severity - 1]
    x = x / 255.0
    v = x.max(axis=-1, keepdims=True)
    v_new = np.minimum(v + c, 1.0)
    out = np.where(v > 0, x * (v_new / np.where(v > 0, v, 1.0)), v_new)
    return np.clip(out, 0, 1) * 255


def saturate(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """S ← clip(S·a + b) in HSV. With H and V fixed, V − rgb scales with S; a grey pixel has
    H = 0 in skimage's convention, so a positive S turns it red: (V, V(1−S'), V(1−S'))."""
    a, b = ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2))[severity - 1]
    x = x / 255.0
    v = x.max(axis=-1, keepdims=True)
    s = np.where(v > 0, (v - x.min(axis=-1, keepdims=True)) / np.where(v > 0, v, 1.0), 0.0)
    s_new = np.clip(s * a + b, 0, 1)
    coloured = v - (s_new / np.where(s > 0, s, 1.0)) * (v - x)
    grey = v * np.array([1.0, 0.0, 0.0]) + (v * (1 - s_new)) * np.array([0.0, 1.0, 1.0])
    return np.clip(np.where(s > 0, coloured, grey), 0, 1) * 255


def contrast(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = (0.75, 0.5, 0.4, 0.3, 0.15)[severity - 1]
    x = x / 255.0
    means = x.mean(axis=(1, 2), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


def elastic_transform(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """A random affine warp (cv2.warpAffine, reflect-101) then a smooth random displacement
    field (map_coordinates, reflect). Both resamplings are bilinear, done in turn as in the
    original; outputs match OpenCV + scipy to within float rounding."""
    from scipy.ndimage import gaussian_filter

    size = x.shape[1]
    alpha, sigma, jitter = (
        (0.0, 0.0, 0.08),
        (0.05, 0.2, 0.07),
        (0.08, 0.06, 0.06),
        (0.1, 0.04, 0.05),
        (0.1, 0.03, 0.03),
    )[severity - 1]
    alpha, sigma, jitter = alpha * size, sigma * size, jitter * size
    n, img = x.shape[0], x / np.float32(255)
    centre, half = size // 2, size // 3
    src = np.array([[centre + half] * 2, [centre + half, centre - half], [centre - half] * 2])
    dst = src + rng.uniform(-jitter, jitter, size=(n, 3, 2))
    # warpAffine inverts M (src -> dst): solve for the map dst -> src directly.
    ones = np.ones((n, 3, 1))
    inv = np.linalg.solve(np.concatenate([dst, ones], axis=2), np.broadcast_to(src, (n, 3, 2)))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    grid = np.stack([xx, yy, np.ones_like(xx)], axis=-1)  # (H, W, 3) of (x, y, 1)
    mapped = np.einsum("hwk,nkj->nhwj", grid, inv)
    img = _ops.bilinear_sample(img, mapped[..., 1], mapped[..., 0], mode="mirror")
    fields = rng.uniform(-1, 1, size=(2, n, size, size))
    dx, dy = (
        gaussian_filter(f, (0, sigma, sigma), mode="reflect", truncate=3) * alpha for f in fields
    )
    out = _ops.bilinear_sample(img, yy + dy, xx + dx, mode="reflect")
    return np.clip(out, 0, 1) * 255


def pixelate(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Box-downscale then box-upscale with Pillow's exact fixed-point arithmetic."""
    c = (0.95, 0.9, 0.85, 0.75, 0.65)[severity - 1]
    size = x.shape[1]
    return _ops.pil_resize_box(_ops.pil_resize_box(x, int(size * c)), size)


def jpeg_compression(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Pillow JPEG round trip at the CIFAR-10-C qualities (Pillow's default 4:2:0 chroma).

    The one per-image loop: JPEG's chroma upsampling crosses block edges, so tiling the batch
    into one big image would leak pixels between neighbours.
    """
    from PIL import Image

    quality = (80, 65, 58, 50, 40)[severity - 1]
    out = np.empty_like(x)
    for i, img in enumerate(x):
        buffer = io.BytesIO()
        Image.fromarray(img).save(buffer, "JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            out[i] = np.asarray(decoded.convert("RGB"))
    return out
