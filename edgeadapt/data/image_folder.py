"""Image-folder trees (`<split>/<class>/<file>.jpg|png`), as folders or `.tar.gz` archives.

Decoding tens of thousands of small JPEGs takes a while, so each (source, split, limit) is
decoded once into an `.npz` in the cache folder (`$EDGEADAPT_CACHE`, default
`~/.cache/edgeadapt`) and later loads read that. The cache key includes the source's size and
modification times, so an edited tree is decoded afresh.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np

from edgeadapt.data._io import atomic_path, cache_dir
from edgeadapt.data.cifar import CIFAR10_CLASSES
from edgeadapt.data.errors import DataFormatError, DataNotFoundError
from edgeadapt.errors import ConfigError

__all__ = ["IMAGE_SUFFIXES", "load_image_folder"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_PROGRESS_MIN = 500  # below this many files a progress bar is just noise


def _split_parts(name: str, split: str) -> tuple[str, str] | None:
    # Accept `split/class/file` with any leading folders (e.g. `cifar10/test/cat/0001.jpg`).
    parts = name.replace("\\", "/").split("/")
    if len(parts) < 3 or parts[-3] != split or not parts[-1].lower().endswith(IMAGE_SUFFIXES):
        return None
    return parts[-2], parts[-1]


def _scan_folder(root: Path, split: str) -> dict[tuple[str, str], Path]:
    base = root / split
    if not base.is_dir():
        raise DataNotFoundError(f"{root}: no '{split}/' folder; expected <split>/<class>/<file>")
    return {
        (cls.name, f.name): f
        for cls in base.iterdir()
        if cls.is_dir()
        for f in cls.iterdir()
        if f.suffix.lower() in IMAGE_SUFFIXES
    }


def _scan_archive(path: Path, split: str) -> dict[tuple[str, str], bytes]:
    # One sequential pass: random access into a gzip stream would re-decompress every time.
    found: dict[tuple[str, str], bytes] = {}
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                key = _split_parts(member.name, split) if member.isfile() else None
                handle = tar.extractfile(member) if key else None
                if key and handle is not None:
                    found[key] = handle.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataFormatError(f"{path}: not a readable tar archive ({exc})") from exc
    return found


def _class_order(names: set[str]) -> list[str]:
    # CIFAR-10's canonical label order when the folder names are exactly its classes.
    return list(CIFAR10_CLASSES) if names == set(CIFAR10_CLASSES) else sorted(names)


def _fingerprint(path: Path) -> str:
    digest = hashlib.sha256(str(path.resolve()).encode())
    if path.is_file():
        stat = path.stat()
        digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    else:
        for f in sorted(path.rglob("*")):
            stat = f.stat()
            digest.update(f"{f.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


def _decode(blob: bytes | Path, name: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(blob if isinstance(blob, Path) else io.BytesIO(blob)) as img:
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataFormatError(f"{name}: cannot decode image ({exc})") from exc


def _decode_all(
    source: Path, split: str, limit_per_class: int | None, progress: bool
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from tqdm.auto import tqdm

    entries = _scan_archive(source, split) if source.is_file() else _scan_folder(source, split)
    if not entries:
        raise DataNotFoundError(f"{source}: no images under '{split}/<class>/'")
    classes = _class_order({cls for cls, _ in entries})
    chosen = []
    for label, cls in enumerate(classes):
        names = sorted(name for c, name in entries if c == cls)[:limit_per_class]
        chosen += [(label, cls, name) for name in names]
    images, labels = [], np.array([c[0] for c in chosen], dtype=np.int64)
    bar = tqdm(
        chosen,
        desc=f"decoding {source.name}:{split}",
        unit="img",
        disable=not progress or len(chosen) < _PROGRESS_MIN,
    )
    for _, cls, name in bar:
        img = _decode(entries[(cls, name)], f"{source}:{split}/{cls}/{name}")
        if images and img.shape != images[0].shape:
            raise DataFormatError(
                f"{source}:{split}/{cls}/{name} is {img.shape[1]}x{img.shape[0]}, but the first "
                f"image is {images[0].shape[1]}x{images[0].shape[0]}; resize the tree to one size"
            )
        images.append(img)
    return np.stack(images), labels, classes


def load_image_folder(
    source: str | os.PathLike[str],
    split: str = "test",
    *,
    limit_per_class: int | None = None,
    cache: str | os.PathLike[str] | bool | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Load `<split>/<class>/<file>` images from a folder or a tar(.gz) archive.

    Returns (uint8 images (N, H, W, 3), int64 labels (N,), class names). Order is
    class-sorted (CIFAR-10's canonical class order when the names match, else alphabetical),
    files sorted by name: this is a label-shift stream, so shuffle it with `stream_order` for
    the i.i.d. protocol. `limit_per_class` keeps the first files of each class (quick looks,
    tests). `cache`: a folder for the decoded `.npz` (default `cache_dir()`), or False to skip.
    Archive members are read in memory and never written to disk, so paths cannot escape.
    """
    source = Path(source)
    if not source.exists():
        raise DataNotFoundError(f"{source} does not exist; expected a folder or a .tar.gz")
    if limit_per_class is not None and limit_per_class < 1:
        raise ConfigError(f"limit_per_class must be >= 1 or None, got {limit_per_class}")
    if cache is False:
        return _decode_all(source, split, limit_per_class, progress)
    folder = Path(cache) if isinstance(cache, (str, os.PathLike)) else cache_dir()
    stem = source.name.split(".")[0]
    key = f"{stem}-{split}-{limit_per_class or 'all'}-{_fingerprint(source)}.npz"
    cached = folder / key
    if cached.is_file():
        try:
            with np.load(cached, allow_pickle=False) as z:
                return z["images"], z["labels"].astype(np.int64), [str(c) for c in z["classes"]]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # a damaged cache entry is rebuilt below, not trusted
    images, labels, classes = _decode_all(source, split, limit_per_class, progress)
    with atomic_path(cached) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, images=images, labels=labels, classes=np.array(classes))
    return images, labels, classes
