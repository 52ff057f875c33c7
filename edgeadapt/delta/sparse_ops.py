"""Sparse linear compute for temporal deltas, and the MAC counts dense vs. performed.

Given a delta Δx that is mostly exact zeros, W·Δx needs only the changed input features: one
(N, nnz) @ (nnz, out) matmul. Convolutions live in `sparse_conv`. The in-place versions
(`..._`) accumulate into the caller's output and return the MACs performed; given `max_macs`
they decline (return None) when the measured non-zero pattern makes sparse compute cost more
than that, so a caller can fall back to a dense pass. Plain torch ops, no C extensions.
"""

from __future__ import annotations

from torch import Tensor

from edgeadapt.errors import InputError

ELEMENT_OVER_MATMUL = 4  # rough cost of one scattered MAC vs one in addmm (float64, CPU)

__all__ = [
    "conv2d_macs",
    "conv_out_hw",
    "conv_out_size",
    "linear_macs",
    "pair",
    "sparse_linear",
    "sparse_linear_",
]


def pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    """(v, v) for an int, else the first two entries as ints (conv hyper-parameters)."""
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def conv_out_size(size: int, k: int, stride: int, pad: int, dil: int) -> int:
    """Output length of a convolution along one axis."""
    return (size + 2 * pad - dil * (k - 1) - 1) // stride + 1


def conv_out_hw(
    hw: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[int, int]:
    """Output (H, W) of a convolution; every argument is an (along H, along W) pair."""
    return (
        conv_out_size(hw[0], kernel[0], stride[0], padding[0], dilation[0]),
        conv_out_size(hw[1], kernel[1], stride[1], padding[1], dilation[1]),
    )


def conv2d_macs(
    in_shape: tuple[int, ...], weight_shape: tuple[int, ...], stride=1, padding=0, dilation=1
) -> int:
    """Dense MACs of a conv2d: N · C_out · (C_in/groups) · kh · kw · H_out · W_out."""
    n, _, h, w = in_shape
    o, cg, kh, kw = weight_shape
    ho, wo = conv_out_hw((h, w), (kh, kw), pair(stride), pair(padding), pair(dilation))
    return n * o * cg * kh * kw * ho * wo


def linear_macs(in_shape: tuple[int, ...], out_features: int) -> int:
    """Dense MACs of a linear layer: (elements / in_features) rows · in · out."""
    numel = 1
    for d in in_shape:
        numel *= d
    return numel * out_features


def sparse_linear_(
    y: Tensor,
    x: Tensor,
    weight_t: Tensor,
    *,
    x_prev: Tensor | None = None,
    max_macs: int | None = None,
) -> int | None:
    """In place y += Δx · Wᵀ over only the input features that changed (in any row).

    Δx = x - x_prev, or x itself when `x_prev` is None. `weight_t` is the weight transposed to
    (in, out), contiguous, so the changed features are a contiguous row gather; for a batch
    whose changes are scattered (few per row, different features) it adds each non-zero
    element's weight row instead (element-sparse). Returns the
    MACs performed, or None, leaving y untouched, if they would exceed `max_macs` (the caller
    then does a dense pass instead).
    """
    n_in, n_out = weight_t.shape
    if x.shape[-1] != n_in or y.shape[-1] != n_out or not y.is_contiguous():
        raise InputError(
            f"sparse_linear_ needs input (..., {n_in}) and a contiguous output (..., {n_out}); "
            f"got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    rows = x.reshape(-1, n_in) if x_prev is None else (x - x_prev).reshape(-1, n_in)
    changed = rows.ne(0)
    cols = changed.any(0).nonzero().squeeze(1)
    macs = rows.shape[0] * cols.numel() * n_out
    if rows.shape[0] > 1:  # batch-1 (the runtime) is element-exact already; batches may not be
        elements = int(changed.sum())
        # Per-element scatter costs several times a matmul MAC: only when much sparser.
        if elements * n_out * ELEMENT_OVER_MATMUL < macs:
            if max_macs is not None and elements * n_out > max_macs:
                return None
            r, c = changed.nonzero().unbind(1)
            contrib = weight_t.index_select(0, c).mul_(rows[r, c].unsqueeze(1))
            y.view(-1, n_out).index_add_(0, r, contrib)
            return elements * n_out
    if max_macs is not None and macs > max_macs:
        return None
    if macs:
        y.view(-1, n_out).addmm_(rows.index_select(1, cols), weight_t.index_select(0, cols))
    return macs


def sparse_linear(dx: Tensor, weight: Tensor) -> tuple[Tensor, int]:
    """W·Δx for Δx of shape (..., in); returns (Δy, MACs performed)."""
    y = dx.new_zeros(*dx.shape[:-1], weight.shape[0])
    macs = sparse_linear_(y, dx, weight.t().contiguous())
    return y, int(macs or 0)
