"""The request/response engine under `BridgeClient`: sequence numbers, timeouts, retries.

One request is outstanding at a time (STREAM aside). A request is resent, with the same `seq`
and the RETRY flag, when no intact reply arrives within `timeout` or the device NAKs; the
device answers a repeated `seq` from its cache instead of executing twice, so retrying an
UPLOAD_CHUNK or ADAPT is safe. Replies to other `seq`s are stale answers to earlier attempts
and are dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from edgeadapt.errors import ConfigError

from .errors import (
    BridgeTimeoutError,
    CrcError,
    DeviceError,
    FramingError,
    MessageError,
    ProtocolError,
)
from .framing import Frame, FrameDecoder, encode_frame
from .message_base import M, Message
from .messages import ErrorReport, Nak
from .protocol import DEFAULT_MAX_PAYLOAD, Flag, MsgType, NakReason
from .transport import Transport

__all__ = ["Link"]

log = logging.getLogger(__name__)


class Link:
    """Frames over a transport, with `request()` doing the retry dance for one message."""

    def __init__(
        self,
        transport: Transport,
        *,
        timeout: float = 1.0,
        retries: int = 3,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
    ) -> None:
        if timeout <= 0 or retries < 0:
            raise ConfigError(f"timeout must be > 0 and retries >= 0, got {timeout}, {retries}")
        self.transport = transport
        self.timeout = timeout  # seconds to wait for each attempt's reply
        self.retries = retries  # extra attempts after the first
        self.max_payload = max_payload
        self.decoder = FrameDecoder(max_payload)
        self._queue: list[Frame | FramingError] = []
        self._seq = 0
        self.counters = {"sent": 0, "received": 0, "retries": 0, "naks": 0, "bad_frames": 0}

    def set_max_payload(self, max_payload: int) -> None:
        """Adopt the size negotiated in HELLO for both directions."""
        self.max_payload = self.decoder.max_payload = max_payload

    def next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFF
        return self._seq

    def send(self, msg: Message, seq: int, flags: int = 0) -> None:
        payload = msg.pack()
        self.transport.write(
            encode_frame(msg.TYPE, payload, seq=seq, flags=flags, max_payload=self.max_payload)
        )
        self.counters["sent"] += 1

    def receive(self, deadline: float) -> Frame | FramingError | None:
        """The next device frame or framing error before `deadline` (monotonic), else None."""
        while True:
            if self._queue:
                return self._queue.pop(0)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            for item in self.decoder.feed(self.transport.read()):
                if isinstance(item, FramingError):
                    self.counters["bad_frames"] += 1
                    log.debug("dropped a bad frame: %s", item)
                    self._queue.append(item)
                elif item.msg_type & 0x80:
                    self._queue.append(item)
                else:  # our own request echoed (loop://, a shorted cable): not an answer
                    log.debug("ignored a host-to-device frame type %#04x", item.msg_type)

    def exchange(
        self,
        msg: Message,
        *,
        timeout: float | None = None,
        retries: int | None = None,
        on_other: Callable[[Frame], None] | None = None,
    ) -> Frame:
        """Send `msg` and return the intact reply frame with its `seq`.

        Raises `DeviceError` for an ERROR reply, `CrcError`/`FramingError` when every attempt
        drew only corrupt replies or NAKs, `BridgeTimeoutError` when nothing came back.
        Frames with another `seq` go to `on_other` (stream results) or are dropped.
        """
        timeout = self.timeout if timeout is None else timeout
        attempts = 1 + (self.retries if retries is None else retries)
        seq = self.next_seq()
        started = time.monotonic()
        problem: FramingError | None = None
        for attempt in range(attempts):
            if attempt:
                self.counters["retries"] += 1
                log.debug("retry %d of %s seq=%d (%s)", attempt, _name(msg), seq, problem)
            self.send(msg, seq, Flag.RETRY if attempt else 0)
            problem = None
            deadline = time.monotonic() + timeout
            while (frame := self.receive(deadline)) is not None:
                if isinstance(frame, FramingError):
                    problem = frame
                    continue
                if frame.msg_type == MsgType.NAK:  # the device could not read our frame
                    self.counters["naks"] += 1
                    problem = _nak_problem(frame)
                    break
                if frame.seq != seq:
                    if on_other is not None:
                        on_other(frame)
                    else:  # a late answer to an earlier attempt or request
                        log.debug("dropped a stale reply, seq %d", frame.seq)
                    continue
                self.counters["received"] += 1
                if frame.msg_type == MsgType.ERROR:
                    err = ErrorReport.unpack(frame.payload)
                    raise DeviceError(err.code, err.arg, err.text)
                return frame
        elapsed = time.monotonic() - started
        what = f"{_name(msg)} (seq {seq}) after {attempts} attempts in {elapsed:.2f} s"
        if problem is not None:  # something came back each time, but never intact
            text = f"every reply to {what} was unreadable, last: {problem}; check the baud rate"
            if isinstance(problem, CrcError):
                raise CrcError(text) from problem
            raise FramingError(text, reason=problem.reason) from problem
        raise BridgeTimeoutError(
            f"no reply to {what}; check that the device is powered, running the bridge "
            "firmware and on this port, or raise `timeout` for slow operations"
        )

    def wait_other(self, handler: Callable[[Frame], None], *, what: str) -> None:
        """Wait up to `timeout` for one unsolicited device frame (a stream result) and hand it
        to `handler`; raise `BridgeTimeoutError` if none comes, `CrcError` on a NAK."""
        deadline = time.monotonic() + self.timeout
        while (item := self.receive(deadline)) is not None:
            if isinstance(item, FramingError):
                continue
            if item.msg_type == MsgType.NAK:  # no retransmission for unsolicited traffic in v1
                raise _nak_problem(item)
            handler(item)
            return
        raise BridgeTimeoutError(f"no {what} within {self.timeout:.2f} s")

    def request(
        self,
        msg: Message,
        expect: type[M],
        *,
        timeout: float | None = None,
        retries: int | None = None,
        on_other: Callable[[Frame], None] | None = None,
    ) -> M:
        """`exchange`, then decode the reply and check it is an `expect`."""
        frame = self.exchange(msg, timeout=timeout, retries=retries, on_other=on_other)
        if frame.msg_type != expect.TYPE:
            raise ProtocolError(
                f"{_name(msg)} was answered by type {frame.msg_type:#04x}, "
                f"expected {expect.TYPE.name}"
            )
        return expect.unpack(frame.payload)


def _name(msg: Message) -> str:
    return getattr(msg.TYPE, "name", f"type {int(msg.TYPE):#04x}")


def _nak_problem(frame: Frame) -> FramingError:
    try:
        reason = Nak.unpack(frame.payload).reason
    except MessageError:  # a malformed NAK is still a NAK
        reason = 0
    if reason == NakReason.CRC:
        return CrcError("the device NAKed our frame: CRC error on its side")
    return FramingError(f"the device NAKed our frame (reason {reason})", reason="framing")
