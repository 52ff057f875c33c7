"""Atomic file writes: readers see the old file or the whole new one, never half of it.

Used for adapted weights, caches, downloads and exported programs alike.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes"]


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; on success it is renamed onto `dest` in one step.

    An exception (Ctrl-C included) removes the temporary file; a hard kill may leave a hidden
    `.tmp` beside `dest`, but never a truncated `dest`.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # A fresh unique name, created by the caller's writer so it gets the usual umask
    # permissions (mkstemp would make it owner-only).
    tmp_path = dest.parent / f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` atomically, flushed to disk before the rename."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
