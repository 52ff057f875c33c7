"""The lean ops that make the peak small compute what the ordinary ones do: bit masks, the
frozen conv in quarters of the batch, BNs on test statistics keeping their output, and
EcoTTA's piece-by-piece recomputation."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_config
from torch import nn

from edgeadapt.api import wrap
from edgeadapt.modules.lean import LeanConv2d, lean_test_norm, pack_bits, unpack_bits
from edgeadapt.modules.stream_norm import use_stream_statistics


@pytest.mark.parametrize("shape", [(1,), (7,), (8,), (9,), (3, 5, 7, 2)])
def test_bits_round_trip(shape):
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(0)) > 0.5
    packed = pack_bits(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == -(-mask.numel() // 8)
    assert torch.equal(unpack_bits(packed, mask.shape), mask)
    if mask.dim() > 1:  # a non-contiguous mask packs as its contiguous copy
        t = mask.transpose(0, -1)
        assert torch.equal(unpack_bits(pack_bits(t), t.shape), t)


@pytest.mark.parametrize(
    "cin,cout,k,stride,pad,dil,groups,size,batch",
    [(4, 8, 3, 1, 1, 1, 1, 9, 8), (4, 8, 3, 2, 1, 1, 1, 9, 7), (6, 6, 3, 2, 0, 2, 3, 11, 5),
     (3, 4, 1, 1, 0, 1, 1, 5, 1), (4, 4, 5, 3, 2, 1, 4, 10, 6)],
)  # fmt: skip
def test_frozen_conv_matches_conv2d(cin, cout, k, stride, pad, dil, groups, size, batch):
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, k, stride, pad, dil, groups).requires_grad_(False)
    lean = LeanConv2d(cin, cout, k, stride, pad, dil, groups).requires_grad_(False)
    lean.load_state_dict(conv.state_dict())
    x = torch.randn(batch, cin, size, size, requires_grad=True)
    y = conv(x)
    g = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, g)
    y_lean = lean(x)
    (gx_lean,) = torch.autograd.grad(y_lean, x, g)
    torch.testing.assert_close(y_lean, y, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gx_lean, gx, rtol=1e-6, atol=1e-6)


def _norm(kind: str, trains: bool) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(6)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    if kind == "stream":
        use_stream_statistics(bn, 16)
    bn.train()
    bn.track_running_stats = False  # as in a recomputation
    return bn.requires_grad_(trains)


@pytest.mark.parametrize("trains", [False, True])
@pytest.mark.parametrize(
    "kind,batch,lean",
    [("batch", 8, True), ("stream", 32, True), ("stream", 4, False), ("stream", 1, False)],
)  # below the stream's full weight the layer's own (lean) forward runs
def test_lean_test_norm_matches_the_layer(trains, kind, batch, lean):
    from edgeadapt.modules.lean import _OutputKeepingNormFn

    torch.manual_seed(1)
    bn = _norm(kind, trains)
    if not trains:
        with torch.no_grad():
            bn.weight[2] = 0.0  # a frozen γ of 0: its channel gets no gradient either way
    params = [p for p in bn.parameters() if p.requires_grad]
    x = torch.randn(batch, 6, 5, 5) * 2 + 0.5
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y = type(bn).forward(bn, x1)
    g = torch.randn_like(y)
    expected = torch.autograd.grad(y, [x1, *params], g)
    y_lean = lean_test_norm(bn, x2)
    assert (type(y_lean.grad_fn).__name__ == _OutputKeepingNormFn.__name__ + "Backward") == lean
    got = torch.autograd.grad(y_lean, [x2, *params], g)
    assert torch.equal(y_lean, y)  # the same kernel forward
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_output_keeping_norm_gradcheck():
    from edgeadapt.modules.lean import _OutputKeepingNormFn

    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64, generator=g).requires_grad_()
    w = (torch.rand(3, dtype=torch.float64, generator=g) + 0.5).requires_grad_()
    b = torch.randn(3, dtype=torch.float64, generator=g).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x, w, b: _OutputKeepingNormFn.apply(x, w, b, 1e-5), (x, w, b)
    )


@pytest.mark.parametrize(
    "setting",
    [{"stat_window": 4}, {"frozen_bn": "eval"}, {"stat_window": None, "small_batch": "predict"}],
)
def test_recompute_computes_the_same_step(setting, tiny_model, batch, example):
    """Recomputing piece by piece (lean norms, taps and seeds) against keeping everything,
    where batch statistics alone normalise (stat_window 4 < batch 8, or None) and with eval
    BNs. test_ecotta.py covers the stream's statistics mixed in."""

    def steps(recompute: bool):
        config = tiny_config("ecotta", optimizer="sgd", recompute=recompute, **setting)
        adapter = wrap(tiny_model, config, example_input=example)
        outs = [adapter(batch) for _ in range(2)]
        return outs, adapter.adapter_state_dict()

    outs, state = steps(True)
    outs_ref, state_ref = steps(False)
    for a, b in zip(outs, outs_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for k, v in state_ref.items():
        torch.testing.assert_close(state[k], v, rtol=1e-4, atol=1e-6, msg=k)
