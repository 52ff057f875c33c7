"""Stream orders, the torch adapter, and writing/reading the release format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeadapt.data.cifar10c import load_cifar10c
from edgeadapt.data.corruptions import corrupt
from edgeadapt.data.stream import class_sorted_order, stream_order
from edgeadapt.data.writer import save_corruption_grid, write_cifar10c
from edgeadapt.errors import ConfigError, InputError

IMAGES = np.random.default_rng(0).integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
LABELS = np.array([0, 0, 1, 1, 2, 2])


def test_stream_order_is_a_fixed_permutation() -> None:
    order = stream_order(100, seed=7)
    assert order.dtype == np.int64 and sorted(order) == list(range(100))
    assert np.array_equal(order, stream_order(100, seed=7))
    assert not np.array_equal(order, stream_order(100, seed=8))
    assert not np.array_equal(order, np.arange(100))  # actually shuffled
    with pytest.raises(ConfigError):
        stream_order(-1)


def test_class_sorted_order_is_stable() -> None:
    assert list(class_sorted_order(np.array([2, 0, 1, 0]))) == [1, 3, 2, 0]


def test_to_tensor_and_normalisation() -> None:
    torch = pytest.importorskip("torch")
    from edgeadapt.data.torch_adapter import IMAGENET_MEAN, IMAGENET_STD, to_tensor

    x = to_tensor(IMAGES)
    assert x.shape == (6, 3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(x[0, 1], torch.from_numpy(IMAGES[0, :, :, 1]).float() / 255)
    z = to_tensor(IMAGES[0], normalize=True)
    expected = (x[0, 2] - IMAGENET_MEAN[2]) / IMAGENET_STD[2]
    assert z.shape == (3, 32, 32) and torch.allclose(z[2], expected)
    with pytest.raises(InputError):
        to_tensor(IMAGES.astype(np.float32))


def test_dataset_and_batches_follow_the_order() -> None:
    pytest.importorskip("torch")
    from edgeadapt.data.torch_adapter import ArrayDataset, iterate_batches, to_tensor

    ds = ArrayDataset(IMAGES, LABELS, normalize=True)
    img, label = ds[3]
    assert len(ds) == 6 and label == 1 and img.shape == (3, 32, 32)
    order = stream_order(6, seed=1)
    batches = list(iterate_batches(IMAGES, LABELS, 4, order=order))
    assert [len(b[1]) for b in batches] == [4, 2]
    assert np.array_equal(np.concatenate([b[1].numpy() for b in batches]), LABELS[order])
    assert batches[0][0].shape == (4, 3, 32, 32)
    assert np.allclose(batches[1][0].numpy(), to_tensor(IMAGES[order[4:]]).numpy())
    assert len(list(iterate_batches(IMAGES, LABELS, 4, drop_last=True))) == 1
    with pytest.raises(ConfigError):
        next(iterate_batches(IMAGES, LABELS, 0))


def test_write_cifar10c_round_trip(tmp_path: Path) -> None:
    out = write_cifar10c(tmp_path / "c", IMAGES, LABELS, ["contrast", "gaussian_noise"], seed=4)
    assert sorted(p.name for p in out.iterdir()) == [
        "contrast.npy",
        "gaussian_noise.npy",
        "labels.npy",
    ]
    stack = np.load(out / "gaussian_noise.npy")
    assert stack.shape == (30, 32, 32, 3) and stack.dtype == np.uint8
    assert np.load(out / "labels.npy").dtype == np.uint8  # as released
    for s in (1, 4):
        x, y = load_cifar10c(out, "gaussian_noise", s)
        assert np.array_equal(x, corrupt(IMAGES, "gaussian_noise", s, seed=4))
        assert np.array_equal(y, LABELS)


def test_write_cifar10c_severity_subset(tmp_path: Path) -> None:
    out = write_cifar10c(tmp_path, IMAGES, LABELS, ["brightness"], severities=[2, 5])
    assert json.loads((out / "meta.json").read_text()) == {"severities": [2, 5]}
    x, _ = load_cifar10c(out, "brightness", 5)
    assert np.array_equal(x, corrupt(IMAGES, "brightness", 5))
    with pytest.raises(ConfigError):
        load_cifar10c(out, "brightness", 1)
    with pytest.raises(ConfigError):
        write_cifar10c(out, IMAGES, LABELS, ["brightness"], severities=[0])
    with pytest.raises(InputError):
        write_cifar10c(out, IMAGES, LABELS[:2], ["brightness"])


def test_save_corruption_grid(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = save_corruption_grid(IMAGES, tmp_path / "grid.png", ["fog", "pixelate"], [1, 5])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]
    with pytest.raises(ConfigError):
        save_corruption_grid(IMAGES, tmp_path / "g.png", index=6)
