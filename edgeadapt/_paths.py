"""Where the shared data and checkpoints live (never inside the repository)."""

from __future__ import annotations

import os
from pathlib import Path

SHARED_ENV = "EDGEADAPT_SHARED"
_REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    """`$EDGEADAPT_SHARED`, else `../shared` beside the repository checkout."""
    env = os.environ.get(SHARED_ENV)
    return Path(env) if env else _REPO_ROOT.parent / "shared"
