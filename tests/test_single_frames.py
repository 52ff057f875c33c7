"""Batch 1, the device's own setting: every method adapts on single frames, and nothing
silently predicts a constant (what a BN on one frame's own statistics did)."""

from __future__ import annotations

import pytest
import torch
from tiny import ADAPTING, METHODS, tiny_config

from edgeadapt.api import wrap
from edgeadapt.errors import InputError
from edgeadapt.modules.stream_norm import StreamBatchNorm2d, stream_moments, use_stream_statistics


def _frames(n: int, seed: int = 1, size: int = 16) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _pooled_bn_model() -> torch.nn.Module:
    """A network whose last BN sits right before global pooling: normalised by a single
    frame's own statistics, its pooled output is the BN's bias whatever the frame."""
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    )  # fmt: skip
    with torch.no_grad():  # source statistics of the frames' distribution, as after training
        model.train()(_frames(256, seed=3))
    return model.eval()


def _spread(logits: torch.Tensor) -> float:
    """How much the logits of different frames differ (mean over classes of the std)."""
    return float(logits.detach().std(dim=0).mean())


@pytest.mark.parametrize("method", ADAPTING)
def test_single_frames_move_the_trained_weights(method, tiny_model, example):
    adapter = wrap(tiny_model, tiny_config(method, small_batch="adapt"), example_input=example)
    trained = {n: p.detach().clone() for n, p in adapter.named_parameters() if p.requires_grad}
    assert trained, f"{method} trains nothing"
    for frame in _frames(16).split(1):
        adapter(frame)
    moved = [
        n for n, p in adapter.named_parameters() if n in trained and not torch.equal(p, trained[n])
    ]
    assert moved, f"{method}: 16 single frames moved no trained weight"


def _single_frame_spread(model, config, example, frames) -> float:
    """Adapt on `frames` one at a time, then predict 8 new frames one at a time with the
    weights that gives: the spread of those predictions."""
    adapter = wrap(model, config, example_input=example)
    for frame in frames.split(1):
        adapter(frame)
    with adapter.frozen():
        outs = torch.cat([adapter(frame) for frame in _frames(8, seed=9).split(1)])
    assert torch.isfinite(outs).all()
    return _spread(outs)


@pytest.mark.parametrize("method", [m for m in METHODS if m != "ecotta"])
def test_predictions_vary_across_frames_after_adapting(method, example):
    """Fails where a frame is normalised by itself, as the window-1 check shows."""
    model, frames = _pooled_bn_model(), _frames(24)
    source = _spread(model(_frames(8, seed=9)))
    spread = _single_frame_spread(model, tiny_config(method), example, frames)
    assert spread > 0.3 * source, f"{method}: nearly the same logits for every frame"
    if method in ("norm", "tent", "sar"):  # the failure this guards against, reproduced
        per_frame = _single_frame_spread(model, tiny_config(method, stat_window=1), example, frames)
        assert per_frame < 1e-3 * source


def test_ecotta_predictions_vary_across_frames(tiny_model, example):
    """EcoTTA's last meta BN normalises the last part's output right before pooling."""
    frames = _frames(24)
    source = _spread(tiny_model.eval()(_frames(8, seed=9)))
    spread = _single_frame_spread(tiny_model, tiny_config("ecotta"), example, frames)
    per_frame = _single_frame_spread(
        tiny_model, tiny_config("ecotta", stat_window=1), example, frames
    )
    assert spread > 0.5 * source
    assert per_frame < 0.5 * source


def test_ecotta_single_frames_move_every_meta_network(tiny_model, example):
    adapter = wrap(tiny_model, tiny_config("ecotta"), example_input=example)
    meta = {n: p.detach().clone() for n, p in adapter.named_parameters() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in adapter.named_parameters() if not p.requires_grad}
    for frame in _frames(12).split(1):
        adapter(frame)
    parts = {n.split(".adapter_")[0] for n in meta}
    for part in parts:
        assert any(
            not torch.equal(p, meta[n])
            for n, p in adapter.named_parameters()
            if n.startswith(part + ".adapter_")
        ), f"no weight of {part}'s meta network moved"
    for n, p in adapter.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), f"frozen {n} changed"


@pytest.mark.parametrize("method", METHODS)
def test_channels_last_non_contiguous_and_a_new_frame_size(method, tiny_model, example):
    adapter = wrap(tiny_model, tiny_config(method), example_input=example)
    x = _frames(4)
    out = adapter(x.contiguous(memory_format=torch.channels_last))
    assert out.shape == (4, 10)
    out = adapter(_frames(4, size=32)[:, :, ::2, ::2])  # a strided view
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    try:
        out = adapter(_frames(1, size=24))
    except InputError as exc:  # a method that cannot take it says what to do
        assert "reset" in str(exc) or "size" in str(exc)
    else:
        assert out.shape == (1, 10) and torch.isfinite(out).all()


