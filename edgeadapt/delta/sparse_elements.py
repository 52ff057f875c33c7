"""Element-sparse convolution of temporal deltas on CPU: touch only the non-zero Δ elements.

The pixel path (`sparse_conv`) computes a pixel's full fan-out as soon as any of its channels
changed; at low resolution with 16-64 channels nearly every pixel has some changed channel,
so it saves little. This path gathers the non-zero (n, c, y, x) entries of Δ themselves and
adds each one's contribution v · W[:, c, ky, kx] to the outputs it reaches: one batched
gather-multiply of weight rows and one `index_add_` into the output viewed as (pixels, O)
rows. It performs exactly the element count of Yousefzadeh & Sifalakis (2021): every non-zero
element times the outputs it really reaches (taps that land in padding or between strides
are dropped before any multiply).

The output is accumulated row-wise, so it is fastest when the caller keeps it channels-last
(`DeltaConv2d` does); other layouts go through a scratch buffer. Grouped and depthwise convs
are handled: an element of group g only reaches that group's O/G output channels.
Exact up to float summation order, like the pixel path.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from edgeadapt.delta.sparse_conv import scatter_index
from edgeadapt.delta.sparse_ops import conv_out_hw, pair
from edgeadapt.errors import InputError

__all__ = [
    "ElementDelta",
    "conv2d_elements_",
    "element_delta",
    "element_weight_rows",
    "tap_table",
]

_IntPair = int | tuple[int, int]


@dataclass(frozen=True)
class ElementDelta:
    """The non-zero entries of a (N, C, H, W) delta."""

    shape: tuple[int, int, int, int]  # (N, C, H, W) of the full delta
    index: Tensor  # (E,) flat indices into the delta in logical (N, C, H, W) order
    values: Tensor  # (E,) the delta at those entries

    @property
    def count(self) -> int:
        return self.index.numel()


def element_delta(x: Tensor, x_prev: Tensor | None = None) -> ElementDelta:
    """The non-zero entries of Δ = x - x_prev (or of x, if `x_prev` is None)."""
    if x.dim() != 4 or (x_prev is not None and x_prev.shape != x.shape):
        raise InputError(
            f"element_delta needs (N, C, H, W) maps of one shape, got {tuple(x.shape)}"
        )
    diff = x if x_prev is None else x - x_prev
    flat = diff.reshape(-1)  # logical order whatever the memory layout (a copy if permuted)
    index = flat.nonzero().squeeze(1)
    n, c, h, w = x.shape
    return ElementDelta((n, c, h, w), index, flat.index_select(0, index))


def element_weight_rows(weight: Tensor, groups: int = 1) -> Tensor:
    """Weights (O, C/G, kh, kw) as (C, kh·kw, O/G): the rows one input channel drives."""
    o, cg, kh, kw = weight.shape
    og = o // groups
    rows = weight.reshape(groups, og, cg, kh * kw).permute(0, 2, 3, 1)
    return rows.reshape(groups * cg, kh * kw, og).contiguous()


@functools.lru_cache(maxsize=64)
def tap_table(
    in_shape: tuple[int, int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    device: str = "cpu",
) -> tuple[Tensor, Tensor, bool]:
    """Per input pixel, the flat output pixel each kernel tap lands on (-1: nowhere).

    Returns the (N·H·W, kh·kw) table, the number of valid taps per input pixel and whether
    all are valid. The transpose of `scatter_index`, laid out so one pixel's taps are a row.
    """
    table, all_valid = scatter_index(in_shape, kernel, stride, padding, dilation, device)
    table_t = table.t().contiguous()
    return table_t, (table_t >= 0).sum(1), all_valid


def _output_rows(y: Tensor, groups: int) -> tuple[Tensor, bool]:
    """y (N, O, Ho, Wo) as (N·Ho·Wo·G, O/G) rows: a view if channels-last, else scratch."""
    n, o, ho, wo = y.shape
    if y.is_contiguous(memory_format=torch.channels_last):
        return y.permute(0, 2, 3, 1).view(n * ho * wo * groups, o // groups), True
    return y.new_zeros(n * ho * wo * groups, o // groups), False


def conv2d_elements_(
    y: Tensor,
    delta: ElementDelta,
    weight_rows: Tensor,
    kernel: _IntPair,
    stride: _IntPair = 1,
    padding: _IntPair = 0,
    dilation: _IntPair = 1,
    groups: int = 1,
    *,
    max_macs: int | None = None,
) -> int | None:
    """In place y += conv2d(Δ, W, groups=groups) (no bias) from the non-zero elements only.

    `weight_rows` is `element_weight_rows(weight, groups)`. Returns the MACs performed (valid
    element-tap pairs × O/G), or None, leaving y untouched, if they would exceed `max_macs`.
    """
    (kh, kw), st, pd, dl = pair(kernel), pair(stride), pair(padding), pair(dilation)
    n, c, h, w = delta.shape
    taps, og = kh * kw, weight_rows.shape[2]
    o = og * groups
    ho, wo = conv_out_hw((h, w), (kh, kw), st, pd, dl)
    if tuple(weight_rows.shape[:2]) != (c, taps) or tuple(y.shape) != (n, o, ho, wo):
        raise InputError(
            f"conv2d_elements_ needs weight rows ({c}, {taps}, O/G) and an output "
            f"(N, O, H_out, W_out) for a delta {delta.shape}; got {tuple(weight_rows.shape)} "
            f"and {tuple(y.shape)}"
        )
    if delta.count == 0:
        return 0
    hw = h * w
    index, values = delta.index, delta.values
    chan = index.div(hw, rounding_mode="floor").remainder_(c)
    pix = index.div(c * hw, rounding_mode="floor").mul_(hw).add_(index.remainder(hw))
    table_t, valid_taps, all_valid = tap_table((n, h, w), (kh, kw), st, pd, dl, str(y.device))
    # Stride 1: few taps fall off the map (borders only), so every element's whole weight
    # block is gathered (contiguous rows) and the lost taps multiplied by zero (and counted).
    # Strided: most taps land between outputs, so only the landing pairs are computed.
    masked = all_valid or st == (1, 1)
    landing = delta.count * taps if masked else int(valid_taps.index_select(0, pix).sum())
    macs = landing * og
    if max_macs is not None and macs > max_macs:
        return None
    target = table_t.index_select(0, pix)  # (E, taps) flat output pixel per tap
    if masked:
        scale = values.view(-1, 1)
        if not all_valid:
            scale = target.ge(0).to(values.dtype).mul_(scale)
            target = target.clamp(min=0)
        contrib = weight_rows.index_select(0, chan).mul_(scale.unsqueeze(2)).view(-1, og)
        target = target.reshape(-1)
        if groups > 1:
            chan = chan.repeat_interleave(taps)
    else:  # strided: most taps land between outputs, keep only the pairs that land
        elem, tap = target.ge(0).nonzero().unbind(1)
        chan, target = chan.index_select(0, elem), target[elem, tap]
        rows = weight_rows.view(c * taps, og).index_select(0, chan * taps + tap)
        contrib = rows.mul_(values.index_select(0, elem).unsqueeze(1))
    if groups > 1:  # row of (output pixel, group) in the (N·Ho·Wo·G, O/G) view
        target = target * groups + chan.div(c // groups, rounding_mode="floor")
    out, in_place = _output_rows(y, groups)
    out.index_add_(0, target, contrib)
    if not in_place:
        y += out.view(n, ho, wo, o).permute(0, 3, 1, 2)
    return macs
