"""EcoTTA specifics: partitioning, the lean and recomputed paths, warm-up."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_config
from torch import nn

from edgeadapt.api import wrap
from edgeadapt.errors import ConfigError, PartitionError
from edgeadapt.models import create_model
from edgeadapt.modules import MetaPart


class InvertedResidual(nn.Module):
    """A MobileNetV2-style block: 1×1 expand, depthwise 3×3, 1×1 project, ReLU6."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        mid = cin * 2
        self.conv = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(inplace=True),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(inplace=True),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )  # fmt: skip
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class TinyMobileNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6()),
            InvertedResidual(8, 8, 1), InvertedResidual(8, 12, 2), InvertedResidual(12, 12, 1),
        )  # fmt: skip
        self.classifier = nn.Linear(12, 5)

    def forward(self, x):
        return self.classifier(self.features(x).mean(dim=(2, 3)))


def _partial_steps(adapter, batch, n=2):
    for _ in range(n):
        adapter(batch)
    return {k: v for k, v in adapter.adapter_state_dict().items()}


def test_auto_parts_on_resnet20():
    adapter = wrap(create_model("resnet20"), tiny_config("ecotta"))
    assert adapter.part_names == ["layer1.0", "layer1.2", "layer2.0", "layer3.0"]
    parts = [m for m in adapter.model.modules() if isinstance(m, MetaPart)]
    assert [(p.adapter_conv.conv.in_channels, p.adapter_conv.conv.out_channels, p.adapter_conv.conv.stride[0]) for p in parts] == [
        (16, 16, 1), (16, 16, 1), (16, 32, 2), (32, 64, 2)
    ]  # fmt: skip


def test_skip_stages_puts_no_meta_network_in_the_first_stages(batch):
    adapter = wrap(create_model("resnet20"), tiny_config("ecotta", skip_stages=1, num_parts=2))
    assert adapter.part_names == ["layer2.0", "layer3.0"]
    # Stage 1 runs as it was; its BNs still adapt their statistics, its weights stay frozen.
    assert not any(isinstance(m, MetaPart) for m in adapter.model.layer1.modules())
    trained = {n for n, p in adapter.model.named_parameters() if p.requires_grad}
    assert trained and not any(n.startswith(("layer1.", "conv1", "bn1")) for n in trained)
    before = {k: v.clone() for k, v in adapter.adapter_state_dict().items()}
    logits = adapter(batch)
    assert logits.shape == (len(batch), 10)
    after = adapter.adapter_state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # Without num_parts, the default K is split over the stages left.
    default = wrap(create_model("resnet20"), tiny_config("ecotta", skip_stages=1))
    assert default.part_names == ["layer2.0", "layer2.2", "layer3.0", "layer3.2"]


def test_skip_stages_errors():
    with pytest.raises(PartitionError, match="skip_stages=3 leaves no stage"):
        wrap(create_model("resnet20"), tiny_config("ecotta", skip_stages=3))
    with pytest.raises(PartitionError, match="fewer than the 2 stages"):
        wrap(create_model("resnet20"), tiny_config("ecotta", skip_stages=1, num_parts=1))
    with pytest.raises(ConfigError, match="skip_stages must be >= 0"):
        tiny_config("ecotta", skip_stages=-1)
    with pytest.raises(ConfigError, match="name only the parts"):
        tiny_config("ecotta", skip_stages=1, parts=("layer3",))


def test_named_parts_and_their_errors(tiny_model, example):
    cfg = tiny_config("ecotta", parts=("layer1", ("layer2.0",), "layer3"))
    assert wrap(tiny_model, cfg, example_input=example).part_names == [
        "layer1",
        "layer2.0",
        "layer3",
    ]
    with pytest.raises(PartitionError, match="did you mean"):
        wrap(tiny_model, tiny_config("ecotta", parts=("layer5",)), example_input=example)
    with pytest.raises(PartitionError, match="forward order"):
        wrap(tiny_model, tiny_config("ecotta", parts=("layer2", "layer1")), example_input=example)
    with pytest.raises(PartitionError, match="siblings"):
        wrap(
            tiny_model,
            tiny_config("ecotta", parts=(("layer1.0", "layer2.0"),)),
            example_input=example,
        )
    with pytest.raises(PartitionError, match="does not consume"):
        wrap(
            tiny_model, tiny_config("ecotta", parts=(("layer1", "layer3"),)), example_input=example
        )
    with pytest.raises(PartitionError, match="only 3 blocks"):
        wrap(tiny_model, tiny_config("ecotta", num_parts=5), example_input=example)


@pytest.mark.parametrize(
    "setting", [{"recompute": False}, {"lean": False}, {"lean": False, "recompute": False}]
)
def test_memory_saving_paths_compute_the_same_step(setting, tiny_model, batch, example):
    reference = _partial_steps(
        wrap(tiny_model, tiny_config("ecotta", optimizer="sgd"), example_input=example), batch
    )
    other = _partial_steps(
        wrap(tiny_model, tiny_config("ecotta", optimizer="sgd", **setting), example_input=example),
        batch,
    )
    for k, v in reference.items():
        torch.testing.assert_close(other[k], v, rtol=1e-4, atol=1e-6, msg=k)


