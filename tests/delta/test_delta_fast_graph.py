"""The fast delta runtime on torchvision-style ResNets (7x7 stem, max pool, downsample convs,
BasicBlock and Bottleneck), lowered from deltaify's fx graph: bit-exact against the dense
reference, and what the lowering refuses.

torchvision itself is optional (its PyPI wheels need a CUDA torch); these replicas are its
resnet.py structure: the same module names, `out += identity`, one ReLU called twice.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from edgeadapt.delta import (
    FastDeltaConfig,
    NotDeltaifiedError,
    deltaify,
    fast_reference_forward,
    to_fast_delta_runtime,
)
from edgeadapt.delta.fast_lower import check_lowerable, lower_graph
from edgeadapt.delta.fast_native import compiler_found
from edgeadapt.delta.fast_plan import PoolSpec
from edgeadapt.errors import ConfigError

pytestmark = pytest.mark.skipif(
    not compiler_found(), reason="no C++ compiler: the fast runtime's kernels cannot build"
)

H, W = 37, 45  # odd: the stem, the pool and the strided convs meet ragged edges


def _downsample(cin: int, cout: int, stride: int) -> nn.Module | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = _downsample(cin, width, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    expansion = 2

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(cin, out, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class TvStyleResNet(nn.Module):
    def __init__(self, block, widths: tuple[int, ...], classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = widths[0]
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            blocks = [block(cin, width, stride), block(width * block.expansion, width)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = width * block.expansion
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(4):
            layer = getattr(self, f"layer{i + 1}", None)
            if layer is not None:
                x = layer(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _deltaified(model: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    for m in model.modules():  # trained-looking BN so the folding is exercised
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return deltaify(model.eval(), torch.randn(4, 3, H, W), quantile=1.0).eval()


def _video(frames: int, seed: int) -> list[Tensor]:
    """A static scene with moving patches, a level of noise on some frames, one scene cut."""
    gen = torch.Generator().manual_seed(seed)
    frame = torch.randint(0, 256, (H, W, 3), generator=gen, dtype=torch.uint8)
    out = []
    for t in range(frames):
        frame = frame.clone()
        if t == frames // 2:
            frame = torch.randint(0, 256, (H, W, 3), generator=gen, dtype=torch.uint8)
        for _ in range(int(torch.randint(0, 3, (1,), generator=gen))):
            i = int(torch.randint(0, H - 5, (1,), generator=gen))
            j = int(torch.randint(0, W - 5, (1,), generator=gen))
            frame[i : i + 5, j : j + 5] = torch.randint(0, 256, (5, 5, 3), generator=gen).byte()
        if t % 5 == 0:
            noisy = torch.rand(H, W, generator=gen) < 0.05
            step = torch.randint(-2, 3, (H, W, 3), generator=gen) * noisy[..., None]
            frame = (frame.int() + step).clamp(0, 255).to(torch.uint8)
        out.append(frame)
    return out


# (16, 32): the vector kernels; (8, 12): the scalar fallback (channels not a multiple of 16);
# (16, 192): layer2's 192->192 3x3 weights (1.3 MB) exceed 1 MB, the channel-blocked path.
@pytest.mark.parametrize(
    "block,widths",
    [
        (BasicBlock, (16, 32)),
        (BasicBlock, (8, 12)),
        (BasicBlock, (16, 192)),
        (Bottleneck, (16, 16)),
    ],
    ids=["basic-vector", "basic-scalar", "basic-blocked", "bottleneck"],
)
def test_tv_style_resnet_bit_exact_against_dense_reference(block, widths):
    model = _deltaified(TvStyleResNet(block, widths))
    runtime = to_fast_delta_runtime(model, FastDeltaConfig(input_threshold=0))
    kinds = [type(s).__name__ for s in runtime.plan.layers]
    assert kinds[:2] == ["ConvSpec", "PoolSpec"]
    assert sum(s.branch is not None for s in runtime.plan.layers if not isinstance(s, PoolSpec))
    changed = []
    for t, frame in enumerate(_video(60, seed=2)):
        logits = runtime(frame)
        ref_logits, ref_maps = fast_reference_forward(runtime.plan, frame)
        assert torch.equal(logits, ref_logits), f"frame {t}"
        if t % 10 == 0:
            for name, got, want in zip(runtime.layer_names, runtime.layer_maps(), ref_maps):
                assert torch.equal(got, want), f"frame {t}, {name}"
        changed.append(runtime.last_macs().performed / runtime.last_macs().dense)
        head_macs = runtime.plan.head_weight.numel()  # the per-layer counts add up
        assert int(runtime.last_layer_macs.sum()) + head_macs == runtime.last_macs().performed
    assert min(changed) < 0.5  # the static frames skip most of the work
    assert runtime.scene_cuts == 1  # the new random frame restarts densely


def test_integer_model_tracks_the_float_model():
    """The lowered integer model (what the runtime equals bit for bit) agrees with the
    deltaified float model it came from: the folding, the joint downsample scale and the
    pooling are the same network, not merely self-consistent."""
    model = _deltaified(TvStyleResNet(BasicBlock, (16, 32)))
    plan = lower_graph(model)
    frames = torch.stack(_video(6, seed=3))
    mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    x = (frames.permute(0, 3, 1, 2).float() / 255 - mean) / std
    with torch.no_grad():
        want = model(x)
    got = torch.cat([fast_reference_forward(plan, f)[0] for f in frames])
    assert (got - want).abs().max() < 0.05 * want.abs().max()


def test_weights_of_a_block_and_its_downsample_share_one_scale_within_the_bound():
    plan = lower_graph(_deltaified(TvStyleResNet(BasicBlock, (16, 32))))
    joint = [s for s in plan.layers if not isinstance(s, PoolSpec) and s.branch is not None]
    assert [s.name for s in joint] == ["layer2.0.conv2"]
    spec = joint[0]
    mass = spec.weight.abs().sum((1, 2, 3)) + spec.branch.weight.abs().sum((1, 2, 3))
    assert float((mass * plan.act_max).max()) <= 2**23
    assert spec.branch.stride == 2 and spec.branch.weight.shape[2] == 1


class _WithSigmoid(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(8, 2)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.sigmoid(self.relu(self.conv1(x)))
        return self.fc(x.mean((2, 3)))


def test_an_op_without_a_kernel_is_refused_by_name():
    model = deltaify(_WithSigmoid().eval(), torch.randn(2, 3, 12, 12))
    with pytest.raises(ConfigError, match="sigmoid"):
        lower_graph(model)


def test_a_model_not_deltaified_is_refused():
    with pytest.raises(NotDeltaifiedError, match="deltaify"):
        lower_graph(torch.fx.symbolic_trace(TvStyleResNet(BasicBlock, (16, 32))))
    with pytest.raises(ConfigError, match="CifarResNet or a deltaified traceable"):
        to_fast_delta_runtime(TvStyleResNet(BasicBlock, (16, 32)))


def test_check_lowerable_accepts_resnets_and_names_what_it_refuses():
    check_lowerable(TvStyleResNet(BasicBlock, (16, 32)))  # not deltaified yet: probed
    check_lowerable(_deltaified(TvStyleResNet(Bottleneck, (16, 16))))  # deltaified: as is
    with pytest.raises(ConfigError, match="sigmoid"):
        check_lowerable(_WithSigmoid())


class _Scaled(nn.Module):
    """A residual add with alpha: not a plain sum, so it must not lower as one."""

    def __init__(self, padding_mode: str = "zeros") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, padding_mode=padding_mode)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(8, 2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.conv1(x))
        x = self.relu(torch.add(self.conv2(x), x, alpha=2.0))
        return self.fc(x.mean((2, 3)))


def test_what_would_lower_to_a_wrong_answer_is_refused():
    with pytest.raises(ConfigError, match="alpha"):
        lower_graph(deltaify(_Scaled().eval(), torch.randn(2, 3, 12, 12)))
    with pytest.raises(ConfigError, match="zero padding only"):
        lower_graph(deltaify(_Scaled("reflect").eval(), torch.randn(2, 3, 12, 12)))
