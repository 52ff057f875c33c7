"""Sparse convolution of temporal deltas on CPU: compute only the changed pixels' outputs.

Given x and the previous frame's x_prev, `pixel_delta` finds the pixels where any channel
changed (one pass over the full maps: max |Δ| over channels) and gathers their Δ. Then
`conv2d_delta_` adds conv2d(Δ, W) into the output, choosing by MAC count between

- pixel-sparse: one (kh·kw·O, C) @ (C, P) matmul over the P changed pixels, then a
  scatter-add of each kernel tap's contribution to the output pixel it lands on (the
  transpose of im2col, with a cached input-pixel -> output-pixel table). Each changed input
  element costs kh·kw·C_out MACs: the paper's fan-out count.
- channel-sparse: when changes are spread over the map but confined to a few channels (and
  strided convs, where pixel-sparse computes taps that land nowhere), a dense conv over only
  the changed channels.

Exact up to float summation order. Grouped convs are not handled here (`DeltaConv2d` sends
them to the element-sparse path, `sparse_elements`, which handles any groups).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from edgeadapt.delta.sparse_ops import conv_out_hw, pair
from edgeadapt.errors import InputError

__all__ = [
    "PixelDelta",
    "conv2d_delta_",
    "conv_weight_rows",
    "pixel_delta",
    "scatter_index",
    "sparse_conv2d",
    "write_pixels_",
]

_IntPair = int | tuple[int, int]


@dataclass(frozen=True)
class PixelDelta:
    """The changed part of a (N, C, H, W) delta."""

    shape: tuple[int, int, int, int]  # (N, C, H, W) of the full delta
    pix: Tensor  # (P,) flat n·H·W + i·W + j of the pixels where any channel changed
    values: Tensor  # (C, P) the delta at those pixels, all channels


def _pixel_columns(x: Tensor, pix: Tensor) -> Tensor:
    n, c, h, w = x.shape
    if n == 1 and x.is_contiguous():  # a column gather on the (C, H·W) view: no full copy
        return x.view(c, h * w).index_select(1, pix)
    return x.transpose(0, 1).reshape(c, n * h * w).index_select(1, pix)


def pixel_delta(x: Tensor, x_prev: Tensor | None = None) -> PixelDelta:
    """Find the pixels where Δ = x - x_prev (or x, if `x_prev` is None) is non-zero."""
    if x.dim() != 4 or (x_prev is not None and x_prev.shape != x.shape):
        raise InputError(f"pixel_delta needs (N, C, H, W) maps of one shape, got {tuple(x.shape)}")
    diff = x.abs() if x_prev is None else (x - x_prev).abs_()
    # max |Δ| over channels is > 0 exactly where some channel changed (no rounding involved).
    pix = diff.amax(1).view(-1).nonzero().squeeze(1)
    values = _pixel_columns(x, pix)
    if x_prev is not None:
        values = values - _pixel_columns(x_prev, pix)
    n, c, h, w = x.shape
    return PixelDelta((n, c, h, w), pix, values)


def write_pixels_(dst: Tensor, src: Tensor, pix: Tensor) -> None:
    """dst[..., pix] = src[..., pix] for (1, C, H, W) contiguous maps (else a full copy)."""
    n, c, h, w = dst.shape
    if n == 1 and dst.is_contiguous() and src.is_contiguous():
        dst.view(c, h * w).index_copy_(1, pix, src.view(c, h * w).index_select(1, pix))
    else:
        dst.copy_(src)


def conv_weight_rows(weight: Tensor) -> Tensor:
    """Weights (O, C, kh, kw) laid out as (kh·kw·O, C): one matmul serves every kernel tap."""
    o, c, kh, kw = weight.shape
    return weight.permute(2, 3, 0, 1).reshape(kh * kw * o, c).contiguous()


@functools.lru_cache(maxsize=64)
def scatter_index(
    in_shape: tuple[int, int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    device: str = "cpu",
) -> tuple[Tensor, bool]:
    """Where each (kernel tap, input pixel) lands in the flat output, -1 where nowhere.

    Returns a (kh·kw, N·H·W) int64 table for `in_shape` = (N, H, W) and whether every entry
    is valid (no padding or stride losses). Cached: it only depends on the geometry.
    """
    (n, h, w), (kh, kw), (sh, sw) = in_shape, kernel, stride
    (ph, pw), (dh, dw) = padding, dilation
    ho, wo = conv_out_hw((h, w), kernel, stride, padding, dilation)
    ar = functools.partial(torch.arange, device=device)
    ti = ar(h).view(1, 1, 1, h, 1) + ph - dh * ar(kh).view(kh, 1, 1, 1, 1)
    tj = ar(w).view(1, 1, 1, 1, w) + pw - dw * ar(kw).view(1, kw, 1, 1, 1)
    oi, oj = ti.div(sh, rounding_mode="floor"), tj.div(sw, rounding_mode="floor")
    ok = (ti % sh == 0) & (oi >= 0) & (oi < ho) & (tj % sw == 0) & (oj >= 0) & (oj < wo)
    flat = (ar(n).view(1, 1, n, 1, 1) * ho + oi) * wo + oj
    table = torch.where(ok, flat, -1).reshape(kh * kw, n * h * w)
    return table, bool(ok.all())


def conv2d_delta_(
    y: Tensor,
    delta: PixelDelta,
    weight: Tensor,
    stride: _IntPair = 1,
    padding: _IntPair = 0,
    dilation: _IntPair = 1,
    *,
    weight_rows: Tensor | None = None,
    max_macs: int | None = None,
) -> int | None:
    """In place y += conv2d(Δ, W) (no bias, groups == 1) from the changed pixels only.

    `weight_rows` is `conv_weight_rows(weight)`, precomputed by layers that call this often.
    Returns the MACs performed, or None, leaving y untouched, if the cheaper of the pixel- and
    channel-sparse paths would exceed `max_macs`.
    """
    st, pd, dl = pair(stride), pair(padding), pair(dilation)
    n, c, h, w = delta.shape
    o, _, kh, kw = weight.shape
    ho, wo = conv_out_hw((h, w), (kh, kw), st, pd, dl)
    if c != weight.shape[1] or tuple(y.shape) != (n, o, ho, wo):
        raise InputError(
            f"conv2d_delta_ needs a delta (N, {weight.shape[1]}, H, W) (groups == 1) and output "
            f"(N, {o}, H_out, W_out); got {delta.shape} and {tuple(y.shape)}"
        )
    pix, vals = delta.pix, delta.values
    chans = vals.ne(0).any(1).nonzero().squeeze(1)
    taps, p, cnz = kh * kw, pix.numel(), chans.numel()
    cost_pix, cost_chan = cnz * taps * o * p, cnz * taps * o * n * ho * wo
    macs = min(cost_pix, cost_chan)
    if max_macs is not None and macs > max_macs:
        return None
    if macs == 0:
        return 0
    if cnz < c:
        vals = vals.index_select(0, chans)
    if cost_chan < cost_pix:
        full = vals.new_zeros(cnz, n * h * w).index_copy_(1, pix, vals)
        full = full.view(cnz, n, h, w).transpose(0, 1)
        y += F.conv2d(full, weight.index_select(1, chans), None, st, pd, dl)
        return macs
    rows = conv_weight_rows(weight) if weight_rows is None else weight_rows
    contrib = (rows if cnz == c else rows.index_select(1, chans)) @ vals  # (taps·O, P)
    if taps > 1:  # to (O, taps·P), matching the table's (tap, pixel) order
        contrib = contrib.view(taps, o, p).transpose(0, 1).reshape(o, taps * p)
    table, all_valid = scatter_index((n, h, w), (kh, kw), st, pd, dl, str(pix.device))
    target = table.index_select(1, pix).view(-1)
    if not all_valid:
        keep = target >= 0
        target, contrib = target[keep], contrib[:, keep]
    if n == 1 and y.is_contiguous():
        y.view(o, ho * wo).index_add_(1, target, contrib)
    else:
        out = y.new_zeros(o, n * ho * wo).index_add_(1, target, contrib)
        y += out.view(o, n, ho, wo).transpose(0, 1)
    return macs


def sparse_conv2d(
    dx: Tensor,
    weight: Tensor,
    stride: _IntPair = 1,
    padding: _IntPair = 0,
    dilation: _IntPair = 1,
) -> tuple[Tensor, int]:
    """conv2d(Δx, W) without bias (groups == 1) on the sparse path; returns (Δy, MACs)."""
    if dx.dim() != 4:
        raise InputError(f"sparse_conv2d needs a (N, C, H, W) delta, got {tuple(dx.shape)}")
    st, pd, dl = pair(stride), pair(padding), pair(dilation)
    n, _, h, w = dx.shape
    o, _, kh, kw = weight.shape
    y = dx.new_zeros(n, o, *conv_out_hw((h, w), (kh, kw), st, pd, dl))
    macs = conv2d_delta_(y, pixel_delta(dx), weight, st, pd, dl)
    return y, int(macs or 0)
