"""An int8 frozen backbone with fp32 meta networks, for inference (PT2E).

The adapter's prediction graph is captured, quantized by torchao's PT2E flow with the
XNNPACK quantizer (symmetric int8, per-channel weights), calibrated on a few batches, and
lowered to XNNPACK or to the portable kernels. The meta networks (EcoTTA's `adapter_bn` /
`adapter_conv`, found by type) and BNs on batch statistics stay fp32: the meta networks are
what adaptation changes, and their few weights cost little. Training programs store int8
weights differently (`training_ops.Int8WeightConv2d`): see there why.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from edgeadapt._extras import needs
from edgeadapt.errors import ConfigError
from edgeadapt.export.devices import DeviceProfile, load_profile
from edgeadapt.export.executorch_program import Backend, capture, lower, verify_and_write
from edgeadapt.export.graph import Statistics, inference_module
from edgeadapt.export.report import ExportReport

__all__ = ["quantize_int8", "to_executorch_int8"]


def _fp32_module_names(net: nn.Module) -> list[str]:
    """Modules kept out of quantization: the meta networks, and every BN on batch statistics.

    A batch-statistics BN is a chain of plain ops (mean, square, rsqrt, ...) that the XNNPACK
    quantizer would otherwise quantize one by one: squared activations and small variances in
    int8, amplified by the rsqrt, and requantized by XNNPACK with other rounding than PyTorch's
    reference, which is how such programs failed verification (0.75 on logits of ±6). In fp32
    they cost little (per-channel statistics) and the convolutions stay int8."""
    from edgeadapt.export.graph import PlainBatchNorm2d
    from edgeadapt.modules.meta import MetaPart

    names = []
    for name, m in net.named_modules():
        if isinstance(m, MetaPart):
            names += [f"{name}.adapter_bn", f"{name}.adapter_conv"]
        elif isinstance(m, PlainBatchNorm2d) and m.batch_statistics:
            names.append(name)
    return names


def quantize_int8(net: nn.Module, example: Tensor, calibration: Iterable[Tensor]) -> nn.Module:
    """The PT2E-quantized (simulated int8) version of an exportable module `net`."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True)
    )
    fp32 = tuple(_fp32_module_names(net))

    # set_module_name(name, None) is "not supported yet" in executorch 1.5; a node filter on
    # the module stack that export records does the same.
    def outside_meta_networks(node) -> bool:
        stack = node.meta.get("nn_module_stack", {}).values()
        return not any(path == n or path.startswith(n + ".") for path, _ in stack for n in fp32)

    quantizer.set_filter_function(outside_meta_networks)
    graph = capture(net, example).module()
    prepared = prepare_pt2e(graph, quantizer)
    batches = 0
    with torch.no_grad():
        for x in calibration:
            prepared(x)
            batches += 1
    if not batches:
        raise ConfigError("int8 quantization needs calibration batches (a few typical inputs)")
    return convert_pt2e(prepared)


@needs("executorch", "torchao", feature="int8 export")
def to_executorch_int8(
    model: nn.Module,
    example: Tensor,
    path: str | os.PathLike[str],
    *,
    calibration: Iterable[Tensor],
    statistics: Statistics = "adapter",
    atol: float = 5e-2,
    rtol: float = 0.1,
    backend: Backend = "xnnpack",
    device: DeviceProfile | str | None = None,
) -> ExportReport:
    """Export the prediction of `model` with an int8 frozen backbone to a .pte.

    "xnnpack" runs the int8 ops in XNNPACK (Arm Cortex-A, x86); "portable" runs ExecuTorch's
    reference quantize/dequantize kernels and fp32 ops between them (any target; int8 weights
    and int8 activations between layers, fp32 arithmetic).

    `max_abs_error` compares the program with the quantized graph run by PyTorch (what the
    int8 kernels should compute). The portable kernels compute that reference, up to fp32
    sums in another order moving a value across a rounding boundary (a step of the int8
    logits at most, on the tests). XNNPACK requantizes with fixed-point multipliers and its own rounding, which moves
    some int8 values by a step; steps add up over 20 layers into whole steps of the int8
    logits (ResNet-20 on CIFAR images: 0.3-0.6 on logits of ±12-19). The bound is
    `atol + rtol · max|logit|`; calibrated and checked on Gaussian noise instead of images
    the logits are small (±6) and the same few steps broke it, which is why int8 needs
    real calibration images. `fp32_max_abs_error` and `fp32_agreement` (top-1 agreement)
    compare the program with the fp32 prediction on `example`.
    """
    profile = load_profile(device) if isinstance(device, str) else device
    if backend == "portable":
        # Registers the quantize/dequantize out-variants (export) and kernels (runtime).
        import executorch.kernels.quantized  # noqa: F401
    net, batch_stats = inference_module(model, statistics)
    example = example.detach()
    quantized = quantize_int8(net, example, calibration)
    with torch.no_grad():
        fp32 = net(example)
        expected = quantized(example)
    from edgeadapt.export.training_passes import defer_constant_ops

    exported = capture(quantized, example)
    defer_constant_ops(exported)
    data = lower(exported, backend, profile)
    report = verify_and_write(
        data,
        path,
        example,
        expected,
        atol=atol,
        rtol=rtol,
        backend=backend,
        batch_statistics=batch_stats,
        quantized="int8",
        profile=profile,
    )
    from edgeadapt.export.executorch_program import ExecuTorchRunner

    got = ExecuTorchRunner(report.path).run(example)
    import dataclasses

    return dataclasses.replace(
        report,
        fp32_max_abs_error=float((got - fp32).abs().max()),
        fp32_agreement=float((got.argmax(1) == fp32.argmax(1)).float().mean()),
    )
