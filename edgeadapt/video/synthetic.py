"""Short synthetic videos from single images, for labelled checks of streaming models.

A still image becomes a clip the way a camera would film it: the image is upsampled, and
each frame is a sub-pixel crop of it that pans slowly and zooms, then the light drifts and
sensor noise is added. Every frame keeps the image's label, so per-frame accuracy of a
streaming (delta) model can be measured on labelled data such as the CIFAR-10 test split.
Deterministic for a given seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeadapt.errors import ConfigError, InputError

__all__ = ["ClipStyle", "synthesize_clip", "synthesize_clips"]


@dataclass(frozen=True, kw_only=True)
class ClipStyle:
    """How a still image is filmed; amounts are totals over the whole clip."""

    length: int = 16  # frames per clip
    pan: float = 2.0  # camera travel, in output pixels, in a random direction per clip
    zoom: float = 0.08  # relative zoom-in from first to last frame
    light: float = 0.08  # relative brightness drift from first to last frame (random sign)
    noise: float = 2.0  # std of Gaussian sensor noise, in 0-255 levels, fresh every frame
    upsample: int = 4  # the still is upsampled by this factor before cropping (sub-pixel pan)

    def __post_init__(self) -> None:
        if self.length < 1 or self.upsample < 1:
            raise ConfigError(f"need length >= 1 and upsample >= 1; got {self}")
        if min(self.pan, self.zoom, self.light, self.noise) < 0 or self.zoom >= 1:
            raise ConfigError(f"pan, zoom, light, noise must be >= 0 (zoom < 1); got {self}")


def synthesize_clip(
    image: np.ndarray, style: ClipStyle | None = None, *, seed: int = 0
) -> np.ndarray:
    """One uint8 (T, H, W, 3) clip of a uint8 (H, W, 3) image; see the module docstring.

    The first frame already shows a slightly cropped view (a margin of pan/2 pixels on each
    side), so the pan never leaves the image.
    """
    from PIL import Image

    style = style or ClipStyle()
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    up = style.upsample
    big = Image.fromarray(image).resize((w * up, h * up), Image.Resampling.BICUBIC)
    angle = rng.uniform(0, 2 * np.pi)
    direction = np.array([np.cos(angle), np.sin(angle)])
    light_sign = rng.choice((-1.0, 1.0))
    margin = style.pan / 2  # output pixels kept free on each side for the pan
    view_w, view_h = (w - 2 * margin) * up, (h - 2 * margin) * up
    if view_w <= 0 or view_h <= 0:
        raise ConfigError(f"pan {style.pan} px does not fit a {w}x{h} image")
    frames = np.empty((style.length, h, w, 3), dtype=np.uint8)
    for t in range(style.length):
        p = t / (style.length - 1) if style.length > 1 else 0.0
        cx, cy = (np.array([w, h]) / 2 + direction * style.pan * (p - 0.5)) * up
        scale = 1.0 - style.zoom * p  # a smaller view is a zoom-in
        bw, bh = view_w * scale, view_h * scale
        box = (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2)
        # BOX over the upsampled image is an area average: a sub-pixel camera shift.
        view = big.resize((w, h), Image.Resampling.BOX, box=box)
        frame = np.asarray(view, dtype=np.float32) * (1.0 + light_sign * style.light * p)
        if style.noise:
            frame = frame + rng.normal(0.0, style.noise, frame.shape).astype(np.float32)
        frames[t] = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
    return frames


def synthesize_clips(
    images: np.ndarray, style: ClipStyle | None = None, *, seed: int = 0
) -> np.ndarray:
    """uint8 (N, T, H, W, 3) clips of uint8 (N, H, W, 3) images; clip i uses seed + i."""
    if images.ndim != 4:
        raise InputError(f"expected uint8 (N, H, W, 3) images, got shape {images.shape}")
    style = style or ClipStyle()
    if len(images) == 0:
        return np.empty((0, style.length, *images.shape[1:]), dtype=np.uint8)
    return np.stack([synthesize_clip(img, style, seed=seed + i) for i, img in enumerate(images)])
