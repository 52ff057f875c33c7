"""A protocol test double: an in-process "device" that speaks the bridge protocol.

It is *not* the emulator (which runs real ExecuTorch programs behind a pseudo-terminal): it
keeps uploads in a `Flash` (memory unless given a folder) and answers INFER/ADAPT/STREAM with
plain Python callables a test supplies, so the client can be tested end to end over a null
modem (`transport.null_modem_pair()`) or any other transport.

This file is the session layer a firmware implements around its handlers: header version and
session checks, the retransmission cache (true retransmissions only), the record of
non-idempotent requests by request id, IN_PROGRESS keep-alives while a request runs, NAKs.
"""

from __future__ import annotations

import collections
import threading
import time
import zlib
from typing import Any, ClassVar

from ._fake_model import DeviceModel, Refuse, clip, nonzero_random
from .errors import CrcError, FramingError, MessageError, OversizeFrameError
from .framing import Frame, FrameDecoder, encode_frame
from .message_base import Message, seal, unseal
from .messages import ErrorReport, InProgress, Nak, unpack_message
from .protocol import NON_IDEMPOTENT, ErrorCode, Flag, MsgType, NakReason, ResetKind, Target
from .transport import Transport

__all__ = ["FakeDevice"]

# Never answered from the retransmission cache: HELLO starts afresh, and stream frames are
# pipelined, so "the last request" says nothing about them.
_NOT_CACHED = (MsgType.HELLO, MsgType.STREAM_FRAME)
RECORDS = 16  # answers to non-idempotent requests kept by request id (RAM, FIFO)


