"""Check on the target: run inputs on the device and compare with the host's reference.

`device_infer` sends a whole program input (inline when it fits a frame, else staged with an
UPLOAD of target INPUT); `validate` runs N inputs through it and through each reference
(the same ExecuTorch program run on the host, PyTorch eager) and reports the worst error and
the argmax agreement against `atol + rtol * max|reference|`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from .client import BridgeClient
from .emulator.payloads import decode_output, encode_raw
from .message_base import ENVELOPE
from .messages import Infer
from .protocol import Target

__all__ = ["ValidationReport", "device_infer", "program_input_shape", "validate"]

Reference = Callable[[Tensor], Tensor]


def program_input_shape(program: bytes) -> tuple[int, ...]:
    """The input shape an ExecuTorch inference program was exported for."""
    from edgeadapt.export.executorch_program import ExecuTorchRunner

    meta = ExecuTorchRunner.from_bytes(program).method.metadata.input_tensor_meta(0)
    return tuple(int(s) for s in meta.sizes())


def device_infer(client: BridgeClient, x: Tensor, *, frame_id: int = 0) -> Tensor:
    """The device's output for the program input `x`, sent losslessly as raw float32."""
    data = encode_raw(x)
    if ENVELOPE.size + Infer.LAYOUT.size + len(data) <= client.link.max_payload:
        out = client.infer(data, frame_id=frame_id).output
    else:
        client.upload(data, target=Target.INPUT)
        out = client.infer(b"", frame_id=frame_id).output
    y = decode_output(out)
    return y.view(x.shape[0], -1) if y.numel() % x.shape[0] == 0 else y


@dataclass
class ValidationReport:
    n_inputs: int
    atol: float
    rtol: float
    passed: bool
    device_seconds: float  # wall time of the device calls, transfers included
    references: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def validate(
    client: BridgeClient,
    inputs: Sequence[Tensor],
    references: Mapping[str, Reference],
    *,
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> ValidationReport:
    """Run every input on the device and on each reference; pass when every output of every
    reference is within `atol + rtol * max|reference output|`."""
    worst = {name: 0.0 for name in references}
    ratio = {name: 0.0 for name in references}
    agree = {name: 0 for name in references}
    rows = 0
    seconds = 0.0
    for i, x in enumerate(inputs):
        start = time.perf_counter()
        got = device_infer(client, x, frame_id=i)
        seconds += time.perf_counter() - start
        rows += got.shape[0]
        for name, ref in references.items():
            with torch.no_grad():
                want = ref(x).reshape(got.shape)
            err = float((got - want).abs().max())
            bound = atol + rtol * float(want.abs().max())
            worst[name] = max(worst[name], err)
            over = err / bound if bound > 0 else (0.0 if err == 0 else float("inf"))
            ratio[name] = max(ratio[name], over)
            agree[name] += int((got.argmax(-1) == want.argmax(-1)).sum())
    summary = {
        name: {
            "max_abs_error": worst[name],
            "worst_error_over_bound": ratio[name],
            "argmax_agreement": agree[name] / max(rows, 1),
            "passed": ratio[name] <= 1.0,
        }
        for name in references
    }
    return ValidationReport(
        n_inputs=len(inputs), atol=atol, rtol=rtol, device_seconds=seconds,
        passed=all(s["passed"] for s in summary.values()), references=summary,
    )  # fmt: skip