def test_frozen_bn_on_batch_statistics(tiny_model, batch, example):
    adapter = wrap(tiny_model, tiny_config("ecotta", frozen_bn="batch"), example_input=example)
    frozen_bns = [
        m
        for n, m in adapter.model.named_modules()
        if isinstance(m, nn.BatchNorm2d) and "adapter" not in n
    ]
    assert frozen_bns and all(m.training and not m.weight.requires_grad for m in frozen_bns)
    assert torch.isfinite(adapter(batch)).all()


def test_mobilenet_style_backbone(batch):
    torch.manual_seed(0)
    model = TinyMobileNet()
    adapter = wrap(model, tiny_config("ecotta", num_parts=3), example_input=batch[:2])
    assert adapter.part_names == [
        "features.0",
        "features.2",
        "features.3",
    ]  # the stem counts as a block
    before = {k: v.clone() for k, v in adapter.adapter_state_dict().items()}
    for _ in range(2):
        out = adapter(batch)
    assert out.shape == (8, 5)
    moved = [k for k, v in adapter.adapter_state_dict().items() if not torch.equal(v, before[k])]
    assert moved


def test_calibration_makes_the_wrapped_model_start_as_the_source(tiny_model, example):
    torch.manual_seed(3)
    images = [torch.randn(16, 3, 16, 16) for _ in range(4)]
    labels = [torch.randint(0, 10, (16,)) for _ in range(4)]
    adapter = wrap(tiny_model, tiny_config("ecotta"), example_input=example)
    adapter._calibrate(list(zip(images, labels)))
    tiny_model.eval()
    from edgeadapt.methods._state import source_statistics

    with torch.no_grad(), source_statistics(adapter):
        wrapped = adapter.model(images[0])
        original = tiny_model(images[0])
    # Only the meta conv blocks' small initial residual separates the two.
    assert (wrapped - original).abs().max() < 0.1 * original.abs().max()


def test_warmup_learns_and_sets_the_reset_point(tiny_model, example):
    torch.manual_seed(4)
    # A learnable source task: the label is the brightest colour channel.
    images = [torch.randn(32, 3, 16, 16) for _ in range(6)]
    labels = [x.mean(dim=(2, 3)).argmax(1) for x in images]
    adapter = wrap(tiny_model, tiny_config("ecotta"), example_input=example)
    first = adapter.warmup(list(zip(images, labels)), epochs=1, max_steps=1, progress=False)
    last = adapter.warmup(list(zip(images, labels)), epochs=8, lr=1e-2, progress=False)
    assert last["loss"] < first["loss"]
    state = {k: v.clone() for k, v in adapter.adapter_state_dict().items()}
    adapter(images[0])
    adapter.reset()
    for k, v in adapter.adapter_state_dict().items():
        assert torch.equal(v, state[k])


def _trainable(adapter) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in adapter.named_parameters() if p.requires_grad}


def test_restore_prob_returns_meta_weights_to_the_reset_point(tiny_model, batch, example):
    always = wrap(tiny_model, tiny_config("ecotta", restore_prob=1.0), example_input=example)
    start = _trainable(always)
    always(batch)
    for n, v in _trainable(always).items():
        assert torch.equal(v, start[n]), n  # every element restored after the step
    never = wrap(tiny_model, tiny_config("ecotta", restore_prob=0.0), example_input=example)
    never(batch)
    assert any(not torch.equal(v, start[n]) for n, v in _trainable(never).items())


def test_restore_prob_restores_a_fraction(tiny_model, batch, example):
    adapter = wrap(tiny_model, tiny_config("ecotta", restore_prob=0.5), example_input=example)
    start = _trainable(adapter)
    adapter(batch)
    changed = torch.cat([(v != start[n]).flatten() for n, v in _trainable(adapter).items()])
    assert 0.3 < changed.float().mean() < 0.7  # about half the elements kept their update


def test_entropy_weighting_favours_confident_samples(tiny_model, batch, example):
    plain = wrap(tiny_model, tiny_config("ecotta"), example_input=example)
    weighted = wrap(
        tiny_model, tiny_config("ecotta", entropy_weighting=True), example_input=example
    )
    loss_plain, _ = plain.loss(batch)
    loss_weighted, _ = weighted.loss(batch)
    # The threshold (10 · ln C) is far above every entropy, so each weight exp(H0 - H) > 1.
    assert loss_weighted > loss_plain


def test_restore_prob_outside_0_1_is_a_config_error():
    from edgeadapt.errors import ConfigError

    with pytest.raises(ConfigError, match="restore_prob"):
        tiny_config("ecotta", restore_prob=1.5)


def test_memory_of_entropy_weighting_is_measurable(tiny_model, example):
    from edgeadapt.memory import measure_step_memory

    adapter = wrap(tiny_model, tiny_config("ecotta", entropy_weighting=True), example_input=example)
    assert measure_step_memory(adapter, (8, 3, 16, 16)).saved_for_backward > 0
