"""The state machine behind `FakeDevice`: what a device does with each decoded request.

Kept apart from the I/O loop (fake_device.py) so each stays small; keeps uploads in a
`Flash` (memory by default) and runs the callables a test supplies. The emulator subclasses
it and replaces the callables with ExecuTorch programs.
"""

from __future__ import annotations

import random
import time
import zlib
from collections.abc import Callable
from dataclasses import fields

from .flash import Flash, Staged
from .message_base import Message
from .messages import (
    Ack,
    AdapterChunk,
    AdaptResult,
    DeviceInfo,
    ErrorReport,
    InferResult,
    Memory,
    Stats,
    StreamCredit,
    StreamResult,
    UploadOutcome,
    UploadStatus,
)
from .protocol import (
    DEFAULT_MAX_PAYLOAD,
    ENVELOPE_SIZE,
    MIN_MAX_PAYLOAD,
    PROTOCOL_VERSION,
    Capability,
    MsgType,
    ResetKind,
    Target,
    UploadState,
)
from .protocol import ErrorCode as E

__all__ = ["DeviceModel", "Refuse", "clip"]

InferFn = Callable[[bytes], bytes]
AdaptFn = Callable[[bytes], tuple]  # (loss, output) or (loss, output, new adapter blob)
Replies = list[tuple[Message, int]]
FLASH_TARGETS = (Target.PROGRAM, Target.ADAPTER, Target.TRAINING)


def clip(text: str, limit: int = 128) -> str:
    """`text` cut to at most `limit` bytes of UTF-8 (ERROR's bound), on a character boundary."""
    return text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")


class Refuse(Exception):
    """Raised by a handler to answer the request with ERROR instead."""

    def __init__(self, code: E, arg: int = 0, text: str = "") -> None:
        self.reply = ErrorReport(int(code), arg, clip(text))


