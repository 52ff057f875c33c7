"""Wire constants of the edgeadapt bridge protocol, version 2 (docs/bridge-protocol.md).

Only numbers live here, so every other layer (and the C codec's generator) can import them
without pulling in anything else. Changing any value is a protocol version bump.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

__all__ = [
    "CRC_SIZE",
    "DEFAULT_MAX_PAYLOAD",
    "ENVELOPE_SIZE",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_PROFILE_NAME",
    "MIN_MAX_PAYLOAD",
    "NON_IDEMPOTENT",
    "PROTOCOL_MAX_PAYLOAD",
    "PROTOCOL_VERSION",
    "Capability",
    "ErrorCode",
    "Flag",
    "MemoryFlag",
    "MsgType",
    "NakReason",
    "ResetKind",
    "Target",
    "UploadState",
    "max_encoded_size",
]

MAGIC = 0xEA  # first header byte; a cheap "is this ours at all" check before the CRC
PROTOCOL_VERSION = 2  # second header byte; after HELLO both sides send the negotiated one
HEADER_SIZE = 8  # magic u8, version u8, type u8, flags u8, seq u16, payload_len u16
CRC_SIZE = 4  # CRC-32 (IEEE, as zlib.crc32) over header + payload, little-endian
DEFAULT_MAX_PAYLOAD = 4096  # before HELLO, and the most a peer may ever ask for
PROTOCOL_MAX_PAYLOAD = 4096
MIN_MAX_PAYLOAD = 64  # below this DEVICE_INFO and ERROR would not fit; HELLO rejects it
MAX_PROFILE_NAME = 32  # bytes of UTF-8 in DEVICE_INFO
# Every payload but HELLO's and DEVICE_INFO's starts with the session (u32) it belongs to.
ENVELOPE_SIZE = 4


def max_encoded_size(max_payload: int) -> int:
    """Bytes a COBS-encoded frame of at most `max_payload` payload bytes may take (no delimiters).

    COBS adds one byte, plus one per 254 bytes of data; receivers use this bound to drop an
    oversize frame before buffering it.
    """
    raw = HEADER_SIZE + max_payload + CRC_SIZE
    return raw + raw // 254 + 1


class MsgType(IntEnum):
    """Message type byte. Requests (host→device) have the top bit clear, replies set."""

    HELLO = 0x01
    UPLOAD_BEGIN = 0x02
    UPLOAD_CHUNK = 0x03
    UPLOAD_COMMIT = 0x04
    INFER = 0x05
    ADAPT = 0x06
    STREAM_START = 0x07
    STREAM_FRAME = 0x08
    STREAM_STOP = 0x09
    GET_ADAPTER = 0x0A
    GET_STATS = 0x0B
    RESET = 0x0C
    GET_UPLOAD = 0x0D
    GET_MEMORY = 0x0E
    DEVICE_INFO = 0x81
    UPLOAD_STATUS = 0x82
    INFER_RESULT = 0x85
    ADAPT_RESULT = 0x86
    STREAM_CREDIT = 0x87
    STREAM_RESULT = 0x88
    ADAPTER_CHUNK = 0x8A
    STATS = 0x8B
    UPLOAD_OUTCOME = 0x8D
    MEMORY = 0x8E
    ACK = 0xF0
    NAK = 0xF1
    IN_PROGRESS = 0xF2  # keep-alive: the request is being worked on; its answer follows
    ERROR = 0xFF


# Requests that change the device's state in a way a repeat would change again: they carry
# a `request_id` (the idempotency key) the device remembers with their answer.
NON_IDEMPOTENT = frozenset({MsgType.ADAPT, MsgType.UPLOAD_COMMIT, MsgType.RESET})


class Flag(IntFlag):
    """Header flag bits; unknown bits are sent as 0 and ignored on receipt."""

    NONE = 0
    RETRY = 0x01  # this frame repeats, byte for byte, an earlier one with the same seq


class Capability(IntFlag):
    """What a device can do, reported in DEVICE_INFO (and what a host wants, in HELLO)."""

    NONE = 0
    UPLOAD = 0x01
    INFER = 0x02
    ADAPT = 0x04
    STREAM = 0x08
    ADAPTER_IO = 0x10  # GET_ADAPTER and UPLOAD with target ADAPTER
    MEMORY_REPORT = 0x20  # GET_MEMORY: what the loaded programs and the firmware take


class MemoryFlag(IntFlag):
    """MEMORY's `flags`: which figures the device filled in (the others are 0)."""

    NONE = 0
    PROGRAM = 0x01  # an inference program is resident: program_planned
    TRAINING = 0x02  # a training program is resident: training_planned
    RUNTIME = 0x04  # method allocator and temp figures come from the C++ runtime's allocators
    STACK = 0x08  # stack_high_water / stack_size measured (a painted stack)
    IMAGE = 0x10  # text / data / bss from the firmware's own linker symbols


class Target(IntEnum):
    """What an UPLOAD writes: a program, the meta-network (adapter) weights, or an input."""

    PROGRAM = 0
    ADAPTER = 1
    TRAINING = 2  # the adaptation-step (training) program that ADAPT runs
    INPUT = 3  # one program input too big for a frame; INFER/ADAPT with no data run on it


class ResetKind(IntEnum):
    """RESET argument."""

    ADAPTER = 0  # adapter weights back to the ones last uploaded; the program stays
    SESSION = 1  # drop staged uploads, streams and the retransmission cache
    REBOOT = 2  # restart the firmware; the ACK is sent before rebooting


class NakReason(IntEnum):
    """Why a receiver could not read a frame (link level: the sender should just resend)."""

    CRC = 1
    FRAMING = 2  # COBS, magic or length field wrong
    OVERSIZE = 3


class ErrorCode(IntEnum):
    """ERROR codes: the frame arrived intact but the request cannot be served; never retried."""

    UNKNOWN_MESSAGE = 1
    MALFORMED = 2
    UNSUPPORTED_VERSION = 3
    NOT_READY = 4  # no program (or no callable) to run
    BUSY = 5
    UPLOAD_NOT_STARTED = 6
    UPLOAD_INCOMPLETE = 7
    CRC_MISMATCH = 8
    TOO_LARGE = 9
    NO_CREDIT = 10
    EXECUTION_FAILED = 11
    BAD_ARGUMENT = 12
    NO_ADAPTER = 13
    INTERNAL = 14
    DOES_NOT_FIT = 15  # the program's memory plan exceeds the device's RAM or flash
    INVALID_PROGRAM = 16  # the committed bytes are not a program the runtime can load
    NO_SESSION = 17  # the request names another session (none since boot, or a newer HELLO)
    WRONG_ROLE = 18  # an inference program sent as the training program, or the reverse
    ID_REUSED = 19  # a request_id the device remembers for a different request


class UploadState(IntEnum):
    """What became of the last upload (UPLOAD_OUTCOME), kept in flash across reboots."""

    NONE = 0  # no upload since the flash was erased
    STAGING = 1  # begun; `next_offset` bytes staged, not committed
    COMMITTED = 2  # the commit with `request_id` succeeded: these bytes are active
    REFUSED = 3  # the commit with `request_id` was refused (`code`, `arg`): old ones active
