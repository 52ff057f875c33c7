"""Typed errors of edgeadapt.export. Each names the cause and what to do about it."""

from __future__ import annotations

from edgeadapt.errors import EdgeAdaptError, UnknownNameError

__all__ = [
    "DeviceProfileError",
    "DoesNotFitError",
    "ExportError",
    "ProgramFileError",
    "UnknownDeviceError",
    "UnsupportedExportError",
    "VerificationError",
]


class ExportError(EdgeAdaptError, RuntimeError):
    """The model could not be captured or lowered (an op or Python construct export cannot
    trace, an op the backend has no kernel for); the message carries the toolchain's error."""


class UnsupportedExportError(ExportError, ValueError):
    """A combination edgeadapt does not export yet (method, format, program kind)."""


class VerificationError(ExportError):
    """The exported program, run by its runtime, disagrees with PyTorch eager beyond the
    tolerance; nothing was written."""


class ProgramFileError(EdgeAdaptError, ValueError):
    """A .pte or .onnx file is missing, truncated or not a program of that format."""


class DeviceProfileError(EdgeAdaptError, ValueError):
    """A device profile (TOML) is malformed; the message names the file and the field."""


class UnknownDeviceError(UnknownNameError):
    """No device profile has this name; the message lists the known ones."""


class DoesNotFitError(EdgeAdaptError, ValueError):
    """A program does not fit a device's memory; the message says where and by how much."""
