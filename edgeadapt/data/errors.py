"""Typed errors of the data layer, refining the package-wide ones in `edgeadapt.errors`.

Each message says which file is wrong, what was expected and what to do about it.
"""

from __future__ import annotations

from edgeadapt.errors import EdgeAdaptError, InputError

__all__ = [
    "ChecksumError",
    "DataFormatError",
    "DataNotFoundError",
    "DownloadError",
    "UnsafeFileError",
]


class DataFormatError(InputError):
    """A data file exists but is malformed: wrong shape, dtype, keys or undecodable content."""


class UnsafeFileError(DataFormatError):
    """A pickle or archive asks for something that could run code or write outside its folder."""


class DataNotFoundError(EdgeAdaptError, FileNotFoundError):
    """An expected data file or resource is missing; the message says how to get it."""


class DownloadError(EdgeAdaptError, OSError):
    """A download failed: network error, unsupported URL scheme, or the size bound was exceeded."""


class ChecksumError(DownloadError, ValueError):
    """A downloaded file does not match its expected checksum (the partial file is deleted)."""
