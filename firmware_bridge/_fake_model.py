"""The state machine behind `FakeDevice`: what a device does with each decoded request.

Kept apart from the I/O loop (fake_device.py) so each stays small; holds uploads and the
adapter in memory and runs the callables a test supplies.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields

from .message_base import Message
from .messages import (
    Ack,
    AdapterChunk,
    AdaptResult,
    DeviceInfo,
    ErrorReport,
    InferResult,
    Stats,
    StreamCredit,
    StreamResult,
    UploadStatus,
)
from .protocol import (
    DEFAULT_MAX_PAYLOAD,
    MIN_MAX_PAYLOAD,
    PROTOCOL_VERSION,
    Capability,
    MsgType,
    ResetKind,
    Target,
)
from .protocol import ErrorCode as E

__all__ = ["DeviceModel", "Refuse", "clip"]

InferFn = Callable[[bytes], bytes]
AdaptFn = Callable[[bytes], tuple]  # (loss, output) or (loss, output, new adapter blob)


def clip(text: str, limit: int = 128) -> str:
    """`text` cut to at most `limit` bytes of UTF-8 (ERROR's bound), on a character boundary."""
    return text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")


class Refuse(Exception):
    """Raised by a handler to answer the request with ERROR instead."""

    def __init__(self, code: E, arg: int = 0, text: str = "") -> None:
        self.reply = ErrorReport(int(code), arg, clip(text))


@dataclass
class _Staging:
    target: int
    size: int
    crc: int
    data: bytearray = field(default_factory=bytearray)


class DeviceModel:
    """Device state and one handler per request; `serve` returns (reply, seq) pairs."""

    def __init__(
        self,
        *,
        infer: InferFn | None = None,
        adapt: AdaptFn | None = None,
        version: int = PROTOCOL_VERSION,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        ram_bytes: int = 256 * 1024,
        flash_bytes: int = 1 << 20,
        profile: str = "fake",
        max_window: int = 8,
        stream_batch: int = 1,  # answer stream frames only once this many are queued
    ) -> None:
        self.infer_fn, self.adapt_fn = infer, adapt
        self.version, self.max_payload, self.profile = version, max_payload, profile
        self.negotiated = max_payload
        self.ram_bytes, self.flash_bytes = ram_bytes, flash_bytes
        self.max_window, self.stream_batch = max_window, stream_batch
        self.active: dict[int, bytes] = {}  # target -> committed bytes
        self.adapter: bytes | None = None  # current adapter (moves with ADAPT)
        self.staging: _Staging | None = None
        self.requests: list[Message] = []  # every request executed, in order
        self.counts = {f.name: 0 for f in fields(Stats)}
        self._credits = 0
        self._stream: tuple[int, list[tuple[int, int, bytes]]] | None = None  # adapt, queue
        self._born = time.monotonic()

    @property
    def capabilities(self) -> Capability:
        """What this double can do: run a stream or a step only with a callable to run."""
        caps = Capability.UPLOAD | Capability.ADAPTER_IO
        if self.infer_fn is not None:
            caps |= Capability.INFER | Capability.STREAM
        if self.adapt_fn is not None:
            caps |= Capability.ADAPT | Capability.STREAM
        return caps

    def reset_session(self) -> None:
        self.staging, self._stream = None, None

    def serve(self, msg: Message, seq: int) -> list[tuple[Message, int]]:
        """Execute one request; raise `Refuse` to answer ERROR."""
        self.requests.append(msg)
        t = msg.TYPE
        if t == MsgType.HELLO:
            if not msg.version_min <= self.version <= msg.version_max:
                raise Refuse(E.UNSUPPORTED_VERSION, self.version, f"device speaks v{self.version}")
            if msg.max_payload < MIN_MAX_PAYLOAD:
                raise Refuse(E.BAD_ARGUMENT, MIN_MAX_PAYLOAD, "max_payload too small")
            self.negotiated = n = min(msg.max_payload, self.max_payload)
            self._stream = None  # a new session; staged uploads survive so they can resume
            prog, adap = self.active.get(Target.PROGRAM), self.adapter
            crc = [zlib.crc32(b) if b is not None else 0 for b in (prog, adap)]
            return [(DeviceInfo(self.version, n, int(self.capabilities), self.ram_bytes,
                                self.flash_bytes, *crc, self.profile), seq)]  # fmt: skip
        if t == MsgType.UPLOAD_BEGIN:
            if msg.target not in (Target.PROGRAM, Target.ADAPTER):
                raise Refuse(E.BAD_ARGUMENT, msg.target, "unknown upload target")
            if msg.size > self.flash_bytes:
                raise Refuse(E.TOO_LARGE, self.flash_bytes, "does not fit in flash")
            s = self.staging
            if s is None or (s.target, s.size, s.crc) != (msg.target, msg.size, msg.crc):
                self.staging = _Staging(msg.target, msg.size, msg.crc)  # not a resume: restart
            return [(self._status(), seq)]
        if t == MsgType.UPLOAD_CHUNK:
            s = self._staged()
            if msg.offset == len(s.data):  # any other offset: just tell the host where we are
                if len(s.data) + len(msg.data) > s.size:
                    raise Refuse(E.BAD_ARGUMENT, s.size, "chunk runs past the announced size")
                s.data += msg.data
            return [(self._status(), seq)]
        if t == MsgType.UPLOAD_COMMIT:
            s = self._staged()
            if s.target != msg.target:
                raise Refuse(E.UPLOAD_NOT_STARTED, s.target, "staged upload has another target")
            if len(s.data) != s.size:
                raise Refuse(E.UPLOAD_INCOMPLETE, len(s.data), "upload incomplete")
            if zlib.crc32(s.data) != msg.crc or msg.crc != s.crc:
                self.staging = None  # bad bytes are never kept, let alone activated
                raise Refuse(E.CRC_MISMATCH, zlib.crc32(s.data), "CRC mismatch; upload again")
            self.active[s.target] = bytes(s.data)  # the atomic switch
            if s.target == Target.ADAPTER:
                self.adapter, self.counts["adapt_steps"] = self.active[Target.ADAPTER], 0
            self.staging = None
            return [(Ack(), seq)]
        if t == MsgType.INFER:
            return [(InferResult(msg.frame_id, self._infer(msg.data)), seq)]
        if t == MsgType.ADAPT:
            loss, out = self._adapt(msg.data)
            return [(AdaptResult(msg.frame_id, self.counts["adapt_steps"], loss, out), seq)]
        if t == MsgType.STREAM_START:
            if msg.window == 0:
                raise Refuse(E.BAD_ARGUMENT, 0, "stream window must be at least 1")
            self._credits, self._stream = min(msg.window, self.max_window), (msg.adapt, [])
            return [(StreamCredit(self._credits), seq)]
        if t == MsgType.STREAM_FRAME:
            if self._stream is None:
                raise Refuse(E.NOT_READY, 0, "no stream open")
            if self._credits == 0:
                raise Refuse(E.NO_CREDIT, 0, "frame sent without credit")
            self._credits -= 1
            self._stream[1].append((seq, msg.frame_id, msg.data))
            return self._flush() if len(self._stream[1]) >= self.stream_batch else []
        if t == MsgType.STREAM_STOP:
            results = self._flush() if self._stream else []
            self._stream = None
            return [*results, (Ack(), seq)]
        if t == MsgType.GET_ADAPTER:
            if self.adapter is None:
                raise Refuse(E.NO_ADAPTER, 0, "no adapter set")
            if msg.offset > len(self.adapter):
                raise Refuse(E.BAD_ARGUMENT, len(self.adapter), "offset past the end")
            n = min(msg.max_len, self.negotiated - AdapterChunk.LAYOUT.size)
            data, crc = self.adapter[msg.offset : msg.offset + n], zlib.crc32(self.adapter)
            return [(AdapterChunk(len(self.adapter), crc, msg.offset, data), seq)]
        if t == MsgType.GET_STATS:
            self.counts["uptime_ms"] = int((time.monotonic() - self._born) * 1000)
            return [(Stats(**{k: v & 0xFFFFFFFF for k, v in self.counts.items()}), seq)]
        if t == MsgType.RESET:
            if msg.kind == ResetKind.ADAPTER:
                self.adapter, self.counts["adapt_steps"] = self.active.get(Target.ADAPTER), 0
            elif msg.kind in (ResetKind.SESSION, ResetKind.REBOOT):
                self.reset_session()
            else:
                raise Refuse(E.BAD_ARGUMENT, msg.kind, "unknown reset kind")
            return [(Ack(), seq)]
        raise Refuse(E.UNKNOWN_MESSAGE, int(t), f"{t.name} is not a request")

    def _staged(self) -> _Staging:
        if self.staging is None:
            raise Refuse(E.UPLOAD_NOT_STARTED, 0, "send UPLOAD_BEGIN first")
        return self.staging

    def _status(self) -> UploadStatus:
        s = self._staged()
        return UploadStatus(s.target, len(s.data), s.size)

    def _infer(self, data: bytes) -> bytes:
        if self.infer_fn is None:
            raise Refuse(E.NOT_READY, 0, "no program to run")
        self.counts["infer_count"] += 1
        try:
            return bytes(self.infer_fn(data))
        except Exception as exc:  # the program failed, not the protocol: report it
            raise Refuse(E.EXECUTION_FAILED, 0, f"{type(exc).__name__}: {exc}") from exc

    def _adapt(self, data: bytes) -> tuple[float, bytes]:
        if self.adapt_fn is None:
            raise Refuse(E.NOT_READY, 0, "no adaptation program")
        try:
            loss, out, *new_adapter = self.adapt_fn(data)
        except Exception as exc:
            raise Refuse(E.EXECUTION_FAILED, 0, f"{type(exc).__name__}: {exc}") from exc
        if new_adapter:
            self.adapter = bytes(new_adapter[0])
        self.counts["adapt_steps"] += 1
        return float(loss), bytes(out)

    def _flush(self) -> list[tuple[Message, int]]:
        adapt, queue = self._stream  # type: ignore[misc]
        out = []
        for seq, frame_id, data in queue:
            output = self._adapt(data)[1] if adapt else self._infer(data)
            out.append((StreamResult(frame_id, 1, adapt, output), seq))
        self._credits += len(queue)
        queue.clear()
        return out
