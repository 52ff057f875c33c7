"""Bundled programs: a .pte plus test inputs and PyTorch's expected outputs, for on-target
verification (ExecuTorch's `bundled_program`; the runtime loads a `.bpte` and checks each
method's outputs against the bundled ones within a tolerance).

`edgeadapt export` writes `NAME.bpte` beside `NAME.pte`. The expected outputs come from eager
PyTorch (for int8: the quantized reference graph), not from the runtime, so a target that
runs the bundle compares its kernels against PyTorch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from edgeadapt._extras import needs
from edgeadapt.export._files import atomic_write_bytes, read_program_bytes
from edgeadapt.export.errors import ProgramFileError, VerificationError

__all__ = ["BundledCase", "bundled_path", "verify_bundled_program", "write_bundled_program"]

SUFFIX = ".bpte"


@dataclass(frozen=True)
class BundledCase:
    inputs: tuple[Tensor, ...]
    expected: tuple[Tensor, ...]  # every output of the method, in the program's order


def bundled_path(pte_path: str | os.PathLike[str]) -> Path:
    return Path(pte_path).with_suffix(SUFFIX)


@needs("executorch", feature="writing a bundled program")
def write_bundled_program(
    pte_path: str | os.PathLike[str], cases: Sequence[BundledCase], method: str = "forward"
) -> Path:
    """Bundle the program at `pte_path` with `cases`; writes `<stem>.bpte` atomically."""
    from executorch.devtools.bundled_program.config import MethodTestCase, MethodTestSuite
    from executorch.devtools.bundled_program.core import BundledProgram
    from executorch.devtools.bundled_program.serialize import (
        serialize_from_bundled_program_to_flatbuffer,
    )

    tests = [
        MethodTestCase(
            tuple(t.detach().contiguous() for t in c.inputs),
            tuple(t.detach().contiguous() for t in c.expected),
        )
        for c in cases
    ]
    bundle = BundledProgram(None, [MethodTestSuite(method, tests)], pte_file_path=str(pte_path))
    path = bundled_path(pte_path)
    atomic_write_bytes(path, serialize_from_bundled_program_to_flatbuffer(bundle))
    return path


@needs("executorch", feature="verifying a bundled program")
def verify_bundled_program(
    path: str | os.PathLike[str],
    *,
    atol: float,
    rtol: float = 0.0,
    method: str = "forward",
    cases: int = 1,
) -> list[list[Tensor]]:
    """Run each bundled test case with the ExecuTorch runtime and check its outputs against the
    bundled expected ones (|got − expected| <= atol + rtol·|expected|, elementwise).

    Returns the outputs per case. ProgramFileError when the file is not a loadable bundle,
    VerificationError when the outputs disagree."""
    from executorch.extension.pybindings.portable_lib import _load_bundled_program_from_buffer

    data = read_program_bytes(path, "bundled ExecuTorch")
    try:
        bundle = _load_bundled_program_from_buffer(data)
    except Exception as exc:
        raise ProgramFileError(
            f"{path} is not a loadable bundled program ({type(exc).__name__}: {exc}); it may be "
            "truncated or corrupted: re-export it"
        ) from exc
    outputs = []
    for i in range(cases):
        try:
            outputs.append(bundle.verify_result_with_bundled_expected_output(method, i, rtol, atol))
        except RuntimeError as exc:
            # The runtime loads lazily: a damaged program surfaces only when the method runs,
            # as an execution failure rather than a result mismatch.
            if "verification failed" not in str(exc):
                raise ProgramFileError(
                    f"{path}: the bundled program could not run test case {i} of {method!r} "
                    f"({exc}); it may be truncated or corrupted: re-export it"
                ) from exc
            raise VerificationError(
                f"{path}: test case {i} of {method!r} disagrees with the bundled expected outputs "
                f"beyond atol {atol:g} + rtol {rtol:g}·|expected| ({exc})"
            ) from exc
    return outputs
