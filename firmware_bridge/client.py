"""`BridgeClient`: the host side of the bridge protocol, one method per device operation.

Typical use (the URL may also be "socket://host:4000", "rfc2217://...", "loop://")::

    >>> with BridgeClient.open("/dev/ttyACM0") as dev:  # doctest: +SKIP
    ...     info = dev.connect()  # HELLO: version check, session, negotiated max payload
    ...     dev.upload(program_bytes)  # chunked, resumable, activated on commit
    ...     logits = dev.infer(image_bytes).output
"""

from __future__ import annotations

import logging
import random
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO, TypeVar

from edgeadapt.errors import ConfigError

from .errors import (
    BridgeTimeoutError,
    DeviceError,
    DeviceRestartedError,
    FramingError,
    ProtocolError,
    SessionLostError,
    VersionMismatchError,
)
from .link import DEFAULT_BUSY_LIMIT, Link
from .message_base import M, Message
from .messages import (
    Ack,
    Adapt,
    AdaptResult,
    DeviceInfo,
    GetMemory,
    GetStats,
    GetUpload,
    Hello,
    Infer,
    InferResult,
    Memory,
    Reset,
    Stats,
    StreamResult,
    UploadOutcome,
)
from .protocol import (
    DEFAULT_MAX_PAYLOAD,
    MIN_MAX_PAYLOAD,
    PROTOCOL_VERSION,
    Capability,
    ErrorCode,
    MsgType,
    ResetKind,
    Target,
)
from .streaming import run_stream
from .transfer import download_adapter, upload
from .transport import LoggingTransport, SerialTransport, Transport

__all__ = ["BridgeClient"]

DEFAULT_MAX_BLOB = 16 << 20  # largest adapter blob get_adapter() will allocate for
T = TypeVar("T")
# Failures after which the request may or may not have run on the device.
UNKNOWN_OUTCOME = (BridgeTimeoutError, FramingError)


