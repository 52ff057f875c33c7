"""`EmulatedDevice`: the fake device's protocol engine with real programs behind it.

It reuses `FakeDevice` (framing, sessions, the retransmission cache and request records,
keep-alives, uploads, streams) and replaces what a firmware does with the bytes: programs
are checked for their role and against the device profile's memory and loaded into the
ExecuTorch runtime on commit, INFER runs the inference program, ADAPT one step of the
training program, a stream batches frames up to the program's batch, and faults
(`faults.py`) hit the line and the power.

Flash (a `Flash`, in a folder with `flash_dir`) holds the committed programs, the adapter
last pushed, a staged upload and the last upload's outcome; they survive a reboot and, with
a folder, kill -9. RAM holds the loaded programs, the adaptation state, an open stream, a
staged input, the session, the retransmission cache and request records: a reboot loses
them, and the programs are loaded again from flash.
"""

from __future__ import annotations

import collections
import logging
import random
import time
from dataclasses import fields
from typing import Any, ClassVar

import torch

from .._fake_model import FLASH_TARGETS, Refuse
from ..errors import MessageError
from ..fake_device import FakeDevice
from ..flash import Flash
from ..framing import Frame
from ..message_base import ENVELOPE, Message
from ..messages import Ack, AdaptResult, InferResult, Memory, StreamCredit, StreamResult
from ..protocol import Capability, MemoryFlag, Target
from ..protocol import ErrorCode as E
from .faults import SET_FAULTS, Faults, SetFaults
from .payloads import decode_input, encode_output, raw_size
from .programs import Budget, Programs, WrongRole

__all__ = ["EmulatedDevice"]

log = logging.getLogger(__name__)


