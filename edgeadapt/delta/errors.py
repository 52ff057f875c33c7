"""Typed errors of the delta subpackage; each says what to do next."""

from __future__ import annotations

from edgeadapt.errors import ConfigError, InputError

__all__ = ["DeltaStateError", "NotDeltaifiedError"]


class DeltaStateError(InputError):
    """A frame does not fit the stored delta state (shape or batch changed mid-stream).

    Call `reset_state()` (or `signal_scene_cut()`) before feeding frames of a new shape.
    """


class NotDeltaifiedError(ConfigError):
    """A model handed to the delta runtime has no `DeltaActivation`; run `deltaify` first."""
