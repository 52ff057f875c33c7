"""Streaming delta inference: exact vs. the dense quantised model, no drift, scene cuts, state."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from edgeadapt.delta import (
    DeltaActivation,
    DeltaConv2d,
    DeltaRuntimeConfig,
    DeltaStateError,
    NotDeltaifiedError,
    deltaify,
    to_delta_runtime,
)
from edgeadapt.errors import ConfigError, InputError


def _random_walk(frames: int, *, changed: float, step: float, seed: int, dtype=torch.float64):
    """A 16x16 RGB video: each frame moves `changed` of the pixels by a random amount."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, 16, 16, generator=gen, dtype=dtype)
    for _ in range(frames):
        moving = torch.rand(1, 1, 16, 16, generator=gen) < changed
        x = x + moving * step * torch.randn(1, 3, 16, 16, generator=gen, dtype=dtype)
        yield x


@pytest.mark.parametrize("path", ["element", "pixel"])
def test_no_drift_over_2000_frames_vs_dense_float64(three_conv, example, path: str) -> None:
    model = deltaify(three_conv, example, bits=5)
    # sparse_threshold=1.0 and cost 1 for the path under test: every layer accumulates W·Δx
    # on every frame on that path, never re-anchoring through a dense pass.
    costs = {"element_cost": 1.0} if path == "element" else {"element_cost": 1e3}
    config = DeltaRuntimeConfig(sparse_threshold=1.0, pixel_cost=1.0, **costs)
    runtime = to_delta_runtime(model, config)
    convs = [m for m in runtime.modules() if isinstance(m, DeltaConv2d)]
    paths = set()
    dense = copy.deepcopy(model).eval().double()  # the dense quantised model, same arithmetic
    errors = []
    with torch.no_grad():
        for frame in _random_walk(2000, changed=0.05, step=0.1, seed=0):
            errors.append((runtime(frame) - dense(frame)).abs().max().item())
            paths.update(c.last_path for c in convs)
    assert paths == {path, "dense"}  # dense: the anchor frame only (no scene cut below)
    errors_t = torch.tensor(errors)
    # Tolerance 1e-12 (outputs are O(1)) at every frame: only float64 round-off of the
    # accumulated increments, which random-walks (~√t). A real drift grows ~t: from frames
    # 400-499 to 1900-1999 the worst error grows >= 3.8×; a random walk gives ~√3.8 ≈ 2×.
    # (The first few hundred frames say little: the error starts at exactly 0.)
    assert errors_t.max() < 1e-12
    assert errors_t[-100:].max() < 3.5 * errors_t[400:500].max() + 1e-16
    macs = runtime.macs()
    assert macs.performed < macs.dense / 2  # the sparse path really was used
    assert runtime.scene_cuts == 0


