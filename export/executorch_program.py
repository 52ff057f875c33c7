"""ExecuTorch export of a prediction graph: lowered, run by the ExecuTorch runtime against
eager, then written; its memory plan is read back from the program."""

from __future__ import annotations

import os
from hashlib import sha256
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from edgeadapt._extras import needs
from edgeadapt.export._files import atomic_write_bytes, read_program_bytes
from edgeadapt.export.devices import DeviceProfile, load_profile
from edgeadapt.export.errors import ExportError, ProgramFileError, VerificationError
from edgeadapt.export.graph import Statistics, inference_module
from edgeadapt.export.report import ExportReport
from edgeadapt.export.shared_values import share_constant_values

__all__ = [
    "Backend",
    "ExecuTorchRunner",
    "capture",
    "lower",
    "program_memory",
    "to_executorch",
    "verify_and_write",
]

Backend = Literal["xnnpack", "portable"]


def capture(net: nn.Module, example: Tensor | tuple[Tensor, ...]) -> Any:
    """torch.export the module for `example` (one input, or a tuple of them); ExportError
    naming the cause when it cannot be captured."""
    inputs = example if isinstance(example, tuple) else (example,)
    try:
        return torch.export.export(net, inputs, strict=False)
    except Exception as exc:
        raise ExportError(
            f"torch.export could not capture {type(net).__name__} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); the forward must be traceable "
            "(no data-dependent Python control flow, no .item(), no custom autograd Functions)"
        ) from exc


def lower(exported: Any, backend: Backend, profile: DeviceProfile | None = None) -> bytes:
    """An ExportedProgram lowered to a .pte buffer: XNNPACK delegates what it supports and the
    portable kernels run the rest; "portable" runs everything on portable kernels. With
    `profile`, the arena is planned into the device's RAM banks."""
    from executorch.exir import to_edge_transform_and_lower

    from edgeadapt.export.memory_plan import backend_config

    if backend not in ("xnnpack", "portable"):
        raise ValueError(f"backend must be 'xnnpack' or 'portable', got {backend!r}")
    partitioners = []
    if backend == "xnnpack":
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        partitioners.append(XnnpackPartitioner())
    try:
        data = (
            to_edge_transform_and_lower(exported, partitioner=partitioners)
            .to_executorch(backend_config(profile))
            .buffer
        )
    except Exception as exc:
        raise ExportError(
            f"lowering to ExecuTorch ({backend}) failed ({type(exc).__name__}: "
            f"{_first_line(exc)}); an op outside ExecuTorch's operator set must be replaced "
            "by supported ones in the model"
        ) from exc
    # Scalar arguments shared between instructions: fewer runtime tables on the device.
    return share_constant_values(data)[0]


def _first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (toolchain errors often open with
    a blank line and go on for a page)."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), "")[:300]


def program_memory(data: bytes) -> tuple[tuple[int, ...], int]:
    """(bytes of each planned arena, bytes of constant data) read from a .pte buffer.

    Arenas: `execution_plan[0].non_const_buffer_sizes[1:]` (entry 0 is reserved). Constants:
    constant buffers, the constant segment, named data (XNNPACK's weights) and delegate
    payloads; a device keeps them in flash or in RAM, next to the arena.
    """
    from executorch.exir._serialize._program import deserialize_pte_binary

    try:
        pte = deserialize_pte_binary(data)
    except Exception as exc:
        raise ProgramFileError(f"not an ExecuTorch program ({type(exc).__name__}: {exc})") from exc
    program = pte.program
    arenas = tuple(int(b) for b in program.execution_plan[0].non_const_buffer_sizes[1:])
    constants = sum(len(b.storage) for b in program.constant_buffer)
    constants += sum(len(d.data) for d in program.backend_delegate_data)
    if pte.named_data is not None:
        constants += sum(len(getattr(b, "buffer", b)) for b in pte.named_data.buffers)
    return arenas, constants


def planned_memory(
    data: bytes, profile: DeviceProfile | None, *, merge_contiguous: bool = False
) -> dict[str, Any]:
    """A program's memory as `check_fit` reads it: its arenas and the banks they were planned
    for (`profile`, `merge_contiguous` as at export), its constants and the runtime tables'
    32-bit estimate."""
    from edgeadapt.export.memory_plan import plan_banks
    from edgeadapt.export.runtime_estimate import estimate_runtime_bytes

    arenas, constants = program_memory(data)
    planned = plan_banks(profile, merge_contiguous=merge_contiguous) if profile else ()
    return {
        "arena_bytes": arenas,
        "arena_banks": tuple(b.name for b in planned)[: len(arenas)],
        "planned_for": profile.key if profile else None,
        "constant_bytes": constants,
        "runtime_bytes_estimate": estimate_runtime_bytes(data).bytes,
    }


def verify_and_write(
    data: bytes,
    path: str | os.PathLike[str],
    example: Tensor,
    expected: Tensor,
    *,
    atol: float,
    rtol: float = 0.0,
    backend: Backend,
    batch_statistics: bool,
    **extra: Any,
) -> ExportReport:
    """Run the program on `example` with the ExecuTorch runtime, compare with `expected`,
    write it atomically and report; VerificationError (nothing written) beyond
    `atol + rtol · max|expected|`."""
    got = ExecuTorchRunner.from_bytes(data, name=str(path)).run(example)
    error = float((got - expected).abs().max())
    bound = atol + rtol * float(expected.abs().max())
    if not error <= bound:
        raise VerificationError(
            f"the ExecuTorch program differs from eager by {error:.3g} (> {bound:.3g} = atol "
            f"{atol:g} + rtol {rtol:g}·max|eager|); not written"
        )
    return write_pte(
        path, data, example, program=extra.pop("program", "infer"), backend=backend,
        max_abs_error=error, batch_statistics=batch_statistics, expected=(expected,),
        bundle_atol=bound, **extra,
    )  # fmt: skip


