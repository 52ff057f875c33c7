"""Typed errors of the video layer; each message says what is wrong and what to do."""

from __future__ import annotations

from edgeadapt.errors import EdgeAdaptError, InputError

__all__ = [
    "FrameDecodeError",
    "MissingDependencyError",
    "PartialVideoError",
    "SourceNotFoundError",
]


class SourceNotFoundError(EdgeAdaptError, FileNotFoundError):
    """A video file, image folder, glob or camera index names nothing that can be opened."""


class FrameDecodeError(InputError):
    """A source exists but its frames cannot be decoded (corrupt file, unknown format)."""


class PartialVideoError(FrameDecodeError):
    """A video ended before its declared length or lost frames its decoder rejected; raised
    after the frames that could be read, unless the source allows partial input."""


class MissingDependencyError(EdgeAdaptError, ImportError):
    """An optional decoder is not installed; the message names the pip package to install."""
