"""Atomic writes and guarded reads of program files."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from edgeadapt.export.errors import ProgramFileError

__all__ = ["atomic_write_bytes", "read_program_bytes"]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it, so a reader never
    sees half a program."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_program_bytes(path: str | os.PathLike[str], kind: str) -> bytes:
    """The bytes of a program file; ProgramFileError when it is missing or empty."""
    path = Path(path)
    if not path.is_file():
        raise ProgramFileError(f"no {kind} file at {path}")
    data = path.read_bytes()
    if not data:
        raise ProgramFileError(f"{path} is empty; re-export it")
    return data
