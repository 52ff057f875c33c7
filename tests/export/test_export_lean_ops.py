"""The lean training ops compute exactly what they replace, values and gradients (eager)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgeadapt.export.graph import PlainBatchNorm2d
from edgeadapt.export.training_ops import (
    FixedBatchNorm2d,
    Int8WeightConv2d,
    MaskReLU,
    StatsBatchNorm2d,
    lean_abs,
    make_lean_for_training,
)
from edgeadapt.modules.meta import MetaConvBlock

GEN = torch.Generator().manual_seed(0)


def _grads(fn, *tensors):
    tensors = [t.detach().clone().requires_grad_(True) for t in tensors]
    out = fn(*tensors)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    return out.detach(), torch.autograd.grad((out * weight).sum(), tensors)


def _close(a, b, tol=1e-5):
    (va, ga), (vb, gb) = a, b
    assert (va - vb).abs().max() < tol
    for x, y in zip(ga, gb):
        assert (x - y).abs().max() < tol


def test_mask_relu_and_lean_abs_match_relu_and_abs():
    x = torch.randn(2, 3, 5, 5, generator=GEN)
    _close(_grads(MaskReLU(), x), _grads(F.relu, x))
    _close(_grads(lean_abs, x), _grads(torch.abs, x))


def test_stats_batchnorm_matches_training_mode_bn():
    x = 2.0 + 3.0 * torch.randn(4, 6, 5, 5, generator=GEN)
    w, b = torch.rand(6, generator=GEN) + 0.5, torch.randn(6, generator=GEN)

    def lean(x, w, b):
        return StatsBatchNorm2d(w, b, 1e-5)(x)

    def reference(x, w, b):
        return F.batch_norm(x, None, None, w, b, training=True, eps=1e-5)

    _close(_grads(lean, x, w, b), _grads(reference, x, w, b), tol=1e-4)


def test_fixed_batchnorm_matches_eval_bn():
    bn = nn.BatchNorm2d(4).eval()
    bn.running_mean.normal_(generator=GEN)
    bn.running_var.uniform_(0.5, 2.0, generator=GEN)
    x = torch.randn(2, 4, 3, 3, generator=GEN)
    fixed = FixedBatchNorm2d(
        bn.weight.detach() * torch.rsqrt(bn.running_var + bn.eps),
        bn.bias.detach()
        - bn.running_mean * bn.weight.detach() * torch.rsqrt(bn.running_var + bn.eps),
    )
    assert (fixed(x) - bn(x)).abs().max() < 1e-5


@pytest.mark.parametrize("stride", [1, 2])
def test_folded_meta_conv_block_matches_conv_bn_relu_at_batch_one(stride):
    """At batch 1 the lean block folds its BN into the conv; values and gradients (input
    and all three parameters) match conv -> BN(batch statistics) -> ReLU."""
    torch.manual_seed(0)
    block = MetaConvBlock(8, 16, stride=stride, kernel_size=1)
    block.bn.weight.data.uniform_(0.5, 1.5)
    block.bn.bias.data.normal_()
    lean = nn.Sequential(block)
    lean[0].bn = PlainBatchNorm2d(block.bn, batch_statistics=True)
    make_lean_for_training(lean)
    assert type(lean[0]).__name__ == "LeanMetaConvBlock"
    x = torch.randn(1, 8, 6, 6, generator=GEN) + 0.5

    def reference(x):
        z = F.conv2d(x, block.conv.weight, None, stride)
        return F.relu(F.batch_norm(z, None, None, block.bn.weight, block.bn.bias, True, eps=1e-5))

    params = [block.conv.weight, block.bn.weight, block.bn.bias]
    for fn in (lean, reference):
        xg = x.clone().requires_grad_(True)
        out = fn(xg)
        grads = torch.autograd.grad(out.sum() + (out * out).sum(), [xg, *params])
        if fn is lean:
            got = (out.detach(), grads)
        else:
            want = (out.detach(), grads)
    _close(got, want, tol=1e-4)


def test_int8_weight_conv_is_the_dequantized_conv_in_any_chunking():
    conv = nn.Conv2d(8, 12, 3, padding=1, bias=False).requires_grad_(False)
    x = torch.randn(1, 8, 5, 5, generator=GEN)
    whole = Int8WeightConv2d(conv, chunk_bytes=1 << 20)
    chunked = Int8WeightConv2d(conv, chunk_bytes=8 * 9 * 4 * 5)  # 5 channels a chunk
    assert len(whole.bounds) == 1 and len(chunked.bounds) == 3
    scale = conv.weight.abs().amax(dim=(1, 2, 3), keepdim=True) / 127
    dequant = torch.round(conv.weight / scale).clamp(-127, 127) * scale
    reference = F.conv2d(x, dequant, None, 1, 1)
    assert (whole(x) - reference).abs().max() < 1e-5
    assert (chunked(x) - reference).abs().max() < 1e-5
    # int8 storage: a quarter of the fp32 bytes, plus one scale per output channel.
    stored = sum(b.numel() * b.element_size() for b in chunked.buffers())
    assert stored == conv.weight.numel() + 12 * 4
