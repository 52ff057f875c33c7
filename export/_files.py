"""Atomic writes (from `edgeadapt._atomic`) and guarded reads of program files."""

from __future__ import annotations

import os
from pathlib import Path

from edgeadapt._atomic import atomic_write_bytes
from edgeadapt.export.errors import ProgramFileError

__all__ = ["atomic_write_bytes", "read_program_bytes"]


def read_program_bytes(path: str | os.PathLike[str], kind: str) -> bytes:
    """The bytes of a program file; ProgramFileError when it is missing or empty."""
    path = Path(path)
    if not path.is_file():
        raise ProgramFileError(f"no {kind} file at {path}")
    data = path.read_bytes()
    if not data:
        raise ProgramFileError(f"{path} is empty; re-export it")
    return data
