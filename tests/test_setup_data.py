"""The setup on source data (EcoTTA's warm-up, EATA's Fisher) through the Python API: explicit
source images, the shared default only where it is present, else a typed error; a skip is
explicit and recorded, never silent."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import edgeadapt
from edgeadapt.api import SourceData, SourceDataError, prepare_adapter
from edgeadapt.errors import ConfigError
from edgeadapt.setup_data import describe_setup, setup_label


def source_folder(root: Path, size: int = 16, per_class: int = 8) -> Path:
    """`train/<class>/<i>.png`: 3 classes of random pixels, the image-folder layout."""
    rng = np.random.default_rng(0)
    for cls in ("a", "b", "c"):
        folder = root / "train" / cls
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                folder / f"{i}.png"
            )
    return root


@pytest.fixture(autouse=True)
def installed_copy(tmp_path, monkeypatch):
    """As an installed, non-editable copy: no shared data; decoded images cached in tmp."""
    monkeypatch.setenv("EDGEADAPT_SHARED", str(tmp_path / "no-shared"))
    monkeypatch.setenv("EDGEADAPT_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def folder(tmp_path) -> Path:
    return source_folder(tmp_path / "source")


def _wrap(config, tiny_model, example):
    return edgeadapt.wrap(tiny_model, config, example_input=example)


@pytest.mark.parametrize("config", [edgeadapt.EcoTTAConfig(), edgeadapt.EATAConfig()])
def test_without_source_data_the_setup_is_refused_with_a_typed_error(config, tiny_model, example):
    adapter = _wrap(config, tiny_model, example)
    with pytest.raises(SourceDataError, match=r"source=PATH.*no_warmup=True") as err:
        prepare_adapter(adapter)
    assert isinstance(err.value, ConfigError)  # callers catching ConfigError still do
    assert not hasattr(adapter, "setup_record")


def test_an_explicit_skip_is_recorded(tiny_model, example):
    adapter = _wrap(edgeadapt.EcoTTAConfig(), tiny_model, example)
    before = {k: v.clone() for k, v in adapter.state_dict().items()}
    assert prepare_adapter(adapter, no_warmup=True) == {"warmup": None}
    assert adapter.setup_record == {"warmup": None}
    assert setup_label(adapter.setup_record) == "no warm-up"
    assert "freshly initialised" in describe_setup(adapter.setup_record)
    assert all(torch.equal(before[k], v) for k, v in adapter.state_dict().items())
    eata = _wrap(edgeadapt.EATAConfig(), tiny_model, example)
    assert setup_label(prepare_adapter(eata, fisher_images=0)) == "no Fisher"


def test_warm_up_from_an_image_folder_moves_the_meta_networks(folder, tiny_model, example):
    adapter = _wrap(edgeadapt.EcoTTAConfig(), tiny_model, example)
    before = [p.detach().clone() for p in adapter.trainable_parameters()]
    record = prepare_adapter(adapter, folder, warmup_steps=2, input_size=(16, 16), progress=False)
    warm = {"source": str(folder), "images": 24, "steps": 2, "batch": 24}  # all 24 < 64
    assert record == adapter.setup_record == {"warmup": warm}
    assert any(not torch.equal(b, p) for b, p in zip(before, adapter.trainable_parameters()))
    assert setup_label(record) == "" and "warmed up on" in describe_setup(record)
    warmed = [p.detach().clone() for p in adapter.trainable_parameters()]
    adapter(example)
    adapter.reset()  # the warmed-up state is the reset point
    assert all(torch.equal(w, p) for w, p in zip(warmed, adapter.trainable_parameters()))


def test_fisher_from_an_image_folder(folder, tiny_model, example):
    adapter = _wrap(edgeadapt.EATAConfig(), tiny_model, example)
    record = prepare_adapter(adapter, folder, fisher_images=10, progress=False)
    assert record == {"fisher": {"source": str(folder), "images": 10}}
    assert any(n.startswith("weight_") for n, _ in adapter.fisher.named_buffers())


def test_tensor_batches_are_a_source_too(tiny_model, example):
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(4, 3, 16, 16, generator=gen), torch.tensor([0, 1, 2, 3]))] * 2
    adapter = _wrap(edgeadapt.EcoTTAConfig(), tiny_model, example)
    record = prepare_adapter(adapter, batches, warmup_steps=3, progress=False)
    assert record == {"warmup": {"source": "tensor batches", "images": 8, "steps": 3, "batch": 4}}
    named = SourceData.from_batches(batches, "my clean frames")
    assert prepare_adapter(adapter, named, warmup_steps=1, progress=False)["warmup"]["source"] == (
        "my clean frames"
    )
    with pytest.raises(SourceDataError, match="needs labels"):
        prepare_adapter(adapter, [x for x, _ in batches], warmup_steps=1, progress=False)


def test_methods_without_a_setup_need_no_source_data(tiny_model, example):
    assert prepare_adapter(_wrap(edgeadapt.TentConfig(), tiny_model, example)) == {}


def test_the_shared_default_is_used_where_present(tmp_path, monkeypatch, tiny_model, example):
    images = source_folder(tmp_path / "jpeg")
    archive = tmp_path / "shared" / "data" / "cifar10" / "cifar10-jpeg.tar.gz"
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(images / "train", arcname="train")
    monkeypatch.setenv("EDGEADAPT_SHARED", str(tmp_path / "shared"))
    adapter = _wrap(edgeadapt.EcoTTAConfig(), tiny_model, example)
    record = prepare_adapter(adapter, warmup_steps=1, progress=False)
    assert record["warmup"]["source"] == f"{archive} (the shared default)"


def test_source_data_that_cannot_serve_is_refused(tmp_path, folder, tiny_model, example):
    adapter = _wrap(edgeadapt.EcoTTAConfig(), tiny_model, example)
    with pytest.raises(SourceDataError, match="no such file"):
        prepare_adapter(adapter, tmp_path / "missing")
    release = tmp_path / "cifar10c"
    release.mkdir()
    np.save(release / "labels.npy", np.zeros(4, dtype=np.uint8))
    with pytest.raises(SourceDataError, match="CIFAR-10-C release folder"):
        prepare_adapter(adapter, release)
    with pytest.raises(SourceDataError, match="16×16 images; the model takes 32×32"):
        prepare_adapter(adapter, folder, input_size=(32, 32), progress=False)
    assert not hasattr(adapter, "setup_record")
