"""The fast delta runtime: bit-exact vs its dense reference, masks propagate, cuts, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgeadapt.delta import (
    DeltaStateError,
    FastDeltaConfig,
    NotDeltaifiedError,
    deltaify,
    fast_reference_forward,
    native_available,
    to_fast_delta_runtime,
)
from edgeadapt.delta.fast_native import compiler_found
from edgeadapt.errors import ConfigError, InputError
from edgeadapt.models.cifar_resnet import CifarResNet

# Skipped only without a compiler: with one, a kernel that does not build fails every test.
pytestmark = pytest.mark.skipif(
    not compiler_found(), reason="no C++ compiler: the fast runtime's kernels cannot build"
)


def test_kernels_build_where_a_compiler_is():
    assert native_available()


# Every changed pixel sent (no input threshold): logits equal the reference on the frame itself.
EVERY_CHANGE = FastDeltaConfig(input_threshold=0)
H, W = 18, 22  # odd sizes: strided layers and the shortcut's subsampling meet ragged edges


def _model(widths: tuple[int, ...], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = CifarResNet(1, widths=widths).eval()
    for bn in model.modules():  # trained-looking BN so the folding is exercised
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.uniform_(-0.3, 0.3)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.2, 0.2)
    return deltaify(model, torch.randn(8, 3, H, W)).eval()


def _video(frames: int, seed: int) -> list[torch.Tensor]:
    """A static scene with a few moving patches, sensor noise on some frames, two cuts."""
    gen = torch.Generator().manual_seed(seed)
    frame = torch.randint(0, 256, (H, W, 3), generator=gen, dtype=torch.uint8)
    out = []
    for t in range(frames):
        frame = frame.clone()
        if t in (frames // 3, 2 * frames // 3):  # a scene cut
            frame = torch.randint(0, 256, (H, W, 3), generator=gen, dtype=torch.uint8)
        for _ in range(int(torch.randint(0, 3, (1,), generator=gen))):
            i = int(torch.randint(0, H - 4, (1,), generator=gen))
            j = int(torch.randint(0, W - 4, (1,), generator=gen))
            patch = torch.randint(0, 256, (4, 4, 3), generator=gen, dtype=torch.uint8)
            frame[i : i + 4, j : j + 4] = patch
        if t % 7 == 0:  # a level or two of noise on a few pixels, as codecs do
            noisy = torch.rand(H, W, generator=gen) < 0.05
            step = torch.randint(-2, 3, (H, W, 3), generator=gen) * noisy[..., None]
            frame = (frame.int() + step).clamp(0, 255).to(torch.uint8)
        out.append(frame)
    return out


# (16, 32) and (16, 32, 64): the vector kernels (channels a multiple of 16; AVX-512 has
# kernels for 16, 32 and 64 output channels); (4, 8, 12): the scalar fallback.
@pytest.mark.parametrize("widths", [(16, 32), (16, 32, 64), (4, 8, 12)])
def test_bit_exact_against_dense_reference(widths):
    runtime = to_fast_delta_runtime(_model(widths), EVERY_CHANGE)
    frames = _video(300, seed=1)
    for t, frame in enumerate(frames):
        logits = runtime(frame)
        ref_logits, ref_maps = fast_reference_forward(runtime.plan, frame)
        assert torch.equal(logits, ref_logits), f"frame {t}"
        if t % 10 == 0 or t == len(frames) - 1:
            for name, got, want in zip(runtime.layer_names, runtime.layer_maps(), ref_maps):
                assert torch.equal(got, want), f"frame {t}, {name}"
            for g in runtime._geometry:  # the next layer finishes rows in order: ascending
                assert bool((g.pix[: g.count].diff() > 0).all()), f"frame {t}, {g.spec.name}"
    assert runtime.scene_cuts == 2
    macs = runtime.macs()
    assert macs.performed < macs.dense / 2  # the patches are small: most work is skipped


def test_masks_propagate_from_one_pixel():
    runtime = to_fast_delta_runtime(_model((16, 32)), EVERY_CHANGE)
    frame = _video(1, seed=2)[0]
    runtime(frame)
    runtime(frame.clone())
    assert runtime.last_macs().performed == runtime.plan.head_weight.numel()  # nothing ran
    assert all(g.count == 0 for g in runtime._geometry)
    moved = frame.clone()
    moved[9, 11] = 255 - moved[9, 11]
    out = runtime(moved)
    # A 3x3 conv spreads a change by one pixel per layer (stride 2 halves the map): each
    # layer changes at most the receptive field's share of its map, never all of it.
    for g in runtime._geometry:
        assert g.count < g.npix
    assert runtime._geometry[0].count <= 9
    assert runtime.last_macs().performed < runtime.last_macs().dense / 4
    assert torch.equal(out, fast_reference_forward(runtime.plan, moved)[0])


def test_scene_cut_and_reset_restart_densely():
    runtime = to_fast_delta_runtime(
        _model((16, 32)), FastDeltaConfig(scene_cut_threshold=0.5, input_threshold=0)
    )
    a, b = _video(2, seed=3)[0], _video(1, seed=4)[0]
    runtime(a)
    out = runtime(b)  # every pixel differs: a cut
    assert runtime.scene_cuts == 1
    # A dense pass: only exact zeros (ReLU) are skipped.
    assert runtime.last_macs().performed > runtime.last_macs().dense / 4
    assert torch.equal(out, fast_reference_forward(runtime.plan, b)[0])
    runtime.reset_state()
    assert torch.equal(runtime(a), fast_reference_forward(runtime.plan, a)[0])


def test_numpy_frames_and_state_buffers():
    runtime = to_fast_delta_runtime(_model((16, 32)), EVERY_CHANGE)
    frame = _video(1, seed=5)[0]
    out = runtime(frame.numpy())
    assert out.shape == (1, 10) and out.dtype == torch.float32
    names = dict(runtime.named_buffers())
    assert "prev_frame" in names and "acc0" in names and names["k0"].dtype == torch.uint8


def test_bad_input_gets_typed_errors():
    runtime = to_fast_delta_runtime(_model((16, 32)), EVERY_CHANGE)
    frame = _video(1, seed=6)[0]
    with pytest.raises(InputError, match="uint8"):
        runtime(frame.float())
    with pytest.raises(InputError, match="shape"):
        runtime(torch.zeros(H, W, 4, dtype=torch.uint8))
    with pytest.raises(InputError, match="shape"):
        runtime(torch.zeros(1, H, W, 3, dtype=torch.uint8))
    with pytest.raises(InputError):
        runtime([1, 2, 3])
    runtime(frame)
    with pytest.raises(DeltaStateError, match="reset_state"):
        runtime(torch.zeros(H + 2, W, 3, dtype=torch.uint8))
    runtime.reset_state()  # a new stream may have a new size
    bigger = torch.randint(0, 256, (H + 2, W + 4, 3), dtype=torch.uint8)
    assert torch.equal(runtime(bigger), fast_reference_forward(runtime.plan, bigger)[0])
    with pytest.raises(InputError, match="uint8"):
        fast_reference_forward(runtime.plan, np.zeros((H, W, 3)))  # type: ignore[arg-type]


def test_lowering_refuses_what_it_cannot_run():
    with pytest.raises(NotDeltaifiedError):
        to_fast_delta_runtime(CifarResNet(1, widths=(16, 32)).eval())
    with pytest.raises(ConfigError, match="CifarResNet"):
        to_fast_delta_runtime(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))
    with pytest.raises(ConfigError):
        FastDeltaConfig(act_max=256)
    with pytest.raises(ConfigError):
        FastDeltaConfig(scene_cut_threshold=1.5)


def test_integer_weights_keep_float32_sums_exact():
    runtime = to_fast_delta_runtime(_model((16, 32)), EVERY_CHANGE)
    act_max = runtime.plan.act_max
    for i, spec in enumerate(runtime.plan.layers):
        w = spec.weight.double()
        assert torch.equal(w, w.round())
        k_max = 255.0 if i == 0 else act_max
        assert float((w.abs() * k_max).sum((1, 2, 3)).max()) <= 2**23


def test_input_threshold_holds_small_drifts_and_stays_exact_on_the_seen_frame():
    """Pixels that moved by at most `input_threshold` levels are not sent: they hold the last
    value sent, drifts add up until they cross it, and the logits equal the dense reference
    on the frame the runtime has seen (`seen_frame()`), bit for bit."""
    model = _model((4, 8, 16))
    runtime = to_fast_delta_runtime(model, FastDeltaConfig(input_threshold=2))
    base = torch.full((H, W, 3), 100, dtype=torch.uint8)
    runtime(base)
    drift = base.clone()
    drift[3, 4] = 102  # within the threshold: not sent
    out = runtime(drift)
    assert runtime.last_macs().performed == runtime.plan.head_weight.numel()  # head only
    assert torch.equal(runtime.seen_frame(), base)
    assert torch.equal(out, fast_reference_forward(runtime.plan, base)[0])
    drift[3, 4] = 103  # three levels from the held 100: sent, as 103
    out = runtime(drift)
    assert torch.equal(runtime.seen_frame(), drift)
    assert torch.equal(out, fast_reference_forward(runtime.plan, drift)[0])
    for frame in _video(40, seed=3):  # noise, moving patches and cuts: exact throughout
        out = runtime(frame)
        assert torch.equal(out, fast_reference_forward(runtime.plan, runtime.seen_frame())[0])
    with pytest.raises(ConfigError, match="input_threshold"):
        FastDeltaConfig(input_threshold=-1)
