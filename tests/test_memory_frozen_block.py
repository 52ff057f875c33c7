"""The hand-written backward of frozen residual blocks and the other pieces that keep EcoTTA's
peak small compute what autograd does: block gradients in every BN mode, the fixed-statistics
norm (gradcheck), norms that overwrite the output they keep, masks made and applied by
pieces, transposed convolutions written in place, and the stem rebuilt from the image."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_config
from torch import nn

from edgeadapt.api import wrap
from edgeadapt.errors import EdgeAdaptError
from edgeadapt.memory import analytic_step_memory, measure_step_memory
from edgeadapt.models import create_model
from edgeadapt.models.cifar_resnet import BasicBlock
from edgeadapt.modules.frozen_block import (
    block_backward,
    block_forward,
    block_vjp,
    residual_layers,
)
from edgeadapt.modules.lean import (
    consuming_outputs,
    conv_input_grad,
    frozen_prefix,
    lean_test_norm,
    make_lean,
    masked_grad,
    pack_bits,
    pack_positive,
    rebuilder,
)
from edgeadapt.modules.stream_norm import use_stream_statistics


def _frozen_block(cin: int, cout: int, stride: int, mode: str, lean: bool) -> BasicBlock:
    torch.manual_seed(0)
    block = BasicBlock(cin, cout, stride)
    with torch.no_grad():
        for bn in (block.bn1, block.bn2):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0, 0.3)
            bn.running_mean.normal_(0, 0.3)
            bn.running_var.uniform_(0.5, 2.0)
    block.requires_grad_(False).eval()
    for bn in (block.bn1, block.bn2):
        if mode == "batch":
            bn.train()
        elif mode.startswith("stream"):  # full weight at batch 8 with window 4, not with 64
            use_stream_statistics(bn, 4 if mode == "stream_full" else 64)
        if bn.training:
            bn.track_running_stats = False  # as in a recomputation: no updates
    if lean:
        make_lean(block)
    return block


@pytest.mark.parametrize("lean", [True, False])
@pytest.mark.parametrize("stride,cout", [(1, 4), (2, 8)])
@pytest.mark.parametrize("mode", ["batch", "stream_full", "stream_part", "eval"])
def test_block_backward_matches_autograd(mode, stride, cout, lean):
    block = _frozen_block(4, cout, stride, mode, lean)
    x = torch.randn(8, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    leaf = x.clone().requires_grad_()
    ref = block(leaf)
    g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(2))
    (expected,) = torch.autograd.grad(ref, leaf, g)

    layers = residual_layers(block)
    assert layers is not None
    out, tape = block_forward(block, layers, x)
    assert torch.equal(out, ref.detach())  # the block's own forward
    got = block_backward(layers, tape, [x], [g.clone()])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        block_vjp(block, layers, [x], [g.clone()]), expected, rtol=1e-4, atol=1e-5
    )


class _ConvShortcutBlock(BasicBlock):
    """A basic block whose shortcut is a 1×1 conv: back-propagated through autograd."""

    def __init__(self) -> None:
        super().__init__(4, 6, 2)
        self.shortcut = nn.Conv2d(4, 6, 1, 2, bias=False)


def test_other_shortcuts_go_through_autograd_and_trained_blocks_are_refused():
    torch.manual_seed(3)
    block = _ConvShortcutBlock().requires_grad_(False).eval()
    x = torch.randn(8, 4, 8, 8)
    leaf = x.clone().requires_grad_()
    ref = block(leaf)
    g = torch.randn_like(ref)
    (expected,) = torch.autograd.grad(ref, leaf, g)
    layers = residual_layers(block)
    got = block_vjp(block, layers, [x], [g.clone()])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    block.bn1.weight.requires_grad_(True)
    assert residual_layers(block) is None
    assert residual_layers(nn.Sequential(nn.Conv2d(4, 4, 3))) is None


def _stream_norm(trains: bool) -> nn.BatchNorm2d:
    torch.manual_seed(4)
    bn = nn.BatchNorm2d(6)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    use_stream_statistics(bn, 16)
    bn.track_running_stats = False  # as in a recomputation
    return bn.requires_grad_(trains)


def test_fixed_statistics_norm_gradcheck():
    from edgeadapt.modules.lean import _FixedStatsNormFn

    g = torch.Generator().manual_seed(5)
    dd = torch.float64
    x = torch.randn(4, 3, 2, 2, dtype=dd, generator=g).requires_grad_()
    w = (torch.rand(3, dtype=dd, generator=g) + 0.5).requires_grad_()
    b = torch.randn(3, dtype=dd, generator=g).requires_grad_()
    mean, var = torch.randn(3, dtype=dd, generator=g), torch.rand(3, dtype=dd, generator=g) + 0.5
    assert torch.autograd.gradcheck(
        lambda x, w, b: _FixedStatsNormFn.apply(x, w, b, mean, var, 1e-5), (x, w, b)
    )


@pytest.mark.parametrize("batch", [4, 32])  # below the stream's full weight, and at it
def test_norms_that_overwrite_their_output_compute_the_same(batch):
    bn = _stream_norm(trains=True)
    params = list(bn.parameters())
    x = torch.randn(batch, 6, 5, 5, generator=torch.Generator().manual_seed(6)) * 2
    g = torch.randn_like(x)
    results = []
    for consume in (False, True):
        leaf = x.clone().requires_grad_()
        if consume:
            with consuming_outputs():
                y = lean_test_norm(bn, leaf)
        else:
            y = lean_test_norm(bn, leaf)
        assert "NormFn" in type(y.grad_fn).__name__  # a lean norm, not the layer's own
        results.append((y.detach().clone(), torch.autograd.grad(y, [leaf, *params], g)))
    (y0, g0), (y1, g1) = results
    assert torch.equal(y0, y1)
    expected = torch.autograd.grad(type(bn).forward(bn, x.clone().requires_grad_()), params, g)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(g0[1:], expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 3), (17, 2, 4), (5, 3, 3), (32, 4, 2, 2)])
def test_masks_made_and_applied_in_pieces(shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(7))
    g = torch.randn(shape, generator=torch.Generator().manual_seed(8))
    packed = pack_positive(x)
    assert torch.equal(packed, pack_bits(x > 0))
    expected = torch.where(x > 0, g, 0.0)
    assert torch.equal(masked_grad(g, packed, in_place=False), expected)
    assert torch.equal(masked_grad(g.clone(), packed, in_place=True), expected)


def test_transposed_convolution_in_place_and_accumulated():
    torch.manual_seed(9)
    w = torch.randn(6, 6, 3, 3)
    g = torch.randn(10, 6, 7, 7)
    conf = (g.shape, (1, 1), (1, 1), (1, 1), 1)
    expected = conv_input_grad(g, w, *conf)
    in_place = g.clone()
    assert conv_input_grad(in_place, w, *conf, out=in_place) is in_place
    torch.testing.assert_close(in_place, expected, rtol=0, atol=0)
    base = torch.randn_like(expected)
    total = base.clone()
    conv_input_grad(g, w, *conf, out=total, accumulate=True)
    torch.testing.assert_close(total, base + expected, rtol=1e-6, atol=1e-6)


def test_the_stem_is_rebuilt_from_the_image_not_kept(monkeypatch):
    model = create_model("tiny_resnet").eval().requires_grad_(False)
    use_stream_statistics(model.bn1, 64)
    x = torch.randn(8, 3, 16, 16)
    before = model.bn1.running_mean.clone()
    out = frozen_prefix(x, model.conv1, model.bn1, model.relu)
    after = model.bn1.running_mean.clone()
    assert not torch.equal(before, after)  # the forward moved the stream
    assert torch.equal(rebuilder(out)(), out)  # rebuilt with the statistics it used
    assert torch.equal(model.bn1.running_mean, after)  # and the stream left as it was
    x.add_(1.0)
    with pytest.raises(EdgeAdaptError, match="modified in place"):
        rebuilder(out)()

    # In EcoTTA the first part (its input needs no gradient) then keeps nothing for backward.
    adapter = wrap(create_model("resnet20"), tiny_config("ecotta"))
    shape = (8, 3, 32, 32)
    kept = measure_step_memory(adapter, shape).saved_for_backward
    assert kept == pytest.approx(analytic_step_memory(adapter, shape).saved_for_backward, rel=0.01)
    monkeypatch.setattr("edgeadapt.modules.meta.rebuilder", lambda t: None)
    first_input = 8 * 16 * 32 * 32 * 4
    assert measure_step_memory(adapter, shape).saved_for_backward == kept + first_input
