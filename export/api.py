"""One call from a model name and options to a verified program: what the CLI runs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from edgeadapt.errors import ConfigError, InputError
from edgeadapt.export.errors import UnsupportedExportError
from edgeadapt.export.report import ExportReport

__all__ = ["ExportRequest", "export_program"]


@dataclass(frozen=True, kw_only=True)
class ExportRequest:
    """What to export. Combinations not implemented raise UnsupportedExportError."""

    format: str = "executorch"  # "onnx" or "executorch"
    program: str = "infer"  # "infer" (prediction) or "adapt" (one training step)
    # ExecuTorch inference: "xnnpack" or "portable". Training programs are always portable:
    # a delegate would freeze the trainable ops it takes in.
    backend: str = "xnnpack"
    # None or "int8": the frozen backbone's weights int8 (infer: PT2E, int8 activations too;
    # adapt: int8 weights dequantized in the graph, fp32 activations).
    quantize: str | None = None
    statistics: str = "adapter"  # see edgeadapt.export.graph.inference_module
    # ExecuTorch: a device profile; the arena is planned into its RAM banks.
    device: str | None = None
    # adapt: the exact scheduling passes (smaller arena, the same step; None: on, the
    # default), and how the activations the gradients read are kept ("int8" needs the
    # scheduling; approximate gradients). See edgeadapt.export.training.to_training_program.
    schedule: bool | None = None
    kept_activations: str = "fp32"

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
        if self.format == "onnx" and (self.program == "adapt" or self.quantize or self.device):
            raise UnsupportedExportError(
                "ONNX export covers fp32 prediction only, with no memory plan; use --format "
                "executorch for --program adapt, --quantize int8 or --device"
            )
        if self.program == "adapt" and method not in ("ecotta", "tent"):
            raise UnsupportedExportError(
                f"training programs exist for 'ecotta' and 'tent', not {method!r}"
            )
        if self.backend not in ("xnnpack", "portable"):
            raise UnsupportedExportError(
                f"backend must be 'xnnpack' or 'portable', got {self.backend!r}"
            )
        if self.statistics not in ("adapter", "running"):
            raise UnsupportedExportError(
                f"statistics must be 'adapter' or 'running', got {self.statistics!r}"
            )
        if self.kept_activations not in ("fp32", "int8"):
            raise UnsupportedExportError(
                f"kept activations must be 'fp32' or 'int8', got {self.kept_activations!r}"
            )
        if self.program != "adapt" and (
            self.schedule is not None or self.kept_activations != "fp32"
        ):
            raise UnsupportedExportError(
                "--schedule/--no-schedule and --kept-activations shape a training program's "
                "arena: they apply to --program adapt only"
            )
        if self.schedule is False and self.kept_activations == "int8":
            raise UnsupportedExportError(
                "--kept-activations int8 works on the scheduled step: drop --no-schedule"
            )
        if self.device:
            self._check_device()

    def _check_device(self) -> None:
        """The device profile exists and can run the program, checked before any export: an
        XNNPACK program on an MCU would otherwise only fail the fit check after the export."""
        from edgeadapt.export.devices import load_profile

        profile = load_profile(self.device)  # an unknown name: UnknownDeviceError
        # Training programs always run on the portable kernels (see `backend`).
        if profile.kind == "mcu" and self.program == "infer" and self.backend == "xnnpack":
            raise UnsupportedExportError(
                f"backend 'xnnpack' cannot run on {profile.name} ({profile.cpu.core}): XNNPACK "
                "has no kernels for microcontrollers (Cortex-M, Xtensa); export with backend "
                "'portable' (--backend portable) for this --device"
            )


def export_program(
    model: nn.Module,
    example: Tensor,
    path: str | os.PathLike[str],
    request: ExportRequest,
    *,
    calibration: list[Tensor] | None = None,
    check_images: Tensor | None = None,
    check_steps: int = 20,
) -> ExportReport:
    """Export `model` (a plain model or an Adapter) as `request` says, verified, to `path`.

    int8 prediction programs need `calibration`: a few batches of typical (source) inputs.
    Training programs with `check_images` must also adapt like the eager adapter over
    `check_steps` steps on them (`edgeadapt.export.adapt_check`).
    """
    from edgeadapt.export.devices import load_profile
    from edgeadapt.methods.base import Adapter

    method = model.config.method if isinstance(model, Adapter) else "source"
    request.check(method)
    if example.ndim < 2 or example.shape[0] < 1:
        raise InputError(
            f"example must be a batch of at least one input (N, ...), got shape "
            f"{tuple(example.shape)}; the program's batch size is N"
        )
    profile = load_profile(request.device) if request.device else None
    path = Path(path)
    if request.format == "onnx":
        from edgeadapt.export.onnx_program import to_onnx

        return to_onnx(model, example, path, statistics=request.statistics)
    if request.program == "adapt":
        from edgeadapt.export.training import to_training_program

        return to_training_program(
            model, example, path, device=profile, quantize=request.quantize,
            check_images=check_images, check_steps=check_steps, schedule=request.schedule is not False,
            int8_activations=request.kept_activations == "int8",
        )  # fmt: skip
    if request.quantize == "int8":
        from edgeadapt.export.quantize import to_executorch_int8

        if not calibration:
            raise ConfigError(
                "an int8 prediction program needs calibration batches: a few batches of "
                "typical source images (random inputs give wrong scales)"
            )
        return to_executorch_int8(
            model, example, path, calibration=calibration, statistics=request.statistics,
            backend=request.backend, device=profile,
        )  # fmt: skip
    from edgeadapt.export.executorch_program import to_executorch

    return to_executorch(
        model, example, path, backend=request.backend, statistics=request.statistics,
        device=profile,
    )  # fmt: skip
