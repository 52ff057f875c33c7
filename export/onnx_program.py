"""ONNX export of a prediction graph, verified with ONNX Runtime before it is written."""

from __future__ import annotations

import io
import os
import warnings
from hashlib import sha256
from pathlib import Path

import torch
from torch import Tensor, nn

from edgeadapt._extras import require
from edgeadapt.export._files import atomic_write_bytes, read_program_bytes
from edgeadapt.export.errors import ExportError, ProgramFileError, VerificationError
from edgeadapt.export.graph import Statistics, inference_module
from edgeadapt.export.report import ExportReport

__all__ = ["OnnxRunner", "to_onnx"]

OPSET = 17  # ONNX Runtime 1.18+ and most edge runtimes (TFLite converters, TensorRT 8.6+)


def to_onnx(
    model: nn.Module,
    example: Tensor,
    path: str | os.PathLike[str],
    *,
    statistics: Statistics = "adapter",
    atol: float = 1e-3,
) -> ExportReport:
    """Export the prediction of `model` (a plain model or an Adapter, see
    `inference_module` for what an adapter's program computes) to ONNX at `path`.

    The batch axis is dynamic. BNs on stream statistics mix in a batch with the weight of
    `example`'s batch size, whatever batch the program is later given. The program is run by
    ONNX Runtime on `example` and compared with eager before anything is written; more than
    `atol` apart raises VerificationError.
    """
    require("onnx", "ONNX export")
    require("onnxruntime", "checking an ONNX export")
    net, batch_stats = inference_module(model, statistics)
    example = example.detach()
    with torch.no_grad():
        expected = net(example)
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated in favour of the dynamo one, which needs
            # onnxscript (not a dependency); its output is the same plain graph here.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                net,
                (example,),
                buf,
                dynamo=False,
                input_names=["input"],
                output_names=["logits"],
                opset_version=OPSET,
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                # Without it the exporter merges initializers of equal value (two BNs' γ after
                # the same Adam step) and leaves a node reading the dropped name: an invalid
                # model. As inputs each keeps its own name, with its value as the default.
                keep_initializers_as_inputs=True,
            )
    except Exception as exc:
        raise ExportError(
            f"ONNX export of {type(net).__name__} failed ({type(exc).__name__}: {exc}); the "
            "forward must be traceable (no data-dependent Python control flow, no .item())"
        ) from exc
    data = buf.getvalue()
    got = OnnxRunner.from_bytes(data, name=str(path)).run(example)
    error = float((got - expected).abs().max())
    if not error <= atol:
        raise VerificationError(
            f"the ONNX program differs from eager by {error:.3g} (> atol {atol:g}); not written"
        )
    path = Path(path)
    atomic_write_bytes(path, data)
    return ExportReport(
        path=path,
        format="onnx",
        program="infer",
        backend=None,
        file_bytes=len(data),
        sha256=sha256(data).hexdigest(),
        max_abs_error=error,
        input_shape=tuple(example.shape),
        batch_statistics=batch_stats,
    )


class OnnxRunner:
    """Runs an exported ONNX program with ONNX Runtime on the CPU."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._init(read_program_bytes(path, "ONNX"), str(path))

    @classmethod
    def from_bytes(cls, data: bytes, *, name: str = "<bytes>") -> OnnxRunner:
        runner = cls.__new__(cls)
        runner._init(data, name)
        return runner

    def _init(self, data: bytes, name: str) -> None:
        ort = require("onnxruntime", "running an ONNX program")

        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: warnings about unused initialisers are noise
        try:
            self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ProgramFileError(
                f"{name} is not a loadable ONNX program ({type(exc).__name__}: {str(exc)[:300]}); "
                "it may be truncated or corrupted: re-export it"
            ) from exc
        self.input_name = self.session.get_inputs()[0].name

    def run(self, x: Tensor) -> Tensor:
        """The program's first output for the batch `x`."""
        out = self.session.run(None, {self.input_name: x.detach().cpu().numpy()})
        return torch.from_numpy(out[0])