class FakeDevice(DeviceModel):
    """Serve requests from a background thread: `start()`/`stop()`, or use it with `with`.

    Keyword arguments are `DeviceModel`'s (infer, adapt, version, max_payload, ram_bytes,
    flash_bytes, profile, max_window, stream_batch, keepalive_ms, flash). State tests may
    inspect: `active` (target -> committed bytes), `staging`, `adapter`, `requests`,
    `counts`, `boot_id`, `session`; `reboot()` power-cycles it.
    """

    # Request types beyond the protocol's (the emulator's SET_FAULTS).
    EXTRA: ClassVar[dict[int, type[Message]]] = {}

    def __init__(self, transport: Transport, **model: Any) -> None:
        self.transport = transport
        self.decoder = FrameDecoder(model.get("max_payload", 4096))
        self._tx = threading.Lock()  # replies and keep-alives come from two threads
        self._busy: tuple[int, float] | None = None  # (seq, started) of the request running
        self._after: Any = None  # an action once the current replies are out (a reboot)
        super().__init__(**model)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def power_on(self) -> None:
        super().power_on()
        self._cache: tuple[int, int, int, list[bytes]] | None = None  # seq, type, digest, frames
        self.records: collections.OrderedDict[int, tuple[int, list[Message]]] = (
            collections.OrderedDict()
        )

    def reboot(self) -> None:
        """Power cycle: a new boot id; RAM (session, cache, records, stream, staged input,
        adapted weights, negotiated size) lost; flash kept."""
        self.boot_id = nonzero_random()
        self.power_on()
        staged = self.flash.staged
        if staged is not None and staged.target == Target.INPUT:  # an input is staged in RAM
            self.flash.stage_drop()
        self.decoder.reset()

    # -- the loop ---------------------------------------------------------------------------

    def start(self) -> FakeDevice:
        self._stop.clear()
        self._thread = threading.Thread(target=self.serve_forever, args=(self._stop,),
                                        name="fake-device", daemon=True)  # fmt: skip
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None

    def __enter__(self) -> FakeDevice:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self, stop: threading.Event) -> None:
        ticker = threading.Thread(target=self._tick, args=(stop,), name="keepalive", daemon=True)
        ticker.start()
        while not stop.is_set():
            for item in self.decoder.feed(self.transport.read()):
                for reply in self.handle(item):
                    self.write(reply)
                if self._after is not None:
                    action, self._after = self._after, None
                    action()
                    break  # a reboot loses what else was received

    def write(self, data: bytes) -> None:
        with self._tx:
            self.transport.write(data)

    def _tick(self, stop: threading.Event) -> None:
        """Send IN_PROGRESS every `keepalive_ms` while a request runs (a firmware's timer)."""
        while not stop.wait(max(self.keepalive_ms, 20) / 1000):
            busy = self._busy
            if self.keepalive_ms and busy and time.monotonic() - busy[1] >= self.keepalive_ms / 1e3:
                self.progress(2 * self.keepalive_ms / 1000)

    def progress(self, estimate_s: float) -> None:
        """Tell the host the running request needs about `estimate_s` more seconds."""
        busy = self._busy
        if busy is None:
            return
        elapsed = int((time.monotonic() - busy[1]) * 1000)
        msg = InProgress(elapsed & 0xFFFFFFFF, min(int(estimate_s * 1000), 0xFFFFFFFF))
        self.write(self._frame(msg, busy[0]))

    # -- one frame --------------------------------------------------------------------------

    def handle(self, item: Frame | FramingError) -> list[bytes]:
        """The encoded frames to send in answer to one decoded frame or framing error."""
        if isinstance(item, FramingError):
            self.counts["crc_errors" if isinstance(item, CrcError) else "framing_errors"] += 1
            self.counts["naks_sent"] += 1
            reason = NakReason.FRAMING
            if isinstance(item, CrcError):
                reason = NakReason.CRC
            elif isinstance(item, OversizeFrameError):
                reason = NakReason.OVERSIZE
            return [self._frame(Nak(int(reason)), 0)]  # seq unknown: the frame was unreadable
        self.counts["frames_rx"] += 1
        if item.msg_type & 0x80:  # a device frame (a loop, another device): not a request
            return []
        refusal = self._check_session(item)
        if refusal is not None:
            return [self._frame(refusal, item.seq)]
        _session, body = unseal(item.msg_type, item.payload)
        digest = zlib.crc32(bytes([item.msg_type]) + body)
        cache = self._cache
        if item.flags & Flag.RETRY and cache is not None and cache[:3] == (item.seq, item.msg_type,
                                                                          digest):  # fmt: skip
            self.counts["duplicates"] += 1  # a true retransmission: answer again, do not redo
            return cache[3]
        replies = self._execute(item, body, digest)
        if item.msg_type == MsgType.HELLO:
            # A new session: the last one's answer (sealed with its session) is no
            # retransmission's, even where seq and bytes happen to match.
            self._cache = None
        elif item.msg_type not in _NOT_CACHED:
            self._cache = (item.seq, item.msg_type, digest, replies)
        return replies

    def _check_session(self, item: Frame) -> Message | None:
        """ERROR for a frame in another version or another session (then it never runs)."""
        if item.msg_type != MsgType.HELLO and item.version != self.version:
            return ErrorReport(int(ErrorCode.UNSUPPORTED_VERSION), self.version,
                               f"this session speaks v{self.version}, the frame says "
                               f"v{item.version}")  # fmt: skip
        try:
            session, _ = unseal(item.msg_type, item.payload)
        except MessageError as exc:
            return ErrorReport(int(ErrorCode.MALFORMED), item.msg_type, clip(str(exc)))
        if session is not None and (self.session == 0 or session != self.session):
            what = "no session since boot: send HELLO" if not self.session else "HELLO again"
            return ErrorReport(int(ErrorCode.NO_SESSION), self.session,
                               f"request names session {session:#010x}; {what}")  # fmt: skip
        return None

    def _execute(self, item: Frame, body: bytes, digest: int) -> list[bytes]:
        try:
            extra = self.EXTRA.get(item.msg_type)
            msg = extra.unpack(body) if extra else unpack_message(item.msg_type, body)
        except MessageError as exc:
            known = item.msg_type in MsgType._value2member_map_ or item.msg_type in self.EXTRA
            code = ErrorCode.MALFORMED if known else ErrorCode.UNKNOWN_MESSAGE
            return [self._frame(ErrorReport(int(code), item.msg_type, clip(str(exc))), item.seq)]
        rid = getattr(msg, "request_id", 0) if msg.TYPE in NON_IDEMPOTENT else 0
        if rid and rid in self.records:  # this request ran: its answer, not a second run
            known_digest, answer = self.records[rid]
            if known_digest != digest:
                answer = [ErrorReport(int(ErrorCode.ID_REUSED), rid,
                                      "request id already used by another request")]  # fmt: skip
            else:
                self.counts["duplicates"] += 1
            return [self._frame(m, item.seq) for m in answer]
        self._busy = (item.seq, time.monotonic())
        try:
            pairs = self.serve(msg, item.seq)
        except Refuse as refusal:
            pairs = [(refusal.reply, item.seq)]
        except Exception as exc:  # a bug in the double or a test callable: say so, not hang
            text = clip(f"{type(exc).__name__}: {exc}")
            pairs = [(ErrorReport(int(ErrorCode.INTERNAL), 0, text), item.seq)]
        finally:
            self._busy = None
        if rid:
            self.records[rid] = (digest, [m for m, s in pairs if s == item.seq])
            while len(self.records) > RECORDS:
                self.records.popitem(last=False)
        acked = bool(pairs) and pairs[-1][0].TYPE == MsgType.ACK
        if msg.TYPE == MsgType.RESET and msg.kind == ResetKind.REBOOT and acked:
            self._after = self.reboot  # ACK first, then restart
        return [self._frame(m, s) for m, s in pairs]

    def _frame(self, msg: Message, seq: int) -> bytes:
        self.counts["frames_tx"] += 1
        payload = seal(msg.TYPE, self.session, msg.pack())
        return encode_frame(msg.TYPE, payload, seq=seq, version=self.version)
