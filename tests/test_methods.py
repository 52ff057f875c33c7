"""Invariants every method must keep, parametrized over the registry."""

from __future__ import annotations

import pytest
import torch
from tiny import ADAPTING, METHODS, tiny_config

import edgeadapt
from edgeadapt.api import wrap
from edgeadapt.methods._state import no_running_stat_updates
from edgeadapt.models import create_model


def _frozen_keys(adapter) -> list[str]:
    trained = set(adapter.adapter_state_keys())
    return [k for k in adapter.state_dict() if k not in trained]


@pytest.mark.parametrize("method", METHODS)
def test_output_shape_and_finite(method, tiny_model, batch, example):
    adapter = wrap(tiny_model, tiny_config(method), example_input=example)
    for _ in range(2):
        out = adapter(batch)
        assert out.shape == (8, 10)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("method", METHODS)
def test_frozen_bit_identical_and_trainable_moves(method, tiny_model, batch, example):
    adapter = wrap(tiny_model, tiny_config(method), example_input=example)
    before = {k: v.clone() for k, v in adapter.state_dict().items()}
    for _ in range(3):
        adapter(batch)
    after = adapter.state_dict()
    for k in _frozen_keys(adapter):
        assert torch.equal(before[k], after[k]), f"{method}: frozen tensor {k} changed"
    trainable = [n for n, p in adapter.named_parameters() if p.requires_grad]
    if method in ADAPTING:
        assert trainable, f"{method} trains nothing"
    for n in trainable:
        assert not torch.equal(before[n], after[n]), f"{method}: trainable {n} did not move"


@pytest.mark.parametrize("method", METHODS)
def test_caller_model_untouched_and_unwrap(method, tiny_model, batch, example):
    original = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    adapter = wrap(tiny_model, tiny_config(method), example_input=example)
    adapter(batch)
    assert edgeadapt.unwrap(adapter) is tiny_model
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(v, original[k])
    assert all(
        type(m).__module__.startswith("torch.nn") or "models" in type(m).__module__
        for m in tiny_model.modules()
    )


@pytest.mark.parametrize("method", METHODS)
def test_reset_is_exact(method, tiny_model, batch, example):
    fresh = wrap(tiny_model, tiny_config(method), example_input=example)
    adapter = wrap(tiny_model, tiny_config(method), example_input=example)
    for _ in range(3):
        adapter(batch)
    adapter.reset()
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, adapter.state_dict()[k]), k
    # Optimiser and generator state are restored too: the next steps match a fresh adapter.
    for _ in range(2):
        assert torch.equal(fresh(batch), adapter(batch))


@pytest.mark.parametrize("method", METHODS)
def test_episodic_is_deterministic(method, tiny_model, batch, example):
    adapter = wrap(tiny_model, tiny_config(method, episodic=True), example_input=example)
    first = adapter(batch)
    adapter(batch * 0.5)
    assert torch.equal(adapter(batch), first)


@pytest.mark.parametrize("method", METHODS)
def test_frozen_context_changes_nothing(method, tiny_model, batch, example):
    adapter = wrap(tiny_model, tiny_config(method), example_input=example)
    adapter(batch)
    before = {k: v.clone() for k, v in adapter.state_dict().items()}
    with adapter.frozen():
        out = adapter(batch)
    assert out.shape == (8, 10)
    for k, v in adapter.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("method", METHODS)
def test_steps_per_batch(method, tiny_model, batch, example):
    adapter = wrap(tiny_model, tiny_config(method, steps=3), example_input=example)
    adapter(batch)
    expected = 3 if method in ADAPTING else 0
    assert adapter.steps_taken == expected


@pytest.mark.parametrize("method", METHODS)
def test_runs_under_no_grad(method, tiny_model, batch, example):
    adapter = wrap(tiny_model, tiny_config(method), example_input=example)
    before = [p.clone() for p in adapter.parameters() if p.requires_grad]
    with torch.no_grad():
        adapter(batch)
    after = [p for p in adapter.parameters() if p.requires_grad]
    assert all(not torch.equal(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize("method", METHODS)
def test_eval_call_does_not_stop_batch_statistics(method, tiny_model, batch, example):
    adapter = wrap(tiny_model, tiny_config(method), example_input=example)
    modes = [m.training for m in adapter.model.modules()]
    adapter.eval()
    assert modes == [m.training for m in adapter.model.modules()]


@pytest.mark.parametrize("method", METHODS)
def test_prediction_network_is_what_predict_runs(method):
    """Exporters copy `prediction_network()`: for CoTTA that is the teacher, not the student."""
    torch.manual_seed(0)
    adapter = wrap(create_model("tiny_resnet"), tiny_config(method))
    gen = torch.Generator().manual_seed(1)
    for _ in range(2):
        adapter(torch.randn(8, 3, 16, 16, generator=gen))
    x = torch.randn(8, 3, 16, 16, generator=gen)
    net = adapter.prediction_network()
    with adapter.frozen():
        predicted = adapter(x)
    with torch.no_grad(), no_running_stat_updates(net):
        assert torch.equal(net(x), predicted)
