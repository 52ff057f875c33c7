"""Typed errors of the model layer, refining the package-wide ones in `edgeadapt.errors`."""

from __future__ import annotations

from edgeadapt.errors import CheckpointMismatchError, UnknownNameError

__all__ = ["NoPretrainedWeightsError", "WeightsChecksumError"]


class WeightsChecksumError(CheckpointMismatchError):
    """Downloaded or cached pretrained weights do not have the sha256 the table promises.

    A download that fails the check is deleted before this is raised; so is a cached copy.
    """


class NoPretrainedWeightsError(UnknownNameError):
    """The model is registered but has no pretrained weights; the message lists those that do."""