class BridgeClient:
    """Talk to one device over a `Transport`; every call blocks until answered or failed.

    `timeout` is the longest silence one attempt waits for and `retries` the extra attempts,
    so a device that says nothing is given up on after `timeout * (retries + 1)` seconds; a
    device that is busy says so (IN_PROGRESS) and is waited for up to `busy_limit` seconds.
    The first call handshakes if `connect()` was not called. Non-idempotent requests (ADAPT,
    UPLOAD_COMMIT, RESET) carry a request id: repeating a call whose outcome was lost (a
    timeout) reuses it, so the device answers from its record instead of running it twice.
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
        busy_limit: float = DEFAULT_BUSY_LIMIT,
    ) -> None:
        if not MIN_MAX_PAYLOAD <= max_payload <= DEFAULT_MAX_PAYLOAD:
            raise ConfigError(
                f"max_payload must be in [{MIN_MAX_PAYLOAD}, {DEFAULT_MAX_PAYLOAD}], "
                f"got {max_payload}"
            )
        if traffic_log is not None:
            transport = LoggingTransport(transport, traffic_log)
        self.link = Link(transport, timeout=timeout, retries=retries, max_payload=max_payload,
                         busy_limit=busy_limit)  # fmt: skip
        self.host_max_payload = max_payload
        self.max_blob = max_blob
        self.info: DeviceInfo | None = None  # set by connect()
        self.reboots = 0  # device restarts this client has noticed
        self._rid = random.SystemRandom().getrandbits(32)
        self._unsettled: tuple[tuple, int] | None = None  # (request key, request id)
        self._handshake_due = True

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

    # -- session --------------------------------------------------------------------------

    def connect(self) -> DeviceInfo:
        """HELLO handshake: check the version, open a session, adopt the negotiated payload.

        Safe to call again at any time (it opens a new session); `reboots` counts the times
        the device's boot id changed between two handshakes."""
        hello = Hello(PROTOCOL_VERSION, PROTOCOL_VERSION, self.host_max_payload)
        self.link.set_max_payload(self.host_max_payload)  # until the device says otherwise
        try:
            reply = self.link.exchange(hello)
        except DeviceError as exc:
            if exc.code == ErrorCode.UNSUPPORTED_VERSION:
                raise _mismatch(exc.arg) from exc
            raise
        # Read the version before the layout: a newer device's DEVICE_INFO may be longer.
        device_version = reply.payload[0] if reply.payload else reply.version
        if device_version != PROTOCOL_VERSION:
            raise _mismatch(device_version)
        if reply.msg_type != MsgType.DEVICE_INFO:
            raise ProtocolError(f"HELLO was answered by type {reply.msg_type:#04x}")
        info = DeviceInfo.unpack(reply.payload)
        if not MIN_MAX_PAYLOAD <= info.max_payload <= self.host_max_payload:
            raise ProtocolError(f"device negotiated an impossible max payload {info.max_payload}")
        if info.session == 0 or info.boot_id == 0:
            raise ProtocolError("device opened session 0 or reports boot id 0; both must be set")
        if self.info is not None and info.boot_id != self.info.boot_id:
            self.reboots += 1
            self._unsettled = None  # the device's records went with its RAM
        self.link.set_max_payload(info.max_payload)
        self.link.session = info.session
        self.info = info
        self._handshake_due = False
        return info

    def _session_call(self, call: Callable[[], T]) -> T:
        """Run `call` in a live session: handshake first if due; when the device refused it for
        its session, handshake again and either retry (same boot: another host's HELLO; the
        refused request never ran, so even a non-idempotent one may go again) or raise
        DeviceRestartedError (new boot: RAM state lost; the caller decides)."""
        if self._handshake_due or self.info is None:
            self.connect()
        try:
            return call()
        except SessionLostError as exc:
            before = self.info.boot_id if self.info is not None else None
            info = self.connect()
            if info.boot_id != before:
                raise DeviceRestartedError(
                    f"the device restarted (boot id {before:#010x} -> {info.boot_id:#010x}) and "
                    "lost what it held in RAM: adapted weights since the last SET_ADAPTER, a "
                    "staged input, any stream. The request did not run; the client has "
                    "handshaken again (negotiated payload restored); repeat it if still wanted"
                ) from exc
            self.link.counters["session_changes"] += 1
            return call()

    def request(
        self,
        msg: Message,
        expect: type[M],
        *,
        timeout: float | None = None,
        **link_args: Any,
    ) -> M:
        """Send any message and return its decoded reply (see `Link.exchange` for errors;
        `link_args` are its `on_other` and `pending`, for streams)."""
        return self._session_call(
            lambda: self.link.request(msg, expect, timeout=timeout, **link_args)
        )

    def new_request_id(self) -> int:
        """A fresh idempotency key (never 0), unique to this client."""
        self._rid = (self._rid + 1) & 0xFFFFFFFF or 1
        return self._rid

    def _once(self, key: tuple, request_id: int | None, send: Callable[[int], T]) -> T:
        """Run a non-idempotent request exactly once: a repeat of the request whose outcome
        was lost reuses its id, so the device answers it from its record."""
        if request_id is None:
            pending = self._unsettled
            request_id = pending[1] if pending and pending[0] == key else self.new_request_id()
        try:
            result = send(request_id)
        except UNKNOWN_OUTCOME:
            self._unsettled = (key, request_id)
            raise
        except Exception:
            self._unsettled = None
            raise
        self._unsettled = None
        return result

    # -- operations -----------------------------------------------------------------------

    def infer(self, data: bytes, *, frame_id: int = 0, timeout: float | None = None) -> InferResult:
        """Run the active program on one input; `output` is the program's raw output bytes."""
        result = self.request(Infer(frame_id, data), InferResult, timeout=timeout)
        if result.frame_id != frame_id:
            raise ProtocolError(f"INFER of frame id {frame_id} answered for frame id "
                                f"{result.frame_id}: a reply to another request")  # fmt: skip
        return result

    def adapt(
        self,
        data: bytes,
        *,
        frame_id: int = 0,
        timeout: float | None = None,
        request_id: int | None = None,
    ) -> AdaptResult:
        """One adaptation step on one input; returns the prediction, step count and loss.

        Exactly once: calling again with the same data and frame id after a timeout returns
        the step the device took (if it took it) instead of a second one. `request_id` pins
        the idempotency key, e.g. one journaled by a host process that has since died."""
        key = (MsgType.ADAPT, frame_id, len(data), zlib.crc32(data))

        def send(rid: int) -> AdaptResult:
            result = self.request(Adapt(frame_id, rid, data), AdaptResult, timeout=timeout)
            if (result.frame_id, result.request_id) != (frame_id, rid):
                raise ProtocolError(
                    f"ADAPT of frame id {frame_id} (request {rid:#010x}) answered for frame id "
                    f"{result.frame_id} (request {result.request_id:#010x})"
                )
            return result

        return self._once(key, request_id, send)

    def stats(self) -> Stats:
        return self.request(GetStats(), Stats)

    def memory(self) -> Memory:
        """GET_MEMORY: what the resident programs and the firmware take, as measured there.
        A device without the MEMORY_REPORT capability (an older firmware) is answered here
        as it would answer: a `DeviceError` UNKNOWN_MESSAGE, without a round trip."""
        info = self.info if self.info is not None and not self._handshake_due else self.connect()
        if not info.capabilities & Capability.MEMORY_REPORT:
            raise DeviceError(
                ErrorCode.UNKNOWN_MESSAGE, int(MsgType.GET_MEMORY),
                "this firmware does not report memory (no MEMORY_REPORT capability in its "
                "DEVICE_INFO): update it",
            )  # fmt: skip
        return self.request(GetMemory(), Memory)

    def reset(self, kind: ResetKind = ResetKind.ADAPTER) -> None:
        """RESET. REBOOT is acknowledged before the device restarts; the next call then
        handshakes anew (waiting out the boot within its timeout and retries).

        Each call gets a fresh request id (retransmissions within the call share it): a
        reset repeated after a lost answer resets again, which changes nothing, whereas
        reusing the id of an old, unsettled reset would skip a reset the caller wants now."""
        self.request(Reset(int(kind), self.new_request_id()), Ack)
        if kind == ResetKind.REBOOT:
            self._handshake_due = True

    def upload(
        self,
        blob: bytes,
        *,
        target: Target = Target.PROGRAM,
        progress: Callable[[int, int], None] | None = None,
        request_id: int | None = None,
    ) -> int:
        """Upload `blob` and activate it; returns the offset resumed from (0 for a fresh start).

        If an earlier upload of the same bytes (same size and CRC-32) was cut off, the device
        reports how far it got and only the rest is sent; a device restart mid-way resumes
        the same way. Returns only when the device confirmed the new bytes active. A
        `DeviceError` means it refused them and the old ones are still active. Any other
        error means the outcome could not be learned: `upload_outcome()` tells it later
        (`request_id` names the commit; pass it again to repeat that same commit)."""
        rid = request_id or self.new_request_id()
        return upload(self.request, self.link, blob, target=target, progress=progress,
                      request_id=rid)  # fmt: skip

    def upload_outcome(self) -> UploadOutcome:
        """What became of the last upload, as the device's flash remembers it."""
        return self.request(GetUpload(), UploadOutcome)

    def set_adapter(self, blob: bytes) -> int:
        """Push meta-network weights: an UPLOAD with target ADAPTER (resumable, atomic)."""
        return self.upload(blob, target=Target.ADAPTER)

    def get_adapter(self) -> bytes:
        """Pull the device's current adapter blob, chunk by chunk, checking its CRC-32."""
        return download_adapter(self.request, self.link, max_blob=self.max_blob)

    def stream(
        self, frames: Iterable[bytes], *, adapt: bool = False, window: int = 4
    ) -> Iterator[StreamResult]:
        """Send frames as fast as the device's credits allow; yield results in frame order.

        At most `window` (or the device's smaller grant) frames are in flight. Stream frames
        are not retransmitted: a lost frame or result ends the stream with an error (the
        client closes the stream on the device first)."""
        return run_stream(self.request, self.link, frames, adapt=adapt, window=window)


def _mismatch(device: int) -> VersionMismatchError:
    return VersionMismatchError(
        f"device speaks bridge protocol v{device}, this host speaks v{PROTOCOL_VERSION}; "
        "flash matching firmware or install the matching edgeadapt",
        host=PROTOCOL_VERSION,
        device=device,
    )
