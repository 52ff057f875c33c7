"""One call from a model name and options to a verified program: what the CLI runs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from edgeadapt.export.errors import UnsupportedExportError
from edgeadapt.export.report import ExportReport

__all__ = ["ExportRequest", "export_program"]


@dataclass(frozen=True, kw_only=True)
class ExportRequest:
    """What to export. Combinations not implemented raise UnsupportedExportError."""

    format: str = "executorch"  # "onnx" or "executorch"
    program: str = "infer"  # "infer" (prediction) or "adapt" (one training step)
    backend: str = "xnnpack"  # ExecuTorch inference only: "xnnpack" or "portable"
    quantize: str | None = None  # None or "int8" (frozen backbone; ExecuTorch inference)
    statistics: str = "adapter"  # see edgeadapt.export.graph.inference_module
    calibration_batches: int = 4  # int8: calibration batches

    def check(self, method: str) -> None:
        if self.format not in ("onnx", "executorch"):
            raise UnsupportedExportError(
                f"format must be 'onnx' or 'executorch', got {self.format!r}"
            )
        if self.program not in ("infer", "adapt"):
            raise UnsupportedExportError(
                f"program must be 'infer' or 'adapt', got {self.program!r}"
            )
        if self.quantize not in (None, "int8"):
            raise UnsupportedExportError(
                f"quantize must be 'int8' or absent, got {self.quantize!r}"
            )
        if self.format == "onnx" and (self.program == "adapt" or self.quantize):
            raise UnsupportedExportError(
                "ONNX export covers fp32 prediction only; use --format executorch for "
                "--program adapt or --quantize int8"
            )
        if self.program == "adapt" and self.quantize:
            raise UnsupportedExportError(
                "a training program with an int8 backbone is not implemented yet; export "
                "--program adapt in fp32, or --program infer --quantize int8"
            )
        if self.program == "adapt" and method not in ("ecotta", "tent"):
            raise UnsupportedExportError(
                f"training programs exist for 'ecotta' and 'tent', not {method!r}"
            )


def export_program(
    model: nn.Module,
    example: Tensor,
    path: str | os.PathLike[str],
    request: ExportRequest,
    *,
    calibration: list[Tensor] | None = None,
) -> ExportReport:
    """Export `model` (a plain model or an Adapter) as `request` says, verified, to `path`."""
    from edgeadapt.methods.base import Adapter

    method = model.config.method if isinstance(model, Adapter) else "source"
    request.check(method)
    path = Path(path)
    if request.format == "onnx":
        from edgeadapt.export.onnx_program import to_onnx

        return to_onnx(model, example, path, statistics=request.statistics)
    if request.program == "adapt":
        from edgeadapt.export.training import to_training_program

        return to_training_program(model, example, path)
    if request.quantize == "int8":
        from edgeadapt.export.quantize import to_executorch_int8

        if calibration is None:
            gen = torch.Generator().manual_seed(0)
            calibration = [
                torch.randn(example.shape, generator=gen)
                for _ in range(request.calibration_batches)
            ]
        return to_executorch_int8(
            model, example, path, calibration=calibration, statistics=request.statistics
        )
    from edgeadapt.export.executorch_program import to_executorch

    return to_executorch(
        model, example, path, backend=request.backend, statistics=request.statistics
    )
