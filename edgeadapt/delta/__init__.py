"""Temporal sparsity for streaming video: delta activations, exact delta inference.

Yousefzadeh & Sifalakis 2021, "Training for temporal sparsity in deep neural networks,
application in video processing" (arXiv 2107.07305).

Training: `deltaify(model, example)` puts a learned quantiser (`DeltaActivation`) after every
activation of a copy of the model; `forward_with_sparsity` / `temporal_sparsity_loss` give the
MAC-weighted temporal delta penalty for clips laid out clip-major along the batch dim.

Training without labels: `distill_for_sparsity(deltaified, clips)` fine-tunes a copy on the
user's own footage, distilling from the dense model (`strip_delta`) while penalising temporal
change; `save_delta_weights` / `load_delta_weights` store the result.

Inference: `to_delta_runtime(deltaified)` turns it into a stateful frame-by-frame processor
(`DeltaRuntime`) whose conv / linear layers compute only what changed, with outputs equal to
the dense quantised model's; `time_delta_layers` measures what that buys on this machine.

Fast inference (CIFAR ResNets, and traceable conv nets such as torchvision's ResNets:
`lower_graph`): `to_fast_delta_runtime(deltaified)` lowers the model to
integer activations and weights whose float32 sums are exact, and streams uint8 camera frames
through fused C++ kernels (built on first use with g++) that pass change masks from layer to
layer; outputs equal `fast_reference_forward(runtime.plan, frame)` bit for bit.
"""

from __future__ import annotations

from edgeadapt.delta.deltaify import DEFAULT_ACTIVATIONS, delta_activations, deltaify
from edgeadapt.delta.distill import (
    DistillConfig,
    DistillResult,
    distill_for_sparsity,
    load_delta_weights,
    make_clips,
    pixel_sparsity_loss,
    save_delta_weights,
)
from edgeadapt.delta.errors import DeltaStateError, NotDeltaifiedError
from edgeadapt.delta.fast_lower import lower_graph
from edgeadapt.delta.fast_native import NativeBuildError, native_available
from edgeadapt.delta.fast_plan import FastPlan, lower_cifar_resnet
from edgeadapt.delta.fast_plan import reference_forward as fast_reference_forward
from edgeadapt.delta.fast_runtime import FastDeltaConfig, FastDeltaRuntime, to_fast_delta_runtime
from edgeadapt.delta.layers import DeltaConv2d, DeltaLayer, DeltaLinear, MacCount
from edgeadapt.delta.penalty import (
    collect_delta_activations,
    forward_with_sparsity,
    temporal_sparsity_loss,
)
from edgeadapt.delta.quantize import DeltaActivation
from edgeadapt.delta.runtime import DeltaRuntime, DeltaRuntimeConfig, to_delta_runtime
from edgeadapt.delta.sparse_conv import (
    PixelDelta,
    conv2d_delta_,
    pixel_delta,
    sparse_conv2d,
    write_pixels_,
)
from edgeadapt.delta.sparse_elements import (
    ElementDelta,
    conv2d_elements_,
    element_delta,
    element_weight_rows,
)
from edgeadapt.delta.sparse_ops import conv2d_macs, linear_macs, sparse_linear, sparse_linear_
from edgeadapt.delta.structure import deltaify_modules, strip_delta
from edgeadapt.delta.timing import TimingResult, time_delta_layer, time_delta_layers

__all__ = [
    "DEFAULT_ACTIVATIONS",
    "DeltaActivation",
    "DeltaConv2d",
    "DeltaLayer",
    "DeltaLinear",
    "DeltaRuntime",
    "DeltaRuntimeConfig",
    "DeltaStateError",
    "DistillConfig",
    "DistillResult",
    "ElementDelta",
    "FastDeltaConfig",
    "FastDeltaRuntime",
    "FastPlan",
    "MacCount",
    "NativeBuildError",
    "NotDeltaifiedError",
    "PixelDelta",
    "TimingResult",
    "collect_delta_activations",
    "conv2d_delta_",
    "conv2d_elements_",
    "conv2d_macs",
    "delta_activations",
    "deltaify",
    "deltaify_modules",
    "distill_for_sparsity",
    "element_delta",
    "element_weight_rows",
    "fast_reference_forward",
    "forward_with_sparsity",
    "linear_macs",
    "load_delta_weights",
    "lower_cifar_resnet",
    "lower_graph",
    "make_clips",
    "native_available",
    "pixel_delta",
    "pixel_sparsity_loss",
    "save_delta_weights",
    "sparse_conv2d",
    "sparse_linear",
    "sparse_linear_",
    "strip_delta",
    "temporal_sparsity_loss",
    "time_delta_layer",
    "time_delta_layers",
    "to_delta_runtime",
    "to_fast_delta_runtime",
    "write_pixels_",
]
