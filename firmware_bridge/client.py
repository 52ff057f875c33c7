"""`BridgeClient`: the host side of the bridge protocol, one method per device operation.

Typical use (the URL may also be "socket://host:4000", "rfc2217://...", "loop://")::

    >>> with BridgeClient.open("/dev/ttyACM0") as dev:  # doctest: +SKIP
    ...     info = dev.connect()  # HELLO: version check, negotiated max payload
    ...     dev.upload(program_bytes)  # chunked, resumable, activated on commit
    ...     logits = dev.infer(image_bytes).output
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import TextIO

from edgeadapt.errors import ConfigError

from .errors import DeviceError, ProtocolError, VersionMismatchError
from .framing import Frame
from .link import Link
from .message_base import M, Message
from .messages import (
    Ack,
    Adapt,
    AdaptResult,
    DeviceInfo,
    GetStats,
    Hello,
    Infer,
    InferResult,
    Reset,
    Stats,
    StreamResult,
)
from .protocol import (
    DEFAULT_MAX_PAYLOAD,
    MIN_MAX_PAYLOAD,
    PROTOCOL_VERSION,
    ErrorCode,
    ResetKind,
    Target,
)
from .streaming import run_stream
from .transfer import download_adapter, upload
from .transport import LoggingTransport, SerialTransport, Transport

__all__ = ["BridgeClient"]

DEFAULT_MAX_BLOB = 16 << 20  # largest adapter blob get_adapter() will allocate for


class BridgeClient:
    """Talk to one device over a `Transport`; every call blocks until answered or failed.

    `timeout` bounds each attempt and `retries` the extra attempts, so a call fails after at
    most `timeout * (retries + 1)` seconds (per call overridable where it matters).
    `traffic_log` (a Logger or a text file) gets a hex dump of every byte in both directions.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        timeout: float = 1.0,
        retries: int = 3,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        traffic_log: logging.Logger | TextIO | None = None,
        max_blob: int = DEFAULT_MAX_BLOB,
    ) -> None:
        if not MIN_MAX_PAYLOAD <= max_payload <= DEFAULT_MAX_PAYLOAD:
            raise ConfigError(
                f"max_payload must be in [{MIN_MAX_PAYLOAD}, {DEFAULT_MAX_PAYLOAD}], "
                f"got {max_payload}"
            )
        if traffic_log is not None:
            transport = LoggingTransport(transport, traffic_log)
        self.link = Link(transport, timeout=timeout, retries=retries, max_payload=max_payload)
        self.host_max_payload = max_payload
        self.max_blob = max_blob
        self.info: DeviceInfo | None = None  # set by connect()

    def set_traffic_log(self, sink: logging.Logger | TextIO | None) -> None:
        """Start (or, with None, stop) hex-dumping all traffic to a Logger or a text file."""
        transport = self.link.transport
        if isinstance(transport, LoggingTransport):
            transport = transport.inner
        self.link.transport = transport if sink is None else LoggingTransport(transport, sink)

    @classmethod
    def open(cls, url: str, *, baudrate: int = 115200, **kwargs: object) -> BridgeClient:
        """Open a serial port or pyserial URL; keyword arguments go to the constructor."""
        return cls(SerialTransport(url, baudrate=baudrate), **kwargs)  # type: ignore[arg-type]

    def close(self) -> None:
        self.link.transport.close()

    def __enter__(self) -> BridgeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> DeviceInfo:
        """HELLO handshake: check the version, adopt the negotiated payload size."""
        hello = Hello(PROTOCOL_VERSION, PROTOCOL_VERSION, self.host_max_payload)
        try:
            frame = self.link.exchange(hello)
        except DeviceError as exc:
            if exc.code == ErrorCode.UNSUPPORTED_VERSION:
                raise _mismatch(exc.arg) from exc
            raise
        # Read the version before the layout: a newer device's DEVICE_INFO may be longer.
        device_version = frame.payload[0] if frame.payload else frame.version
        for version in (device_version, frame.version):
            if version != PROTOCOL_VERSION:
                raise _mismatch(version)
        info = self._expect(frame, DeviceInfo, hello)
        if not MIN_MAX_PAYLOAD <= info.max_payload <= self.host_max_payload:
            raise ProtocolError(f"device negotiated an impossible max payload {info.max_payload}")
        self.link.set_max_payload(info.max_payload)
        self.info = info
        return info

    def request(self, msg: Message, expect: type[M], *, timeout: float | None = None) -> M:
        """Send any message and return its decoded reply (see `Link.exchange` for errors)."""
        return self.link.request(msg, expect, timeout=timeout)

    def infer(self, data: bytes, *, frame_id: int = 0, timeout: float | None = None) -> InferResult:
        """Run the active program on one input; `output` is the program's raw output bytes."""
        return self.request(Infer(frame_id, data), InferResult, timeout=timeout)

    def adapt(self, data: bytes, *, frame_id: int = 0, timeout: float | None = None) -> AdaptResult:
        """One adaptation step on one input; returns the prediction, step count and loss."""
        return self.request(Adapt(frame_id, data), AdaptResult, timeout=timeout)

    def stats(self) -> Stats:
        return self.request(GetStats(), Stats)

    def reset(self, kind: ResetKind = ResetKind.ADAPTER) -> None:
        self.request(Reset(int(kind)), Ack)

    def upload(
        self,
        blob: bytes,
        *,
        target: Target = Target.PROGRAM,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Upload `blob` and activate it; returns the offset resumed from (0 for a fresh start).

        If an earlier upload of the same bytes (same size and CRC-32) was cut off, the device
        reports how far it got and only the rest is sent. Nothing becomes active unless the
        commit's CRC matches what the device holds; a failed call leaves the old one running.
        """
        return upload(self.link, blob, target=target, progress=progress)

    def set_adapter(self, blob: bytes) -> int:
        """Push meta-network weights: an UPLOAD with target ADAPTER (resumable, atomic)."""
        return self.upload(blob, target=Target.ADAPTER)

    def get_adapter(self) -> bytes:
        """Pull the device's current adapter blob, chunk by chunk, checking its CRC-32."""
        return download_adapter(self.link, max_blob=self.max_blob)

    def stream(
        self, frames: Iterable[bytes], *, adapt: bool = False, window: int = 4
    ) -> Iterator[StreamResult]:
        """Send frames as fast as the device's credits allow; yield results as they arrive.

        At most `window` (or the device's smaller grant) frames are in flight. v1 does not
        retransmit stream frames: a lost frame or result ends the stream with an error.
        """
        return run_stream(self.link, frames, adapt=adapt, window=window)

    def _expect(self, frame: Frame, cls: type[Message], sent: Message | None) -> Message:
        if frame.msg_type != cls.TYPE:
            what = sent.TYPE.name if sent is not None else "the request"
            raise ProtocolError(f"{what} was answered by type {frame.msg_type:#04x}")
        return cls.unpack(frame.payload)


def _mismatch(device: int) -> VersionMismatchError:
    return VersionMismatchError(
        f"device speaks bridge protocol v{device}, this host speaks v{PROTOCOL_VERSION}; "
        "flash matching firmware or install the matching edgeadapt",
        host=PROTOCOL_VERSION,
        device=device,
    )
