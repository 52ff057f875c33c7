"""Frames: header + payload + CRC-32, COBS-encoded, between 0x00 delimiters.

Pure functions and one small state machine, no I/O: `encode_frame` builds the bytes for the
wire, `decode_frame` checks one delimited chunk, and `FrameDecoder` is fed whatever the port
returned and hands back frames and errors in order. A corrupt or oversize frame costs only
itself: the decoder drops it and starts afresh at the next 0x00.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from . import cobs
from .errors import CrcError, FramingError, OversizeFrameError
from .protocol import (
    CRC_SIZE,
    DEFAULT_MAX_PAYLOAD,
    HEADER_SIZE,
    MAGIC,
    PROTOCOL_MAX_PAYLOAD,
    PROTOCOL_VERSION,
    max_encoded_size,
)

__all__ = ["HEADER", "Frame", "FrameDecoder", "decode_frame", "encode_frame"]

HEADER = struct.Struct("<BBBBHH")  # magic, version, type, flags, seq, payload_len
_CRC = struct.Struct("<I")
DELIMITER = b"\x00"


@dataclass(frozen=True)
class Frame:
    """One intact frame as received; `payload` is still the raw message bytes."""

    msg_type: int
    seq: int
    payload: bytes = b""
    flags: int = 0
    version: int = PROTOCOL_VERSION


def encode_frame(
    msg_type: int,
    payload: bytes = b"",
    *,
    seq: int,
    flags: int = 0,
    version: int = PROTOCOL_VERSION,
    max_payload: int = DEFAULT_MAX_PAYLOAD,
) -> bytes:
    """Bytes to write for one frame: 0x00, COBS(header, payload, CRC-32), 0x00.

    The leading 0x00 ends whatever half frame a receiver may still hold from an interrupted
    transmission, so that fragment cannot swallow this frame; receivers skip empty frames.
    """
    if len(payload) > max_payload:
        raise OversizeFrameError(
            f"payload of {len(payload)} bytes exceeds the maximum of {max_payload}; "
            "split it (UPLOAD and GET_ADAPTER are chunked for this)"
        )
    try:
        header = HEADER.pack(MAGIC, version, msg_type, flags, seq, len(payload))
    except struct.error as exc:
        raise FramingError(f"header field out of range: {exc}", reason="length") from exc
    body = header + payload
    return DELIMITER + cobs.encode(body + _CRC.pack(zlib.crc32(body))) + DELIMITER


def decode_frame(encoded: bytes, *, max_payload: int = PROTOCOL_MAX_PAYLOAD) -> Frame:
    """Check and decode one frame (the bytes between two delimiters, delimiters excluded).

    Checks run in a fixed order shared with the C codec, so both report the same `reason`:
    oversize (before decoding anything), cobs, short, crc, magic, length, oversize.
    """
    if len(encoded) > max_encoded_size(max_payload):
        raise OversizeFrameError(f"frame of {len(encoded)} encoded bytes exceeds the maximum")
    raw = cobs.decode(encoded)
    if len(raw) < HEADER_SIZE + CRC_SIZE:
        raise FramingError(f"frame of {len(raw)} bytes is shorter than a header", reason="short")
    body, (crc,) = raw[:-CRC_SIZE], _CRC.unpack(raw[-CRC_SIZE:])
    if zlib.crc32(body) != crc:
        raise CrcError(f"CRC mismatch: frame says {crc:#010x}, bytes give {zlib.crc32(body):#010x}")
    magic, version, msg_type, flags, seq, length = HEADER.unpack_from(body)
    if magic != MAGIC:
        raise FramingError(f"bad magic {magic:#04x} (expected {MAGIC:#04x})", reason="magic")
    if length != len(body) - HEADER_SIZE:
        raise FramingError(
            f"length field says {length} bytes, frame holds {len(body) - HEADER_SIZE}",
            reason="length",
        )
    if length > max_payload:
        raise OversizeFrameError(f"payload of {length} bytes exceeds the maximum {max_payload}")
    return Frame(msg_type, seq, bytes(body[HEADER_SIZE:]), flags, version)


class FrameDecoder:
    """Turn an arbitrary byte stream into frames and `FramingError` events, in arrival order.

    Memory is bounded: at most `max_encoded_size(max_payload)` bytes are held; past that the
    frame is reported as `OversizeFrameError` once and the rest of it skipped up to the next
    delimiter. `max_payload` may be lowered after HELLO.
    """

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self._buf = bytearray()
        self._skipping = False  # inside an oversize frame, waiting for its delimiter
        self.frames = 0
        self.errors = 0

    @property
    def buffered(self) -> int:
        """Bytes held of a frame not yet delimited."""
        return len(self._buf)

    def reset(self) -> None:
        """Forget any partial frame (after reopening the port, say)."""
        self._buf.clear()
        self._skipping = False

    def feed(self, data: bytes) -> list[Frame | FramingError]:
        """Consume `data`; return the frames and errors it completed, in order."""
        out: list[Frame | FramingError] = []
        limit = max_encoded_size(self.max_payload)
        start = 0
        while start <= len(data):
            end = data.find(0, start)
            piece = data[start:] if end < 0 else data[start:end]
            if not self._skipping:
                if len(self._buf) + len(piece) > limit:
                    out.append(OversizeFrameError(f"frame longer than {limit} encoded bytes"))
                    self._buf.clear()
                    self._skipping = True
                else:
                    self._buf += piece
            if end < 0:
                break
            if not self._skipping and self._buf:  # empty frames (doubled 0x00) are padding
                out.append(self._decode(bytes(self._buf)))
            self._buf.clear()
            self._skipping = False
            start = end + 1
        self.errors += sum(isinstance(item, FramingError) for item in out)
        self.frames += sum(isinstance(item, Frame) for item in out)
        return out

    def _decode(self, encoded: bytes) -> Frame | FramingError:
        try:
            return decode_frame(encoded, max_payload=self.max_payload)
        except FramingError as exc:  # an event for the caller, not a crash of the reader
            return exc
