"""EcoTTA's mean-teacher option: an EMA of the meta networks gives the targets and the
predictions, optionally from augmented views; everything else stays EcoTTA's."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_config
from torch.func import functional_call

from edgeadapt.api import wrap
from edgeadapt.config import EcoTTAConfig
from edgeadapt.errors import ConfigError
from edgeadapt.memory import measure_step_memory
from edgeadapt.methods._state import no_running_stat_updates
from edgeadapt.models import create_model


def _adapter(**extra):
    torch.manual_seed(0)
    return wrap(create_model("tiny_resnet"), tiny_config("ecotta", teacher_momentum=0.9, **extra))


def _batch(seed: int = 1) -> torch.Tensor:
    return torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def _teacher(adapter) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in adapter._teacher().items()}


def test_teacher_settings_are_checked():
    with pytest.raises(ConfigError, match="teacher_views needs the teacher"):
        EcoTTAConfig(teacher_views=4)
    with pytest.raises(ConfigError, match="teacher_momentum"):
        EcoTTAConfig(teacher_momentum=1.0)
    with pytest.raises(ConfigError, match="together"):
        EcoTTAConfig(teacher_momentum=0.9, teacher_views=2, input_mean=(0.5, 0.5, 0.5))


@pytest.mark.parametrize("views", [0, 2])
def test_teacher_is_an_ema_of_the_meta_networks(views):
    adapter = _adapter(teacher_views=views)
    before = _teacher(adapter)
    assert before and all(torch.equal(before[n], adapter.model.get_parameter(n)) for n in before)
    adapter(_batch())
    for name, old in before.items():
        student = adapter.model.get_parameter(name).detach()
        assert not torch.equal(student, old), f"{name} did not train"
        assert torch.allclose(adapter._teacher()[name], 0.9 * old + 0.1 * student, atol=1e-7)


def test_predictions_come_from_the_teacher_and_export_with_it():
    adapter = _adapter(teacher_views=2)
    for seed in range(3):
        adapter(_batch(seed))
    x = _batch(7)
    with adapter.frozen():
        predicted = adapter(x)
    with torch.no_grad(), no_running_stat_updates(adapter.model):
        from_teacher = functional_call(adapter.model, adapter._teacher(), (x,), strict=False)
        from_student = adapter.model(x)
        from_network = adapter.prediction_network()(x)
    assert torch.equal(predicted, from_teacher) and torch.equal(predicted, from_network)
    assert not torch.allclose(predicted, from_student)


def test_teacher_is_saved_loaded_and_reset(tmp_path):
    adapter = _adapter()
    start = _teacher(adapter)
    for seed in range(2):
        adapter(_batch(seed))
    adapted = _teacher(adapter)
    adapter.save(tmp_path / "a.pt")
    other = _adapter()
    other.load(tmp_path / "a.pt")
    assert all(torch.equal(other._teacher()[n], t) for n, t in adapted.items())
    adapter.reset()
    assert all(torch.equal(adapter._teacher()[n], t) for n, t in start.items())


def test_views_cost_no_memory_kept_for_backward():
    plain = measure_step_memory(_adapter(), (8, 3, 16, 16))
    views = measure_step_memory(_adapter(teacher_views=4), (8, 3, 16, 16))
    assert views.saved_for_backward == plain.saved_for_backward
    assert views.frozen == plain.frozen  # the teacher copy, there with or without views
