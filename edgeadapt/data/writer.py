"""Write corrupted test sets in the CIFAR-10-C release format, and sample grids to look at."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgeadapt.data._io import atomic_path
from edgeadapt.data.cifar10c import META_FILE, SEVERITIES
from edgeadapt.data.corruptions import CORRUPTIONS, corrupt
from edgeadapt.errors import ConfigError, InputError

__all__ = ["save_corruption_grid", "write_cifar10c"]


def write_cifar10c(
    out_dir: str | os.PathLike[str],
    images: np.ndarray,
    labels: np.ndarray,
    corruptions: Sequence[str] = CORRUPTIONS,
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
    *,
    progress: bool = True,
) -> Path:
    """Corrupt `images` and write `<corruption>.npy` + `labels.npy` into `out_dir`.

    Each corruption file stacks the severities in order (len(severities)·N rows, severity
    blocks of N), exactly the release layout that `load_cifar10c` reads; `labels.npy` holds
    the labels repeated per block (uint8, as released). Other severity sets than 1..5 are
    recorded in `meta.json`. Every file is written to a temporary name and renamed, so an
    interrupted run never leaves a truncated `.npy` behind. Returns `out_dir`.
    """
    from tqdm.auto import tqdm

    images, labels = np.asarray(images), np.asarray(labels)
    if len(images) != len(labels) or len(images) == 0:
        raise InputError(f"need as many labels as images (>0), got {len(images)}, {len(labels)}")
    sevs = tuple(int(s) for s in severities)
    if not sevs or len(set(sevs)) != len(sevs) or any(s not in SEVERITIES for s in sevs):
        raise ConfigError(f"severities must be distinct values in 1..5, got {severities}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = len(images)
    steps = [(name, s) for name in corruptions for s in sevs]
    bar = tqdm(total=len(steps), desc="CIFAR-10-C", unit="set", disable=not progress)
    with bar:
        for name in corruptions:
            with atomic_path(out / f"{name}.npy") as tmp:
                # Written through a memory map, so the 5·N stack is never all in RAM.
                stack = np.lib.format.open_memmap(
                    tmp, mode="w+", dtype=np.uint8, shape=(len(sevs) * n, *images.shape[1:])
                )
                for k, s in enumerate(sevs):
                    bar.set_postfix_str(f"{name} s{s}")
                    stack[k * n : (k + 1) * n] = corrupt(images, name, s, seed)
                    bar.update(1)
                stack.flush()
                del stack
    small = labels.min() >= 0 and labels.max() <= 255  # uint8 like the release, when it fits
    with atomic_path(out / "labels.npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.tile(labels.astype(np.uint8 if small else np.int64), len(sevs)))
    meta = out / META_FILE
    if sevs != SEVERITIES:
        with atomic_path(meta) as tmp:
            tmp.write_text(json.dumps({"severities": list(sevs)}))
    else:
        meta.unlink(missing_ok=True)
    return out


def save_corruption_grid(
    images: np.ndarray,
    path: str | os.PathLike[str],
    corruptions: Sequence[str] = CORRUPTIONS,
    severities: Sequence[int] = SEVERITIES,
    *,
    index: int = 0,
    seed: int = 0,
    dpi: int = 100,
) -> Path:
    """Save a PNG grid: one row per corruption, the clean image then each severity.

    Shows `images[index]` (uint8 (N, 32, 32, 3)); needs matplotlib (`pip install
    matplotlib`), imported only here. Uses the object-oriented Agg API, so it never touches
    pyplot's global state or opens a window.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not 0 <= index < len(images):
        raise ConfigError(f"index {index} out of range for {len(images)} images")
    sample = np.asarray(images)[index : index + 1]
    cols = len(severities) + 1
    fig = Figure(figsize=(1.1 * cols + 1.4, 1.1 * len(corruptions) + 0.3))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(corruptions), cols, squeeze=False)
    for r, name in enumerate(corruptions):
        row = [sample[0]] + [corrupt(sample, name, s, seed)[0] for s in severities]
        for c, img in enumerate(row):
            ax = axes[r, c]
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("clean" if c == 0 else f"s{severities[c - 1]}", fontsize=8)
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path
