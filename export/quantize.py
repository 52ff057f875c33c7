"""An int8 frozen backbone with fp32 meta networks, for inference (PT2E + XNNPACK).

The adapter's prediction graph is captured, quantized by torchao's PT2E flow with the
XNNPACK quantizer (symmetric int8, per-channel weights), calibrated on a few batches, and
lowered to XNNPACK. The meta networks (EcoTTA's `adapter_bn` / `adapter_conv`, found by type)
stay fp32: they are what adaptation changes, and their few weights cost little.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from edgeadapt.errors import ConfigError
from edgeadapt.export.errors import ExportError
from edgeadapt.export.executorch_program import capture, lower, verify_and_write
from edgeadapt.export.graph import Statistics, inference_module
from edgeadapt.export.report import ExportReport

__all__ = ["quantize_int8", "to_executorch_int8"]


def _fp32_module_names(net: nn.Module) -> list[str]:
    from edgeadapt.modules.meta import MetaPart

    names = []
    for name, m in net.named_modules():
        if isinstance(m, MetaPart):
            names += [f"{name}.adapter_bn", f"{name}.adapter_conv"]
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


def to_executorch_int8(
    model: nn.Module,
    example: Tensor,
    path: str | os.PathLike[str],
    *,
    calibration: Iterable[Tensor],
    statistics: Statistics = "adapter",
    atol: float = 5e-2,
    rtol: float = 0.1,
) -> ExportReport:
    """Export the prediction of `model` with an int8 frozen backbone to an XNNPACK .pte.

    `max_abs_error` compares the program with the quantized graph run by PyTorch (what the
    int8 kernels should compute). XNNPACK requantizes with its own rounding, so the bound is
    `atol + rtol · max|logit|` (ResNet-20: ~0.3 on logits of ~±15, measured); `fp32_max_abs_error` and
    `fp32_agreement` (top-1 agreement) compare it with the fp32 prediction on `example`.
    """
    net, batch_stats = inference_module(model, statistics)
    example = example.detach()
    quantized = quantize_int8(net, example, calibration)
    with torch.no_grad():
        fp32 = net(example)
        expected = quantized(example)
    try:
        data = lower(capture(quantized, example), "xnnpack")
    except ExportError:
        raise
    except Exception as exc:  # pragma: no cover - lower() wraps its own failures
        raise ExportError(f"lowering the int8 program failed: {exc}") from exc
    report = verify_and_write(
        data,
        path,
        example,
        expected,
        atol=atol,
        rtol=rtol,
        backend="xnnpack",
        batch_statistics=batch_stats,
        quantized="int8",
    )
    from edgeadapt.export.executorch_program import ExecuTorchRunner

    got = ExecuTorchRunner(report.path).run(example)
    import dataclasses

    return dataclasses.replace(
        report,
        fp32_max_abs_error=float((got - fp32).abs().max()),
        fp32_agreement=float((got.argmax(1) == fp32.argmax(1)).float().mean()),
    )
