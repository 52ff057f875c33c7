"""What an export produced, measured: the file, its error against eager, its memory."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ExportReport"]


@dataclass(frozen=True, kw_only=True)
class ExportReport:
    """One exported program, verified against PyTorch eager right after export."""

    path: Path  # the written file
    format: str  # "onnx" or "executorch"
    program: str  # "infer" (prediction) or "adapt" (one training step)
    backend: str | None  # ExecuTorch: "xnnpack" or "portable"; None for ONNX
    file_bytes: int  # size of the file on disk
    # sha256 of the bytes written, to check a copy (on a device, in a release) is this program.
    sha256: str
    max_abs_error: float  # max |runtime − eager| over the outputs compared, on the example
    input_shape: tuple[int, ...]  # the example's shape; the program is fixed to it
    batch_statistics: bool  # some BN normalises with the input batch's statistics (N >= 2)
    # ExecuTorch only, read from the program itself: bytes of each planned memory arena
    # (execution_plan[0].non_const_buffer_sizes[1:]; inputs and activations live there),
    # and of constant data (weights: constant buffers, constant segment, named data,
    # delegate payloads).
    arena_bytes: tuple[int, ...] = ()
    constant_bytes: int | None = None
    # Banked planning (`device=`): the bank each arena was planned for, in arena order, and
    # the profile's key; empty / None for the default single-arena plan.
    arena_banks: tuple[str, ...] = ()
    planned_for: str | None = None
    # Training programs: bytes of the trainable tensors. The runtime updates them in place,
    # so on an MCU they must sit in RAM, not in flash with the other constants.
    trainable_bytes: int = 0
    # ExecuTorch: the bundled program (.bpte: the program, the example and PyTorch's expected
    # outputs) and the absolute tolerance its outputs were verified within.
    # ExecuTorch: the method allocator's bytes outside the plan (value table, tensor headers,
    # instruction arguments), estimated for a 32-bit target (`runtime_estimate`).
    runtime_bytes_estimate: int | None = None
    bundled_path: Path | None = None
    bundled_atol: float | None = None
    quantized: str | None = None  # "int8" for a PT2E-quantized frozen backbone
    # int8 only: max |int8 program − fp32 eager| and top-1 agreement with fp32 on the example.
    fp32_max_abs_error: float | None = None
    fp32_agreement: float | None = None
    # Training programs: `check_adaptation` against the eager adapter on real images (steps,
    # differences, whether weights moved and predictions varied); None when not run.
    adaptation_check: dict[str, Any] | None = None
    # Training programs: what the arena holds where the most bytes are alive, by role (kept
    # for the backward, ReLU masks, temporaries, ...: `arena_peak.ArenaPeak.to_dict`).
    arena_peak: dict[str, Any] | None = None
    notes: tuple[str, ...] = ()

    @property
    def total_arena_bytes(self) -> int:
        return sum(self.arena_bytes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (paths as strings, tuples as lists)."""
        out = dataclasses.asdict(self)
        out["path"] = str(self.path)
        out["bundled_path"] = str(self.bundled_path) if self.bundled_path else None
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        out["total_arena_bytes"] = self.total_arena_bytes
        return out
