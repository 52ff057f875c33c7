"""CIFAR-10 in its official python-pickle release (`cifar-10-batches-py/`).

The release is a set of Python-2 pickles. Unpickling runs code named by the file, so a
tampered file could execute anything: never load pickles from a source you do not trust.
This loader narrows the risk with a restricted unpickler that only resolves the handful of
globals the release needs (numpy array reconstruction and `_codecs.encode`) and refuses any
other global with `UnsafeFileError`. Prefer the checksummed download in `download.py`.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeadapt.data.errors import DataFormatError, DataNotFoundError, UnsafeFileError
from edgeadapt.errors import ConfigError

__all__ = ["CIFAR10_CLASSES", "load_cifar10", "read_cifar_batch"]

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
_FOLDER = "cifar-10-batches-py"

# (module, name) pairs a CIFAR batch pickle may name; anything else is refused.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise UnsafeFileError(
                f"pickle asks for global {module}.{name}, which a CIFAR batch never needs; "
                "the file is not a genuine CIFAR-10 batch, refusing to load it"
            )
        if module == "numpy.core.multiarray":  # numpy 2 moved it; avoid the deprecation shim
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def read_cifar_batch(data: bytes, name: str = "<batch>") -> tuple[np.ndarray, np.ndarray]:
    """Parse one batch pickle into (uint8 NHWC images, int64 labels), validating everything."""
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except UnsafeFileError:
        raise
    except Exception as exc:  # any unpickling failure means the file is not a batch
        raise DataFormatError(f"{name}: not a readable CIFAR batch pickle ({exc})") from exc
    if not isinstance(obj, dict) or b"data" not in obj or b"labels" not in obj:
        raise DataFormatError(f"{name}: expected a dict with b'data' and b'labels' keys")
    raw, labels = obj[b"data"], obj[b"labels"]
    if not isinstance(raw, np.ndarray) or raw.dtype != np.uint8 or raw.ndim != 2:
        raise DataFormatError(f"{name}: b'data' must be a 2-D uint8 array (N, 3072)")
    if raw.shape[1] != 3 * 32 * 32:
        raise DataFormatError(f"{name}: b'data' rows have {raw.shape[1]} values, expected 3072")
    labels = np.asarray(labels)
    if labels.shape != (raw.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise DataFormatError(f"{name}: b'labels' must be {raw.shape[0]} integers")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataFormatError(f"{name}: labels must lie in 0..9")
    # Rows are channel-planar (R plane, G plane, B plane); make them NHWC.
    images = raw.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int64)


def _read_members(path: Path, wanted: list[str]) -> dict[str, bytes]:
    # One pass in archive order: random access into a .tar.gz would re-decompress each time.
    found: dict[str, bytes] = {}
    with tarfile.open(path) as tar:
        for member in tar:
            base = member.name.rsplit("/", 1)[-1]
            if member.isfile() and base in wanted:
                handle = tar.extractfile(member)
                if handle is not None:
                    found[base] = handle.read()
    return found


def load_cifar10(
    source: str | os.PathLike[str], split: str = "test"
) -> tuple[np.ndarray, np.ndarray]:
    """Load CIFAR-10 from the official python release: a folder or `cifar-10-python.tar.gz`.

    `source` may be `cifar-10-batches-py/`, its parent, or the archive (read in memory, never
    extracted). Returns uint8 images (N, 32, 32, 3) and int64 labels (N,), in release order.
    See the module docstring on why pickles must come from a trusted source.
    """
    if split not in _BATCHES:
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    wanted, path = _BATCHES[split], Path(source)
    if path.is_file():
        try:
            blobs = _read_members(path, wanted)
        except tarfile.TarError as exc:
            raise DataFormatError(f"{path}: not a readable tar archive ({exc})") from exc
    else:
        folder = path / _FOLDER if (path / _FOLDER).is_dir() else path
        blobs = {n: (folder / n).read_bytes() for n in wanted if (folder / n).is_file()}
    missing = [n for n in wanted if n not in blobs]
    if missing:
        raise DataNotFoundError(
            f"{path}: missing CIFAR-10 batch file(s) {missing}; "
            "download them with edgeadapt.data.download_cifar10()"
        )
    parts = [read_cifar_batch(blobs[n], f"{path}:{n}") for n in wanted]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
