"""Noise corruptions of CIFAR-10-C: gaussian, shot, impulse (the standard 15) and speckle (extra).

Parameters are `make_cifar_c.py`'s (Hendrycks & Dietterich 2019). Each function maps uint8
images (N, 32, 32, 3) to floats on the 0..255 scale; `corruptions.corrupt` clips and casts.
"""

from __future__ import annotations

import numpy as np

__all__ = ["gaussian_noise", "impulse_noise", "shot_noise", "speckle_noise"]


def gaussian_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = (0.04, 0.06, 0.08, 0.09, 0.10)[severity - 1]
    x = x / np.float32(255)
    return np.clip(x + c * rng.standard_normal(x.shape, dtype=np.float32), 0, 1) * 255


def shot_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = (500, 250, 100, 75, 50)[severity - 1]
    x = x / 255.0
    return np.clip(rng.poisson(x * c) / c, 0, 1) * 255


def impulse_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    # skimage.util.random_noise(mode="s&p", amount=c): each value (channels independently)
    # is replaced with probability c, by 1 or 0 with equal odds.
    c = (0.01, 0.02, 0.03, 0.05, 0.07)[severity - 1]
    out = x.astype(np.float32)
    flipped = rng.random(x.shape, dtype=np.float32) < c
    salt = rng.random(x.shape, dtype=np.float32) < 0.5
    out[flipped & salt] = 255
    out[flipped & ~salt] = 0
    return out


def speckle_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = (0.06, 0.1, 0.12, 0.16, 0.2)[severity - 1]
    x = x / np.float32(255)
    return np.clip(x + x * (c * rng.standard_normal(x.shape, dtype=np.float32)), 0, 1) * 255