def nonzero_random() -> int:
    return random.SystemRandom().randrange(1, 1 << 32)


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
        keepalive_ms: int = 100,  # IN_PROGRESS while a request runs longer (0: never)
        flash: Flash | None = None,
    ) -> None:
        self.infer_fn, self.adapt_fn = infer, adapt
        self.version, self.max_payload, self.profile = version, max_payload, profile
        self.ram_bytes, self.flash_bytes = ram_bytes, flash_bytes
        self.max_window, self.stream_batch = max_window, stream_batch
        self.keepalive_ms = keepalive_ms
        self.flash = flash if flash is not None else Flash()
        self.requests: list[Message] = []  # every request executed, in order
        self.counts = {f.name: 0 for f in fields(Stats)}
        self.boot_id = nonzero_random()
        self.power_on()

    def power_on(self) -> None:
        """RAM as after a boot: no session, no stream, no staged input, adapter as committed."""
        self.session = 0
        self.negotiated = self.max_payload
        self.counts = dict.fromkeys(self.counts, 0)  # STATS count since boot
        self._born = time.monotonic()
        self._credits = 0
        self._stream: tuple[int, list[tuple[int, int, bytes]]] | None = None  # adapt, queue
        self.input: bytes | None = None  # staged by UPLOAD target INPUT
        self.reset_adapter()

    # -- what tests inspect -----------------------------------------------------------------

    @property
    def active(self) -> dict[int, bytes]:
        """target -> committed bytes."""
        return self.flash.actives

    @property
    def staging(self) -> Staged | None:
        return self.flash.staged

    @property
    def stream_open(self) -> bool:
        return self._stream is not None

    @property
    def capabilities(self) -> Capability:
        """What this double can do: run a stream or a step only with a callable to run."""
        caps = Capability.UPLOAD | Capability.ADAPTER_IO | Capability.MEMORY_REPORT
        if self.infer_fn is not None:
            caps |= Capability.INFER | Capability.STREAM
        if self.adapt_fn is not None:
            caps |= Capability.ADAPT | Capability.STREAM
        return caps

    # -- hooks a device with real programs replaces --------------------------------------------

    def reset_adapter(self) -> None:
        """Adapter back to the committed one (or none), step 0."""
        self.adapter: bytes | None = self.flash.active(Target.ADAPTER)
        self.step = 0

    def adapter_blob(self) -> bytes | None:
        return self.adapter

    def check_upload(self, target: int, size: int) -> None:
        """Refuse an UPLOAD_BEGIN that cannot fit (TOO_LARGE, arg = the room there is)."""
        if target not in tuple(Target):
            raise Refuse(E.BAD_ARGUMENT, target, "unknown upload target")
        room = self.flash_bytes if target != Target.INPUT else self.ram_bytes
        if size > room:
            raise Refuse(E.TOO_LARGE, room, f"{size} B do not fit: {room} B free")

    def activate(self, target: int, data: bytes, outcome: dict) -> None:
        """Check the committed bytes and make them active (Refuse leaves the old ones)."""
        self.flash.activate({target: data}, outcome)
        if target == Target.ADAPTER:
            self.reset_adapter()

    def run_infer(self, data: bytes) -> bytes:
        if self.infer_fn is None:
            raise Refuse(E.NOT_READY, 0, "no program to run")
        self.counts["infer_count"] += 1
        try:
            return bytes(self.infer_fn(data))
        except Exception as exc:  # the program failed, not the protocol: report it
            raise Refuse(E.EXECUTION_FAILED, 0, f"{type(exc).__name__}: {exc}") from exc

    def run_adapt(self, data: bytes) -> tuple[float, bytes]:
        if self.adapt_fn is None:
            raise Refuse(E.NOT_READY, 0, "no adaptation program")
        try:
            loss, out, *new_adapter = self.adapt_fn(data)
        except Exception as exc:
            raise Refuse(E.EXECUTION_FAILED, 0, f"{type(exc).__name__}: {exc}") from exc
        if new_adapter:
            self.adapter = bytes(new_adapter[0])
        self.step += 1
        self.counts["adapt_steps"] += 1
        return float(loss), bytes(out)

    # -- requests ---------------------------------------------------------------------------

    def serve(self, msg: Message, seq: int) -> Replies:
        """Execute one request; raise `Refuse` to answer ERROR."""
        self.requests.append(msg)
        t = msg.TYPE
        name = t.name.lower() if isinstance(t, MsgType) else type(msg).__name__.lower()
        handler = getattr(self, f"_on_{name}", None)
        if handler is None:
            raise Refuse(E.UNKNOWN_MESSAGE, int(t), f"{name.upper()} is not a request")
        return handler(msg, seq)

    def _on_hello(self, msg: Message, seq: int) -> Replies:
        if not msg.version_min <= self.version <= msg.version_max:
            raise Refuse(E.UNSUPPORTED_VERSION, self.version, f"device speaks v{self.version}")
        if msg.max_payload < MIN_MAX_PAYLOAD:
            raise Refuse(E.BAD_ARGUMENT, MIN_MAX_PAYLOAD, "max_payload too small")
        self.negotiated = min(msg.max_payload, self.max_payload)
        self._stream = None  # a new session; staged uploads survive so they can resume
        self.session = nonzero_random()
        return [(self.device_info(), seq)]

    def device_info(self) -> DeviceInfo:
        crc = [zlib.crc32(b) if b is not None else 0
               for b in (self.flash.active(t) for t in FLASH_TARGETS)]  # fmt: skip
        program, adapter, training = crc
        return DeviceInfo(self.version, self.negotiated, int(self.capabilities), self.ram_bytes,
                          self.flash_bytes, program, training, adapter, self.step, self.boot_id,
                          self.session, self.keepalive_ms, self.profile)  # fmt: skip

    def _on_upload_begin(self, msg: Message, seq: int) -> Replies:
        self.check_upload(msg.target, msg.size)
        s = self.flash.staged
        if s is None or (s.target, s.size, s.crc) != (msg.target, msg.size, msg.crc):
            self.flash.stage_begin(msg.target, msg.size, msg.crc)  # not a resume: restart
            self.flash.set_outcome(self._outcome(UploadState.STAGING))
        return [(self._status(), seq)]

    def _on_upload_chunk(self, msg: Message, seq: int) -> Replies:
        s = self._staged()
        if msg.offset == len(s.data):  # any other offset: just tell the host where we are
            if len(s.data) + len(msg.data) > s.size:
                raise Refuse(E.BAD_ARGUMENT, s.size, "chunk runs past the announced size")
            self.flash.stage_append(msg.data)
        return [(self._status(), seq)]

    def _on_upload_commit(self, msg: Message, seq: int) -> Replies:
        done = self.flash.outcome
        if msg.request_id and done.get("request_id") == msg.request_id:  # already settled
            if done["state"] == UploadState.COMMITTED:
                return [(Ack(), seq)]
            raise Refuse(done["code"], done["arg"], "this commit was refused before")
        s = self._staged()
        if s.target != msg.target:
            raise Refuse(E.UPLOAD_NOT_STARTED, s.target, "staged upload has another target")
        if len(s.data) != s.size:
            raise Refuse(E.UPLOAD_INCOMPLETE, len(s.data), "upload incomplete")
        if s.target in FLASH_TARGETS and self._stream is not None:
            raise Refuse(E.BUSY, 0, "a stream is open: STREAM_STOP before changing programs")
        data = bytes(s.data)
        crc = zlib.crc32(data)
        try:
            if crc != msg.crc or msg.crc != s.crc:  # bad bytes are never kept, let alone active
                raise Refuse(E.CRC_MISMATCH, crc, "CRC mismatch; upload again")
            if s.target == Target.INPUT:
                self.input = data
                self.flash.stage_drop()
                self.flash.set_outcome(self._outcome(UploadState.COMMITTED, s, msg.request_id))
            else:
                self.activate(s.target, data, self._outcome(UploadState.COMMITTED, s,
                                                            msg.request_id))  # fmt: skip
        except Refuse as refusal:  # the staging is gone either way; the flash says why
            err = refusal.reply
            self.flash.stage_drop()
            self.flash.set_outcome(self._outcome(UploadState.REFUSED, s, msg.request_id,
                                                 err.code, err.arg))  # fmt: skip
            raise
        return [(Ack(), seq)]

    def _outcome(self, state: int, s: Staged | None = None, request_id: int = 0,
                 code: int = 0, arg: int = 0) -> dict:  # fmt: skip
        s = s or self.flash.staged
        return {"state": int(state), "target": s.target, "size": s.size, "crc": s.crc,
                "request_id": request_id, "code": int(code), "arg": arg}  # fmt: skip

    def _on_get_upload(self, msg: Message, seq: int) -> Replies:
        o = self.flash.outcome
        if not o:
            return [(UploadOutcome(0, 0, 0, 0, 0, 0, 0, 0), seq)]
        staged = self.flash.staged
        offset = o["size"] if o["state"] == UploadState.COMMITTED else 0
        if o["state"] == UploadState.STAGING and staged is not None:
            offset = len(staged.data)
        return [(UploadOutcome(o["state"], o["target"], o["size"], o["crc"], offset,
                               o["request_id"], o["code"], o["arg"]), seq)]  # fmt: skip

    def _on_infer(self, msg: Message, seq: int) -> Replies:
        return [(InferResult(msg.frame_id, self.run_infer(self._data(msg.data))), seq)]

    def _on_adapt(self, msg: Message, seq: int) -> Replies:
        if self._stream is not None:
            raise Refuse(E.BUSY, 0, "a stream is open: STREAM_STOP before ADAPT")
        loss, out = self.run_adapt(self._data(msg.data))
        return [(AdaptResult(msg.frame_id, msg.request_id, self.step, loss, out), seq)]

    def _data(self, data: bytes) -> bytes:
        if data:
            return data
        if self.input is None:
            raise Refuse(E.NOT_READY, 0, "empty input and no input staged (UPLOAD INPUT)")
        return self.input

    def _on_stream_start(self, msg: Message, seq: int) -> Replies:
        if self._stream is not None:
            raise Refuse(E.BUSY, len(self._stream[1]), "a stream is open: STREAM_STOP first")
        if msg.window == 0:
            raise Refuse(E.BAD_ARGUMENT, 0, "stream window must be at least 1")
        self._credits, self._stream = min(msg.window, self.max_window), (msg.adapt, [])
        return [(StreamCredit(self._credits), seq)]

    def _on_stream_frame(self, msg: Message, seq: int) -> Replies:
        if self._stream is None:
            raise Refuse(E.NOT_READY, 0, "no stream open")
        if self._credits == 0:
            raise Refuse(E.NO_CREDIT, 0, "frame sent without credit")
        self._credits -= 1
        self._stream[1].append((seq, msg.frame_id, msg.data))
        return self.flush_stream() if len(self._stream[1]) >= self.stream_batch else []

    def _on_stream_stop(self, msg: Message, seq: int) -> Replies:
        results = self.flush_stream() if self._stream else []
        self._stream = None
        return [*results, (Ack(), seq)]

    def flush_stream(self) -> Replies:
        """Run the queued frames; a frame that fails is answered ERROR (its credit returns)."""
        adapt, queue = self._stream  # type: ignore[misc]
        out: Replies = []
        for seq, frame_id, data in queue:
            try:
                output = self.run_adapt(data)[1] if adapt else self.run_infer(data)
                out.append((StreamResult(frame_id, 1, adapt, output), seq))
            except Refuse as refusal:
                out.append((refusal.reply, seq))
        self._credits += len(queue)
        queue.clear()
        return out

    def _on_get_adapter(self, msg: Message, seq: int) -> Replies:
        blob = self.adapter_blob()
        if blob is None:
            raise Refuse(E.NO_ADAPTER, 0, "no adapter set")
        if msg.offset > len(blob):
            raise Refuse(E.BAD_ARGUMENT, len(blob), "offset past the end")
        n = min(msg.max_len, self.negotiated - ENVELOPE_SIZE - AdapterChunk.LAYOUT.size)
        data = blob[msg.offset : msg.offset + n]
        return [(AdapterChunk(len(blob), zlib.crc32(blob), msg.offset, data), seq)]

    def _on_get_stats(self, msg: Message, seq: int) -> Replies:
        self.counts["uptime_ms"] = int((time.monotonic() - self._born) * 1000)
        return [(Stats(**{k: v & 0xFFFFFFFF for k, v in self.counts.items()}), seq)]

    def memory_report(self) -> Memory:
        """MEMORY: a double runs callables, not programs, so it has no figure to report."""
        return Memory(*([0] * len(fields(Memory))))

    def _on_get_memory(self, msg: Message, seq: int) -> Replies:
        return [(self.memory_report(), seq)]

    def _on_reset(self, msg: Message, seq: int) -> Replies:
        if msg.kind == ResetKind.ADAPTER:
            if self._stream is not None:
                raise Refuse(E.BUSY, 0, "a stream is open: STREAM_STOP before RESET")
            self.reset_adapter()
        elif msg.kind == ResetKind.SESSION:
            self.flash.stage_drop()
            self._stream = None
        elif msg.kind != ResetKind.REBOOT:  # REBOOT: the I/O loop restarts after the ACK
            raise Refuse(E.BAD_ARGUMENT, msg.kind, "unknown reset kind")
        return [(Ack(), seq)]

    def _staged(self) -> Staged:
        if self.flash.staged is None:
            raise Refuse(E.UPLOAD_NOT_STARTED, 0, "send UPLOAD_BEGIN first")
        return self.flash.staged

    def _status(self) -> UploadStatus:
        s = self._staged()
        return UploadStatus(s.target, len(s.data), s.size)
