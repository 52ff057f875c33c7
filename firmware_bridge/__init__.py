"""Host side of the edgeadapt firmware bridge: talk to a microcontroller over a serial line.

Layers, bottom up (each imports only those below it; docs/bridge-protocol.md is the spec):

- `protocol`   -- wire constants: message types, flags, error codes, sizes
- `transport`  -- pyserial URLs (`SerialTransport`), an in-memory null modem, a hex logger
- `cobs`, `framing` -- COBS + CRC-32 frames; `FrameDecoder` resyncs after garbage
- `messages`   -- one frozen dataclass per message with a `struct` layout
- `link`, `transfer`, `streaming`, `client` -- sessions, retries, keep-alives; `BridgeClient`
- `flash`      -- a device's non-volatile store (memory or a folder), atomic activation
- `fake_device` -- a protocol test double (not the emulator)
- `discover`   -- find boards by USB VID/PID

Importing this package never imports torch (nor pyserial until a port is opened).
"""

from __future__ import annotations

from .client import BridgeClient
from .discover import DeviceMatch, discover
from .errors import (
    BridgeError,
    BridgeTimeoutError,
    CrcError,
    DeviceError,
    DeviceRestartedError,
    FramingError,
    MessageError,
    OversizeFrameError,
    ProtocolError,
    SessionLostError,
    TransportError,
    VersionMismatchError,
)
from .fake_device import FakeDevice
from .framing import Frame, FrameDecoder, decode_frame, encode_frame
from .protocol import (
    PROTOCOL_VERSION,
    Capability,
    ErrorCode,
    MsgType,
    ResetKind,
    Target,
    UploadState,
)
from .transport import LoggingTransport, NullModemEnd, SerialTransport, null_modem_pair

__all__ = [
    "PROTOCOL_VERSION",
    "BridgeClient",
    "BridgeError",
    "BridgeTimeoutError",
    "Capability",
    "CrcError",
    "DeviceError",
    "DeviceMatch",
    "DeviceRestartedError",
    "ErrorCode",
    "FakeDevice",
    "Frame",
    "FrameDecoder",
    "FramingError",
    "LoggingTransport",
    "MessageError",
    "MsgType",
    "NullModemEnd",
    "OversizeFrameError",
    "ProtocolError",
    "ResetKind",
    "SerialTransport",
    "SessionLostError",
    "Target",
    "TransportError",
    "UploadState",
    "VersionMismatchError",
    "decode_frame",
    "discover",
    "encode_frame",
    "null_modem_pair",
]
