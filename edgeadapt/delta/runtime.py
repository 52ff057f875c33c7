"""Streaming delta inference: convert a deltaified model, feed it one frame at a time.

`to_delta_runtime` copies the model, puts it in eval mode and float64, and swaps every
nn.Conv2d / nn.Linear for its stateful delta twin (`DeltaConv2d` / `DeltaLinear`). Everything
else (quantisers, ReLUs, residual adds, BN, pooling) runs unchanged on the accumulated
values, so every frame's output equals the dense quantised model's output evaluated in the
same dtype (`copy.deepcopy(model).double()`): bit for bit where the arithmetic is exact, and
to float64 round-off otherwise, with no drift that matters (see `layers`). Against the float32
model it agrees to float32 round-off, except where a value sits within that round-off of a
quantiser's bin edge and the two models legitimately round it differently.

Scene cuts: when more than `scene_cut_threshold` of the input pixels changed, deltas would be
dense anyway and accumulating them only adds round-off, so the runtime drops its state and
runs a dense anchor pass. `signal_scene_cut()` / `reset_state()` do the same on demand.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, fx, nn

from edgeadapt.delta.deltaify import delta_activations
from edgeadapt.delta.errors import DeltaStateError, NotDeltaifiedError
from edgeadapt.delta.layers import (
    ELEMENT_COST,
    PIXEL_COST,
    DeltaConv2d,
    DeltaLayer,
    DeltaLinear,
    MacCount,
    size_buffers_for_load,
)
from edgeadapt.errors import ConfigError, InputError

__all__ = ["DeltaRuntime", "DeltaRuntimeConfig", "to_delta_runtime"]


@dataclass(frozen=True, kw_only=True)
class DeltaRuntimeConfig:
    """How the streaming runtime trades exactness, re-anchoring and sparse compute."""

    # Changed-pixel fraction above which to re-anchor densely. Re-anchoring changes cost, never
    # outputs. Codec noise alone changes up to 98.8% of a static camera's pixels
    # (benchmarks/delta/run.py), and a false cut costs a dense pass where the deltas below the
    # first layer would have been sparse; a missed cut costs about one dense pass. So only a
    # frame where essentially every pixel changed counts as a cut.
    scene_cut_threshold: float = 0.995
    sparse_threshold: float = 0.3  # per layer: non-zero fraction of Δx above which to go dense
    anchor_every: int = 0  # also re-anchor every N frames (0: never; float64 does not drift)
    dtype: Literal["float64", "float32"] = "float64"  # accumulation dtype of weights and state
    # Conv path choice (`DeltaConv2d`): relative cost per MAC of the element- and pixel-sparse
    # paths vs dense. The defaults minimise wall-clock on a desktop CPU; 1.0 / 1.0 (with
    # sparse_threshold=1.0) minimises MACs instead, making the runtime's count the element count.
    element_cost: float = ELEMENT_COST
    pixel_cost: float = PIXEL_COST

    def __post_init__(self) -> None:
        for name in ("scene_cut_threshold", "sparse_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.anchor_every < 0:
            raise ConfigError(f"anchor_every must be >= 0 (0 disables), got {self.anchor_every}")
        if self.element_cost <= 0 or self.pixel_cost <= 0:
            raise ConfigError(
                f"element_cost and pixel_cost must be > 0, got {self.element_cost}, "
                f"{self.pixel_cost}"
            )
        if self.dtype not in ("float64", "float32"):
            raise ConfigError(f"dtype must be 'float64' or 'float32', got {self.dtype!r}")


class DeltaRuntime(nn.Module):
    """A deltaified model turned into a streaming, stateful, batch-1 frame processor.

    State lives in buffers (this module's previous frame, each delta layer's x_prev / y_prev),
    so it follows `.to()` and `state_dict`. MAC statistics: `macs()` / `last_macs()`.
    """

    def __init__(self, model: nn.Module, config: DeltaRuntimeConfig) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.register_buffer("prev_frame", torch.empty(0, dtype=getattr(torch, config.dtype)))
        self.register_buffer("frames_since_anchor", torch.tensor(0, dtype=torch.int64))
        self.scene_cuts = 0  # detected by threshold; statistics, not state

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        size_buffers_for_load(self, state_dict, prefix, ("prev_frame",))
        super()._load_from_state_dict(state_dict, prefix, *args)

    def delta_layers(self) -> list[DeltaLayer]:
        return [m for m in self.model.modules() if isinstance(m, DeltaLayer)]

    def reset_state(self) -> None:
        """Forget all previous frames: the next frame is a dense anchor pass."""
        self.prev_frame = self.prev_frame.new_empty(0)
        self.frames_since_anchor.zero_()
        for layer in self.delta_layers():
            layer.reset_state()

    def signal_scene_cut(self) -> None:
        """The caller knows the scene changed (a cut, a seek): re-anchor on the next frame."""
        self.reset_state()

    def macs(self) -> MacCount:
        """Total dense vs. performed MACs since construction or `reset_stats()`."""
        return sum((layer.macs for layer in self.delta_layers()), MacCount())

    def last_macs(self) -> MacCount:
        """Dense vs. performed MACs of the latest frame."""
        return sum((layer.last_macs for layer in self.delta_layers()), MacCount())

    def reset_stats(self) -> None:
        self.scene_cuts = 0
        for layer in self.delta_layers():
            layer.macs = MacCount()

    def changed_fraction(self, x: Tensor) -> float:
        """Fraction of input pixels (any channel) that differ from the previous frame."""
        changed = x != self.prev_frame
        if changed.dim() == 4:
            changed = changed.any(1)
        return float(changed.float().mean())

    @torch.no_grad()  # streaming inference only; state must not link frames in autograd
    def forward(self, frame: Tensor) -> Tensor:
        if not isinstance(frame, Tensor) or frame.dim() < 2 or frame.shape[0] != 1:
            shape = tuple(frame.shape) if isinstance(frame, Tensor) else type(frame)
            raise InputError(f"the delta runtime takes one frame at a time, (1, ...); got {shape}")
        if not bool(torch.isfinite(frame).all()):
            raise InputError("frame has NaN or Inf values; it would corrupt the delta state")
        x = frame.to(self.prev_frame.dtype)
        if self.prev_frame.numel():
            if x.shape != self.prev_frame.shape:
                raise DeltaStateError(
                    f"frame shape {tuple(x.shape)} differs from the stream's "
                    f"{tuple(self.prev_frame.shape)}; call reset_state() when the stream changes"
                )
            every = self.config.anchor_every
            if self.changed_fraction(x) > self.config.scene_cut_threshold:
                self.scene_cuts += 1
                self.reset_state()
            elif every and int(self.frames_since_anchor) >= every:
                self.reset_state()
        self.prev_frame = x.clone()
        self.frames_since_anchor += 1
        out = self.model(x)
        return out.to(frame.dtype if frame.is_floating_point() else torch.float32)


def _numeric_padding(conv: nn.Conv2d) -> nn.Conv2d:
    """Turn padding='same' / 'valid' into numbers so the sparse path can place outputs."""
    if not isinstance(conv.padding, str):
        return conv
    if conv.padding == "valid":
        conv.padding = (0, 0)
        return conv
    total = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size, strict=True)]
    if any(t % 2 for t in total):
        raise ConfigError(f"padding='same' with an even kernel pads asymmetrically: {conv}")
    conv.padding = (total[0] // 2, total[1] // 2)
    return conv


def _check_single_use(model: nn.Module) -> None:
    # A delta layer holds one stream of state: two call sites per frame would overwrite it.
    if not isinstance(model, fx.GraphModule):
        return
    targets = [str(n.target) for n in model.graph.nodes if n.op == "call_module"]
    for name in set(targets):
        if targets.count(name) > 1 and isinstance(model.get_submodule(name), nn.Conv2d | nn.Linear):
            raise ConfigError(
                f"layer {name!r} is called {targets.count(name)} times per frame; "
                "give each call site its own module before delta inference"
            )


def to_delta_runtime(model: nn.Module, config: DeltaRuntimeConfig | None = None) -> DeltaRuntime:
    """Copy a deltaified model into a streaming `DeltaRuntime`; `model` is not modified.

    Every nn.Conv2d / nn.Linear becomes a delta layer; the copy is in eval mode and in
    `config.dtype` (float64 by default, which keeps the accumulated state drift-free).
    Feed frames of shape (1, ...) in order; see `DeltaRuntime`.
    """
    config = config or DeltaRuntimeConfig()
    if not delta_activations(model):
        raise NotDeltaifiedError(
            "model has no DeltaActivation: its deltas would not be sparse. Call "
            "edgeadapt.delta.deltaify(model, example_input) first"
        )
    _check_single_use(model)
    work = copy.deepcopy(model).eval().to(getattr(torch, config.dtype)).requires_grad_(False)
    for name, mod in list(work.named_modules()):
        if isinstance(mod, nn.Conv2d):
            new: nn.Module = DeltaConv2d(
                _numeric_padding(mod),
                sparse_threshold=config.sparse_threshold,
                element_cost=config.element_cost,
                pixel_cost=config.pixel_cost,
            )
        elif isinstance(mod, nn.Linear):
            new = DeltaLinear(mod, sparse_threshold=config.sparse_threshold)
        else:
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(work.get_submodule(parent_name), child, new)
    return DeltaRuntime(work, config)
