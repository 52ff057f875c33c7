"""Per-frame predictors behind `stream`: a dense one and two delta ones, with MAC accounting.

The dense and the PyTorch delta engine take one normalised (1, C, H, W) frame, the fast one
the uint8 (H, W, 3) frame itself; each returns (logits, `FrameStats`). They predict
with eval-mode BN (the stored statistics): one frame has no batch statistics, and this is
the adapters' documented `small_batch="predict"` behaviour. `refresh(model)` points an
engine at new weights after an adaptation step; the delta engine then rebuilds its
runtime, so its next frame is a dense anchor pass.

Two MAC counts for the delta engine. `macs_performed` is what the CPU runtime did: its
sparse conv path skips whole *pixels* (or whole channels), so a pixel where any channel
changed costs its full fan-out. `macs_element` is what an element-sparse delta engine would
do, the count of Yousefzadeh & Sifalakis: every non-zero Δ element times the MACs it
triggers (its valid kernel taps × output channels, or out_features). Both are exact counts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from edgeadapt.delta import (
    DeltaConv2d,
    DeltaLayer,
    DeltaRuntime,
    DeltaRuntimeConfig,
    to_delta_runtime,
)
from edgeadapt.delta.sparse_conv import scatter_index
from edgeadapt.delta.sparse_ops import conv2d_macs, linear_macs, pair

__all__ = ["DeltaEngine", "DenseEngine", "FastEngine", "FrameStats", "eval_mode"]


@dataclass
class FrameStats:
    """What one frame cost."""

    macs_dense: int
    macs_performed: int
    anchor: bool = False  # a dense pass that (re)started the delta state
    scene_cut: bool = False  # the runtime's changed-pixel threshold fired
    macs_element: int | None = None  # element-sparse count (module docstring); with stats
    layer_nonzero: dict[str, float] = field(default_factory=dict)  # non-zero fraction of Δx


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode inside the block; every submodule's own mode is restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode


class DenseEngine:
    """Runs the model as it is; counts conv / linear MACs of the first frame once."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._macs: int | None = None

    def refresh(self, model: nn.Module) -> None:
        self.model = model

    def signal_scene_cut(self) -> None:
        """Nothing to forget: a dense pass has no state."""

    def _count(self, x: Tensor) -> int:
        total = 0

        def hook(mod: nn.Module, args: tuple, _out: Tensor) -> None:
            nonlocal total
            shape = tuple(args[0].shape)
            if isinstance(mod, nn.Conv2d):
                w = tuple(mod.weight.shape)
                total += conv2d_macs(shape, w, mod.stride, mod.padding, mod.dilation)
            else:
                total += linear_macs(shape, mod.out_features)

        layers = [m for m in self.model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        handles = [m.register_forward_hook(hook) for m in layers]
        try:
            with eval_mode(self.model), torch.no_grad():
                self.model(x)
        finally:
            for h in handles:
                h.remove()
        return total

    def __call__(self, x: Tensor) -> tuple[Tensor, FrameStats]:
        if self._macs is None:
            self._macs = self._count(x)  # string padding ('same') is rare; counted as numbers
        with eval_mode(self.model), torch.no_grad():
            logits = self.model(x)
        return logits, FrameStats(self._macs, self._macs, macs_element=self._macs)


class DeltaEngine:
    """A `DeltaRuntime` over a deltaified model, plus per-layer non-zero fractions of Δx.

    `layer_stats` adds one comparison per delta layer and frame (x != x_prev) in a forward
    pre-hook; it is diagnostics, off the runtime's own path, and costs a little latency.
    """

    def __init__(
        self, model: nn.Module, config: DeltaRuntimeConfig | None, *, layer_stats: bool = True
    ) -> None:
        self.config = config or DeltaRuntimeConfig()
        self.layer_stats = layer_stats
        self.runtime: DeltaRuntime = to_delta_runtime(model, self.config)
        self._nonzero: dict[str, float] = {}
        self._element_macs = 0
        self._hook()

    def signal_scene_cut(self) -> None:
        """The caller knows the scene changed: the next frame is a dense anchor pass."""
        self.runtime.signal_scene_cut()

    def refresh(self, model: nn.Module) -> None:
        self.runtime = to_delta_runtime(model, self.config)  # dense anchor on the next frame
        self._hook()

    def _hook(self) -> None:
        if not self.layer_stats:
            return
        for name, layer in self.runtime.model.named_modules():
            if isinstance(layer, DeltaLayer):
                layer.register_forward_pre_hook(self._measure(name))

    def _measure(self, name: str):
        def hook(layer: DeltaLayer, args: tuple) -> None:
            x = args[0].to(layer.weight.dtype)
            if bool(layer.primed) and x.shape == layer.x_prev.shape:
                changed = x != layer.x_prev
            else:  # an anchor pass: everything is new
                changed = torch.ones_like(x, dtype=torch.bool)
            self._nonzero[name] = float(changed.float().mean())
            self._element_macs += _element_macs(layer, changed)

        return hook

    def __call__(self, x: Tensor) -> tuple[Tensor, FrameStats]:
        cuts = self.runtime.scene_cuts
        self._nonzero, self._element_macs = {}, 0
        logits = self.runtime(x)
        macs = self.runtime.last_macs()
        return logits, FrameStats(
            macs.dense,
            macs.performed,
            anchor=int(self.runtime.frames_since_anchor) == 1,
            scene_cut=self.runtime.scene_cuts > cuts,
            macs_element=self._element_macs if self.layer_stats else None,
            layer_nonzero=dict(self._nonzero),
        )


def _element_macs(layer: DeltaLayer, changed: Tensor) -> int:
    """MACs of W·Δx counted per non-zero element of Δx (`changed` is the mask of Δx != 0)."""
    if not isinstance(layer, DeltaConv2d):  # a linear: each changed feature drives a column
        return int(changed.sum()) * int(layer.weight.shape[0])
    n, _, h, w = changed.shape
    out_per_group, _, kh, kw = layer.weight.shape
    out_per_group //= layer.groups
    table, _ = scatter_index(
        (n, h, w), (kh, kw), pair(layer.stride), pair(layer.padding), pair(layer.dilation)
    )
    valid_taps = (table >= 0).sum(0)  # (N·H·W,): outputs each input pixel reaches per channel
    per_pixel = changed.sum(1).reshape(-1)  # changed channels at each pixel
    return int((per_pixel * valid_taps).sum()) * out_per_group


class FastEngine:
    """The fast exact delta runtime (`to_fast_delta_runtime`, CIFAR and torchvision-style
    ResNets, C++ kernels) over
    a deltaified model. It takes the uint8 (H, W, 3) frame itself (normalisation is folded
    in) and holds pixels within its own input threshold. `layer_nonzero` is, per layer, the
    share of its output pixels whose value changed: the pixels the next layer's Δ holds."""

    def __init__(self, model: nn.Module, config) -> None:
        from edgeadapt.delta import to_fast_delta_runtime

        self.runtime = to_fast_delta_runtime(model, config)

    def signal_scene_cut(self) -> None:
        """The caller knows the scene changed: the next frame is a dense pass."""
        self.runtime.signal_scene_cut()

    def refresh(self, model: nn.Module) -> None:
        from edgeadapt.errors import ConfigError

        raise ConfigError("the fast delta runtime runs a fixed integer model: it cannot adapt")

    def __call__(self, frame) -> tuple[Tensor, FrameStats]:
        cuts, anchor = self.runtime.scene_cuts, not self.runtime.primed
        logits = self.runtime(frame)
        macs = self.runtime.last_macs()
        cut = self.runtime.scene_cuts > cuts
        return logits, FrameStats(
            macs.dense,
            macs.performed,
            anchor=anchor or cut,
            scene_cut=cut,
            layer_nonzero=self.runtime.last_changed(),
        )
