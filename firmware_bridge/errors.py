"""Typed errors of the firmware bridge, all under `BridgeError` (an `EdgeAdaptError`).

Framing errors double as decoder *events*: `FrameDecoder.feed` returns them as values next to
the good frames, so a noisy line is counted and logged rather than crashing the reader; the
client raises them only when a caller asked for a frame and got none that was intact.
"""

from __future__ import annotations

from edgeadapt.errors import EdgeAdaptError

from .protocol import ErrorCode

__all__ = [
    "BridgeError",
    "BridgeTimeoutError",
    "CrcError",
    "DeviceError",
    "DeviceRestartedError",
    "FramingError",
    "MessageError",
    "OversizeFrameError",
    "ProtocolError",
    "SessionLostError",
    "TransportError",
    "VersionMismatchError",
]


class BridgeError(EdgeAdaptError):
    """Base class of every error the firmware bridge raises on purpose."""


class FramingError(BridgeError, ValueError):
    """Bytes between two delimiters are not a frame.

    `reason` is one of "cobs", "short", "crc", "magic", "length", "oversize" -- the same names
    the C codec's error codes and the shared test vectors use.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class CrcError(FramingError):
    """A frame's CRC-32 does not match its header and payload (line noise, dropped bytes)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="crc")


class OversizeFrameError(FramingError):
    """A frame is longer than the negotiated maximum; it was discarded without buffering it."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="oversize")


class MessageError(BridgeError, ValueError):
    """A frame was intact but its payload does not fit the layout of its message type."""


class ProtocolError(BridgeError):
    """The peer answered with something the protocol does not allow at this point."""


class SessionLostError(BridgeError):
    """The device no longer holds this host's session: it restarted, or another host said
    HELLO since. It refused the request without running it."""

    def __init__(self, message: str, *, rebooted: bool = False) -> None:
        super().__init__(message)
        self.rebooted = rebooted


class DeviceRestartedError(SessionLostError):
    """The device restarted (its boot id changed): what it held in RAM -- adapted weights
    since the last SET_ADAPTER, a staged input, a stream -- is gone. The client has already
    handshaken again; repeat the request if it is still wanted."""

    def __init__(self, message: str) -> None:
        super().__init__(message, rebooted=True)


class TransportError(BridgeError, OSError):
    """The port could not be opened, read or written (unplugged, busy, wrong URL)."""


class BridgeTimeoutError(BridgeError, TimeoutError):
    """No intact answer arrived within the timeout, after every retry."""


class VersionMismatchError(BridgeError):
    """The device speaks another protocol version; update the firmware or the host package."""

    def __init__(self, message: str, *, host: int, device: int) -> None:
        super().__init__(message)
        self.host = host
        self.device = device


class DeviceError(BridgeError):
    """The device answered ERROR: `code` (an `ErrorCode` where known), `arg`, and its text."""

    def __init__(self, code: int, arg: int = 0, text: str = "") -> None:
        try:
            name = ErrorCode(code).name
        except ValueError:
            name = f"code {code}"
        self.code = code
        self.arg = arg
        self.text = text
        detail = f": {text}" if text else ""
        super().__init__(f"device reported {name} (arg={arg}){detail}")
