"""The temporal sparsity penalty: zero for still clips, positive otherwise, MAC-weighted."""

from __future__ import annotations

import pytest
import torch

from edgeadapt.delta import (
    DeltaActivation,
    collect_delta_activations,
    deltaify,
    forward_with_sparsity,
    temporal_sparsity_loss,
)
from edgeadapt.errors import ConfigError, InputError


def _clips(n: int, t: int, still: bool) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    first = torch.rand(n, 1, 3, 16, 16, generator=gen)
    frames = first.expand(n, t, 3, 16, 16)
    if not still:
        frames = frames + 0.2 * torch.rand(n, t, 3, 16, 16, generator=gen)
    return frames.reshape(n * t, 3, 16, 16)  # clip-major: row n·T + t


def test_penalty_is_zero_for_identical_frames(tiny_resnet, example) -> None:
    model = deltaify(tiny_resnet, example).eval()
    _, penalty = forward_with_sparsity(model, _clips(2, 4, still=True), clip_length=4)
    assert penalty.item() == 0.0


def test_penalty_is_positive_and_trains_weights_and_steps(tiny_resnet, example) -> None:
    model = deltaify(tiny_resnet, example).train()
    out, penalty = forward_with_sparsity(model, _clips(2, 4, still=False), clip_length=4)
    assert out.shape == (8, 5) and penalty.item() > 0
    penalty.backward()
    assert model.get_submodule("stem.0").weight.grad.abs().sum() > 0
    assert any(
        q.log_step.grad.abs().sum() > 0 for q in model.modules() if isinstance(q, DeltaActivation)
    )


def test_penalty_in_steps_counts_grid_steps(plain_cnn, example) -> None:
    model = deltaify(plain_cnn, example).eval()
    _, in_units = forward_with_sparsity(model, _clips(1, 3, False), 3)
    _, in_steps = forward_with_sparsity(model, _clips(1, 3, False), 3, in_steps=True)
    assert in_steps.item() > in_units.item() > 0


def test_penalty_is_the_mac_weighted_mean_of_layer_deltas() -> None:
    qa = DeltaActivation(1, fan_out_macs=3.0)
    qb = DeltaActivation(2, fan_out_macs=1.0)
    a = torch.tensor([0.0, 1.0, 1.0, 3.0]).view(4, 1)  # two clips of 2: |Δ| = 1 and 2
    b = torch.zeros(4, 2)  # never changes
    # weights: 3·1 elements and 1·2 elements; means 1.5 and 0.
    expected = (3 * 1.5 + 2 * 0.0) / (3 + 2)
    loss = temporal_sparsity_loss([(qa, a), (qb, b)], clip_length=2)
    assert loss.item() == pytest.approx(expected)


def test_hooks_are_removed_and_nothing_is_stored(three_conv, example) -> None:
    model = deltaify(three_conv, example)
    with collect_delta_activations(model) as records:
        model(example)
    assert len(records) == 2
    assert all(not q._forward_hooks for q in model.modules() if isinstance(q, DeltaActivation))


def test_bad_clip_layout_raises(three_conv, example) -> None:
    model = deltaify(three_conv, example)
    with pytest.raises(InputError, match="clip-major"):
        forward_with_sparsity(model, torch.rand(5, 3, 16, 16), clip_length=2)
    with pytest.raises(ConfigError, match="clip_length"):
        forward_with_sparsity(model, torch.rand(4, 3, 16, 16), clip_length=1)