def test_stream_batchnorm_at_full_weight_is_batchnorm():
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(3)
    ref = torch.nn.BatchNorm2d(3)
    use_stream_statistics(bn, window=4)
    x = torch.randn(4, 3, 5, 5) * 2 + 1
    assert torch.allclose(bn(x), ref.train()(x), atol=1e-6)


def test_a_batch_of_own_statistics_from_or_more_uses_its_own_statistics():
    torch.manual_seed(0)
    ref = torch.nn.BatchNorm2d(3).train()
    bn = torch.nn.BatchNorm2d(3)
    use_stream_statistics(bn, window=4096, own_from=8)
    big, small = torch.randn(8, 3, 5, 5) * 2 + 1, torch.randn(4, 3, 5, 5) * 2 + 1
    assert torch.allclose(bn(big), ref(big), atol=1e-6)  # the published rule at batch 8
    # Smaller batches mix into the stream (now the last batch's statistics) with α = 4/4096.
    assert not torch.allclose(bn(small), ref(small), atol=1e-2)


@pytest.mark.parametrize("bad", [1, 0, True, 2.5])
def test_own_statistics_from_is_checked(bad):
    from edgeadapt.config import NormConfig
    from edgeadapt.errors import ConfigError

    with pytest.raises(ConfigError, match="own_statistics_from"):
        NormConfig(own_statistics_from=bad)


def test_stream_moments_are_the_moments_of_the_mixture():
    """The mixture of a stream of N frames and a new one is what the pooled data would give,
    between-frame spread included (mixing variances alone would miss it)."""
    torch.manual_seed(0)
    old = torch.randn(7, 2, 4, 4) + torch.tensor([0.0, 3.0]).view(1, 2, 1, 1)
    new = torch.randn(1, 2, 4, 4) * 3
    mean, var = stream_moments(new, old.mean((0, 2, 3)), old.var((0, 2, 3), unbiased=False), 1 / 8)
    pooled = torch.cat([old, new])
    assert torch.allclose(mean, pooled.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(var, pooled.var((0, 2, 3), unbiased=False), atol=1e-4)


def test_stream_batchnorm_follows_the_stream_and_keeps_single_frames_apart():
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(2)
    use_stream_statistics(bn, window=16)
    frames = torch.randn(64, 2, 4, 4) * 3 + 5
    for f in frames.split(1):
        bn(f)
    assert torch.allclose(bn.running_mean, torch.full((2,), 5.0), atol=0.6)
    # Two frames of different brightness stay apart after pooling (per-frame statistics
    # would map both to the same pooled output, the BN's bias).
    dark, bright = torch.full((1, 2, 4, 4), 4.0), torch.full((1, 2, 4, 4), 6.0)
    assert not torch.allclose(bn(dark).mean((2, 3)), bn(bright).mean((2, 3)))
    assert isinstance(bn, StreamBatchNorm2d)


def test_ecotta_device_configuration_rounds_frozen_weights_to_int8(tiny_model, example):
    from edgeadapt.config import EcoTTAConfig
    from edgeadapt.modules.int8 import int8_weight
    from edgeadapt.modules.meta import MetaConvBlock

    adapter = wrap(
        tiny_model, EcoTTAConfig.device(lr=1e-2, entropy_margin=10.0), example_input=example
    )
    meta_convs = {id(m.conv) for m in adapter.modules() if isinstance(m, MetaConvBlock)}
    frozen = [m for m in adapter.model.modules()
              if isinstance(m, torch.nn.Conv2d) and id(m) not in meta_convs]  # fmt: skip
    for conv in frozen:  # each weight is exactly an int8 value times its channel's scale
        q, scale = int8_weight(conv.weight)
        assert torch.equal(q.float() * scale.view(-1, 1, 1, 1), conv.weight)
    bns = [m for m in adapter.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(isinstance(m, StreamBatchNorm2d) for m in bns)  # frozen and meta: the stream
    before = {n: p.detach().clone() for n, p in adapter.named_parameters() if p.requires_grad}
    for frame in _frames(12).split(1):
        adapter(frame)
    assert any(not torch.equal(p, before[n]) for n, p in adapter.named_parameters() if n in before)
    assert isinstance(adapter.optimizer, torch.optim.SGD)


def test_ecotta_device_configuration_predictions_vary_across_frames(tiny_model, example):
    from edgeadapt.config import EcoTTAConfig

    frames = _frames(24)
    source = _spread(tiny_model.eval()(_frames(8, seed=9)))
    config = EcoTTAConfig.device(lr=1e-2, entropy_margin=10.0)
    assert _single_frame_spread(tiny_model, config, example, frames) > 0.5 * source
