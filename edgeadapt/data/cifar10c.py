"""CIFAR-10-C in its release format (Hendrycks & Dietterich, ICLR 2019).

A folder holding `<corruption>.npy` (5·N × 32 × 32 × 3 uint8, N = 10000 in the release;
severity s is rows (s−1)·N to s·N) and `labels.npy` (5·N integer labels). Files written by
`write_cifar10c` may add a `meta.json` naming the severities stacked, when not all five.
Arrays are memory-mapped, so picking one severity reads only its rows from disk.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from edgeadapt.data.errors import DataFormatError, DataNotFoundError
from edgeadapt.errors import ConfigError

__all__ = ["SEVERITIES", "available_corruptions", "load_cifar10c", "read_severities"]

SEVERITIES = (1, 2, 3, 4, 5)
META_FILE = "meta.json"


def read_severities(root: str | os.PathLike[str]) -> tuple[int, ...]:
    """The severities stacked in each file of `root`: `meta.json`'s list, else 1..5."""
    meta = Path(root) / META_FILE
    if not meta.is_file():
        return SEVERITIES
    try:
        sev = tuple(int(s) for s in json.loads(meta.read_text())["severities"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DataFormatError(f"{meta}: expected {{'severities': [ints]}} ({exc})") from exc
    if not sev or any(s not in SEVERITIES for s in sev):
        raise DataFormatError(f"{meta}: severities must be a non-empty subset of 1..5")
    return sev


def available_corruptions(root: str | os.PathLike[str]) -> list[str]:
    """Corruption names with a `.npy` file in `root` (sorted), excluding `labels.npy`."""
    return sorted(p.stem for p in Path(root).glob("*.npy") if p.stem != "labels")


def _open(path: Path, mmap: bool) -> np.ndarray:
    if not path.is_file():
        raise DataNotFoundError(
            f"{path} not found; download CIFAR-10-C with edgeadapt.data.download_cifar10c() "
            "or generate it with edgeadapt.data.write_cifar10c()"
        )
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataFormatError(f"{path}: not a readable .npy array ({exc})") from exc


def load_cifar10c(
    root: str | os.PathLike[str],
    corruption: str,
    severity: int | tuple[int, ...] | list[int] = 5,
    *,
    mmap: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one corruption at one or more severities.

    Returns (uint8 images (k·N, 32, 32, 3), int64 labels (k·N,)), severities in the order
    given. With `mmap` and a single severity the images are a read-only memory map
    (no copy); several severities are concatenated into memory.
    """
    root = Path(root)
    sevs = (severity,) if isinstance(severity, int) else tuple(severity)
    stacked = read_severities(root)
    bad = [s for s in sevs if s not in stacked]
    if not sevs or bad:
        raise ConfigError(f"severity {bad or sevs} not in {root} (it holds {list(stacked)})")
    images = _open(root / f"{corruption}.npy", mmap)
    labels = _open(root / "labels.npy", mmap)
    name = f"{root / corruption}.npy"
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3):
        raise DataFormatError(
            f"{name}: expected uint8 of shape (rows, 32, 32, 3), got {images.dtype} {images.shape}"
        )
    rows = images.shape[0]
    if rows == 0 or rows % len(stacked):
        raise DataFormatError(
            f"{name}: {rows} rows do not split into {len(stacked)} equal severity blocks"
        )
    if labels.shape != (rows,) or not np.issubdtype(labels.dtype, np.integer):
        raise DataFormatError(
            f"{root / 'labels.npy'}: expected {rows} integer labels to match {name}, "
            f"got {labels.dtype} {labels.shape}"
        )
    n = rows // len(stacked)
    blocks = [slice(stacked.index(s) * n, (stacked.index(s) + 1) * n) for s in sevs]
    out_labels = np.concatenate([np.asarray(labels[b]) for b in blocks]).astype(np.int64)
    if out_labels.min() < 0:
        raise DataFormatError(f"{root / 'labels.npy'}: labels must be non-negative")
    if len(blocks) == 1:
        return images[blocks[0]], out_labels
    return np.concatenate([images[b] for b in blocks]), out_labels
