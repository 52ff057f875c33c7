"""Messages that move data: UPLOAD, INFER, ADAPT, STREAM and GET_ADAPTER, with their replies."""

from __future__ import annotations

from dataclasses import dataclass

from .message_base import Message
from .message_base import layout as _s
from .protocol import MsgType

__all__ = [
    "Adapt",
    "AdaptResult",
    "AdapterChunk",
    "GetAdapter",
    "GetUpload",
    "Infer",
    "InferResult",
    "StreamCredit",
    "StreamFrame",
    "StreamResult",
    "StreamStart",
    "StreamStop",
    "UploadBegin",
    "UploadChunk",
    "UploadCommit",
    "UploadOutcome",
    "UploadStatus",
]


@dataclass(frozen=True)
class UploadBegin(Message):
    """Start or resume an upload of `size` bytes whose CRC-32 is `crc`."""

    TYPE = MsgType.UPLOAD_BEGIN
    LAYOUT = _s("BII")
    target: int
    size: int
    crc: int


@dataclass(frozen=True)
class UploadChunk(Message):
    TYPE = MsgType.UPLOAD_CHUNK
    LAYOUT = _s("I")
    TAIL = "bytes"
    offset: int
    data: bytes


@dataclass(frozen=True)
class UploadCommit(Message):
    """Activate the staged upload if it is complete and its CRC-32 equals `crc`."""

    TYPE = MsgType.UPLOAD_COMMIT
    LAYOUT = _s("BII")
    target: int
    crc: int
    request_id: int = 0  # idempotency key (0: none); UPLOAD_OUTCOME reports it


@dataclass(frozen=True)
class UploadStatus(Message):
    """Reply to UPLOAD_BEGIN / UPLOAD_CHUNK: the offset the device expects next."""

    TYPE = MsgType.UPLOAD_STATUS
    LAYOUT = _s("BII")
    target: int
    next_offset: int
    size: int


@dataclass(frozen=True)
class GetUpload(Message):
    """Ask what became of the last upload (answered UPLOAD_OUTCOME)."""

    TYPE = MsgType.GET_UPLOAD


@dataclass(frozen=True)
class UploadOutcome(Message):
    """The last upload, as the device's flash remembers it (survives reboots)."""

    TYPE = MsgType.UPLOAD_OUTCOME
    LAYOUT = _s("BBIIIIHI")
    state: int  # UploadState
    target: int
    size: int
    crc: int
    next_offset: int  # bytes staged (STAGING) or size (COMMITTED)
    request_id: int  # of the commit that settled it (COMMITTED, REFUSED), else 0
    code: int  # ErrorCode of a refusal, else 0
    arg: int  # the refusal's arg


@dataclass(frozen=True)
class Infer(Message):
    TYPE = MsgType.INFER
    LAYOUT = _s("I")
    TAIL = "bytes"
    frame_id: int
    data: bytes


@dataclass(frozen=True)
class InferResult(Message):
    TYPE = MsgType.INFER_RESULT
    LAYOUT = _s("I")
    TAIL = "bytes"
    frame_id: int
    output: bytes


@dataclass(frozen=True)
class Adapt(Message):
    """One adaptation step on `data` (the device predicts and updates its adapter)."""

    TYPE = MsgType.ADAPT
    LAYOUT = _s("II")
    TAIL = "bytes"
    frame_id: int
    request_id: int  # idempotency key: a repeat with the same key is answered, not re-run
    data: bytes


@dataclass(frozen=True)
class AdaptResult(Message):
    TYPE = MsgType.ADAPT_RESULT
    LAYOUT = _s("IIIf")
    TAIL = "bytes"
    frame_id: int
    request_id: int  # echoed, so the host knows whose result this is
    step: int  # adaptation steps taken since the adapter was last set or reset
    loss: float
    output: bytes


@dataclass(frozen=True)
class StreamStart(Message):
    TYPE = MsgType.STREAM_START
    LAYOUT = _s("HB")
    window: int  # credits the host asks for
    adapt: int = 0  # 1: adapt on every frame


@dataclass(frozen=True)
class StreamCredit(Message):
    TYPE = MsgType.STREAM_CREDIT
    LAYOUT = _s("H")
    credits: int  # initial window granted (may be less than asked, never 0)


@dataclass(frozen=True)
class StreamFrame(Message):
    """Consumes one credit; answered later by a STREAM_RESULT with the same seq."""

    TYPE = MsgType.STREAM_FRAME
    LAYOUT = _s("I")
    TAIL = "bytes"
    frame_id: int
    data: bytes


@dataclass(frozen=True)
class StreamResult(Message):
    TYPE = MsgType.STREAM_RESULT
    LAYOUT = _s("IHB")
    TAIL = "bytes"
    frame_id: int
    credit: int  # credits returned to the host with this result (normally 1)
    adapted: int
    output: bytes


@dataclass(frozen=True)
class StreamStop(Message):
    """Device sends every pending STREAM_RESULT, then ACK."""

    TYPE = MsgType.STREAM_STOP


@dataclass(frozen=True)
class GetAdapter(Message):
    TYPE = MsgType.GET_ADAPTER
    LAYOUT = _s("IH")
    offset: int
    max_len: int


@dataclass(frozen=True)
class AdapterChunk(Message):
    TYPE = MsgType.ADAPTER_CHUNK
    LAYOUT = _s("III")
    TAIL = "bytes"
    total_size: int
    crc: int  # CRC-32 of the whole blob, so the host can check what it reassembled
    offset: int
    data: bytes
