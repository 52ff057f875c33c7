"""The request/response engine under `BridgeClient`: sessions, seq numbers, timeouts, retries.

One request is outstanding at a time (STREAM aside). A request is resent, byte for byte with
the same `seq` and the RETRY flag, when no intact reply arrives within `timeout`, and at once
(once per attempt) when the device NAKs; the device answers a true retransmission from its
cache instead of executing twice.
A busy device sends IN_PROGRESS keep-alives, each of which moves the deadline by its estimate
plus `timeout`, up to `busy_limit` for the whole call. Replies are checked to belong to the
request: same seq, same session, the negotiated version. Others are stale and dropped.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Container
from dataclasses import dataclass

from edgeadapt.errors import ConfigError

from .errors import (
    BridgeTimeoutError,
    CrcError,
    DeviceError,
    FramingError,
    MessageError,
    ProtocolError,
    SessionLostError,
    VersionMismatchError,
)
from .framing import Frame, FrameDecoder, encode_frame
from .message_base import M, Message, seal, unseal
from .messages import ErrorReport, InProgress, Nak
from .protocol import DEFAULT_MAX_PAYLOAD, PROTOCOL_VERSION, ErrorCode, Flag, MsgType, NakReason
from .transport import Transport

__all__ = ["Link", "Reply"]

log = logging.getLogger(__name__)

DEFAULT_BUSY_LIMIT = 600.0  # seconds a device may keep one call busy with keep-alives


@dataclass(frozen=True)
class Reply:
    """An intact device frame with its session envelope taken off: `payload` is the message."""

    msg_type: int
    seq: int
    payload: bytes
    session: int | None  # None for DEVICE_INFO, which has no envelope
    version: int
    flags: int = 0


class Link:
    """Frames over a transport, with `request()` doing the retry dance for one message."""

    def __init__(
        self,
        transport: Transport,
        *,
        timeout: float = 1.0,
        retries: int = 3,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        busy_limit: float = DEFAULT_BUSY_LIMIT,
    ) -> None:
        if timeout <= 0 or retries < 0 or busy_limit <= 0:
            raise ConfigError(
                f"timeout and busy_limit must be > 0 and retries >= 0, got {timeout}, "
                f"{busy_limit}, {retries}"
            )
        self.transport = transport
        self.timeout = timeout  # seconds of silence each attempt waits for its reply
        self.retries = retries  # extra attempts after the first
        self.busy_limit = busy_limit  # the longest a device may keep a call busy
        self.max_payload = max_payload
        self.decoder = FrameDecoder(max_payload)
        self.session = 0  # set by the handshake; every request but HELLO names it
        self._queue: list[Reply | FramingError] = []
        # A random start, so two host programs on one port do not reuse each other's seqs.
        self._seq = random.SystemRandom().randrange(0x10000)
        self.busy_seconds = 0.0  # keep-alive time granted to the last call
        names = ("sent", "received", "retries", "naks", "bad_frames", "keepalives", "stale",
                 "session_changes")  # fmt: skip
        self.counters = dict.fromkeys(names, 0)

    def set_max_payload(self, max_payload: int) -> None:
        """Adopt the size negotiated in HELLO for both directions."""
        self.max_payload = self.decoder.max_payload = max_payload

    def next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFF
        return self._seq

    def send(self, msg: Message, seq: int, flags: int = 0, *, version: int | None = None) -> None:
        payload = seal(msg.TYPE, self.session, msg.pack())
        version = PROTOCOL_VERSION if version is None else version
        wire = encode_frame(msg.TYPE, payload, seq=seq, flags=flags, version=version,
                            max_payload=self.max_payload)  # fmt: skip
        self.transport.write(wire)
        self.counters["sent"] += 1

    def receive(self, deadline: float) -> Reply | FramingError | None:
        """The next device frame or framing error before `deadline` (monotonic), else None."""
        while True:
            if self._queue:
                return self._queue.pop(0)
            if deadline - time.monotonic() <= 0:
                return None
            for item in self.decoder.feed(self.transport.read()):
                if isinstance(item, FramingError):
                    self.counters["bad_frames"] += 1
                    log.debug("dropped a bad frame: %s", item)
                    self._queue.append(item)
                elif item.msg_type & 0x80:
                    self._queue.append(self._open(item))
                else:  # our own request echoed (loop://, a shorted cable): not an answer
                    log.debug("ignored a host-to-device frame type %#04x", item.msg_type)

    def _open(self, frame: Frame) -> Reply | FramingError:
        try:
            session, body = unseal(frame.msg_type, frame.payload)
        except MessageError as exc:  # intact, yet too short to be any device frame
            return FramingError(str(exc), reason="length")
        return Reply(frame.msg_type, frame.seq, body, session, frame.version, frame.flags)

    def exchange(
        self,
        msg: Message,
        *,
        timeout: float | None = None,
        retries: int | None = None,
        on_other: Callable[[Reply], None] | None = None,
        pending: Container[int] = (),
    ) -> Reply:
        """Send `msg` and return the intact reply that belongs to it.

        Raises `DeviceError` for an ERROR reply, `SessionLostError` when the device refused
        the request for naming a session it no longer holds, `VersionMismatchError` for a
        reply in another version, `CrcError`/`FramingError` when every attempt drew only
        corrupt replies or NAKs, `BridgeTimeoutError` when nothing came back (or the device
        stayed busy past `busy_limit`). Frames with another `seq` go to `on_other` (stream
        results) or are dropped; IN_PROGRESS for a seq in `pending` counts as our own.
        """
        timeout = self.timeout if timeout is None else timeout
        attempts = 1 + (self.retries if retries is None else retries)
        seq = self.next_seq()
        started = time.monotonic()
        self.busy_seconds = 0.0
        problem: FramingError | None = None
        hello = msg.TYPE == MsgType.HELLO
        for attempt in range(attempts):
            if attempt:
                self.counters["retries"] += 1
                log.debug("retry %d of %s seq=%d (%s)", attempt, _name(msg), seq, problem)
            self.send(msg, seq, Flag.RETRY if attempt else 0)
            problem = None
            nak_resent = False
            deadline = time.monotonic() + timeout
            while (reply := self.receive(deadline)) is not None:
                if isinstance(reply, FramingError):
                    problem = reply
                    continue
                if reply.msg_type == MsgType.NAK:  # the device could not read our frame
                    self.counters["naks"] += 1
                    problem = _nak_problem(reply)
                    # Resend at once, but once per attempt: one mangled frame can draw a
                    # burst of NAKs (its pieces), which must not use up every attempt.
                    if not nak_resent:
                        nak_resent = True
                        self.counters["retries"] += 1
                        self.send(msg, seq, Flag.RETRY)
                    continue
                if reply.msg_type == MsgType.IN_PROGRESS and reply.seq in pending:
                    deadline = self._keepalive(reply, msg, started, timeout)  # a stream batch
                    continue
                if reply.seq != seq:
                    if on_other is not None:
                        on_other(reply)
                    else:  # a late answer to an earlier attempt or request
                        self._stale(reply, "seq")
                    continue
                self._check_version(reply)
                lost = self._session_lost(reply) if not hello else None
                if lost is not None:
                    raise lost
                if reply.session is not None and reply.session != self.session and not hello:
                    self._stale(reply, "session")
                    continue
                if reply.msg_type == MsgType.ERROR:
                    self.counters["received"] += 1
                    err = ErrorReport.unpack(reply.payload)
                    raise DeviceError(err.code, err.arg, err.text)
                if reply.msg_type == MsgType.IN_PROGRESS:
                    deadline = self._keepalive(reply, msg, started, timeout)
                    continue
                self.counters["received"] += 1
                return reply
        elapsed = time.monotonic() - started
        what = f"{_name(msg)} (seq {seq}) after {attempts} attempts in {elapsed:.2f} s"
        if problem is not None:  # something came back each time, but never intact
            text = f"every reply to {what} was unreadable, last: {problem}; check the baud rate"
            if isinstance(problem, CrcError):
                raise CrcError(text) from problem
            raise FramingError(text, reason=problem.reason) from problem
        raise BridgeTimeoutError(
            f"no reply to {what}; check that the device is powered, running the bridge "
            "firmware and on this port"
        )

    def wait_other(
        self,
        handler: Callable[[Reply], None],
        *,
        what: str,
        pending: Container[int] = (),
    ) -> None:
        """Wait up to `timeout` for one unsolicited device frame (a stream result) and hand it
        to `handler`. IN_PROGRESS for a seq in `pending` moves the deadline as in `exchange`.
        Raises `BridgeTimeoutError` if none comes, `CrcError` on a NAK."""
        started = time.monotonic()
        deadline = started + self.timeout
        self.busy_seconds = 0.0
        while (item := self.receive(deadline)) is not None:
            if isinstance(item, FramingError):
                continue
            if item.msg_type == MsgType.NAK:  # no retransmission for unsolicited traffic
                raise _nak_problem(item)
            self._check_version(item)
            lost = self._session_lost(item) if item.seq in pending else None
            if lost is not None:
                raise lost
            if item.session is not None and item.session != self.session:
                self._stale(item, "session")
                continue
            if item.msg_type == MsgType.IN_PROGRESS and item.seq in pending:
                deadline = self._keepalive(item, None, started, self.timeout)
                continue
            handler(item)
            return
        raise BridgeTimeoutError(f"no {what} within {self.timeout:.2f} s of silence")

    def request(
        self,
        msg: Message,
        expect: type[M],
        *,
        timeout: float | None = None,
        retries: int | None = None,
        on_other: Callable[[Reply], None] | None = None,
        pending: Container[int] = (),
    ) -> M:
        """`exchange`, then decode the reply and check it is an `expect`."""
        reply = self.exchange(msg, timeout=timeout, retries=retries, on_other=on_other,
                              pending=pending)  # fmt: skip
        if reply.msg_type != expect.TYPE:
            raise ProtocolError(
                f"{_name(msg)} was answered by type {reply.msg_type:#04x}, "
                f"expected {expect.TYPE.name}"
            )
        return expect.unpack(reply.payload)

    def _check_version(self, reply: Reply) -> None:
        if reply.version != PROTOCOL_VERSION:
            raise VersionMismatchError(
                f"the device answered in bridge protocol v{reply.version}, this host speaks "
                f"v{PROTOCOL_VERSION}; flash matching firmware or install the matching edgeadapt",
                host=PROTOCOL_VERSION,
                device=reply.version,
            )

    def _keepalive(
        self, reply: Reply, msg: Message | None, started: float, timeout: float
    ) -> float:
        """The new deadline after an IN_PROGRESS; BridgeTimeoutError past `busy_limit`."""
        self.counters["keepalives"] += 1
        estimate = InProgress.unpack(reply.payload).estimate_ms / 1000
        now = time.monotonic()
        if now + estimate - started > self.busy_limit:
            what = _name(msg) if msg is not None else "the stream"
            raise BridgeTimeoutError(
                f"the device has been busy with {what} for {now - started:.1f} s and expects "
                f"{estimate:.1f} s more, past busy_limit={self.busy_limit:g} s; raise busy_limit "
                "if it is that slow"
            )
        self.busy_seconds += estimate
        return now + timeout + estimate

    def _session_lost(self, reply: Reply) -> SessionLostError | None:
        """The error to raise when `reply` is the device's NO_SESSION refusal, else None."""
        if reply.msg_type != MsgType.ERROR:
            return None
        err = ErrorReport.unpack(reply.payload)
        if err.code != ErrorCode.NO_SESSION:
            return None
        return SessionLostError(
            f"the device holds session {err.arg:#010x}, not ours ({self.session:#010x}): it "
            "restarted or another host said HELLO; the request did not run"
        )

    def _stale(self, reply: Reply, why: str) -> None:
        self.counters["stale"] += 1
        log.debug("dropped a stale reply (%s): type %#04x seq %d", why, reply.msg_type, reply.seq)


def _name(msg: Message) -> str:
    return getattr(msg.TYPE, "name", f"type {int(msg.TYPE):#04x}")


def _nak_problem(reply: Reply) -> FramingError:
    try:
        reason = Nak.unpack(reply.payload).reason
    except MessageError:  # a malformed NAK is still a NAK
        reason = 0
    if reason == NakReason.CRC:
        return CrcError("the device NAKed our frame: CRC error on its side")
    return FramingError(f"the device NAKed our frame (reason {reason})", reason="framing")
