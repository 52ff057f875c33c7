"""Typed errors. Every one says what is wrong and what to do about it.

They subclass the built-in they refine (ValueError, FileNotFoundError, ...) so callers
that already catch those keep working.
"""

from __future__ import annotations

__all__ = [
    "BatchTooSmallError",
    "CheckpointMismatchError",
    "ConfigError",
    "EdgeAdaptError",
    "InputError",
    "MissingExtraError",
    "PartitionError",
    "UnknownNameError",
]


class EdgeAdaptError(Exception):
    """Base class of every error edgeadapt raises on purpose."""


class ConfigError(EdgeAdaptError, ValueError):
    """A configuration value is out of range or inconsistent."""


class InputError(EdgeAdaptError, ValueError):
    """A batch handed to an adapter cannot be used (shape, dtype, non-finite values, empty)."""


class BatchTooSmallError(InputError):
    """Batch statistics need more than one sample; the message says how to fall back."""


class PartitionError(EdgeAdaptError, ValueError):
    """The partition of a backbone into parts names modules that are missing or not in order."""


class CheckpointMismatchError(EdgeAdaptError, ValueError):
    """A checkpoint or saved adapter does not belong to this model or method."""


class UnknownNameError(EdgeAdaptError, KeyError):
    """A model, method or device name is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class MissingExtraError(EdgeAdaptError, ImportError):
    """A feature needs a package of an optional extra that is not installed.

    The core install (`pip install edgeadapt`) adapts; exporting, video, the bridge and the
    benchmark each come with an extra (`pip install "edgeadapt[export]"`, ... or `[all]`).
    """
