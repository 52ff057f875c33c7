"""Frame preprocessing: fit to the model's input size, hold small input changes, to tensors.

Frames everywhere in `edgeadapt.video` are uint8 (H, W, 3) RGB numpy arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

from edgeadapt.errors import ConfigError, InputError
from edgeadapt.normalization import IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Fit",
    "InputHysteresis",
    "check_frame",
    "fit_frame",
    "to_model_input",
]

Fit = Literal["crop", "squash"]


def check_frame(frame: object, index: int | None = None) -> np.ndarray:
    """Return `frame` if it is a uint8 (H, W, 3) array, else raise an `InputError`."""
    where = f"frame {index}" if index is not None else "frame"
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        got = frame.dtype if isinstance(frame, np.ndarray) else type(frame).__name__
        raise InputError(f"{where}: expected a uint8 numpy array (H, W, 3), got {got}")
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] < 1 or frame.shape[1] < 1:
        raise InputError(f"{where}: expected shape (H, W, 3) RGB, got {frame.shape}")
    return frame


def fit_frame(frame: np.ndarray, size: int | Sequence[int], fit: Fit = "crop") -> np.ndarray:
    """Resize a uint8 (H, W, 3) frame to `size` (an int for square, or (height, width)).

    `fit="crop"` scales the short side to fit and cuts the centre (keeps the aspect ratio);
    `"squash"` resizes the whole frame, distorting the aspect. Shrinking uses a box filter,
    an area average that also averages sensor noise away, which keeps temporal deltas sparse.
    """
    from PIL import Image

    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if h < 1 or w < 1:
        raise ConfigError(f"size must be positive, got {size}")
    if fit not in ("crop", "squash"):
        raise ConfigError(f"fit must be 'crop' or 'squash', got {fit!r}")
    fh, fw = frame.shape[:2]
    if (fh, fw) == (h, w):
        return frame
    box = (0.0, 0.0, float(fw), float(fh))
    if fit == "crop":  # the largest centred box with the target's aspect ratio
        scale = min(fw / w, fh / h)
        bw, bh = w * scale, h * scale
        box = ((fw - bw) / 2, (fh - bh) / 2, (fw + bw) / 2, (fh + bh) / 2)
    shrink = (box[2] - box[0]) >= w and (box[3] - box[1]) >= h
    resample = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
    out = Image.fromarray(frame).resize((w, h), resample=resample, box=box)
    return np.asarray(out, dtype=np.uint8)


def to_model_input(
    frames: np.ndarray,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Tensor:
    """uint8 (H, W, 3) or (N, H, W, 3) -> float32 (N, 3, H, W), scaled to [0, 1] and normalised.

    Deterministic per pixel, so a pixel that did not change gives exactly the same input
    values, and the delta runtime sees an exact zero there.
    """
    import torch

    if frames.dtype != np.uint8 or frames.ndim not in (3, 4) or frames.shape[-1] != 3:
        raise InputError(f"expected uint8 (..., H, W, 3) frames, got {frames.dtype} {frames.shape}")
    # A copy: decoders hand out read-only arrays, which torch must not alias.
    x = torch.from_numpy(np.array(frames[None] if frames.ndim == 3 else frames, copy=True))
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(tuple(mean), dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(tuple(std), dtype=torch.float32).view(1, -1, 1, 1)
    return x.sub_(m).div_(s).contiguous()


class InputHysteresis:
    """Hold each input pixel until it moves by more than `threshold` levels (any channel).

    Compressed video and sensor noise change most pixels by a level or two every frame; a
    delta network would pay for each. This filter (the threshold of Neil et al.'s delta
    networks, applied to the input) keeps a reference frame and updates only the pixels
    whose change exceeds `threshold` (0-255 scale), so a static scene feeds exact zeros.
    The model then sees the reference, which differs from the true frame by at most
    `threshold` per pixel: an approximation whose cost shows in the agreement with a dense
    model on the unfiltered frames. `threshold=0` passes frames through unchanged.
    """

    def __init__(self, threshold: float = 0.0) -> None:
        if not 0.0 <= threshold < 255.0:
            raise ConfigError(f"threshold must be in [0, 255) levels, got {threshold}")
        self.threshold = float(threshold)
        self._ref: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the reference: the next frame passes through whole."""
        self._ref = None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        if self.threshold == 0.0:
            return frame
        if self._ref is None or self._ref.shape != frame.shape:
            self._ref = frame.copy()
            return self._ref.copy()
        diff = np.abs(frame.astype(np.int16) - self._ref.astype(np.int16)).max(axis=2)
        moved = diff > self.threshold
        self._ref[moved] = frame[moved]
        return self._ref.copy()

    def filter_clip(self, frames: np.ndarray) -> np.ndarray:
        """Filter a (T, H, W, 3) clip from a fresh reference (the state is reset first)."""
        self.reset()
        out = np.stack([self(f) for f in frames]) if len(frames) else frames.copy()
        self.reset()
        return out
