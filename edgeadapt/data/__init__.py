"""Data for the continual CIFAR-10-C benchmark: loaders, corruptions, stream orders.

Layers, bottom up: `_io` (cache folder, atomic writes, safe extraction) → loaders
(`cifar` for the python-pickle release, `image_folder` for JPEG/PNG trees and their
archives, `cifar10c` for the release `.npy` files) and `download` → `corruptions` (the 19
CIFAR-10-C corruptions, vectorised) → `writer` (release-format files, sample grids).
`stream` holds the protocol orders; `torch_adapter` turns arrays into tensors.

Everything returns uint8 NHWC numpy arrays and int64 labels. Names are imported lazily,
so `import edgeadapt.data` loads neither torch, scipy, Pillow nor matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> submodule that defines it
_LAZY = {
    "CIFAR10_CLASSES": "cifar",
    "load_cifar10": "cifar",
    "load_image_folder": "image_folder",
    "SEVERITIES": "cifar10c",
    "available_corruptions": "cifar10c",
    "load_cifar10c": "cifar10c",
    "CIFAR10_MD5": "download",
    "CIFAR10_URL": "download",
    "CIFAR10C_MD5": "download",
    "CIFAR10C_URL": "download",
    "download_cifar10": "download",
    "download_cifar10c": "download",
    "download_url": "download",
    "ALL_CORRUPTIONS": "corruptions",
    "CORRUPTIONS": "corruptions",
    "EXTRA_CORRUPTIONS": "corruptions",
    "corrupt": "corruptions",
    "list_corruptions": "corruptions",
    "save_corruption_grid": "writer",
    "write_cifar10c": "writer",
    "DEFAULT_DELTA": "stream",
    "DEFAULT_STREAM_SEED": "stream",
    "STREAMS": "stream",
    "check_stream": "stream",
    "class_sorted_order": "stream",
    "correlated_order": "stream",
    "majority_share": "stream",
    "mean_run_length": "stream",
    "segment_orders": "stream",
    "stream_order": "stream",
    "cache_dir": "_io",
    "safe_extract": "_io",
    "ArrayDataset": "torch_adapter",
    "iterate_batches": "torch_adapter",
    "to_tensor": "torch_adapter",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edgeadapt.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"edgeadapt.data.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