def _dyadic(model: nn.Module) -> nn.Module:
    """Weights on a 1/64 grid, unit quantiser steps: every sum is exact in float32 and 64."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_((p * 64).round() / 64)
        for q in model.modules():
            if isinstance(q, DeltaActivation):
                q.log_step.zero_()
    return model


def test_bit_exact_vs_dense_float32_model_when_arithmetic_is_exact(three_conv, example) -> None:
    model = _dyadic(deltaify(three_conv, example * 64)).eval()
    runtime = to_delta_runtime(model, DeltaRuntimeConfig(sparse_threshold=1.0))
    with torch.no_grad():
        for frame in _random_walk(500, changed=0.1, step=4.0, seed=1, dtype=torch.float32):
            frame = (frame * 16).round() / 16  # inputs on a 1/16 grid
            assert torch.equal(runtime(frame), model(frame))  # tolerance 0, every frame
    assert runtime.macs().performed < runtime.macs().dense


def test_scene_cut_reanchors_with_a_dense_pass(three_conv, example) -> None:
    model = deltaify(three_conv, example)
    runtime = to_delta_runtime(model, DeltaRuntimeConfig(scene_cut_threshold=0.5))
    dense = copy.deepcopy(model).eval().double()
    frames = list(_random_walk(6, changed=0.05, step=0.1, seed=2))
    with torch.no_grad():
        for frame in frames[:5]:
            runtime(frame)
        assert runtime.last_macs().performed < runtime.last_macs().dense
        cut = torch.rand(1, 3, 16, 16, dtype=torch.float64)  # a new scene: every pixel changed
        torch.testing.assert_close(runtime(cut), dense(cut), rtol=0, atol=1e-12)
        assert runtime.scene_cuts == 1
        assert runtime.last_macs().performed == runtime.last_macs().dense
        runtime.signal_scene_cut()  # the caller knows better: the next frame anchors too
        torch.testing.assert_close(runtime(frames[5]), dense(frames[5]), rtol=0, atol=1e-12)
        assert runtime.last_macs().performed == runtime.last_macs().dense
        assert runtime.scene_cuts == 1


def test_reset_state_clears_every_buffer(three_conv, example) -> None:
    runtime = to_delta_runtime(deltaify(three_conv, example))
    runtime(example[:1])
    runtime.reset_state()
    layers = runtime.delta_layers()
    assert len(layers) == 3 and all(isinstance(m, DeltaConv2d) for m in layers)
    assert all(not bool(m.primed) and m.x_prev.numel() == 0 for m in layers)
    assert runtime.prev_frame.numel() == 0


def test_anchor_every_forces_periodic_dense_passes(three_conv, example) -> None:
    runtime = to_delta_runtime(deltaify(three_conv, example), DeltaRuntimeConfig(anchor_every=3))
    performed = []
    for frame in _random_walk(7, changed=0.05, step=0.1, seed=3):
        runtime(frame)
        performed.append(runtime.last_macs().performed == runtime.last_macs().dense)
    assert performed == [True, False, False, True, False, False, True]


def test_state_follows_state_dict_and_to(three_conv, example) -> None:
    model = deltaify(three_conv, example, bits=5)
    first = to_delta_runtime(model)
    frames = list(_random_walk(12, changed=0.05, step=0.1, seed=4))
    for frame in frames[:10]:
        first(frame)
    state = first.state_dict()
    assert {"model.conv1.x_prev", "model.conv1.y_prev", "prev_frame"} <= set(state)
    second = to_delta_runtime(model)  # fresh: empty state buffers get sized on load
    second.load_state_dict(state)
    for frame in frames[10:]:
        assert torch.equal(second(frame), first(frame))
        assert second.last_macs() == first.last_macs()
        assert second.last_macs().performed < second.last_macs().dense  # continued, no anchor
    on_meta = copy.deepcopy(first).to("meta")
    assert all(m.y_prev.device.type == "meta" for m in on_meta.delta_layers())
    assert all(m.weight_rows.device.type == "meta" for m in on_meta.delta_layers())


def _grouped() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding="same", groups=3),  # grouped: recomputed densely
        nn.SiLU(),
        nn.Conv2d(6, 2, 1),
    )


@pytest.mark.parametrize("name", ["tiny_resnet", "plain_cnn", "grouped"])
def test_runtime_matches_dense_on_other_nets(name, request, example) -> None:
    net = _grouped() if name == "grouped" else request.getfixturevalue(name)
    model = deltaify(net, example, bits=5)
    runtime = to_delta_runtime(model)
    dense = copy.deepcopy(model).eval().double()
    with torch.no_grad():
        for frame in _random_walk(20, changed=0.05, step=0.1, seed=5):
            torch.testing.assert_close(runtime(frame), dense(frame), rtol=0, atol=1e-12)
    assert runtime.macs().performed < runtime.macs().dense


def test_bad_inputs_raise_typed_errors(three_conv, example) -> None:
    with pytest.raises(NotDeltaifiedError, match="deltaify"):
        to_delta_runtime(three_conv)
    with pytest.raises(ConfigError):
        DeltaRuntimeConfig(scene_cut_threshold=1.5)
    runtime = to_delta_runtime(deltaify(three_conv, example))
    with pytest.raises(InputError, match="one frame at a time"):
        runtime(example)
    with pytest.raises(InputError, match="NaN"):
        runtime(torch.full((1, 3, 16, 16), float("nan")))
    runtime(example[:1])
    with pytest.raises(DeltaStateError, match="reset_state"):
        runtime(torch.rand(1, 3, 8, 8))
    runtime.reset_state()
    assert runtime(torch.rand(1, 3, 8, 8)).shape == (1, 4, 4, 4)
