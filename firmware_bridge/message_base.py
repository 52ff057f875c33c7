"""The base of every message: a frozen dataclass over a little-endian `struct` plus a tail,
and the session envelope in front of it on the wire.

A message's fields are, in order, the fixed fields of `LAYOUT` and then (if `TAIL` is set) one
variable-length field that takes the rest of the payload: bytes, or UTF-8 text when
`TAIL == "text"`. Every length is checked against the payload actually received (which the
framing layer has already bounded), so nothing is allocated from an unchecked length field.

On the wire every payload except HELLO's and DEVICE_INFO's (whose first fields are frozen so
that any two versions can read them) is `session u32 | message`: `seal` adds the envelope,
`unseal` checks and removes it.
"""

from __future__ import annotations

import struct
from dataclasses import astuple, dataclass
from typing import ClassVar, TypeVar

from .errors import MessageError
from .protocol import MsgType

__all__ = ["ENVELOPE", "Message", "has_envelope", "layout", "seal", "unseal"]

M = TypeVar("M", bound="Message")


@dataclass(frozen=True)
class Message:
    """Base: `pack()` to payload bytes, `unpack(payload)` back; errors are `MessageError`."""

    TYPE: ClassVar[MsgType]
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<")
    TAIL: ClassVar[str | None] = None  # None, "bytes" or "text"
    TAIL_MAX: ClassVar[int | None] = None  # bound on the tail in bytes; None: the frame's

    def pack(self) -> bytes:
        values = astuple(self)
        fixed = values[:-1] if self.TAIL else values
        try:
            head = self.LAYOUT.pack(*fixed)
        except struct.error as exc:
            raise MessageError(f"{type(self).__name__}: field out of range ({exc})") from exc
        if not self.TAIL:
            return head
        tail = values[-1].encode("utf-8") if self.TAIL == "text" else bytes(values[-1])
        if self.TAIL_MAX is not None and len(tail) > self.TAIL_MAX:
            raise MessageError(
                f"{type(self).__name__}: {len(tail)}-byte tail exceeds {self.TAIL_MAX} bytes"
            )
        return head + tail

    @classmethod
    def unpack(cls: type[M], payload: bytes) -> M:
        size = cls.LAYOUT.size
        if len(payload) < size or (not cls.TAIL and len(payload) != size):
            want = f"at least {size}" if cls.TAIL else str(size)
            raise MessageError(f"{cls.__name__}: payload is {len(payload)} bytes, want {want}")
        fixed = cls.LAYOUT.unpack_from(payload)
        if not cls.TAIL:
            return cls(*fixed)
        tail = bytes(payload[size:])
        if cls.TAIL_MAX is not None and len(tail) > cls.TAIL_MAX:
            raise MessageError(f"{cls.__name__}: tail of {len(tail)} bytes exceeds {cls.TAIL_MAX}")
        if cls.TAIL == "text":
            try:
                return cls(*fixed, tail.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise MessageError(f"{cls.__name__}: text is not UTF-8 ({exc})") from exc
        return cls(*fixed, tail)


def layout(fmt: str) -> struct.Struct:
    """A little-endian, unpadded `struct` layout."""
    return struct.Struct("<" + fmt)


ENVELOPE = layout("I")  # session id, the first field of every enveloped payload
_BARE = (MsgType.HELLO, MsgType.DEVICE_INFO)  # frozen layouts: no envelope


def has_envelope(msg_type: int) -> bool:
    return msg_type not in _BARE


def seal(msg_type: int, session: int, payload: bytes) -> bytes:
    """The payload as sent: the session envelope (where the type has one), then the message."""
    return ENVELOPE.pack(session & 0xFFFFFFFF) + payload if has_envelope(msg_type) else payload


def unseal(msg_type: int, payload: bytes) -> tuple[int | None, bytes]:
    """(session, message bytes) of a received payload; session None for HELLO/DEVICE_INFO."""
    if not has_envelope(msg_type):
        return None, payload
    if len(payload) < ENVELOPE.size:
        raise MessageError(f"payload of {len(payload)} bytes is too short for its session field")
    return ENVELOPE.unpack_from(payload)[0], payload[ENVELOPE.size :]
