"""Stateful delta layers for streaming inference: compute only what changed since last frame.

Each layer keeps the previous input x_prev and the previous output y_prev in buffers (so the
state follows `.to()` and `state_dict`). On a new input x it forms Δx = x - x_prev, which is
exactly zero wherever a quantised activation kept its grid value, and returns
y_prev + W·Δx: the bias only enters on the first (anchor) frame. Nonlinearities downstream
act on this accumulated value, so the network computes exactly what the dense one does.

No drift: the layers run in the dtype of their weights, float64 after `to_delta_runtime`.
The only difference from a dense pass is the order in which W·Δx increments are summed, so
the error is float64 round-off, which random-walks (~√t · 1e-16; ~1e-15 after thousands of
frames, eight orders below float32 resolution). Whenever Δx is dense enough that the sparse
path would not pay (`sparse_threshold`), the layer recomputes W·x + b densely, which
re-anchors it exactly; `DeltaRuntimeConfig.anchor_every` forces that periodically.

`forward` updates the buffers: this is inference-only state, not exportable as a pure graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgeadapt.delta.errors import DeltaStateError
from edgeadapt.delta.sparse_conv import conv2d_delta_, conv_weight_rows, pixel_delta
from edgeadapt.delta.sparse_elements import conv2d_elements_, element_delta, element_weight_rows
from edgeadapt.delta.sparse_ops import conv2d_macs, linear_macs, sparse_linear_
from edgeadapt.errors import ConfigError

# Relative cost per MAC of the sparse paths against a dense conv (oneDNN, float64, one
# thread), measured on a 2-core x86 CPU for ResNet-20 layers at 54×96: scattering single
# elements costs ~10× a dense MAC, the pixel path's matmul + scatter ~3×. Path choice only
# changes speed, never the result.
ELEMENT_COST = 10.0
PIXEL_COST = 3.0

__all__ = [
    "ELEMENT_COST",
    "PIXEL_COST",
    "DeltaConv2d",
    "DeltaLayer",
    "DeltaLinear",
    "MacCount",
    "size_buffers_for_load",
]


def size_buffers_for_load(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, names: tuple[str, ...]
) -> None:
    """Resize state buffers to the shapes being loaded.

    Streaming state has no shape until frames flow, so a fresh module's buffers are empty;
    `empty_like` also keeps the loaded memory format.
    """
    for name in names:
        src = state_dict.get(prefix + name)
        if src is not None:
            mine = getattr(module, name)
            setattr(module, name, torch.empty_like(src, dtype=mine.dtype, device=mine.device))


@dataclass
class MacCount:
    """Multiply-accumulates a dense pass would do vs. what the delta layers performed."""

    dense: int = 0
    performed: int = 0

    def __add__(self, other: MacCount) -> MacCount:
        return MacCount(self.dense + other.dense, self.performed + other.performed)

    @property
    def ratio(self) -> float:
        """dense / performed (inf when nothing was computed)."""
        return self.dense / self.performed if self.performed else float("inf")


class DeltaLayer(nn.Module):
    """Shared state handling: x_prev / y_prev buffers, `reset_state`, MAC counters."""

    weight: Tensor  # set by subclasses; its dtype is the accumulation dtype

    def __init__(self, sparse_threshold: float) -> None:
        super().__init__()
        if not 0.0 <= sparse_threshold <= 1.0:
            raise ConfigError(f"sparse_threshold must be in [0, 1], got {sparse_threshold}")
        # Above this fraction of the dense MACs (set by the measured non-zero pattern of Δx)
        # the sparse path's gather/scatter overhead does not pay: recompute densely instead.
        self.sparse_threshold = sparse_threshold
        # Empty until the first frame fixes the shapes; `primed` says whether they hold state.
        self.register_buffer("x_prev", torch.empty(0))
        self.register_buffer("y_prev", torch.empty(0))
        self.register_buffer("primed", torch.tensor(False))
        self.macs = MacCount()  # running totals; diagnostics, not state
        self.last_macs = MacCount()  # of the latest call

    def reset_state(self) -> None:
        """Forget the previous frame: the next call is a dense anchor pass."""
        # In the weights' dtype and device: the state accumulates in the same arithmetic.
        self.x_prev = self.weight.new_empty(0)
        self.y_prev = self.weight.new_empty(0)
        self.primed.fill_(False)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        size_buffers_for_load(self, state_dict, prefix, ("x_prev", "y_prev"))
        super()._load_from_state_dict(state_dict, prefix, *args)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> DeltaLayer:
        super()._apply(fn, *args, **kwargs)
        self._refresh_layouts()  # derived weight layouts follow dtype / device changes
        return self

    def _refresh_layouts(self) -> None:
        """Recompute derived weight layouts (after construction and every `.to()`)."""

    def _dense(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _state_layout(self, y: Tensor) -> torch.memory_format:
        """Memory layout of y_prev: whatever the sparse path accumulates into fastest."""
        return torch.contiguous_format

    def _accumulate_(self, x: Tensor, max_macs: int) -> int | None:
        """y_prev += W·(x - x_prev) in place and x_prev = x; returns the MACs performed.

        Returns None, changing nothing, if the sparse path would cost more than max_macs.
        """
        raise NotImplementedError

    def _dense_macs(self, x: Tensor) -> int:
        raise NotImplementedError

    @torch.no_grad()  # inference state must never carry autograd history across frames
    def forward(self, x: Tensor) -> Tensor:
        x = x.to(self.weight.dtype)
        dense_macs = self._dense_macs(x)
        primed = bool(self.primed)
        if primed and x.shape != self.x_prev.shape:
            raise DeltaStateError(
                f"{type(self).__name__} got input {tuple(x.shape)} but holds state for "
                f"{tuple(self.x_prev.shape)}; call reset_state() before changing frame shape"
            )
        performed = None
        if primed:
            performed = self._accumulate_(x, int(self.sparse_threshold * dense_macs))
        if performed is None:  # first frame, or too dense to pay: a dense pass re-anchors
            y, performed = self._dense(x), dense_macs
            self.y_prev = y.clone(memory_format=self._state_layout(y))
            self.x_prev = x.clone(memory_format=torch.contiguous_format)
        else:  # a copy: a downstream in-place op must not edit our state
            y = self.y_prev.clone(memory_format=torch.contiguous_format)
        self.primed.fill_(True)
        self.last_macs = MacCount(dense_macs, performed)
        self.macs = self.macs + self.last_macs
        return y


class DeltaConv2d(DeltaLayer):
    """Streaming delta version of an `nn.Conv2d` (zero padding; any groups).

    Per frame it measures Δx and takes the path with the lowest estimated time: element-sparse
    (`sparse_elements`: only the non-zero Δ elements, the paper's MAC count), pixel-sparse
    (`sparse_conv`: whole changed pixels, one matmul; groups == 1) or a dense re-anchoring
    pass. Estimated time = MACs × the path's relative cost per MAC (`element_cost`,
    `pixel_cost`, dense = 1); a cost of 1.0 makes a path win whenever it has the fewest MACs.
    y_prev is kept channels-last, the layout the element path adds rows into. Keeps extra
    copies of the weights in the sparse paths' layouts (an edge build would keep one).
    """

    def __init__(
        self,
        conv: nn.Conv2d,
        *,
        sparse_threshold: float = 0.3,
        element_cost: float = ELEMENT_COST,
        pixel_cost: float = PIXEL_COST,
    ) -> None:
        super().__init__(sparse_threshold)
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ConfigError(
                f"DeltaConv2d supports zero padding given as numbers; got padding_mode="
                f"{conv.padding_mode!r}, padding={conv.padding!r}"
            )
        if element_cost <= 0 or pixel_cost <= 0:
            raise ConfigError(f"path costs must be > 0, got {element_cost}, {pixel_cost}")
        self.element_cost, self.pixel_cost = element_cost, pixel_cost
        self.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=False)
        bias = None if conv.bias is None else conv.bias.detach().clone()
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.stride, self.padding = conv.stride, conv.padding
        self.dilation, self.groups = conv.dilation, conv.groups
        self.register_buffer("weight_rows", torch.empty(0), persistent=False)
        self.register_buffer("element_rows", torch.empty(0), persistent=False)
        self._refresh_layouts()
        self.reset_state()
        self.last_path = "dense"  # which path the latest frame took; diagnostics

    def _refresh_layouts(self) -> None:
        self.weight_rows = conv_weight_rows(self.weight) if self.groups == 1 else self.weight
        self.element_rows = element_weight_rows(self.weight, self.groups)

    def _state_layout(self, y: Tensor) -> torch.memory_format:
        return torch.channels_last

    def _dense(self, x: Tensor) -> Tensor:
        self.last_path = "dense"
        return F.conv2d(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )

    def _accumulate_(self, x: Tensor, max_macs: int) -> int | None:
        if not self.y_prev.is_contiguous(memory_format=torch.channels_last):
            self.y_prev = self.y_prev.contiguous(memory_format=torch.channels_last)  # loaded
        dense = self._dense_macs(x)
        geometry = (self.stride, self.padding, self.dilation)
        diff = x - self.x_prev
        count = int(torch.count_nonzero(diff))  # cheaper than listing them: decide first
        kh, kw = self.weight.shape[2:]
        out_per_group = self.weight.shape[0] // self.groups
        element_macs = count * kh * kw * out_per_group  # upper bound: all taps land
        budget = min(max_macs, dense / self.element_cost)
        if self.groups == 1 and element_macs * self.element_cost > dense * self.pixel_cost / 2:
            # Dense-ish Δ: the pixel path's matmul may beat per-element scatter; measure it.
            pixels = pixel_delta(x, self.x_prev)
            pixel_macs = pixels.values.shape[0] * pixels.pix.numel() * kh * kw * out_per_group
            if pixel_macs * self.pixel_cost < element_macs * self.element_cost:
                macs = conv2d_delta_(
                    self.y_prev,
                    pixels,
                    self.weight,
                    *geometry,
                    weight_rows=self.weight_rows,
                    max_macs=int(min(max_macs, dense / self.pixel_cost)),
                )
                if macs is not None:
                    self.last_path = "pixel"
                    self.x_prev.copy_(x)
                return macs
        if element_macs > budget and (self.stride == (1, 1) or count * out_per_group > budget):
            return None  # a dense pass is cheaper (strided: taps that miss are not computed)
        delta = element_delta(diff)
        macs = conv2d_elements_(
            self.y_prev,
            delta,
            self.element_rows,
            (kh, kw),
            *geometry,
            self.groups,
            max_macs=int(budget),
        )
        if macs is not None:
            self.last_path = "element"
            self.x_prev.copy_(x)
        return macs

    def _dense_macs(self, x: Tensor) -> int:
        return conv2d_macs(
            tuple(x.shape), tuple(self.weight.shape), self.stride, self.padding, self.dilation
        )


class DeltaLinear(DeltaLayer):
    """Streaming delta version of an `nn.Linear` (keeps a transposed copy of the weight)."""

    def __init__(self, linear: nn.Linear, *, sparse_threshold: float = 0.3) -> None:
        super().__init__(sparse_threshold)
        self.weight = nn.Parameter(linear.weight.detach().clone(), requires_grad=False)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.register_buffer("weight_t", torch.empty(0), persistent=False)
        self._refresh_layouts()
        self.reset_state()

    def _refresh_layouts(self) -> None:
        self.weight_t = self.weight.t().contiguous()

    def _dense(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def _accumulate_(self, x: Tensor, max_macs: int) -> int | None:
        macs = sparse_linear_(self.y_prev, x, self.weight_t, x_prev=self.x_prev, max_macs=max_macs)
        if macs is not None:
            self.x_prev.copy_(x)
        return macs

    def _dense_macs(self, x: Tensor) -> int:
        return linear_macs(tuple(x.shape), self.weight.shape[0])
