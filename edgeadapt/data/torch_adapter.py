"""Thin torch adapters over the uint8 NHWC arrays the loaders return.

Kept in its own module so that importing `edgeadapt.data` does not import torch.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset

from edgeadapt.errors import ConfigError, InputError
from edgeadapt.normalization import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ArrayDataset", "iterate_batches", "to_tensor"]


def to_tensor(images: np.ndarray, normalize: bool = False) -> torch.Tensor:
    """uint8 (N, H, W, 3) or (H, W, 3) -> float32 (N, 3, H, W) / (3, H, W) in [0, 1].

    With `normalize`, also subtract `IMAGENET_MEAN` and divide by `IMAGENET_STD` per channel
    (what the CIFAR ResNets in shared/models expect).
    """
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[-1] != 3:
        raise InputError(f"expected uint8 (..., H, W, 3) images, got {images.dtype} {images.shape}")
    x = torch.from_numpy(np.ascontiguousarray(images)).movedim(-1, -3).float().div_(255.0)
    if normalize:
        shape = (3, 1, 1)
        x = x.sub_(torch.tensor(IMAGENET_MEAN).view(shape)).div_(
            torch.tensor(IMAGENET_STD).view(shape)
        )
    return x.contiguous()


class ArrayDataset(Dataset):
    """A map-style Dataset over (images, labels) arrays: item i is (float CHW tensor, int label)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, normalize: bool = False):
        if len(images) != len(labels):
            raise InputError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.normalize = images, np.asarray(labels), normalize

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return to_tensor(self.images[index], self.normalize), int(self.labels[index])


def iterate_batches(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    *,
    order: np.ndarray | None = None,
    normalize: bool = False,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (float NCHW, int64 labels) batches in `order` (e.g. `stream_order(len(images))`).

    Converts a whole batch at a time, which is much faster than a DataLoader over single
    items for in-memory arrays, and never copies more than one batch.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if len(images) != len(labels):
        raise InputError(f"{len(images)} images but {len(labels)} labels")
    idx = np.arange(len(images)) if order is None else np.asarray(order)
    stop = len(idx) - len(idx) % batch_size if drop_last else len(idx)
    for start in range(0, stop, batch_size):
        sel = idx[start : start + batch_size]
        x = to_tensor(np.asarray(images[sel]), normalize)
        yield x, torch.from_numpy(np.asarray(labels)[sel].astype(np.int64))
