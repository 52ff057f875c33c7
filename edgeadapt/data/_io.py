"""File plumbing shared by the loaders: the cache folder, atomic writes (re-exported from
`edgeadapt._atomic`), safe tar extraction."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

from edgeadapt._atomic import atomic_path
from edgeadapt.data.errors import UnsafeFileError

__all__ = ["CACHE_ENV", "atomic_path", "cache_dir", "safe_extract"]

CACHE_ENV = "EDGEADAPT_CACHE"


def cache_dir() -> Path:
    """`$EDGEADAPT_CACHE`, else `~/.cache/edgeadapt` (created on demand by the writers)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edgeadapt"


def _check_member(member: tarfile.TarInfo, dest: Path) -> None:
    # Fallback for Pythons without tarfile's extraction filters: the same rules as "data".
    target = (dest / member.name).resolve()
    if member.name.startswith(("/", "\\")) or not target.is_relative_to(dest):
        raise UnsafeFileError(f"archive member {member.name!r} would be written outside {dest}")
    if not (member.isfile() or member.isdir()):
        raise UnsafeFileError(
            f"archive member {member.name!r} is a link or special file; refusing to extract it"
        )


def safe_extract(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Extract a (possibly compressed) tar archive into `dest` without path traversal.

    Uses tarfile's "data" filter where the Python has it (3.10.12+, 3.11.4+), which rejects
    absolute paths, `..`, links leaving `dest` and device files; otherwise checks each member.
    """
    dest = Path(dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            try:
                tar.extractall(dest, filter="data")
            except tarfile.FilterError as exc:
                raise UnsafeFileError(f"unsafe member in {archive}: {exc}") from exc
        else:  # pragma: no cover - only on old interpreters
            members = tar.getmembers()
            for member in members:
                _check_member(member, dest)
            tar.extractall(dest, members=members)
    return dest
