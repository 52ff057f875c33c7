"""Session and housekeeping messages: HELLO, DEVICE_INFO, STATS, MEMORY, RESET, ACK, NAK,
IN_PROGRESS, ERROR."""

from __future__ import annotations

from dataclasses import dataclass

from .message_base import Message
from .message_base import layout as _s
from .protocol import MAX_PROFILE_NAME, MemoryFlag, MsgType

__all__ = [
    "Ack",
    "DeviceInfo",
    "ErrorReport",
    "GetMemory",
    "GetStats",
    "Hello",
    "InProgress",
    "Memory",
    "Nak",
    "Reset",
    "Stats",
]


@dataclass(frozen=True)
class Hello(Message):
    """Host opens a session: the versions it speaks, its largest payload, what it wants."""

    TYPE = MsgType.HELLO
    LAYOUT = _s("BBHI")
    version_min: int
    version_max: int
    max_payload: int
    capabilities: int = 0


@dataclass(frozen=True)
class DeviceInfo(Message):
    """Reply to HELLO. `version` is first so a host of any version can read it."""

    TYPE = MsgType.DEVICE_INFO
    LAYOUT = _s("BHIIIIIIIIIH")
    TAIL = "text"
    TAIL_MAX = MAX_PROFILE_NAME
    version: int
    max_payload: int  # negotiated: min(host's, device's)
    capabilities: int
    ram_bytes: int
    flash_bytes: int
    program_crc: int  # CRC-32 of the active inference program, 0 when none
    training_crc: int  # CRC-32 of the active training program, 0 when none
    adapter_crc: int  # CRC-32 of the committed adapter blob (last SET_ADAPTER), 0 when none
    adapter_step: int  # ADAPT steps since the adapter was committed or reset
    boot_id: int  # random per boot, never 0: a new value means the device restarted
    session: int  # opened by this HELLO, never 0; every later request names it
    keepalive_ms: int  # a busy device sends IN_PROGRESS at least this often (0: never)
    profile: str = ""


@dataclass(frozen=True)
class GetStats(Message):
    TYPE = MsgType.GET_STATS


@dataclass(frozen=True)
class Stats(Message):
    """Device counters since boot (u32, wrapping)."""

    TYPE = MsgType.STATS
    LAYOUT = _s("9I")
    uptime_ms: int
    frames_rx: int
    frames_tx: int
    crc_errors: int
    framing_errors: int  # COBS, magic, length and oversize
    naks_sent: int
    duplicates: int  # retransmitted requests answered from the cache
    infer_count: int
    adapt_steps: int


@dataclass(frozen=True)
class GetMemory(Message):
    TYPE = MsgType.GET_MEMORY


@dataclass(frozen=True)
class Memory(Message):
    """What the device's memory holds, as the firmware measured it (docs §4 GET_MEMORY).

    Per resident program (`program_*`: the inference program, `training_*`: the adaptation
    step): its planned arenas (the sum of MethodMeta's planned buffer sizes), the bytes its
    method allocator handed out at load (the runtime's tables: values, instructions, kernel
    slots), the largest temp-allocator use any run asked for, and the pools those two came
    from. Then the firmware image and its stack. A figure is valid only where `flags` says
    it was measured; the rest are 0 (a host build has no fixed image; the emulator runs no
    C++ runtime)."""

    TYPE = MsgType.MEMORY
    LAYOUT = _s("16I")
    flags: int  # MemoryFlag
    program_planned: int
    program_method_used: int
    program_method_pool: int
    program_temp_peak: int
    program_temp_pool: int
    training_planned: int
    training_method_used: int
    training_method_pool: int
    training_temp_peak: int
    training_temp_pool: int
    stack_high_water: int  # the deepest the main stack has been since boot
    stack_size: int
    text_bytes: int  # code and read-only data in flash
    data_bytes: int  # initialised RAM (its initial values also take flash)
    bss_bytes: int  # zeroed RAM, the static pools included

    def measured(self, flag: MemoryFlag) -> bool:
        return bool(self.flags & flag)


@dataclass(frozen=True)
class Reset(Message):
    TYPE = MsgType.RESET
    LAYOUT = _s("BI")
    kind: int
    request_id: int = 0  # idempotency key (0: none)


@dataclass(frozen=True)
class Ack(Message):
    """Success with nothing to return (UPLOAD_COMMIT, STREAM_STOP, RESET)."""

    TYPE = MsgType.ACK


@dataclass(frozen=True)
class Nak(Message):
    """Link level: the receiver could not read a frame; the sender should resend."""

    TYPE = MsgType.NAK
    LAYOUT = _s("B")
    reason: int


@dataclass(frozen=True)
class InProgress(Message):
    """Keep-alive, same seq as the request: still working, expect the next frame within
    `estimate_ms` (the device's estimate; the host adds its own timeout to it)."""

    TYPE = MsgType.IN_PROGRESS
    LAYOUT = _s("II")
    elapsed_ms: int  # since the device started on the request
    estimate_ms: int  # until its next frame for this request: another IN_PROGRESS or the answer


@dataclass(frozen=True)
class ErrorReport(Message):
    """ERROR: the request arrived intact but cannot be served. Not retried."""

    TYPE = MsgType.ERROR
    LAYOUT = _s("HI")
    TAIL = "text"
    TAIL_MAX = 128
    code: int
    arg: int = 0
    text: str = ""
