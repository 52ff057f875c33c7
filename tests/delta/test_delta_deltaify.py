"""deltaify: one quantiser per activation call site, caller's model untouched, fan-out MACs."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import fx, nn

from edgeadapt.delta import DeltaActivation, delta_activations, deltaify
from edgeadapt.errors import ConfigError


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(
    ("name", "sites"),
    [("plain_cnn", 3), ("tiny_resnet", 5), ("three_conv", 2), ("untraceable", 1)],
)
def test_deltaify_inserts_one_quantiser_per_activation(name, sites, request, example) -> None:
    model = request.getfixturevalue(name)
    original = copy.deepcopy(model)
    out = deltaify(model, example)
    assert out is not model
    assert _same_state(model, original)  # the caller's model is untouched
    assert not delta_activations(model)
    assert len(delta_activations(out)) == sites
    assert out.training == model.training
    with torch.no_grad():
        assert out.eval()(example).shape == model.eval()(example).shape
    # Quantised copy stays close to the float model (8-bit grid on the example's range).
    with torch.no_grad():
        assert torch.allclose(out(example), model(example), atol=0.05)


def test_resnet_keeps_parameter_names_and_gets_graph_quantisers(tiny_resnet, example) -> None:
    out = deltaify(tiny_resnet, example)
    assert isinstance(out, fx.GraphModule)
    base = set(tiny_resnet.state_dict())
    assert base <= set(out.state_dict())
    # The shared block ReLU is used twice: two quantisers, one per call site.
    names = [n for n, m in out.named_modules() if isinstance(m, DeltaActivation)]
    assert "layer1.relu_delta" in names and "layer1.relu_delta_1" in names


def test_fan_out_macs_hand_computed(plain_cnn, tiny_resnet, example) -> None:
    fan = [float(q.fan_out_macs) for q in delta_activations(deltaify(plain_cnn, example))]
    # act1 -> 3x3 stride-2 conv 8->8: 9·8/4 = 18; relu -> 1x1 conv 8->4: 4;
    # ReLU6 (4x8x8) -> pool -> flatten -> Linear(4, 5): 20 MACs over 256 elements.
    assert fan == [18.0, 4.0, 20 / 256]
    res = {
        n: float(m.fan_out_macs)
        for n, m in deltaify(tiny_resnet, example).named_modules()
        if isinstance(m, DeltaActivation)
    }
    assert res["relu_delta"] == 72.0  # stem -> block1.conv1 (9·8); the add path hits a quantiser
    assert res["layer1.relu_delta"] == 72.0  # -> block1.conv2
    assert res["layer1.relu_delta_1"] == 36.0 + 4.0  # -> block2.conv1 (9·16/4) + downsample
    assert res["layer2.relu_delta_1"] == 80 / (16 * 8 * 8)  # -> mean -> fc(16, 5)


def test_step_init_from_statistics(three_conv, example) -> None:
    out = deltaify(three_conv, example, bits=4)
    with torch.no_grad():
        first = three_conv.relu1(three_conv.conv1(example))
    q = delta_activations(out)[0]
    per_channel = first.transpose(0, 1).flatten(1)
    assert bool((q.step * 15 <= per_channel.max(1).values + 1e-6).all())
    assert bool((q.step * 15 >= 0.5 * per_channel.max(1).values).all())


@pytest.mark.parametrize("make", ["graph", "modules"])
def test_quantile_one_spans_each_channels_maximum(make, three_conv, example) -> None:
    """quantile=1.0: no calibration value lies past 2**bits - 1 steps, so a runtime that
    clamps there (the fast runtime's uint8 maps) clamps nothing it was calibrated on; the
    default 99.9th percentile leaves the largest values above it."""
    from edgeadapt.delta.structure import deltaify_modules

    fn = deltaify if make == "graph" else deltaify_modules
    with torch.no_grad():
        first = three_conv.relu1(three_conv.conv1(example)).transpose(0, 1).flatten(1)
    peak = first.max(1).values
    full = delta_activations(fn(three_conv, example, quantile=1.0))[0].step * 255
    assert torch.allclose(full, peak, rtol=1e-5)
    clipped = delta_activations(fn(three_conv, example))[0].step * 255
    assert bool((clipped < peak).any())
    with pytest.raises(ConfigError, match="quantile"):
        fn(three_conv, example, quantile=1.5)


def test_untraceable_model_falls_back_to_module_wrapping(untraceable, example) -> None:
    out = deltaify(untraceable, example)
    assert not isinstance(out, fx.GraphModule)
    assert isinstance(out.act, nn.Sequential) and isinstance(out.act[1], DeltaActivation)
    assert float(out.act[1].fan_out_macs) == 2.0  # -> 1x1 conv 6->2


def test_no_activation_is_a_config_error(example) -> None:
    with pytest.raises(ConfigError, match="no activation"):
        deltaify(nn.Conv2d(3, 4, 3), example)


def test_deltaified_model_exports(three_conv, example) -> None:
    out = deltaify(three_conv, example).eval()
    program = torch.export.export(out, (example,))
    torch.testing.assert_close(program.module()(example), out(example))
