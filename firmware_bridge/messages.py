"""One frozen dataclass per message of protocol v2, and the type byte → class table.

Tables of every layout are in docs/bridge-protocol.md. The classes live in two private
modules (session/housekeeping, data movement) to keep files small; import them from here.
"""

from __future__ import annotations

from ._msg_control import (
    Ack,
    DeviceInfo,
    ErrorReport,
    GetMemory,
    GetStats,
    Hello,
    InProgress,
    Memory,
    Nak,
    Reset,
    Stats,
)
from ._msg_data import (
    Adapt,
    AdapterChunk,
    AdaptResult,
    GetAdapter,
    GetUpload,
    Infer,
    InferResult,
    StreamCredit,
    StreamFrame,
    StreamResult,
    StreamStart,
    StreamStop,
    UploadBegin,
    UploadChunk,
    UploadCommit,
    UploadOutcome,
    UploadStatus,
)
from .errors import MessageError
from .message_base import Message

__all__ = [
    "MESSAGE_TYPES",
    "Ack",
    "Adapt",
    "AdaptResult",
    "AdapterChunk",
    "DeviceInfo",
    "ErrorReport",
    "GetAdapter",
    "GetMemory",
    "GetStats",
    "GetUpload",
    "Hello",
    "InProgress",
    "Infer",
    "InferResult",
    "Memory",
    "Message",
    "Nak",
    "Reset",
    "Stats",
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
    "unpack_message",
]

MESSAGE_TYPES: dict[int, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Hello,
        DeviceInfo,
        UploadBegin,
        UploadChunk,
        UploadCommit,
        UploadStatus,
        Infer,
        InferResult,
        Adapt,
        AdaptResult,
        StreamStart,
        StreamCredit,
        StreamFrame,
        StreamResult,
        StreamStop,
        GetAdapter,
        AdapterChunk,
        GetStats,
        Stats,
        GetMemory,
        Memory,
        Reset,
        GetUpload,
        UploadOutcome,
        Ack,
        Nak,
        InProgress,
        ErrorReport,
    )
}


def unpack_message(msg_type: int, payload: bytes) -> Message:
    """Decode a payload by its type byte; unknown types are a `MessageError` too."""
    cls = MESSAGE_TYPES.get(msg_type)
    if cls is None:
        raise MessageError(f"unknown message type {msg_type:#04x}")
    return cls.unpack(payload)
