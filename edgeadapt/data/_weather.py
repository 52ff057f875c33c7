"""Weather corruptions of CIFAR-10-C: snow, frost, fog.

Parameters are `make_cifar_c.py`'s (Hendrycks & Dietterich 2019), for 32×32 images. Each
function maps uint8 images (N, 32, 32, 3) to floats on the 0..255 scale.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import numpy as np

from edgeadapt.data import _ops
from edgeadapt.data.errors import DataNotFoundError

__all__ = ["FROST_ENV", "fog", "frost", "frost_textures", "plasma_fractal", "snow"]

FROST_ENV = "EDGEADAPT_FROST_DIR"
# The original draws randint(5), so the sixth texture (frost6.jpg) is never used.
_FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")


def plasma_fractal(n: int, rng: np.random.Generator, mapsize: int = 32, decay: float = 3.0):
    """n diamond-square height maps (n, mapsize, mapsize) in [0, 1], computed together."""
    maps = np.zeros((n, mapsize, mapsize))
    step, wibble = mapsize, 100.0

    def wibbled_mean(total: np.ndarray) -> np.ndarray:
        return total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape)

    while step >= 2:
        half = step // 2
        corners = maps[:, 0:mapsize:step, 0:mapsize:step]
        square = corners + np.roll(corners, -1, axis=1)
        square += np.roll(square, -1, axis=2)
        maps[:, half:mapsize:step, half:mapsize:step] = wibbled_mean(square)
        centres = maps[:, half:mapsize:step, half:mapsize:step]
        corners = maps[:, 0:mapsize:step, 0:mapsize:step]
        left = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=2)
        maps[:, 0:mapsize:step, half:mapsize:step] = wibbled_mean(left)
        top = centres + np.roll(centres, 1, axis=2) + corners + np.roll(corners, -1, axis=1)
        maps[:, half:mapsize:step, 0:mapsize:step] = wibbled_mean(top)
        step //= 2
        wibble /= decay
    maps -= maps.min(axis=(1, 2), keepdims=True)
    return maps / maps.max(axis=(1, 2), keepdims=True)


def fog(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    strength, decay = ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75))[severity - 1]
    x = x / 255.0
    max_val = x.max(axis=(1, 2, 3), keepdims=True)
    x = x + strength * plasma_fractal(len(x), rng, decay=decay)[..., None]
    return np.clip(x * max_val / (max_val + strength), 0, 1) * 255


def _frost_dir() -> Path:
    env = os.environ.get(FROST_ENV)
    if env:
        return Path(env)
    # Found without importing imagecorruptions (its import needs opencv and scikit-image).
    spec = importlib.util.find_spec("imagecorruptions")
    if spec is None or not spec.submodule_search_locations:
        raise DataNotFoundError(
            "frost needs the frost texture images of the 'imagecorruptions' package: "
            "`pip install --no-deps imagecorruptions`, or set "
            f"${FROST_ENV} to a folder holding {', '.join(_FROST_FILES)}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "frost"


@functools.lru_cache(maxsize=4)
def _load_textures(folder: Path) -> tuple[np.ndarray, ...]:
    from PIL import Image

    textures = []
    for name in _FROST_FILES:
        if not (folder / name).is_file():
            raise DataNotFoundError(f"frost texture {folder / name} is missing")
        with Image.open(folder / name) as img:
            tex = np.asarray(img.convert("RGB"))  # cv2.imread also drops alpha
        # cv2.resize(fx=fy=0.2, INTER_LINEAR) samples source pixel 5·i + 2 exactly: at a
        # scale of exactly 1/5 the bilinear weights collapse onto a single pixel.
        rows = np.minimum(5 * np.arange(round(tex.shape[0] * 0.2)) + 2, tex.shape[0] - 1)
        cols = np.minimum(5 * np.arange(round(tex.shape[1] * 0.2)) + 2, tex.shape[1] - 1)
        textures.append(np.ascontiguousarray(tex[rows][:, cols]))
    return tuple(textures)


def frost_textures() -> tuple[np.ndarray, ...]:
    """The five frost textures (uint8 RGB) at the 0.2 scale the CIFAR version crops from."""
    return _load_textures(_frost_dir())


def frost(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    a, b = ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))[severity - 1]
    textures = frost_textures()
    n, size = x.shape[0], x.shape[1]
    which = rng.integers(len(textures), size=n)
    u = rng.random((n, 2))
    crops = np.empty_like(x)
    span = np.arange(size)
    for k, tex in enumerate(textures):  # five textures, not one loop step per image
        sel = np.flatnonzero(which == k)
        top = (u[sel, 0] * (tex.shape[0] - size)).astype(np.int64)
        left = (u[sel, 1] * (tex.shape[1] - size)).astype(np.int64)
        crops[sel] = tex[(top[:, None] + span)[:, :, None], (left[:, None] + span)[:, None, :]]
    return np.clip(a * x.astype(np.float64) + b * crops, 0, 255)


def snow(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Snow flakes: thresholded zoomed noise, motion-blurred, added twice (once rotated)."""
    loc, scale, zoom, thresh, radius, sigma, keep = (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    )[severity - 1]
    n, size = x.shape[0], x.shape[1]
    x = x / np.float32(255)
    layer = rng.normal(loc, scale, size=(n, size, size))
    a = _ops.clipped_zoom_matrix(size, zoom)
    layer = a @ layer @ a.T
    layer[layer < thresh] = 0
    # The original round-trips the layer through an 8-bit PNG before and after ImageMagick.
    layer = (np.clip(layer, 0, 1) * 255).astype(np.uint8).astype(np.float32)[..., None]
    angles = rng.uniform(-135, -45, size=n)
    layer = np.floor(_ops.motion_blur(layer, radius, sigma, angles)) / 255
    gray = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # cv2 RGB2GRAY
    x = keep * x + (1 - keep) * np.maximum(x, gray[..., None] * 1.5 + 0.5)
    return np.clip(x + layer + layer[:, ::-1, ::-1], 0, 1) * 255
