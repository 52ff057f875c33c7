"""Checks of command-line values, run before any slow work (model load, export, streaming).

Each raises a one-line `ConfigError` that names the flag and says what would work, so a bad
value costs the user a second, not a traceback after minutes of export. Light on purpose:
no torch, so a command can check everything before importing it.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgeadapt.errors import ConfigError

__all__ = ["at_least", "in_range", "input_file", "output_file", "output_folder"]


def at_least(value: float | None, minimum: float, flag: str, why: str = "") -> None:
    """`value` (None: the flag was not given) must be >= `minimum`."""
    if value is not None and value < minimum:
        raise ConfigError(f"{flag} must be >= {minimum}{why}, got {value}")


def in_range(value: float, low: float, high: float, flag: str, *, high_open: bool = False) -> None:
    """`low <= value <= high` (or `< high` with `high_open`)."""
    if not (low <= value < high if high_open else low <= value <= high):
        bracket = ")" if high_open else "]"
        raise ConfigError(f"{flag} must be in [{low}, {high}{bracket}, got {value}")


def input_file(path: str | os.PathLike[str] | None, flag: str, *, folder_ok: bool = False) -> None:
    """`path` (None: not given) must be an existing regular file (or folder, `folder_ok`)."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir() and not folder_ok:
        raise ConfigError(f"{flag} {p} is a folder; pass the file itself")
    if not (p.is_file() or (folder_ok and p.is_dir())):
        raise ConfigError(f"{flag} {p}: no such {'file or folder' if folder_ok else 'file'}")


def output_folder(path: str | os.PathLike[str], flag: str) -> None:
    """`path` must be a writable folder, or creatable as one (its nearest existing ancestor
    is a writable folder)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{flag} {p} is a file, not a folder; pass a folder to write into")
    _writable_ancestor(p, flag)


def output_file(path: str | os.PathLike[str] | None, flag: str) -> None:
    """`path` (None: not given) must be writable as a file: not a folder, and in a folder
    that exists or can be created."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{flag} {p} is a folder; pass the path of a file (in it or elsewhere)")
    _writable_ancestor(p.parent, flag, of=p)


def _writable_ancestor(folder: Path, flag: str, *, of: Path | None = None) -> None:
    target = of if of is not None else folder
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(
            f"{flag} {target}: {existing} is a file, so no folder can be made under it; "
            "pick a path whose parents are folders"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {target}: cannot write in {existing} (permission denied)")
