"""Loaders on tiny data made in tmp_path: CIFAR pickles, image folders and archives (with the
decode cache), CIFAR-10-C release folders, and the typed errors for bad files."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeadapt.data import image_folder
from edgeadapt.data._io import safe_extract
from edgeadapt.data.cifar import CIFAR10_CLASSES, load_cifar10
from edgeadapt.data.cifar10c import load_cifar10c
from edgeadapt.data.errors import DataFormatError, DataNotFoundError, UnsafeFileError
from edgeadapt.data.image_folder import load_image_folder
from edgeadapt.errors import ConfigError

RNG = np.random.default_rng(0)


# ---- CIFAR-10 python pickles ---------------------------------------------------------------


def _batch(n: int, seed: int) -> tuple[np.ndarray, list[int], bytes]:
    rng = np.random.default_rng(seed)
    nhwc = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).tolist()
    planar = nhwc.transpose(0, 3, 1, 2).reshape(n, 3072)  # the release's R, G, B planes
    blob = pickle.dumps({b"batch_label": b"x", b"labels": labels, b"data": planar}, protocol=2)
    return nhwc, labels, blob


@pytest.fixture
def cifar_dir(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(_batch(2, i)[2])
    images, labels, blob = _batch(3, 99)
    (folder / "test_batch").write_bytes(blob)
    return tmp_path, images, np.array(labels)


def test_cifar_pickle_folder_and_archive(cifar_dir) -> None:
    root, images, labels = cifar_dir
    for source in (root, root / "cifar-10-batches-py"):
        x, y = load_cifar10(source, "test")
        assert x.dtype == np.uint8 and y.dtype == np.int64
        assert np.array_equal(x, images) and np.array_equal(y, labels)
    archive = root / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    x, y = load_cifar10(archive, "train")
    assert x.shape == (10, 32, 32, 3) and np.array_equal(x[:2], _batch(2, 1)[0])


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())  # harmless, but any global beyond numpy's must be refused


def test_cifar_pickle_refuses_foreign_globals(cifar_dir) -> None:
    root, _, _ = cifar_dir
    evil = {b"data": _Evil(), b"labels": []}
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(UnsafeFileError, match=r"posix\.getcwd|os\.getcwd|nt\.getcwd"):
        load_cifar10(root, "test")


@pytest.mark.parametrize(
    "payload, match",
    [
        (b"not a pickle at all", "not a readable CIFAR batch"),
        (pickle.dumps({b"labels": [1]}, protocol=2), "b'data' and b'labels'"),
        (pickle.dumps({b"data": np.zeros((1, 10), np.uint8), b"labels": [1]}), "3072"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}), "2 integers"),
        (pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [12]}), "0..9"),
    ],
)
def test_cifar_pickle_bad_batches(cifar_dir, payload: bytes, match: str) -> None:
    root, _, _ = cifar_dir
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(payload)
    with pytest.raises(DataFormatError, match=match):
        load_cifar10(root, "test")


def test_cifar_pickle_missing_and_bad_split(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="download_cifar10"):
        load_cifar10(tmp_path, "test")
    with pytest.raises(ConfigError):
        load_cifar10(tmp_path, "val")


# ---- image folders and archives ------------------------------------------------------------


def _make_tree(root: Path, classes: list[str], per_class: int) -> dict[str, list[np.ndarray]]:
    made: dict[str, list[np.ndarray]] = {}
    for cls in classes:
        (root / "test" / cls).mkdir(parents=True)
        made[cls] = []
        for i in range(per_class):
            img = RNG.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
            Image.fromarray(img).save(root / "test" / cls / f"{i:04d}.png")  # lossless
            made[cls].append(img)
    (root / "test" / classes[0] / "notes.txt").write_text("ignored: not an image")
    return made


def test_image_folder_order_pixels_and_archive(tmp_path: Path) -> None:
    made = _make_tree(tmp_path / "tree", ["cat", "ant", "bee"], 3)
    x, y, classes = load_image_folder(tmp_path / "tree", cache=False)
    assert classes == ["ant", "bee", "cat"]  # alphabetical for non-CIFAR names
    assert np.array_equal(y, np.repeat([0, 1, 2], 3)) and y.dtype == np.int64
    assert np.array_equal(x, np.stack(made["ant"] + made["bee"] + made["cat"]))
    archive = tmp_path / "tree.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "tree", arcname="dataset")  # a leading folder is fine
    xa, ya, ca = load_image_folder(archive, cache=False, limit_per_class=2)
    assert ca == classes and np.array_equal(ya, np.repeat([0, 1, 2], 2))
    assert np.array_equal(xa, np.stack(made["ant"][:2] + made["bee"][:2] + made["cat"][:2]))


def test_image_folder_uses_cifar_class_order(tmp_path: Path) -> None:
    _make_tree(tmp_path, list(CIFAR10_CLASSES), 1)
    _, y, classes = load_image_folder(tmp_path, cache=False)
    assert classes == list(CIFAR10_CLASSES) and np.array_equal(y, np.arange(10))


def test_image_folder_cache_is_reused_and_invalidated(tmp_path: Path, monkeypatch) -> None:
    _make_tree(tmp_path / "tree", ["a", "b"], 2)
    monkeypatch.setenv("EDGEADAPT_CACHE", str(tmp_path / "cache"))
    first = load_image_folder(tmp_path / "tree")
    assert len(list((tmp_path / "cache").glob("tree-test-all-*.npz"))) == 1

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded again although the cache was valid")

    monkeypatch.setattr(image_folder, "_decode", no_decode)
    second = load_image_folder(tmp_path / "tree")
    assert np.array_equal(first[0], second[0]) and first[2] == second[2]
    monkeypatch.undo()
    new = RNG.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    edited = tmp_path / "tree" / "test" / "b" / "0001.png"
    Image.fromarray(new).save(edited)
    later = edited.stat().st_mtime_ns + 5 * 10**9  # robust to coarse file-system clocks
    os.utime(edited, ns=(later, later))
    third = load_image_folder(tmp_path / "tree", cache=tmp_path / "cache")
    assert np.array_equal(third[0][-1], new)  # an edited tree is decoded afresh


def test_image_folder_rebuilds_a_damaged_cache(tmp_path: Path) -> None:
    _make_tree(tmp_path / "tree", ["a"], 1)
    x, _, _ = load_image_folder(tmp_path / "tree", cache=tmp_path / "c")
    (entry,) = (tmp_path / "c").iterdir()
    entry.write_bytes(b"truncated")
    assert np.array_equal(load_image_folder(tmp_path / "tree", cache=tmp_path / "c")[0], x)


def test_image_folder_bad_inputs(tmp_path: Path) -> None:
    _make_tree(tmp_path, ["a"], 1)
    with pytest.raises(DataNotFoundError, match="train/"):
        load_image_folder(tmp_path, "train", cache=False)
    with pytest.raises(DataNotFoundError):
        load_image_folder(tmp_path / "nope", cache=False)
    with pytest.raises(ConfigError):
        load_image_folder(tmp_path, limit_per_class=0, cache=False)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "test" / "a" / "9.png")
    with pytest.raises(DataFormatError, match="16x16"):
        load_image_folder(tmp_path, cache=False)
    (tmp_path / "test" / "a" / "9.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataFormatError, match="cannot decode"):
        load_image_folder(tmp_path, cache=False)
    (tmp_path / "bad.tar.gz").write_bytes(b"not gzip")
    with pytest.raises(DataFormatError, match="tar archive"):
        load_image_folder(tmp_path / "bad.tar.gz", cache=False)


def test_safe_extract_refuses_path_traversal(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    with pytest.raises(UnsafeFileError):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists()


# ---- CIFAR-10-C release folders ------------------------------------------------------------


@pytest.fixture
def c_dir(tmp_path: Path) -> Path:
    n = 4
    stack = np.concatenate([np.full((n, 32, 32, 3), s, np.uint8) for s in range(1, 6)])
    np.save(tmp_path / "fog.npy", stack)
    np.save(tmp_path / "labels.npy", np.tile(np.arange(n, dtype=np.uint8), 5))
    return tmp_path


def test_cifar10c_severities(c_dir: Path) -> None:
    x, y = load_cifar10c(c_dir, "fog", 3)
    assert isinstance(x, np.memmap) and x.shape == (4, 32, 32, 3) and (x == 3).all()
    assert y.dtype == np.int64 and np.array_equal(y, np.arange(4))
    x, y = load_cifar10c(c_dir, "fog", [5, 1], mmap=False)
    assert x.shape == (8, 32, 32, 3) and (x[:4] == 5).all() and (x[4:] == 1).all()


def test_cifar10c_bad_files(c_dir: Path) -> None:
    with pytest.raises(DataNotFoundError, match="download_cifar10c"):
        load_cifar10c(c_dir, "snow", 1)
    with pytest.raises(ConfigError):
        load_cifar10c(c_dir, "fog", 6)
    np.save(c_dir / "a.npy", np.zeros((10, 32, 32, 3), np.float32))
    with pytest.raises(DataFormatError, match="float32"):
        load_cifar10c(c_dir, "a", 1)
    np.save(c_dir / "b.npy", np.zeros((12, 32, 32, 3), np.uint8))
    with pytest.raises(DataFormatError, match="12 rows"):
        load_cifar10c(c_dir, "b", 1)
    np.save(c_dir / "c.npy", np.zeros((10, 32, 32, 3), np.uint8))
    with pytest.raises(DataFormatError, match=r"labels\.npy"):
        load_cifar10c(c_dir, "c", 1)
    np.save(c_dir / "d.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataFormatError, match="readable"):
        load_cifar10c(c_dir, "d", 1)
    (c_dir / "meta.json").write_text("{}")
    with pytest.raises(DataFormatError, match="severities"):
        load_cifar10c(c_dir, "fog", 1)
