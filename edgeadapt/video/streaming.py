"""Stream frames through a model: per-frame predictions, latency, delta sparsity, MACs.

`stream(frames, model, delta=True, adapt="ecotta")` yields one `FrameResult` per frame, in
order, predicting each frame as it arrives (batch of one). Options:

- `delta`: predict with the exact delta runtime (`edgeadapt.delta`). A model without
  quantisers is deltaified first, calibrated on the first `calibration_frames` frames.
- `adapt`: test-time adaptation on the same stream. Adaptation needs batch statistics, so
  frames are buffered and every `batch_size` frames one adaptation call runs on the buffer
  (`edgeadapt.wrap`); prediction stays per frame, causal: frame i is predicted with the
  weights adapted on frames before its batch, and predictions use eval-mode BN.
- delta + adapt: an adaptation step changes the weights, and the delta state (previous
  inputs and outputs of every layer) belongs to the old weights. So after every step the
  runtime is rebuilt from the adapted model and its next frame is a dense anchor pass. The
  summary reports that honestly: anchors count as dense MACs, the rebuild time is part of
  the adaptation time, and the adaptation's own compute is estimated separately. The
  adapter wraps a structure-keeping deltaified model (`deltaify_modules`), which EcoTTA
  can partition, and adapts it with its quantisers in place (straight-through gradients),
  so what adapts is what streams.
- `fast` (with `delta`): the fast exact delta runtime instead (`to_fast_delta_runtime`:
  CIFAR ResNets and torchvision-style ResNets, C++ kernels, the uint8 frame in; several times faster than the PyTorch delta
  runtime). It runs a fixed integer model, so it does not adapt. A model deltaified here is
  calibrated on each channel's maximum (`deltaify(..., quantile=1.0)`): the runtime's maps
  clamp there.
- `input_threshold`: `InputHysteresis` on the frames (levels, 0-255) before the model; with
  `fast`, the runtime's own threshold (whole levels). None: 0, with `fast`
  `FastDeltaConfig`'s default (1).
- `compare_dense`: also run a dense float32 model per frame (the current weights without
  quantisers when `delta`, else the original model) and record its prediction and latency.

Scene cuts re-anchor the delta runtime and restart the input hysteresis from the new frame.
Detected ones (`FrameResult.scene_cut`) follow `scene_cut`. A `SceneCutConfig`: a frame whose
change is far above the stream's own recent change (`edgeadapt.video.scene_cut`; measured on
the frames before hysteresis, in delta and dense streams alike). A float: the runtime's
changed-pixel fraction (`DeltaRuntimeConfig.scene_cut_threshold`; delta streams only; codec
noise alone can exceed it). None: no detection. "auto" (the default): `SceneCutConfig()`,
or, where a `runtime_config` is given, its own fraction, as before that rule existed.
Signalled ones come before every frame index in `cut_at` (a caller who knows: an edit list, a
seek; `FrameResult.cut_signalled`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from edgeadapt.config import AdaptConfig
from edgeadapt.delta import DeltaRuntimeConfig, delta_activations, deltaify
from edgeadapt.delta.quantize import CALIBRATION_QUANTILE
from edgeadapt.delta.structure import deltaify_modules, strip_delta
from edgeadapt.errors import CheckpointMismatchError, ConfigError, InputError, PartitionError
from edgeadapt.setup_data import find_source_data, methods_needing_source, prepare_adapter
from edgeadapt.video._engines import DeltaEngine, DenseEngine, FastEngine
from edgeadapt.video.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    InputHysteresis,
    check_frame,
    to_model_input,
)
from edgeadapt.video.scene_cut import SceneCutConfig, SceneCutDetector

__all__ = ["FrameResult", "stream"]


@dataclass
class FrameResult:
    """One streamed frame."""

    index: int
    prediction: int
    confidence: float  # softmax probability of the prediction
    latency_s: float  # wall-clock of the per-frame prediction (tensor conversion + model)
    macs_dense: int  # conv / linear MACs of a dense pass of the current model
    macs_performed: int  # what the delta runtime performed (== macs_dense without delta)
    anchor: bool = False  # dense pass that (re)started the delta state
    scene_cut: bool = False  # detected (`stream`'s scene_cut rule fired)
    cut_signalled: bool = False  # the caller said a new scene starts here (`cut_at`)
    macs_element: int | None = None  # an element-sparse engine's count (see _engines)
    layer_nonzero: dict[str, float] = field(default_factory=dict)  # non-zero fraction of Δx
    adapted: bool = False  # an adaptation step ran after this frame
    adapt_s: float = 0.0  # its wall-clock, including rebuilding the predictors
    adapt_batch: int = 0  # frames in that adaptation batch
    dense_prediction: int | None = None  # of the compare_dense reference
    dense_latency_s: float | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _is_adapter(obj: object) -> bool:
    from edgeadapt.methods.base import Adapter

    return isinstance(obj, Adapter)


def _make_adapter(
    base: nn.Module,
    adapt: object,
    example: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
):
    from edgeadapt.api import config_for, wrap

    if _is_adapter(adapt):
        return adapt
    config = adapt if isinstance(adapt, AdaptConfig) else config_for(str(adapt))
    if getattr(config, "input_mean", False) is None:
        # Augmenting methods (CoTTA, EcoTTA's teacher views) take their views on pixels in
        # [0, 1]: they must undo the normalisation this stream applies, or they would clamp it.
        config = replace(config, input_mean=tuple(mean), input_std=tuple(std))
    try:
        return wrap(base, config, example_input=example)
    except PartitionError as exc:
        raise PartitionError(
            f"{exc}. A graph-deltaified model (edgeadapt.delta.deltaify) no longer calls its "
            "blocks as modules; deltaify with edgeadapt.delta.structure.deltaify_modules, or "
            "pass the dense model and let stream() do it"
        ) from exc


def stream(
    frames: Iterable[np.ndarray],
    model: nn.Module,
    *,
    delta: bool = True,
    adapt: str | AdaptConfig | nn.Module | None = None,
    batch_size: int = 8,
    compare_dense: bool = False,
    input_threshold: float | None = None,
    runtime_config: DeltaRuntimeConfig | None = None,
    scene_cut: SceneCutConfig | float | Literal["auto"] | None = "auto",
    cut_at: Collection[int] = (),
    delta_state: dict[str, torch.Tensor] | None = None,
    bits: int = 8,
    calibration_frames: int = 8,
    layer_stats: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    source_data: Any = None,
    warmup_steps: int = 500,
    no_warmup: bool = False,
    on_setup: Callable[[dict[str, Any]], None] | None = None,
    fast: bool = False,
) -> Iterator[FrameResult]:
    """Yield a `FrameResult` per uint8 (H, W, 3) frame; see the module docstring.

    `adapt` is a method name, a config, or a ready adapter (e.g. after `prepare_adapter`; with
    `delta` its model must already be deltaified). `delta_state` is a state dict saved from
    a deltaified copy of `model` (e.g. by `edgeadapt.delta.distill.save_delta_weights`),
    loaded after deltaify. `model` is never modified.

    An adapter made here gets its method's setup on source data before the first frame
    (`edgeadapt.setup_data.prepare_adapter`: EcoTTA's warm-up of `warmup_steps`, EATA's
    Fisher) from `source_data` (a path, `SourceData` or tensor batches; images of the
    frames' size, normalised with `mean`/`std`), else the shared CIFAR-10 where present, else
    `SourceDataError` before any frame is read; `no_warmup` skips it on purpose.
    `on_setup(record)` receives what ran (also `adapter.setup_record`).
    `scene_cut`: how cuts are detected (module docstring).
    """
    fast_config = _fast_config(fast, model, delta, adapt, input_threshold, mean, std, bits)
    if adapt is not None and batch_size < 2:
        raise ConfigError(f"adaptation needs batches of 2 or more frames, got {batch_size}")
    if calibration_frames < 2:
        raise ConfigError(f"calibration_frames must be >= 2, got {calibration_frames}")
    setup_source = _setup_source(adapt, source_data, warmup_steps, no_warmup)
    runtime_config, detector = _scene_cut_rule(scene_cut, runtime_config)
    if fast_config is not None:  # the same cut rule as the PyTorch delta runtime's
        fast_config = replace(fast_config, scene_cut_threshold=runtime_config.scene_cut_threshold)
    it = iter(frames)
    needs_deltaify = delta and not delta_activations(model)
    needs_example = needs_deltaify or (adapt is not None and not _is_adapter(adapt))
    head = list(itertools.islice(it, calibration_frames)) if needs_example else []
    if needs_example and len(head) < 2:
        raise InputError("the stream has fewer than 2 frames; nothing to calibrate on")
    example = None
    if head:
        example = to_model_input(np.stack([check_frame(f, i) for i, f in enumerate(head)]))
        example = example.to(next(model.parameters()).dtype)
    base = model
    if needs_deltaify:  # graph deltaify is exact per call site; adapters need module structure
        make = deltaify_modules if adapt is not None else deltaify
        # The fast runtime's uint8 maps clamp at 2**bits - 1 steps: nothing calibrated may
        # lie past them (deltaify's docstring).
        quantile = 1.0 if fast_config is not None else CALIBRATION_QUANTILE
        base = make(model, example, bits=bits, quantile=quantile).eval()
        if delta_state is not None:
            _load_delta_state(base, delta_state)
    elif delta_state is not None:
        raise ConfigError("delta_state needs delta=True and a model without quantisers")
    adapter = _make_adapter(base, adapt, example, mean, std) if adapt is not None else None
    if adapter is not None and adapter is not adapt:
        record = prepare_adapter(
            adapter, setup_source, warmup_steps=warmup_steps, no_warmup=setup_source is None,
            input_size=example.shape[2:], mean=mean, std=std, progress=False,
        )  # fmt: skip
        if on_setup is not None:
            on_setup(record)
    work = adapter.model if adapter is not None else base
    if delta and not delta_activations(work):
        raise ConfigError("delta=True needs the adapter's model to be deltaified")
    if fast_config is not None:
        engine = FastEngine(work, fast_config)
    elif delta:
        engine = DeltaEngine(work, runtime_config, layer_stats=layer_stats)
    else:
        engine = DenseEngine(work)
    reference = None
    if compare_dense:
        reference = DenseEngine(strip_delta(work) if delta else model)
    # The fast runtime holds small changes itself (its input threshold); the others here.
    hysteresis = InputHysteresis(0.0 if fast_config is not None else (input_threshold or 0.0))
    buffer: list[torch.Tensor] = []
    cuts = {int(i) for i in cut_at}
    for index, frame in enumerate(itertools.chain(head, it)):
        frame = check_frame(frame, index)
        signalled = index in cuts and index > 0
        start = time.perf_counter()
        detected = False
        if detector is not None:
            if signalled:
                detector.restart(frame)
            else:
                detected = detector(frame)
        if signalled or detected:
            engine.signal_scene_cut()
            hysteresis.reset()
        if fast_config is not None:
            x = None
            logits, stats = engine(frame)
        else:
            x = to_model_input(hysteresis(frame), mean, std)
            logits, stats = engine(x)
        latency = time.perf_counter() - start
        probs = torch.softmax(logits.float(), 1)[0]
        result = FrameResult(
            index=index,
            prediction=int(probs.argmax()),
            confidence=float(probs.max()),
            latency_s=latency,
            macs_dense=stats.macs_dense,
            macs_performed=stats.macs_performed,
            anchor=stats.anchor,
            scene_cut=detected or stats.scene_cut,
            cut_signalled=signalled,
            macs_element=stats.macs_element,
            layer_nonzero=stats.layer_nonzero,
        )
        if reference is not None:
            start = time.perf_counter()
            ref_logits, _ = reference(to_model_input(frame, mean, std))
            result.dense_latency_s = time.perf_counter() - start
            result.dense_prediction = int(ref_logits.argmax(1)[0])
        if adapter is not None:
            buffer.append(x)
            if len(buffer) >= batch_size:
                start = time.perf_counter()
                adapter(torch.cat(buffer))  # predicts and adapts; its batch logits are unused
                engine.refresh(adapter.model)
                result.adapt_s = time.perf_counter() - start
                result.adapted, result.adapt_batch = True, len(buffer)
                buffer.clear()
                if reference is not None and delta:
                    reference.refresh(strip_delta(adapter.model))
        yield result


def _fast_config(fast, model, delta, adapt, input_threshold, mean, std, bits):
    """The fast runtime's config for `stream(fast=True)`, refusing what it cannot do before
    any frame is read; None without `fast`. A model deltaified here with `bits` has its
    maps clamp at 2**bits - 1 steps, where its calibrated maximum lies; a smaller clamp also
    leaves the integer weights more room under the exact-accumulation bound."""
    if not fast:
        return None
    from edgeadapt.delta import FastDeltaConfig
    from edgeadapt.delta.fast_lower import check_lowerable

    if not delta:
        raise ConfigError("fast=True is the fast delta runtime: it needs delta=True")
    if adapt is not None:
        raise ConfigError(
            "the fast delta runtime runs a fixed integer model and cannot adapt: drop adapt "
            "(or fast, for the PyTorch delta runtime, which adapts)"
        )
    deltaified = bool(delta_activations(model))
    if not deltaified and not 1 <= bits <= 8:
        raise ConfigError(f"the fast runtime's maps are uint8: bits must be 1-8, got {bits}")
    check_lowerable(model)  # a model with an op the kernels lack, refused before any frame
    act_max = 255 if deltaified else 2**bits - 1
    config = FastDeltaConfig(act_max=act_max, mean=tuple(mean), std=tuple(std))
    if input_threshold is None:
        return config
    if float(input_threshold) != int(input_threshold):
        raise ConfigError(
            f"the fast runtime's input threshold is whole levels (0-254), got {input_threshold}"
        )
    return replace(config, input_threshold=int(input_threshold))


def _scene_cut_rule(
    scene_cut: SceneCutConfig | float | str | None, config: DeltaRuntimeConfig | None
) -> tuple[DeltaRuntimeConfig, SceneCutDetector | None]:
    """The runtime's config and the detector (None: the runtime's own fraction test, or no
    detection) that `scene_cut` asks for (module docstring)."""
    if scene_cut == "auto":
        if config is not None:  # a caller's runtime config keeps the cut rule it names
            return config, None
        scene_cut = SceneCutConfig()
    if isinstance(scene_cut, bool) or not isinstance(
        scene_cut, SceneCutConfig | float | int | None
    ):
        raise ConfigError(
            f"scene_cut must be 'auto', a SceneCutConfig, a changed-pixel fraction in [0, 1] "
            f"or None; got {scene_cut!r}"
        )
    config = config or DeltaRuntimeConfig()
    if isinstance(scene_cut, float | int):  # the runtime's own test; replace() checks the range
        return replace(config, scene_cut_threshold=float(scene_cut)), None
    # A changed-pixel fraction never exceeds 1: the runtime's own test is off.
    config = replace(config, scene_cut_threshold=1.0)
    return config, (SceneCutDetector(scene_cut) if scene_cut is not None else None)


def _setup_source(adapt: object, source_data: Any, warmup_steps: int, no_warmup: bool):
    """The source images the setup of the adapter made here reads, or None when none runs."""
    if adapt is None or _is_adapter(adapt):
        if source_data is not None or no_warmup:
            raise ConfigError(
                "source_data and no_warmup apply to an adapter stream() makes (adapt= a name or "
                "config); prepare a ready adapter with edgeadapt.setup_data.prepare_adapter"
            )
        return None
    if warmup_steps < 0:
        raise ConfigError(f"warmup_steps must be >= 0 (0 skips the warm-up), got {warmup_steps}")
    method = adapt.method if isinstance(adapt, AdaptConfig) else str(adapt)
    needs = methods_needing_source([method], warmup_steps=warmup_steps, no_warmup=no_warmup)
    if no_warmup and source_data is not None:
        raise ConfigError("source_data and no_warmup exclude each other; pass one")
    if not needs:
        return None
    return find_source_data(source_data, needed_by=needs, option="source_data")


def _load_delta_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointMismatchError(
            f"delta weights do not fit this model deltaified here ({exc}). They must come from "
            "the same architecture, deltaified the same way: weights trained on a graph-"
            "deltaified model (edgeadapt.delta.deltaify) do not load with adapt=..., which "
            "deltaifies module by module"
        ) from exc
