"""The CIFAR-10-C corruptions: invariants over every corruption, and exactness of the helpers
that re-implement library calls (checked against the library where it is installed here)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgeadapt.data import _ops, _weather, corruptions
from edgeadapt.data.corruptions import ALL_CORRUPTIONS, CORRUPTIONS, EXTRA_CORRUPTIONS, corrupt
from edgeadapt.errors import ConfigError, InputError, UnknownNameError

# Corruptions whose severity 1 is not milder than 5 by pixel distance: elastic's severity 1
# has the largest affine jitter; saturate goes from desaturating (1) to oversaturating (5).
NON_MONOTONE = {"elastic_transform", "saturate"}


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Eight photo-like 32×32 images: smooth colour gradients plus a little texture."""
    from scipy.ndimage import zoom

    rng = np.random.default_rng(0)
    coarse = rng.uniform(30, 226, size=(8, 8, 8, 3))
    smooth = zoom(coarse, (1, 4, 4, 1), order=1)
    return np.clip(smooth + rng.normal(0, 6, smooth.shape), 0, 255).astype(np.uint8)


@pytest.fixture(autouse=True)
def frost_textures(tmp_path_factory, monkeypatch) -> None:
    """Synthetic frost textures, so the suite runs without the imagecorruptions package."""
    folder = tmp_path_factory.getbasetemp() / "frost"
    if not folder.is_dir():
        folder.mkdir()
        rng = np.random.default_rng(1)
        for name in _weather._FROST_FILES:
            tex = rng.integers(0, 256, size=(200, 240, 3), dtype=np.uint8)
            Image.fromarray(tex).save(folder / name)
    monkeypatch.setenv(_weather.FROST_ENV, str(folder))


def test_lists() -> None:
    assert len(CORRUPTIONS) == 15 and len(EXTRA_CORRUPTIONS) == 4
    assert CORRUPTIONS[0] == "gaussian_noise" and CORRUPTIONS[-1] == "jpeg_compression"
    assert corruptions.list_corruptions(include_extra=True) == list(ALL_CORRUPTIONS)


@pytest.mark.parametrize("severity", [1, 5])
@pytest.mark.parametrize("name", ALL_CORRUPTIONS)
def test_invariants(images: np.ndarray, name: str, severity: int) -> None:
    out = corrupt(images, name, severity, seed=3)
    assert out.dtype == np.uint8 and out.shape == images.shape
    assert np.array_equal(out, corrupt(images, name, severity, seed=3)), "not deterministic"
    assert not np.array_equal(out, images), "left the images unchanged"
    assert np.array_equal(images, images.copy())  # input untouched


@pytest.mark.parametrize("name", sorted(set(ALL_CORRUPTIONS) - NON_MONOTONE))
def test_higher_severity_changes_more(images: np.ndarray, name: str) -> None:
    def change(s: int) -> float:
        return float(np.abs(corrupt(images, name, s).astype(int) - images).mean())

    assert change(1) < change(5)


def test_seed_matters_for_random_corruptions(images: np.ndarray) -> None:
    a, b = corrupt(images, "gaussian_noise", 3, seed=0), corrupt(images, "gaussian_noise", 3, 1)
    assert not np.array_equal(a, b)


def test_chunks_draw_independent_streams(images: np.ndarray, monkeypatch) -> None:
    monkeypatch.setattr(corruptions, "CHUNK", 4)
    out = corrupt(images, "shot_noise", 2)
    assert out.shape == images.shape and np.array_equal(out, corrupt(images, "shot_noise", 2))


def test_bad_arguments(images: np.ndarray) -> None:
    with pytest.raises(UnknownNameError, match=r"available: \[.gaussian_noise"):
        corrupt(images, "rain", 1)
    with pytest.raises(ConfigError):
        corrupt(images, "fog", 6)
    with pytest.raises(InputError, match="x\\[None\\]"):
        corrupt(images[0], "fog", 1)
    with pytest.raises(InputError):
        corrupt(images.astype(np.float32), "fog", 1)


def test_pixelate_matches_pillow_bit_for_bit(images: np.ndarray) -> None:
    for size in (30, 28, 27, 24, 20):
        ref = [
            np.asarray(
                Image.fromarray(im).resize((size,) * 2, Image.BOX).resize((32, 32), Image.BOX)
            )
            for im in images
        ]
        mine = _ops.pil_resize_box(_ops.pil_resize_box(images, size), 32)
        assert np.array_equal(mine, np.stack(ref))


def test_clipped_zoom_matrix_matches_scipy_zoom() -> None:
    from scipy.ndimage import zoom

    img = np.random.default_rng(0).random((32, 32))
    for factor in (1.0, 1.07, 1.19, 1.25, 1.75, 2.25):
        crop = int(np.ceil(32 / factor))
        top = (32 - crop) // 2
        big = zoom(img[top : top + crop, top : top + crop], factor, order=1)
        trim = (big.shape[0] - 32) // 2
        a = _ops.clipped_zoom_matrix(32, factor)
        np.testing.assert_allclose(
            a @ img @ a.T, big[trim : trim + 32, trim : trim + 32], atol=1e-9
        )


def test_bilinear_sample_matches_map_coordinates() -> None:
    from scipy.ndimage import map_coordinates

    rng = np.random.default_rng(0)
    img = rng.random((2, 32, 32, 1))
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float64)
    ys, xs = yy + rng.uniform(-3, 3, (2, 32, 32)), xx + rng.uniform(-3, 3, (2, 32, 32))
    mine = _ops.bilinear_sample(img, ys, xs, mode="reflect")[..., 0]
    for i in range(2):
        ref = map_coordinates(img[i, ..., 0], [ys[i], xs[i]], order=1, mode="reflect")
        np.testing.assert_allclose(mine[i], ref, atol=1e-12)


def test_frost_uses_the_texture_folder(images: np.ndarray, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(_weather.FROST_ENV, str(tmp_path))  # empty folder
    from edgeadapt.data.errors import DataNotFoundError

    with pytest.raises(DataNotFoundError, match=r"frost1\.png"):
        corrupt(images, "frost", 1)


def test_frost_with_the_original_textures(images: np.ndarray, monkeypatch) -> None:
    import importlib.util

    if importlib.util.find_spec("imagecorruptions") is None:
        pytest.skip("imagecorruptions not installed (pip install --no-deps imagecorruptions)")
    monkeypatch.delenv(_weather.FROST_ENV)
    assert corrupt(images, "frost", 5).shape == images.shape
