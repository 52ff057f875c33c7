"""The `fleet` extra: Flower, and Ray for its simulation engine.

Kept here rather than in `edgeadapt._extras.EXTRA_OF` only while that table is being edited
by others; the message is the same one `edgeadapt._extras` writes.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from collections.abc import Iterator
from types import ModuleType

from edgeadapt.errors import MissingExtraError

__all__ = ["quiet_flower", "require_fleet"]

_DIST = {"flwr": "flwr", "ray": "ray"}


def require_fleet(module: str, feature: str) -> ModuleType:
    """Import `module` (flwr or ray) or raise MissingExtraError naming the `fleet` extra.

    Flower reports usage events over the network unless FLWR_TELEMETRY_ENABLED=0, read once
    when it is first imported: the fleet turns that off unless the caller set it."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != module:
            raise  # the package is there but one of its own dependencies is broken
        raise MissingExtraError(
            f"{feature} needs {_DIST[module]}, which is not installed: it comes with the "
            '\'fleet\' extra, pip install "edgeadapt[fleet]" (or "edgeadapt[all]")'
        ) from exc


@contextlib.contextmanager
def quiet_flower(quiet: bool) -> Iterator[None]:
    """Flower logs every round at INFO and warns that its legacy API is deprecated; the
    fleet has its own progress bar."""
    from flwr.common.logger import FLOWER_LOGGER as logger

    level = logger.level
    if quiet:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