def write_pte(
    path: str | os.PathLike[str],
    data: bytes,
    example: Tensor,
    *,
    profile: DeviceProfile | None = None,
    expected: tuple[Tensor, ...] | None = None,
    bundle_atol: float = 0.0,
    bundle_inputs: tuple[Tensor, ...] | None = None,
    merge_contiguous: bool = False,
    **fields: Any,
) -> ExportReport:
    """Write a verified program atomically; report its size and the memory plan read back
    from its own bytes (`profile`: the device whose banks it was planned into,
    `merge_contiguous`: with its contiguous banks as one, `memory_plan`). With
    `expected` (the method's outputs from PyTorch for `example`, or for `bundle_inputs` where
    the program takes more than the batch), also write the bundled program `<stem>.bpte` for
    on-target verification within `bundle_atol`."""
    from edgeadapt.export.bundled import BundledCase, write_bundled_program

    memory = planned_memory(data, profile, merge_contiguous=merge_contiguous)
    path = Path(path)
    atomic_write_bytes(path, data)
    bundled = None
    if expected is not None:
        cases = [BundledCase(bundle_inputs or (example,), expected)]
        bundled = write_bundled_program(path, cases)
    return ExportReport(
        path=path, format="executorch", file_bytes=len(data), sha256=sha256(data).hexdigest(),
        input_shape=tuple(example.shape),
        arena_bytes=memory["arena_bytes"], constant_bytes=memory["constant_bytes"],
        arena_banks=memory["arena_banks"], planned_for=memory["planned_for"],
        bundled_path=bundled, bundled_atol=bundle_atol if bundled else None,
        runtime_bytes_estimate=memory["runtime_bytes_estimate"], **fields,
    )  # fmt: skip


@needs("executorch", feature="ExecuTorch export")
def to_executorch(
    model: nn.Module,
    example: Tensor,
    path: str | os.PathLike[str],
    *,
    backend: Backend = "xnnpack",
    statistics: Statistics = "adapter",
    atol: float = 1e-4,
    rtol: float = 1e-3,
    device: DeviceProfile | str | None = None,
) -> ExportReport:
    """Export the prediction of `model` (a plain model or an Adapter; see `inference_module`)
    as an ExecuTorch program at `path`, for inputs shaped exactly like `example`.

    Verified against eager within `atol + rtol · max|logit|`: XNNPACK's fp32 kernels sum in
    another order, and BNs on batch statistics amplify that (ResNet-20 EcoTTA: 1.3e-3 on
    logits of ~±10, measured; a plain model: 1e-5). With `device` (a profile or its name), the
    arena is planned into that device's RAM banks. A bundled program (`.bpte`, the example and
    eager's output) is written beside the .pte."""
    profile = load_profile(device) if isinstance(device, str) else device
    net, batch_stats = inference_module(model, statistics)
    example = example.detach()
    with torch.no_grad():
        expected = net(example)
    data = lower(capture(net, example), backend, profile)
    return verify_and_write(
        data,
        path,
        example,
        expected,
        atol=atol,
        rtol=rtol,
        backend=backend,
        batch_statistics=batch_stats,
        profile=profile,
    )


class ExecuTorchRunner:
    """Loads a .pte with the ExecuTorch runtime (its Python bindings) and runs `forward`."""

    @needs("executorch", feature="running an ExecuTorch program")
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._init(read_program_bytes(path, "ExecuTorch"), str(path))

    @classmethod
    def from_bytes(cls, data: bytes, *, name: str = "<bytes>") -> ExecuTorchRunner:
        runner = cls.__new__(cls)
        runner._init(data, name)
        return runner

    @needs("executorch", feature="running an ExecuTorch program")
    def _init(self, data: bytes, name: str) -> None:
        # Registers the quantize/dequantize kernels, which int8 portable programs call.
        import executorch.kernels.quantized  # noqa: F401
        from executorch.runtime import Runtime

        # A .pte is a flatbuffer whose identifier "ET" sits at bytes 4..6; checking it first
        # gives a clear message for files of another kind.
        if len(data) < 8 or data[4:6] != b"ET":
            raise ProgramFileError(f"{name} is not an ExecuTorch program (no 'ET' identifier)")
        self._data = data  # the runtime may read the buffer in place: keep it alive
        try:
            self.program = Runtime.get().load_program(data)
            self.method = self.program.load_method("forward")
        except Exception as exc:
            raise ProgramFileError(
                f"{name} could not be loaded by the ExecuTorch runtime ({type(exc).__name__}: "
                f"{exc}); it may be truncated or corrupted: re-export it"
            ) from exc
        if self.method is None:
            raise ProgramFileError(f"{name} has no 'forward' method")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The batch shape `forward` was exported for."""
        meta = self.method.metadata.input_tensor_meta(0)
        return tuple(int(s) for s in meta.sizes())

    def run(self, x: Tensor) -> Tensor:
        """The program's first output for the batch `x` (shaped like the export example)."""
        return self.method.execute([x.detach().contiguous()])[0].clone()
