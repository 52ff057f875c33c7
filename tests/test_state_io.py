"""adapter_state_dict, save/load: only trainable state, atomic, refuses mismatches."""

from __future__ import annotations

import json

import pytest
import torch
from tiny import ADAPTING, tiny_config

from edgeadapt.api import load_adapter, wrap
from edgeadapt.errors import CheckpointMismatchError
from edgeadapt.models import create_model


@pytest.mark.parametrize("method", ADAPTING)
def test_adapter_state_holds_only_trainable_state(method, tiny_model, batch, example):
    adapter = wrap(tiny_model, tiny_config(method), example_input=example)
    state = adapter.adapter_state_dict()
    trainable = {n for n, p in adapter.named_parameters() if p.requires_grad}
    assert trainable <= set(state)
    frozen_params = {
        n
        for n, p in adapter.named_parameters()
        if not p.requires_grad and not n.startswith("teacher.")
    }
    assert not (frozen_params & set(state))


@pytest.mark.parametrize("method", ADAPTING)
def test_save_load_round_trip(method, tiny_model, batch, example, tmp_path):
    adapter = wrap(tiny_model, tiny_config(method), example_input=example)
    for _ in range(2):
        adapter(batch)
    path = adapter.save(tmp_path / "adapter.pt")
    assert json.loads((tmp_path / "adapter.pt.json").read_text())["method"] == method
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "adapter.pt",
        "adapter.pt.json",
    ]  # no temp files left
    other = wrap(tiny_model, tiny_config(method), example_input=example)
    other.load(path)
    for k, v in adapter.adapter_state_dict().items():
        assert torch.equal(v, other.adapter_state_dict()[k])
    with other.frozen(), adapter.frozen():
        assert torch.equal(other(batch), adapter(batch))
    other(batch)
    other.reset()  # the loaded state is the reset point
    for k, v in adapter.adapter_state_dict().items():
        assert torch.equal(v, other.adapter_state_dict()[k])
    again = load_adapter(tiny_model, path, example_input=example)
    assert again.config == adapter.config


def test_load_refuses_other_architecture(tiny_model, example, tmp_path):
    path = wrap(tiny_model, tiny_config("tent"), example_input=example).save(tmp_path / "a.pt")
    other = wrap(create_model("resnet8"), tiny_config("tent"), example_input=example)
    with pytest.raises(CheckpointMismatchError, match="architecture"):
        other.load(path)


def test_load_refuses_other_method_weights_and_config(tiny_model, example, tmp_path):
    path = wrap(tiny_model, tiny_config("tent"), example_input=example).save(tmp_path / "a.pt")
    with pytest.raises(CheckpointMismatchError, match="'tent' adapter"):
        wrap(tiny_model, tiny_config("eata"), example_input=example).load(path)
    torch.manual_seed(5)
    retrained = create_model("tiny_resnet")
    with pytest.raises(CheckpointMismatchError, match="other frozen weights"):
        wrap(retrained, tiny_config("tent"), example_input=example).load(path)
    with pytest.raises(CheckpointMismatchError, match="other settings"):
        wrap(tiny_model, tiny_config("tent", lr=0.5), example_input=example).load(path)


def test_load_refuses_corrupt_and_missing_files(tiny_model, example, tmp_path):
    adapter = wrap(tiny_model, tiny_config("tent"), example_input=example)
    path = adapter.save(tmp_path / "a.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointMismatchError, match="not a readable"):
        adapter.load(path)
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(1)}, plain)
    with pytest.raises(CheckpointMismatchError, match="not an edgeadapt adapter"):
        adapter.load(plain)
    with pytest.raises(FileNotFoundError):
        adapter.load(tmp_path / "missing.pt")


def test_load_adapter_state_dict_mismatch(tiny_model, example):
    adapter = wrap(tiny_model, tiny_config("tent"), example_input=example)
    state = adapter.adapter_state_dict()
    state.pop(next(iter(state)))
    with pytest.raises(CheckpointMismatchError, match="missing"):
        adapter.load_adapter_state_dict(state)
