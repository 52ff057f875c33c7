"""`EmulatedDevice`: the fake device's protocol engine with real programs behind it.

It reuses `FakeDevice` (framing, NAKs, the retransmission cache, uploads, streams) and
replaces what a firmware does with the bytes: programs are checked against the device
profile's memory and loaded into the ExecuTorch runtime on commit, INFER runs the inference
program, ADAPT one step of the training program, a stream batches frames up to the program's
batch, and faults (`faults.py`) hit the line and the power.

Flash and RAM are modelled apart: committed programs, the adapter last pushed and a staged
upload survive a reboot (flash); the adapted weights, an open stream, a staged input, the
retransmission cache and the negotiated frame size do not (RAM).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import zlib
from typing import Any

import torch

from .._fake_model import Refuse, _Staging, clip
from ..errors import FramingError, MessageError
from ..fake_device import FakeDevice
from ..framing import Frame
from ..message_base import Message
from ..messages import (
    Ack,
    AdaptResult,
    ErrorReport,
    InferResult,
    StreamCredit,
    StreamResult,
)
from ..protocol import Capability, MsgType, ResetKind, Target
from ..protocol import ErrorCode as E
from .faults import SET_FAULTS, Faults, SetFaults
from .payloads import decode_input, encode_output, raw_size
from .programs import Budget, Programs

__all__ = ["EmulatedDevice"]

log = logging.getLogger(__name__)

_FLASH_TARGETS = (Target.PROGRAM, Target.TRAINING, Target.ADAPTER)


class EmulatedDevice(FakeDevice):
    """Serve one pty (or any transport) as the device `profile` (an export DeviceProfile)."""

    def __init__(self, transport: Any, profile: Any, *, lr: float, max_payload: int = 4096,
                 faults: Faults | None = None) -> None:  # fmt: skip
        ram = sum(b.usable_bytes for b in profile.data_banks)
        flash = max(profile.flash_bytes - profile.flash_reserved_bytes, 0)
        if profile.kind == "linux":  # programs are files in RAM-backed storage
            flash = flash or ram
        super().__init__(
            transport, max_payload=max_payload, ram_bytes=min(ram, 0xFFFFFFFF),
            flash_bytes=min(flash, 0xFFFFFFFF), profile=profile.key[:32],
        )  # fmt: skip
        # The fake's full request log would keep every uploaded chunk alive; keep the tail.
        self.requests = collections.deque(maxlen=64)  # type: ignore[assignment]
        self.programs = Programs(profile, lr=lr)
        self.faults = faults or Faults()
        self._reset_fired = False
        self._after: Any = None  # an action to take once the current replies are out
        self._input: bytes | None = None  # staged by UPLOAD target INPUT (RAM)
        self._steps = 0  # ADAPT steps since the adapter was set or reset
        self.reboots = 0

    @property
    def capabilities(self) -> Capability:
        return (Capability.UPLOAD | Capability.INFER | Capability.ADAPT | Capability.STREAM
                | Capability.ADAPTER_IO)  # fmt: skip

    # -- the loop -------------------------------------------------------------------------

    def serve_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            for item in self.decoder.feed(self.transport.read()):
                for reply in self.handle(item):
                    self.transport.write(reply)
                if self._after is not None:
                    action, self._after = self._after, None
                    action()
                    break  # a reboot loses what else was received

    def handle(self, item: Frame | FramingError) -> list[bytes]:
        if isinstance(item, Frame) and item.msg_type == SET_FAULTS:
            try:
                faults = SetFaults.unpack(item.payload).to_faults()
            except (MessageError, ValueError) as exc:
                reply: Message = ErrorReport(int(E.MALFORMED), SET_FAULTS, clip(str(exc)))
            else:
                reply = Ack()
                # The ACK travels on the cleaner line: new faults start after it, and a
                # clean line starts before it.
                if faults.line_faults:
                    self._after = lambda: self.set_faults(faults)
                else:
                    self.set_faults(faults)
            return [self._frame(reply, item.seq)]
        return super().handle(item)

    def set_faults(self, faults: Faults) -> None:
        self.faults = faults
        self._reset_fired = False
        line = getattr(self.transport, "line", None)
        if line is not None:
            line.set(faults)

    def reboot(self) -> None:
        """Power cycle: RAM state is lost, flash kept; deaf while it boots."""
        self.reboots += 1
        log.info("reboot %d (boot %d ms)", self.reboots, self.faults.boot_ms)
        time.sleep(self.faults.boot_ms / 1000)
        staged = self.staging  # in flash: it survives, so the upload can resume
        self.reset_session()  # stream, staging and retransmission cache
        if staged is not None and staged.target != Target.INPUT:  # a staged input was RAM
            self.staging = staged
        self._input = None
        self.negotiated = self.max_payload
        self.programs.reset_adapter()
        self._steps = 0
        self.counts = dict.fromkeys(self.counts, 0)  # STATS count since boot
        self._born = time.monotonic()
        self.decoder.reset()
        discard = getattr(self.transport, "discard_input", None)
        if discard is not None:
            discard()

    # -- requests ---------------------------------------------------------------------------

    def serve(self, msg: Message, seq: int) -> list[tuple[Message, int]]:
        t = msg.TYPE
        if t == MsgType.HELLO or t == MsgType.GET_ADAPTER:
            self.adapter = self.programs.adapter_blob()
            return super().serve(msg, seq)
        if t == MsgType.UPLOAD_BEGIN:
            return self._begin(msg, seq)
        if t == MsgType.UPLOAD_CHUNK:
            replies = super().serve(msg, seq)
            return [] if self._power_cut(msg) else replies
        if t == MsgType.UPLOAD_COMMIT:
            return self._commit(msg, seq)
        if t in (MsgType.INFER, MsgType.ADAPT):
            self.requests.append(msg)
            return [(self._run_one(msg), seq)]
        if t == MsgType.STREAM_START:
            return self._stream_start(msg, seq)
        if t == MsgType.STREAM_FRAME:
            return self._stream_frame(msg, seq)
        if t == MsgType.RESET and msg.kind == ResetKind.ADAPTER:
            self.requests.append(msg)
            self.programs.reset_adapter()
            self._steps = 0
            return [(Ack(), seq)]
        if t == MsgType.RESET and msg.kind == ResetKind.REBOOT:
            self.requests.append(msg)
            self._after = self.reboot
            return [(Ack(), seq)]
        return super().serve(msg, seq)

    def _begin(self, msg: Message, seq: int) -> list[tuple[Message, int]]:
        self.requests.append(msg)
        if msg.target not in tuple(Target):
            raise Refuse(E.BAD_ARGUMENT, msg.target, "unknown upload target")
        if msg.target == Target.INPUT:
            limit = max((raw_size(p.input_shape) for p in self.programs.loaded.values()), default=0)
            if not limit:
                raise Refuse(E.NOT_READY, 0, "upload a program before staging an input")
        else:
            stored = sum(len(b) for t, b in self.active.items() if t != msg.target)
            limit = max(self.flash_bytes - stored, 0)
        if msg.size > limit:
            raise Refuse(E.TOO_LARGE, limit, f"{msg.size} B do not fit: {limit} B free")
        s = self.staging
        if s is None or (s.target, s.size, s.crc) != (msg.target, msg.size, msg.crc):
            self.staging = _Staging(msg.target, msg.size, msg.crc)
        return [(self._status(), seq)]

    def _power_cut(self, msg: Message) -> bool:
        """Whether the reset fault fires on this chunk (then nothing is answered)."""
        s, f = self.staging, self.faults
        if not f.reset_at or self._reset_fired or s is None or s.target not in _FLASH_TARGETS:
            return False
        if len(s.data) < f.reset_at * s.size:
            return False
        self._reset_fired = True
        # The cut lands while the chunk is being written: half of it reaches flash.
        del s.data[len(s.data) - len(msg.data) // 2 :]
        self._after = self.reboot
        return True

    def _commit(self, msg: Message, seq: int) -> list[tuple[Message, int]]:
        self.requests.append(msg)
        s = self._staged()
        if s.target != msg.target:
            raise Refuse(E.UPLOAD_NOT_STARTED, s.target, "staged upload has another target")
        if len(s.data) != s.size:
            raise Refuse(E.UPLOAD_INCOMPLETE, len(s.data), "upload incomplete")
        data = bytes(s.data)
        if zlib.crc32(data) != msg.crc or msg.crc != s.crc:
            self.staging = None  # bad bytes are never kept, let alone activated
            raise Refuse(E.CRC_MISMATCH, zlib.crc32(data), "CRC mismatch; upload again")
        self.staging = None  # whatever happens next, these bytes were checked once
        if s.target == Target.INPUT:
            self._input = data
            return [(Ack(), seq)]
        if s.target == Target.ADAPTER:
            try:
                self.programs.set_adapter(data)
            except (MessageError, ValueError) as exc:
                raise Refuse(E.BAD_ARGUMENT, 0, str(exc)) from exc
        else:
            loaded = self._load(s.target, data)
            self.programs.activate(s.target, loaded)  # the atomic switch
        self.active[s.target] = data
        if s.target != Target.PROGRAM:
            self._steps = 0
        return [(Ack(), seq)]

    def _load(self, target: int, data: bytes):
        from edgeadapt.export.errors import ProgramFileError

        try:
            return self.programs.load(target, data)
        except Budget as exc:
            raise Refuse(E.DOES_NOT_FIT, min(exc.missing, 0xFFFFFFFF), str(exc)) from exc
        except (ProgramFileError, RuntimeError, ValueError) as exc:
            raise Refuse(E.INVALID_PROGRAM, 0, f"{type(exc).__name__}: {exc}") from exc

    def _program(self, target: int):
        loaded = self.programs.program(target)
        if loaded is None:
            what = "a training program" if target == Target.TRAINING else "a program"
            raise Refuse(E.NOT_READY, 0, f"upload {what} first")
        return loaded

    def _decode(self, data: bytes, shape: tuple[int, ...]) -> torch.Tensor:
        if not data:
            if self._input is None:
                raise Refuse(E.NOT_READY, 0, "empty input and no input staged (UPLOAD INPUT)")
            data = self._input
        try:
            return decode_input(data, shape)
        except MessageError as exc:
            raise Refuse(E.BAD_ARGUMENT, raw_size(shape), str(exc)) from exc

    def _run_one(self, msg: Message) -> Message:
        adapt = msg.TYPE == MsgType.ADAPT
        loaded = self._program(Target.TRAINING if adapt else Target.PROGRAM)
        x = self._decode(msg.data, loaded.input_shape)
        if adapt:
            logits, loss = self._step(x)
            return AdaptResult(msg.frame_id, self._steps, loss, self._out(logits))
        return InferResult(msg.frame_id, self._out(self._infer_tensor(x)))

    def _infer_tensor(self, x: torch.Tensor) -> torch.Tensor:
        self.counts["infer_count"] += 1
        try:
            return self.programs.run_inference(x)
        except Exception as exc:  # the program failed, not the protocol: say so
            raise Refuse(E.EXECUTION_FAILED, 0, f"{type(exc).__name__}: {exc}") from exc

    def _step(self, x: torch.Tensor) -> tuple[torch.Tensor, float]:
        try:
            logits, loss, _kept = self.programs.run_step(x)
        except Exception as exc:
            raise Refuse(E.EXECUTION_FAILED, 0, f"{type(exc).__name__}: {exc}") from exc
        self._steps += 1
        self.counts["adapt_steps"] += 1
        return logits, loss

    def _out(self, y: torch.Tensor, room: int = 0) -> bytes:
        data = encode_output(y)
        limit = self.negotiated - 12 - room
        if len(data) > limit:
            raise Refuse(E.TOO_LARGE, limit, f"output of {len(data)} B exceeds a frame")
        return data

    # -- streams: frames are samples; the device runs a program batch at a time -------------

    def _stream_start(self, msg: Message, seq: int) -> list[tuple[Message, int]]:
        self.requests.append(msg)
        loaded = self._program(Target.TRAINING if msg.adapt else Target.PROGRAM)
        if msg.window < loaded.batch:
            raise Refuse(E.BAD_ARGUMENT, loaded.batch,
                         f"window must be at least the program's batch of {loaded.batch}")  # fmt: skip
        self._credits = min(msg.window, max(self.max_window, loaded.batch))
        self._stream = (msg.adapt, [])
        self.stream_batch = loaded.batch
        return [(StreamCredit(self._credits), seq)]

    def _stream_frame(self, msg: Message, seq: int) -> list[tuple[Message, int]]:
        if self._stream is None:
            raise Refuse(E.NOT_READY, 0, "no stream open")
        if self._credits == 0:
            raise Refuse(E.NO_CREDIT, 0, "frame sent without credit")
        adapt = self._stream[0]
        loaded = self._program(Target.TRAINING if adapt else Target.PROGRAM)
        if not msg.data:
            raise Refuse(E.BAD_ARGUMENT, 0, "a stream frame needs data")
        sample = self._decode(msg.data, (1, *loaded.input_shape[1:]))
        self._credits -= 1
        self._stream[1].append((seq, msg.frame_id, sample))
        return self._flush() if len(self._stream[1]) >= self.stream_batch else []

    def _flush(self) -> list[tuple[Message, int]]:
        """Run the queued samples as one batch: a training step when adapting and the batch
        is full; otherwise (a short last batch) a prediction, padded by repeating samples."""
        adapt, queue = self._stream  # type: ignore[misc]
        if not queue:
            return []
        loaded = self._program(Target.TRAINING if adapt else Target.PROGRAM)
        n, batch = len(queue), loaded.batch
        x = torch.cat([queue[i % n][2] for i in range(batch)])
        full = n == batch
        if adapt and full:
            logits, _ = self._step(x)
        else:
            if adapt and Target.PROGRAM not in self.programs.loaded:
                # No inference program: predict with the training program, without a step.
                logits = self.programs.loaded[Target.TRAINING].runner.forward_backward(x)[1]
            else:
                logits = self._infer_tensor(x)
        out = []
        for i, (s, frame_id, _) in enumerate(queue):
            row = self._out(logits[i : i + 1], room=3)
            out.append((StreamResult(frame_id, 1, int(adapt and full), row), s))
        self._credits += n
        queue.clear()
        return out
