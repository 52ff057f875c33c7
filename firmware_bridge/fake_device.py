"""A protocol test double: an in-process "device" that speaks the bridge protocol.

It is *not* the emulator (which will run real ExecuTorch programs behind a pseudo-terminal):
it keeps uploads and the adapter blob in memory and answers INFER/ADAPT/STREAM with plain
Python callables a test supplies, so the client can be tested end to end over a null modem
(`transport.null_modem_pair()`) or any other transport.
"""

from __future__ import annotations

import threading
from typing import Any

from ._fake_model import DeviceModel, Refuse, clip
from .errors import CrcError, FramingError, MessageError, OversizeFrameError
from .framing import Frame, FrameDecoder, encode_frame
from .message_base import Message
from .messages import ErrorReport, Nak, unpack_message
from .protocol import ErrorCode, MsgType, NakReason
from .transport import Transport

__all__ = ["FakeDevice"]

# Requests never answered from the retransmission cache: HELLO starts afresh, and stream
# frames are pipelined, so "the last request" says nothing about them.
_NOT_CACHED = (MsgType.HELLO, MsgType.STREAM_FRAME)


class FakeDevice(DeviceModel):
    """Serve requests from a background thread: `start()`/`stop()`, or use it with `with`.

    Keyword arguments are `DeviceModel`'s (infer, adapt, version, max_payload, ram_bytes,
    flash_bytes, profile, max_window, stream_batch). State tests may inspect: `active`
    (target -> committed bytes), `staging`, `adapter`, `requests`, `counts`.
    """

    def __init__(self, transport: Transport, **model: Any) -> None:
        super().__init__(**model)
        self.transport = transport
        self.decoder = FrameDecoder(self.max_payload)
        self._cache: tuple[int, int, list[bytes]] | None = None  # seq, type, reply frames
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> FakeDevice:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="fake-device", daemon=True)
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

    def _run(self) -> None:
        while not self._stop.is_set():
            for item in self.decoder.feed(self.transport.read()):
                for reply in self.handle(item):
                    self.transport.write(reply)

    def reset_session(self) -> None:
        super().reset_session()
        self._cache = None

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
        cache = self._cache
        if cache and cache[:2] == (item.seq, item.msg_type) and item.msg_type not in _NOT_CACHED:
            self.counts["duplicates"] += 1  # a retransmission: answer again, do not redo
            return cache[2]
        try:
            msg = unpack_message(item.msg_type, item.payload)
        except MessageError as exc:
            known = item.msg_type in MsgType._value2member_map_
            code = ErrorCode.MALFORMED if known else ErrorCode.UNKNOWN_MESSAGE
            reply = ErrorReport(int(code), item.msg_type, clip(str(exc)))
            replies = [self._frame(reply, item.seq)]
        else:
            try:
                replies = [self._frame(r, s) for r, s in self.serve(msg, item.seq)]
            except Refuse as refusal:
                replies = [self._frame(refusal.reply, item.seq)]
            except Exception as exc:  # a bug in the double or a test callable: say so, not hang
                text = clip(f"{type(exc).__name__}: {exc}")
                replies = [self._frame(ErrorReport(int(ErrorCode.INTERNAL), 0, text), item.seq)]
        if item.msg_type != MsgType.STREAM_FRAME:
            self._cache = (item.seq, item.msg_type, replies)
        return replies

    def _frame(self, msg: Message, seq: int) -> bytes:
        self.counts["frames_tx"] += 1
        return encode_frame(msg.TYPE, msg.pack(), seq=seq, version=self.version)