class EmulatedDevice(FakeDevice):
    """Serve one pty (or any transport) as the device `profile` (an export DeviceProfile)."""

    EXTRA: ClassVar[dict[int, type[Message]]] = {SET_FAULTS: SetFaults}

    def __init__(self, transport: Any, profile: Any, *, lr: float, max_payload: int = 4096,
                 faults: Faults | None = None, flash_dir: str | None = None,
                 keepalive_ms: int = 100) -> None:  # fmt: skip
        ram = sum(b.usable_bytes for b in profile.data_banks)
        flash = max(profile.flash_bytes - profile.flash_reserved_bytes, 0)
        if profile.kind == "linux":  # programs are files in RAM-backed storage
            flash = flash or ram
        self.programs = Programs(profile, lr=lr)
        self.faults = faults or Faults()
        self._power = random.Random(self.faults.seed)  # draws of the per-request reboot fault
        self._reset_fired = False
        self.reboots = 0
        super().__init__(
            transport, max_payload=max_payload, ram_bytes=min(ram, 0xFFFFFFFF),
            flash_bytes=min(flash, 0xFFFFFFFF), profile=profile.key[:32],
            keepalive_ms=keepalive_ms, flash=Flash(flash_dir),
        )  # fmt: skip
        # The fake's full request log would keep every uploaded chunk alive; keep the tail.
        self.requests = collections.deque(maxlen=64)  # type: ignore[assignment]

    @property
    def capabilities(self) -> Capability:
        return (Capability.UPLOAD | Capability.INFER | Capability.ADAPT | Capability.STREAM
                | Capability.ADAPTER_IO | Capability.MEMORY_REPORT)  # fmt: skip

    def memory_report(self) -> Memory:
        """The resident programs' planned arenas, from their memory plans. The emulator runs
        the Python runtime, so it has no method-allocator, stack or image figure to give."""
        figures = dict.fromkeys((f.name for f in fields(Memory)), 0)
        flags = MemoryFlag.NONE
        for target, prefix, flag in ((Target.PROGRAM, "program", MemoryFlag.PROGRAM),
                                     (Target.TRAINING, "training", MemoryFlag.TRAINING)):  # fmt: skip
            loaded = self.programs.program(target)
            if loaded is not None:
                figures[f"{prefix}_planned"] = sum(loaded.arenas)
                flags |= flag
        figures["flags"] = int(flags)
        return Memory(**figures)

    # -- power ------------------------------------------------------------------------------

    def power_on(self) -> None:
        """Boot: load the committed programs and adapter from flash (RAM starts empty)."""
        self.programs.loaded.clear()
        self.programs.initial = self.programs.committed = None
        for target in (Target.PROGRAM, Target.TRAINING):
            data = self.flash.active(target)
            if data is None:
                continue
            try:  # checked at commit; a boot only loads it
                self.programs.activate(target, self.programs.load(target, data, dry_run=False))
            except Exception as exc:  # a program that no longer loads: boot without it
                log.error("the committed %s program does not load: %s", target.name, exc)
        blob = self.flash.active(Target.ADAPTER)
        if blob is not None and Target.TRAINING in self.programs.loaded:
            self.programs.committed = self.programs.check_adapter(blob)
        super().power_on()  # RAM state; resets the adapter state from the above

    def reboot(self) -> None:
        """Power cycle: RAM state is lost, flash kept; deaf while it boots."""
        self.reboots += 1
        log.info("reboot %d (boot %d ms)", self.reboots, self.faults.boot_ms)
        time.sleep(self.faults.boot_ms / 1000)
        super().reboot()
        discard = getattr(self.transport, "discard_input", None)
        if discard is not None:
            discard()

    def set_faults(self, faults: Faults) -> None:
        self.faults = faults
        self._reset_fired = False
        self._power = random.Random(faults.seed)
        line = getattr(self.transport, "line", None)
        if line is not None:
            line.set(faults)

    def handle(self, item: Any) -> list[bytes]:
        """The per-request power fault: before the request runs, or after (answer lost)."""
        if (not isinstance(item, Frame) or item.msg_type & 0x80 or not self.faults.reboot
                or item.msg_type == SET_FAULTS):  # fmt: skip
            return super().handle(item)
        if self._power.random() >= self.faults.reboot:
            return super().handle(item)
        if self._power.random() < 0.5:
            log.info("power fault before %#04x seq %d", item.msg_type, item.seq)
        else:
            super().handle(item)
            log.info("power fault after %#04x seq %d ran", item.msg_type, item.seq)
        self._after = self.reboot
        return []

    # -- hooks of the fake's state machine ----------------------------------------------------

    def _on_setfaults(self, msg: SetFaults, seq: int) -> list[tuple[Message, int]]:
        try:
            faults = msg.to_faults()
        except ValueError as exc:
            raise Refuse(E.BAD_ARGUMENT, 0, str(exc)) from exc
        # The ACK travels on the cleaner line: new faults start after it, a clean line before.
        if faults.line_faults:
            self._after = lambda: self.set_faults(faults)
        else:
            self.set_faults(faults)
        return [(Ack(), seq)]

    def reset_adapter(self) -> None:
        self.programs.reset_state()
        self.step = 0

    def adapter_blob(self) -> bytes | None:
        return self.programs.adapter_blob()

    def check_upload(self, target: int, size: int) -> None:
        if target not in tuple(Target):
            raise Refuse(E.BAD_ARGUMENT, target, "unknown upload target")
        if target == Target.INPUT:
            limit = max((raw_size(p.input_shape) for p in self.programs.loaded.values()), default=0)
            if not limit:
                raise Refuse(E.NOT_READY, 0, "upload a program before staging an input")
        else:
            stored = sum(len(b) for t, b in self.active.items() if t != target)
            limit = max(self.flash_bytes - stored, 0)
        if size > limit:
            raise Refuse(E.TOO_LARGE, limit, f"{size} B do not fit: {limit} B free")

    def _on_upload_chunk(self, msg: Message, seq: int) -> list[tuple[Message, int]]:
        replies = super()._on_upload_chunk(msg, seq)
        s, f = self.flash.staged, self.faults
        if (not f.reset_at or self._reset_fired or s is None or s.target not in FLASH_TARGETS
                or len(s.data) < f.reset_at * s.size):  # fmt: skip
            return replies
        self._reset_fired = True
        # The cut lands while the chunk is being written: half of it reaches flash.
        self.flash.stage_truncate(len(s.data) - len(msg.data) // 2)
        self._after = self.reboot
        return []

    def activate(self, target: int, data: bytes, outcome: dict) -> None:
        """Check, load, write flash, switch: the old program runs until the last step."""
        from edgeadapt.export.errors import ProgramFileError

        if target == Target.ADAPTER:
            try:
                state = self.programs.check_adapter(data)
            except (MessageError, ValueError) as exc:
                raise Refuse(E.BAD_ARGUMENT, 0, str(exc)) from exc
            self.flash.activate({target: data}, outcome)
            self.programs.set_adapter(state)
            self.step = 0
            return
        self.progress(_load_estimate(target, data))
        try:
            loaded = self.programs.load(target, data)
        except WrongRole as exc:
            raise Refuse(E.WRONG_ROLE, int(exc.fits), str(exc)) from exc
        except Budget as exc:
            raise Refuse(E.DOES_NOT_FIT, min(exc.missing, 0xFFFFFFFF), str(exc)) from exc
        except (ProgramFileError, RuntimeError, ValueError) as exc:
            raise Refuse(E.INVALID_PROGRAM, 0, f"{type(exc).__name__}: {exc}") from exc
        changes: dict[int, bytes | None] = {target: data}
        committed = None
        if target == Target.TRAINING:  # the adapter stays if it fits the new program
            from .programs import program_parameters

            blob = self.flash.active(Target.ADAPTER)
            try:
                if blob is not None:
                    committed = self.programs.check_adapter(blob, program_parameters(data))
            except (MessageError, ValueError):
                changes[Target.ADAPTER] = None
        self.flash.activate(changes, outcome)  # the switch, atomic in flash
        self.programs.activate(target, loaded, committed)
        if target == Target.TRAINING:
            self.step = 0

    # -- running ----------------------------------------------------------------------------

    def _program(self, target: int):
        loaded = self.programs.program(target)
        if loaded is None:
            what = "a training program" if target == Target.TRAINING else "an inference program"
            raise Refuse(E.NOT_READY, 0, f"upload {what} first")
        return loaded

    def _tensor(self, data: bytes, shape: tuple[int, ...]) -> torch.Tensor:
        try:
            return decode_input(self._data(data), shape)
        except MessageError as exc:
            raise Refuse(E.BAD_ARGUMENT, raw_size(shape), str(exc)) from exc

    def _on_infer(self, msg: Message, seq: int) -> list[tuple[Message, int]]:
        loaded = self._program(Target.PROGRAM)
        y = self._infer(self._tensor(msg.data, loaded.input_shape))
        return [(InferResult(msg.frame_id, self._out(y, InferResult)), seq)]

    def _on_adapt(self, msg: Message, seq: int) -> list[tuple[Message, int]]:
        if self.stream_open:
            raise Refuse(E.BUSY, 0, "a stream is open: STREAM_STOP before ADAPT")
        loaded = self._program(Target.TRAINING)
        logits, loss = self._step(self._tensor(msg.data, loaded.input_shape))
        out = self._out(logits, AdaptResult)
        return [(AdaptResult(msg.frame_id, msg.request_id, self.step, loss, out), seq)]

    def _infer(self, x: torch.Tensor) -> torch.Tensor:
        self._announce(Target.PROGRAM)
        self.counts["infer_count"] += 1
        start = time.perf_counter()
        try:
            y = self.programs.run_inference(x)
        except Exception as exc:  # the program failed, not the protocol: say so
            raise Refuse(E.EXECUTION_FAILED, 0, f"{type(exc).__name__}: {exc}") from exc
        self.programs.timed(Target.PROGRAM, time.perf_counter() - start)
        return y

    def _step(self, x: torch.Tensor) -> tuple[torch.Tensor, float]:
        self._announce(Target.TRAINING)
        start = time.perf_counter()
        try:
            logits, loss, _kept = self.programs.run_step(x)
        except Exception as exc:
            raise Refuse(E.EXECUTION_FAILED, 0, f"{type(exc).__name__}: {exc}") from exc
        self.programs.timed(Target.TRAINING, time.perf_counter() - start)
        self.step += 1
        self.counts["adapt_steps"] += 1
        return logits, loss

    def _announce(self, target: int) -> None:
        """IN_PROGRESS before a run that holds the interpreter longer than a keep-alive
        period (the runtime does not let the keep-alive thread in meanwhile). A program
        loaded at boot has not been timed (no dry run): its first run announces the
        commit's generous estimate."""
        loaded = self.programs.loaded.get(target)
        if loaded is None:
            return
        seconds = loaded.seconds or _load_estimate(target, loaded.data)
        if self.keepalive_ms and seconds * 1000 > self.keepalive_ms / 2:
            self.progress(2 * seconds + 0.1)

    def _out(self, y: torch.Tensor, reply: type[Message]) -> bytes:
        data = encode_output(y)
        limit = self.negotiated - ENVELOPE.size - reply.LAYOUT.size
        if len(data) > limit:
            raise Refuse(E.TOO_LARGE, limit, f"output of {len(data)} B exceeds a frame")
        return data

    # -- streams: frames are samples; the device runs a program batch at a time -------------

    def _on_stream_start(self, msg: Message, seq: int) -> list[tuple[Message, int]]:
        if self.stream_open:
            raise Refuse(E.BUSY, len(self._stream[1]), "a stream is open: STREAM_STOP first")
        loaded = self._program(Target.TRAINING if msg.adapt else Target.PROGRAM)
        if msg.window < loaded.batch:
            raise Refuse(E.BAD_ARGUMENT, loaded.batch,
                         f"window must be at least the program's batch of {loaded.batch}")  # fmt: skip
        self._credits = min(msg.window, max(self.max_window, loaded.batch))
        self._stream = (msg.adapt, [])
        self.stream_batch = loaded.batch
        return [(StreamCredit(self._credits), seq)]

    def _on_stream_frame(self, msg: Message, seq: int) -> list[tuple[Message, int]]:
        if self._stream is None:
            raise Refuse(E.NOT_READY, 0, "no stream open")
        if self._credits == 0:
            raise Refuse(E.NO_CREDIT, 0, "frame sent without credit")
        loaded = self._program(Target.TRAINING if self._stream[0] else Target.PROGRAM)
        if not msg.data:
            raise Refuse(E.BAD_ARGUMENT, 0, "a stream frame needs data")
        sample = self._tensor(msg.data, (1, *loaded.input_shape[1:]))  # refused: no credit
        self._credits -= 1
        self._stream[1].append((seq, msg.frame_id, sample))
        return self.flush_stream() if len(self._stream[1]) >= self.stream_batch else []

    def flush_stream(self) -> list[tuple[Message, int]]:
        """Run the queued samples as one batch: a training step when adapting and the batch
        is full; otherwise (a short last batch) a prediction by the inference program,
        padded by repeating samples. A batch that cannot run answers each frame ERROR."""
        adapt, queue = self._stream  # type: ignore[misc]
        if not queue:
            return []
        n = len(queue)
        self._credits += n
        try:
            loaded = self._program(Target.TRAINING if adapt else Target.PROGRAM)
            full = n == loaded.batch
            x = torch.cat([queue[i % n][2] for i in range(loaded.batch)])
            if adapt and full:
                logits, _ = self._step(x)
            else:
                self._program(Target.PROGRAM)  # a short batch is predicted, never adapted on
                logits = self._infer(x)
            rows = [self._out(logits[i : i + 1], StreamResult) for i in range(n)]
        except Refuse as refusal:
            out = [(refusal.reply, s) for s, _, _ in queue]
        else:
            out = [(StreamResult(fid, 1, int(adapt and full), rows[i]), s)
                   for i, (s, fid, _) in enumerate(queue)]  # fmt: skip
        queue.clear()
        return out


def _load_estimate(target: int, data: bytes) -> float:
    """Seconds a commit may take before its first run was measured: loading, plus a dry run
    (a training step costs about four times an inference); generous on purpose."""
    per_mb = 8.0 if target == Target.TRAINING else 2.0
    return 1.0 + per_mb * len(data) / 1e6
