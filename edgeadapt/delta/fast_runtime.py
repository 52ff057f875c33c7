"""Fast exact delta inference on CPU: change masks flow layer to layer through fused C++ kernels.

DeltaCNN (Parger et al., CVPR 2022) structure on the integer model of `fast_plan`: each layer
receives the list of pixels whose input changed with their channel rows (the change mask,
produced by the layer before; only the camera frame is ever compared in full), adds W·Δ
into a channels-last float32 accumulator with dense vector inner loops over the output
channels, re-quantises only the output pixels it touched, and lists the pixels whose
quantised output changed for the next layer. Residual blocks also re-evaluate the pixels
whose shortcut input changed; a downsample conv adds its deltas into the same accumulator
before the block's last conv runs; a max pool re-takes the max only in windows holding a
changed pixel; the global mean keeps exact per-channel sums of the last map.

Exact: activations and weights are integers bounded so float32 sums are exact in any order
(`fast_plan`), so every frame's logits and every layer's map equal `reference_forward` (the
same integer model, dense, in PyTorch) bit for bit, for any stream length. No re-anchoring
is needed; a scene cut (more than `scene_cut_threshold` of the pixels changed) or
`reset_state()` restarts from a dense pass because that is cheaper, not to fix drift.

One thread, batch 1, CPU. Frames are uint8 (H, W, C) camera images, channels-last, as
decoders deliver them. State lives in buffers (frame, accumulators, k maps).
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from edgeadapt.delta.errors import DeltaStateError
from edgeadapt.delta.fast_lower import lower_for_fast_runtime
from edgeadapt.delta.fast_native import load_kernels
from edgeadapt.delta.fast_plan import ConvSpec, FastPlan, PoolSpec, head, stem_bias_map
from edgeadapt.delta.layers import MacCount
from edgeadapt.errors import ConfigError, InputError

__all__ = ["FastDeltaConfig", "FastDeltaRuntime", "to_fast_delta_runtime"]


@dataclass(frozen=True, kw_only=True)
class FastDeltaConfig:
    """How a deltaified model is lowered and streamed by the fast runtime."""

    # Activations clamp to this many quantiser steps; maps are uint8, so at most 255.
    # deltaify(..., quantile=1.0) puts each channel's calibration maximum at 255 steps.
    act_max: int = 255
    # Changed-pixel fraction of the frame above which to restart densely (cost, not results).
    scene_cut_threshold: float = 0.995
    # A pixel whose channels all moved by at most this many levels (0-255) from the value the
    # network last saw for it is not sent (DeltaCNN's update threshold): codec noise on a
    # static camera stops propagating. Its held value stays until the drift exceeds this, so
    # the network always sees one consistent frame (`seen_frame()`), and results are exact
    # against the dense reference on that frame. 0: every change is sent. Without it, codec
    # noise on a static camera reaches the deepest layers as 80-98% changed pixels at 240x320.
    # 1: the largest of 0/1/2/4 that kept top-1 agreement with dense float32 at >= 99% on
    # both shared clips (bottle clip, 600 frames: 99.8/99.5/98.7/94.5%; its logit margins
    # are small, so held pixels flip classes there). Chosen on those clips:
    # benchmarks/delta/README_fast.md.
    input_threshold: int = 1
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)  # the model's input normalisation
    std: tuple[float, ...] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        if not 0.0 <= self.scene_cut_threshold <= 1.0:
            raise ConfigError(
                f"scene_cut_threshold must be in [0, 1], got {self.scene_cut_threshold}"
            )
        if not 1 <= self.act_max <= 255:
            raise ConfigError(f"act_max must be in [1, 255] (uint8 maps), got {self.act_max}")
        if not 0 <= self.input_threshold <= 254:
            raise ConfigError(
                f"input_threshold must be in [0, 254] levels of a uint8 frame, got "
                f"{self.input_threshold}"
            )


DELTA_DTYPE = torch.int16  # the kernels' delta rows (native/fast_delta.cpp)


def _ptr(t: Tensor) -> int:
    return t.data_ptr()


def _interior_bias(bias_map: Tensor) -> tuple[Tensor, int]:
    """(row, border) such that every pixel at least `border` from an edge of the (Ho, Wo, O)
    map has exactly `row` as its bias; border -1 (and the centre row) when no such band is
    narrower than half the map. Zero padding changes the stem's bias only near the edges, so
    the epilogue reads one cached row for the interior instead of a map-sized stream."""
    ho, wo = bias_map.shape[:2]
    row = bias_map[ho // 2, wo // 2].contiguous()
    for border in range(min(ho, wo) // 2):
        inner = bias_map[border : ho - border, border : wo - border]
        if bool((inner == row).all()):  # bit-equal rows: results stay exact
            return row, border
    return row, -1


def _packed(weight: Tensor) -> tuple[Tensor, Tensor]:
    """(K, K, C, O) taps-then-rows weights, and (C, O/16, K·K, 16) for the vector path (one
    input channel's tap vectors contiguous; empty when O is not a multiple of 16)."""
    o, c, k, _ = weight.shape
    wt = weight.permute(2, 3, 1, 0).contiguous()
    chunks = o // 16 if o % 16 == 0 else 0
    if not chunks:
        return wt, weight.new_zeros(0)
    return wt, weight.reshape(chunks, 16, c, k * k).permute(2, 0, 3, 1).contiguous()


def _out_size(n: int, k: int, stride: int, padding: int) -> int:
    return (n + 2 * padding - k) // stride + 1


class _Layer:
    """Geometry and workspace of one conv (or max pool) at a given frame size."""

    def __init__(self, spec: ConvSpec | PoolSpec, h: int, w: int, c: int) -> None:
        pool = isinstance(spec, PoolSpec)
        k = spec.kernel if pool else spec.weight.shape[2]
        o = c if pool else spec.weight.shape[0]
        if not pool and spec.weight.shape[1] != c:
            raise ConfigError(
                f"{spec.name}: weights for {spec.weight.shape[1]} input channels, its source "
                f"map has {c}"
            )
        self.spec, self.h, self.w, self.c, self.o, self.k = spec, h, w, c, o, k
        self.ho = _out_size(h, k, spec.stride, spec.padding)
        self.wo = _out_size(w, k, spec.stride, spec.padding)
        if self.ho < 1 or self.wo < 1:
            raise InputError(
                f"{spec.name}: a {h}x{w} input map is smaller than its {k}x{k} window; "
                "the frame is too small for this model"
            )
        self.npix = self.ho * self.wo
        self.dense_macs = 0 if pool else self.npix * o * c * k * k
        if not pool:
            self.wt, self.wpack = _packed(spec.weight)
        self.mask = torch.zeros(self.npix, dtype=torch.uint8)  # output pixels to re-evaluate
        self.pix = torch.empty(self.npix, dtype=torch.int32)  # changed output pixels, ascending
        # and their delta rows: new k - old k, in [-255, 255]; int16 halves the traffic of
        # float32 rows (written by one layer, read by the next, megabytes a frame)
        self.delta = torch.empty(self.npix, o, dtype=DELTA_DTYPE)
        self.count = 0  # changed output pixels of the latest frame
        # Bias: one (O) row, or the stem's per-pixel map near the border (`_interior_bias`).
        self.bias = None if pool else spec.bias.contiguous()
        self.bias_map, self.bias_border = None, 0
        self.branch: _Branch | None = None

    @property
    def bias_map_ptr(self) -> int | None:
        return None if self.bias_map is None else self.bias_map.data_ptr()


class _Branch:
    """A second conv into a layer's accumulator (`ConvBranch`) at a given input size."""

    def __init__(self, layer: _Layer, source: _Layer) -> None:
        br = layer.spec.branch
        self.spec, self.source = br, source
        self.k = br.weight.shape[2]
        size = (
            _out_size(source.ho, self.k, br.stride, br.padding),
            _out_size(source.wo, self.k, br.stride, br.padding),
        )
        if size != (layer.ho, layer.wo):
            raise ConfigError(
                f"{layer.spec.name}: its second conv gives {size[0]}x{size[1]} maps where the "
                f"first gives {layer.ho}x{layer.wo}"
            )
        self.wt, self.wpack = _packed(br.weight)
        self.dense_macs = layer.npix * br.weight[0].numel() * br.weight.shape[0]


class FastDeltaRuntime(nn.Module):
    """A deltaified CIFAR ResNet or torchvision-style ResNet as an exact streaming frame
    processor with C++ kernels.

    Call it on uint8 (H, W, C) frames in order (torch or numpy); it returns float32 logits
    (1, classes). Statistics: `macs()` / `last_macs()` (dense vs performed), `layer_names`
    and `last_layer_ns` / `last_layer_macs` (time per conv, epilogue included, and MACs
    performed, of the latest frame).
    """

    def __init__(self, plan: FastPlan, config: FastDeltaConfig) -> None:
        super().__init__()
        self.plan, self.config = plan, config
        self._lib = load_kernels()
        self.layer_names = [s.name for s in plan.layers]
        self.register_buffer("prev_frame", torch.empty(0, dtype=torch.uint8))
        self.register_buffer("sums", torch.zeros(plan.out_channels, dtype=torch.float64))
        self._geometry: list[_Layer] = []
        self.primed = False
        self.scene_cuts = 0
        self._macs = MacCount()
        self._last = MacCount()
        self.last_layer_ns = np.zeros(len(plan.layers), dtype=np.int64)
        self.last_layer_macs = np.zeros(len(plan.layers), dtype=np.int64)

    # -- state -------------------------------------------------------------------------------
    def _allocate(self, h: int, w: int) -> None:
        geometry: list[_Layer] = []
        for i, spec in enumerate(self.plan.layers):
            if spec.source < 0:
                g = _Layer(spec, h, w, self.plan.in_channels)
            else:
                s = geometry[spec.source]
                g = _Layer(spec, s.ho, s.wo, s.o)
            geometry.append(g)
            pool = isinstance(spec, PoolSpec)
            self.register_buffer(f"acc{i}", torch.zeros(0 if pool else g.npix, g.o))
            self.register_buffer(f"k{i}", torch.zeros(g.npix, g.o, dtype=torch.uint8))
            if not pool and spec.branch is not None:
                g.branch = _Branch(g, geometry[spec.branch.source])
            if not pool and spec.offset is not None:
                bias_map = stem_bias_map(spec, h, w)
                g.bias, g.bias_border = _interior_bias(bias_map)
                g.bias_map = bias_map.reshape(g.npix, g.o)
        self._geometry = geometry
        self.prev_frame = torch.zeros(h, w, self.plan.in_channels, dtype=torch.uint8)
        self.in_pix = torch.empty(h * w, dtype=torch.int32)
        self.in_delta = torch.empty(h * w, self.plan.in_channels, dtype=DELTA_DTYPE)

    def reset_state(self) -> None:
        """Forget previous frames: the next frame is a dense pass (any frame size)."""
        self.primed = False
        self.prev_frame = self.prev_frame.new_empty(0)
        self.sums.zero_()

    def signal_scene_cut(self) -> None:
        """The caller knows the scene changed: restart densely on the next frame."""
        self.reset_state()

    def _zero_state(self) -> None:
        for i in range(len(self._geometry)):
            getattr(self, f"acc{i}").zero_()
            getattr(self, f"k{i}").zero_()
        self.prev_frame.zero_()
        self.sums.zero_()

    # -- statistics --------------------------------------------------------------------------
    def macs(self) -> MacCount:
        """Dense vs performed MACs since construction or `reset_stats()`."""
        return self._macs

    def last_macs(self) -> MacCount:
        return self._last

    def last_changed(self) -> dict[str, float]:
        """Per layer, the share of its output pixels whose value changed on the last frame
        (the pixels the next layer's delta holds)."""
        return {name: g.count / g.npix for name, g in zip(self.layer_names, self._geometry)}

    def reset_stats(self) -> None:
        self._macs, self.scene_cuts = MacCount(), 0

    # -- the frame ---------------------------------------------------------------------------
    def _check(self, frame: Tensor | np.ndarray) -> Tensor:
        if isinstance(frame, np.ndarray):
            # A decoder's read-only buffer: copy (one frame) rather than alias it unwritable.
            frame = torch.from_numpy(frame if frame.flags.writeable else frame.copy())
        if not isinstance(frame, Tensor):
            raise InputError(f"expected a uint8 (H, W, C) frame, got {type(frame).__name__}")
        c = self.plan.in_channels
        if frame.dtype != torch.uint8:
            raise InputError(
                f"the fast delta runtime takes uint8 camera frames (H, W, {c}); got {frame.dtype}. "
                "Pass the decoded frame, not a normalised tensor (normalisation is folded in)"
            )
        if frame.dim() != 3 or frame.shape[2] != c or frame.shape[0] < 1 or frame.shape[1] < 1:
            raise InputError(f"expected a uint8 (H, W, {c}) frame, got shape {tuple(frame.shape)}")
        if frame.device.type != "cpu":
            raise InputError(f"the fast delta runtime runs on CPU; got a {frame.device} frame")
        return frame.contiguous()

    @torch.no_grad()
    def forward(self, frame: Tensor | np.ndarray) -> Tensor:
        x = self._check(frame)
        h, w = x.shape[:2]
        if self.primed and tuple(self.prev_frame.shape) != tuple(x.shape):
            raise DeltaStateError(
                f"frame shape {tuple(x.shape)} differs from the stream's "
                f"{tuple(self.prev_frame.shape)}; call reset_state() when the stream changes"
            )
        if not self._geometry or (self._geometry[0].h, self._geometry[0].w) != (h, w):
            self._allocate(h, w)
        elif self.prev_frame.shape != x.shape:  # after reset_state(): same geometry
            self.prev_frame = torch.zeros_like(x)
        force = not self.primed
        if force:
            self._zero_state()
        lib, c = self._lib, self.plan.in_channels
        # A dense pass (first frame, scene cut) sends every pixel: threshold 0.
        threshold = 0 if force else self.config.input_threshold
        n_in = lib.ea_frame_delta_u8(
            _ptr(x), _ptr(self.prev_frame), h * w, c, _ptr(self.in_pix), _ptr(self.in_delta),
            threshold,
        )  # fmt: skip
        if not force and n_in > self.config.scene_cut_threshold * h * w:
            self.scene_cuts += 1
            self._zero_state()
            force = True
            n_in = lib.ea_frame_delta_u8(
                _ptr(x), _ptr(self.prev_frame), h * w, c, _ptr(self.in_pix), _ptr(self.in_delta), 0
            )
        performed, dense = 0, 0
        count = ctypes.c_int64(0)
        for i, g in enumerate(self._geometry):
            start = time.perf_counter_ns()
            if isinstance(g.spec, PoolSpec):
                macs = self._pool(i, g, force, count)
            else:
                macs = self._conv(i, g, force, n_in, count)
            g.count = count.value
            performed += macs
            dense += g.dense_macs + (g.branch.dense_macs if g.branch else 0)
            self.last_layer_ns[i] = time.perf_counter_ns() - start
            self.last_layer_macs[i] = macs
        last = self._geometry[-1]
        if last.count:
            self.sums += last.delta[: last.count].sum(0, dtype=torch.float64)
        self.primed = True
        head_macs = self.plan.head_weight.numel()
        self._last = MacCount(dense + head_macs, performed + head_macs)
        self._macs = self._macs + self._last
        return head(self.plan, self.sums, last.npix)

    def _source(self, index: int, n_in: int) -> tuple[Tensor, Tensor, int]:
        """The changed pixels, delta rows and count a layer reading `index` receives."""
        if index < 0:
            return self.in_pix, self.in_delta, n_in
        s = self._geometry[index]
        return s.pix, s.delta, s.count

    def _pool(self, i: int, g: _Layer, force: bool, count: ctypes.c_int64) -> int:
        spec, s = g.spec, self._geometry[g.spec.source]
        ret = self._lib.ea_maxpool_delta(
            _ptr(s.pix), s.count, _ptr(getattr(self, f"k{spec.source}")), g.h, g.w, g.c, g.k,
            spec.stride, spec.padding, g.ho, g.wo, _ptr(g.mask), int(force),
            _ptr(getattr(self, f"k{i}")), _ptr(g.pix), _ptr(g.delta), ctypes.byref(count),
        )  # fmt: skip
        self._check_kernel(spec.name, ret)
        return 0

    def _conv(self, i: int, g: _Layer, force: bool, n_in: int, count: ctypes.c_int64) -> int:
        lib, spec, macs = self._lib, g.spec, 0
        acc = _ptr(getattr(self, f"acc{i}"))
        if g.branch is not None:  # the downsample conv adds into the same accumulator first
            br, src = g.branch, g.branch.source
            pix, delta, n = self._source(br.spec.source, n_in)
            macs = lib.ea_conv_acc(
                _ptr(pix), _ptr(delta), n, src.o, src.wo, g.ho, g.wo, br.k, br.spec.stride,
                br.spec.padding, _ptr(br.wt), _ptr(br.wpack), g.o, acc, _ptr(g.mask),
            )  # fmt: skip
            self._check_kernel(spec.name, macs)
        src_pix, src_delta, n_src = self._source(spec.source, n_in)
        sck, sc_c, sc_w, scq = None, 0, 0, None
        if spec.shortcut is not None:
            s = self._geometry[spec.shortcut]
            if not force:  # re-evaluate the pixels whose shortcut input changed
                lib.ea_mark_shortcut(
                    _ptr(s.pix), s.count, s.wo, spec.shortcut_stride, g.ho, g.wo, _ptr(g.mask)
                )
            sck, sc_c, sc_w = _ptr(getattr(self, f"k{spec.shortcut}")), s.o, s.wo
            scq = _ptr(s.spec.step)
        ret = lib.ea_conv_post(
            _ptr(src_pix), _ptr(src_delta), n_src, g.c, g.w, g.ho, g.wo, g.k,
            spec.stride, spec.padding, _ptr(g.wt), _ptr(g.wpack), g.o,
            acc, _ptr(g.mask), int(force),
            _ptr(spec.scale), _ptr(g.bias), g.bias_map_ptr, g.bias_border,
            sck, sc_c, sc_w, spec.shortcut_stride, spec.shortcut_front, scq,
            _ptr(spec.inv_step), self.plan.act_max, _ptr(getattr(self, f"k{i}")), _ptr(g.pix),
            _ptr(g.delta), ctypes.byref(count),
        )  # fmt: skip
        self._check_kernel(spec.name, ret)
        return macs + ret

    @staticmethod
    def _check_kernel(name: str, ret: int) -> None:
        if ret == -2:  # the lists are built ascending; anything else is a bug here
            raise DeltaStateError(f"{name}: changed-pixel list out of order")
        if ret < 0:
            raise ConfigError(
                f"{name}: beyond the native kernels' limits (more than 4096 channels, a kernel "
                "over 7x7, a map too large, or a pool padded beyond half its window)"
            )

    def seen_frame(self) -> Tensor:
        """The uint8 frame the network's state is for (a copy): the latest frame, except
        pixels within `input_threshold` of what was last sent, which hold that value. The
        dense reference on this frame gives exactly the runtime's logits."""
        return self.prev_frame.clone()

    def layer_maps(self) -> list[Tensor]:
        """Every layer's current k map as (1, H, W, C) float32 (copies; for checks)."""
        return [
            getattr(self, f"k{i}").view(1, g.ho, g.wo, g.o).float()
            for i, g in enumerate(self._geometry)
        ]


def to_fast_delta_runtime(
    model: nn.Module, config: FastDeltaConfig | None = None
) -> FastDeltaRuntime:
    """Lower a deltaified `CifarResNet`, or a deltaified traceable conv net of the ops
    `lower_graph` takes (torchvision's ResNets: 7×7 stem, max pool, downsample convs), to the
    fast exact runtime; `model` is not modified.

    Builds the C++ kernels on first use (`NativeBuildError` if no compiler works). The
    runtime's dense reference is `reference_forward(runtime.plan, frame)`. Its maps clamp at
    `config.act_max` steps: deltaify the model with `quantile=1.0` (deltaify's default, the
    99.9th percentile, clamps the largest 0.1% of every channel and biases the logits).
    """
    config = config or FastDeltaConfig()
    plan = lower_for_fast_runtime(model, act_max=config.act_max, mean=config.mean, std=config.std)
    return FastDeltaRuntime(plan, config)
