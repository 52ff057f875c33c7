"""Stream orders for the continual benchmark.

The image-folder test split is sorted by class, so reading it in file order is a label-shift
stream that breaks batch-norm based adaptation for reasons unrelated to corruptions. The
standard (i.i.d.) protocol shuffles the test split once with a fixed seed and uses that same
order in every domain; a class-sorted stream is a separate, named protocol.
"""

from __future__ import annotations

import numpy as np

from edgeadapt.errors import ConfigError

__all__ = ["DEFAULT_STREAM_SEED", "class_sorted_order", "stream_order"]

DEFAULT_STREAM_SEED = 0


def stream_order(n: int, seed: int = DEFAULT_STREAM_SEED) -> np.ndarray:
    """The i.i.d. protocol order: one fixed permutation of `range(n)` (int64).

    Index every domain's images with the same order (`images[order]`) so domains differ only
    in the corruption. Depends only on (n, seed), via numpy's PCG64 Generator.
    """
    if n < 0:
        raise ConfigError(f"n must be >= 0, got {n}")
    return np.random.default_rng(seed).permutation(n).astype(np.int64)


def class_sorted_order(labels: np.ndarray) -> np.ndarray:
    """The label-shift protocol order: indices sorted by label, stable within a class."""
    return np.argsort(np.asarray(labels), kind="stable").astype(np.int64)
