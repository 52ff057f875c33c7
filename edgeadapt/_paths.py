"""Where the shared data and checkpoints live (never inside the repository)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SHARED_ENV", "shared_dir", "user_cache_dir"]

SHARED_ENV = "EDGEADAPT_SHARED"
_REPO_ROOT = Path(__file__).resolve().parent.parent
_WINDOWS = os.name == "nt"
_INSTALL_FOLDERS = ("site-packages", "dist-packages")


def shared_dir() -> Path:
    """`$EDGEADAPT_SHARED`; else `../shared` beside the repository checkout; else, for a copy
    installed from a wheel (inside site-packages, where `../shared` would land among the
    installed packages), the user's cache folder (`user_cache_dir()`). An installed copy still
    uses `../shared` when that folder exists."""
    env = os.environ.get(SHARED_ENV)
    if env:
        return Path(env)
    beside = _REPO_ROOT.parent / "shared"
    installed = any(part in _INSTALL_FOLDERS for part in _REPO_ROOT.parts)
    return user_cache_dir() if installed and not beside.is_dir() else beside


def user_cache_dir() -> Path:
    """`%LOCALAPPDATA%\\edgeadapt` on Windows; elsewhere `$XDG_CACHE_HOME/edgeadapt`, by
    default `~/.cache/edgeadapt`."""
    if _WINDOWS:
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgeadapt"
