"""Where each domain's images come from: the CIFAR-10-C release files, or corruptions
generated on demand from a clean test split (deterministic, cached in memory)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from edgeadapt.errors import ConfigError

__all__ = ["DomainSource", "GeneratedSource", "ReleaseSource"]


class DomainSource(Protocol):
    def get(self, corruption: str, severity: int) -> tuple[np.ndarray, np.ndarray]:
        """uint8 images (N, H, W, 3) and int64 labels (N,), in the canonical test order."""
        ...


class ReleaseSource:
    """A CIFAR-10-C style folder: `<corruption>.npy` (5·N rows) and `labels.npy`."""

    def __init__(self, root: str | Path) -> None:
        from edgeadapt.data import available_corruptions

        self.root = Path(root)
        if not self.root.is_dir():
            raise ConfigError(
                f"{self.root} is not a folder of CIFAR-10-C files (<corruption>.npy, labels.npy); "
                "write one with benchmarks/cifar10c/make_release.py, or generate the domains "
                "from a clean split instead (clean_source / --source)"
            )
        self.corruptions = available_corruptions(self.root)

    def get(self, corruption: str, severity: int) -> tuple[np.ndarray, np.ndarray]:
        from edgeadapt.data import load_cifar10c

        if corruption not in self.corruptions:
            raise ConfigError(f"{self.root} has no {corruption!r}; it holds {self.corruptions}")
        return load_cifar10c(self.root, corruption, severity)


class GeneratedSource:
    """Corrupts a clean split with `edgeadapt.data.corrupt`, once per (corruption, severity)."""

    def __init__(
        self, images: np.ndarray, labels: np.ndarray, *, seed: int = 0, keep: int = 20
    ) -> None:
        self.images, self.labels, self.seed, self.keep = images, labels, seed, keep
        self._cache: dict[tuple[str, int], np.ndarray] = {}

    def get(self, corruption: str, severity: int) -> tuple[np.ndarray, np.ndarray]:
        from edgeadapt.data import corrupt

        key = (corruption, severity)
        if key not in self._cache:
            if len(self._cache) >= self.keep:  # bound memory: drop the oldest domain
                self._cache.pop(next(iter(self._cache)))
            if corruption == "none":
                self._cache[key] = self.images
            else:
                self._cache[key] = corrupt(self.images, corruption, severity, seed=self.seed)
        return self._cache[key], self.labels
