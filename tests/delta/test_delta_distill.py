"""Label-free delta training (distillation from the dense self) and the structure helpers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeadapt.delta import (
    DeltaActivation,
    DistillConfig,
    NotDeltaifiedError,
    collect_delta_activations,
    deltaify,
    deltaify_modules,
    distill_for_sparsity,
    load_delta_weights,
    make_clips,
    pixel_sparsity_loss,
    save_delta_weights,
    strip_delta,
)
from edgeadapt.errors import CheckpointMismatchError, ConfigError, InputError


def _noisy_footage(frames: int = 24) -> torch.Tensor:
    """A static scene plus fresh sensor noise per frame: what a still camera delivers."""
    gen = torch.Generator().manual_seed(0)
    scene = torch.rand(1, 3, 16, 16, generator=gen)
    return scene + 0.03 * torch.randn(frames, 3, 16, 16, generator=gen)


def test_distillation_reduces_the_sparsity_penalty_and_keeps_predictions(tiny_resnet, example):
    model = deltaify(tiny_resnet, example).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    clips = make_clips(_noisy_footage(), 4)
    config = DistillConfig(
        steps=15, clip_length=4, clips_per_batch=2, sparsity_weight=1.0, lr=1e-3, step_lr=0.05
    )
    result = distill_for_sparsity(model, clips, config)
    assert result.penalty_after < 0.7 * result.penalty_before
    assert result.distill_after < 0.05  # still close to the dense teacher
    assert len(result.history) == 15 and result.to_dict()["config"]["steps"] == 15
    for k, v in model.state_dict().items():  # the input model is untouched
        assert torch.equal(v, before[k]), k
    assert any(not torch.equal(v, before[k]) for k, v in result.model.state_dict().items())


def test_zero_weight_distillation_does_not_chase_sparsity(tiny_resnet, example):
    model = deltaify(tiny_resnet, example).eval()
    clips = make_clips(_noisy_footage(), 4)
    config = DistillConfig(steps=0, clip_length=4)
    result = distill_for_sparsity(model, clips, config)
    assert result.penalty_after == pytest.approx(result.penalty_before)


def test_pixel_penalty_is_zero_for_still_frames_and_counts_changed_pixels(tiny_resnet, example):
    model = deltaify(tiny_resnet, example).eval()
    still = example[:1].repeat(4, 1, 1, 1)
    with torch.no_grad(), collect_delta_activations(model) as records:
        model(still)
        assert float(pixel_sparsity_loss(records, 4)) == 0.0
    with torch.no_grad(), collect_delta_activations(model) as records:
        model(example)
        assert float(pixel_sparsity_loss(records, 4)) > 0.0
    with pytest.raises(InputError):
        pixel_sparsity_loss(records, 3)


def test_make_clips_windows_and_bad_input():
    frames = torch.arange(10.0).view(10, 1, 1, 1).expand(10, 3, 2, 2)
    clips = make_clips(frames, 4, stride=2)
    assert clips.shape == (4, 4, 3, 2, 2)
    assert clips[1, :, 0, 0, 0].tolist() == [2.0, 3.0, 4.0, 5.0]
    with pytest.raises(InputError):
        make_clips(frames[:3], 4)
    with pytest.raises(ConfigError):
        DistillConfig(clip_length=1)


def test_distill_refuses_a_dense_model_and_wrong_clips(tiny_resnet, example):
    with pytest.raises(NotDeltaifiedError):
        distill_for_sparsity(tiny_resnet, make_clips(_noisy_footage(), 8))
    model = deltaify(tiny_resnet, example)
    with pytest.raises(InputError, match="clips must be"):
        distill_for_sparsity(model, make_clips(_noisy_footage(), 4))  # default T is 8


def test_strip_delta_is_the_dense_model(tiny_resnet, example):
    for make in (deltaify, deltaify_modules):
        dense = strip_delta(make(tiny_resnet.eval(), example))
        assert not any(isinstance(m, DeltaActivation) for m in dense.modules())
        with torch.no_grad():
            torch.testing.assert_close(dense(example), tiny_resnet(example))


def test_deltaify_modules_keeps_the_model_class_and_blocks(tiny_resnet, example):
    model = deltaify_modules(tiny_resnet, example)
    assert type(model) is type(tiny_resnet)
    assert isinstance(model.layer1, type(tiny_resnet.layer1))  # blocks still called as modules
    assert isinstance(model.relu, nn.Sequential) and isinstance(model.relu[1], DeltaActivation)
    assert not any(isinstance(m, DeltaActivation) for m in tiny_resnet.modules())


def test_delta_weights_round_trip_and_mismatch(tiny_resnet, example, tmp_path):
    model = deltaify(tiny_resnet, example)
    save_delta_weights(model, tmp_path / "w.pt")
    fresh = deltaify(tiny_resnet, example * 3)  # other calibration, same structure
    load_delta_weights(fresh, tmp_path / "w.pt")
    for (k, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(CheckpointMismatchError):
        load_delta_weights(deltaify_modules(tiny_resnet, example), tmp_path / "w.pt")
    with pytest.raises(NotDeltaifiedError):
        save_delta_weights(tiny_resnet, tmp_path / "dense.pt")
