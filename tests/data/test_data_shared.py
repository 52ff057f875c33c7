"""The shared CIFAR-10 (JPEG) archive, when present: a few images per class, never all 60000."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeadapt._paths import shared_dir
from edgeadapt.data.cifar import CIFAR10_CLASSES
from edgeadapt.data.image_folder import load_image_folder

ARCHIVE = shared_dir() / "data" / "cifar10" / "cifar10-jpeg.tar.gz"


@pytest.mark.skipif(
    not ARCHIVE.is_file(),
    reason=f"shared data absent: {ARCHIVE} not found (set EDGEADAPT_SHARED to its folder)",
)
def test_shared_archive_first_images(tmp_path: Path) -> None:
    x, y, classes = load_image_folder(ARCHIVE, "test", limit_per_class=2, cache=tmp_path)
    assert classes == list(CIFAR10_CLASSES)
    assert x.shape == (20, 32, 32, 3) and x.dtype == np.uint8
    assert np.array_equal(y, np.repeat(np.arange(10), 2))
    assert 20 < x.mean() < 235 and x.std() > 10  # real pictures, not blank decodes
