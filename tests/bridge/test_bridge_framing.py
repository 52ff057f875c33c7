"""COBS and framing: round trips, resync after garbage, oversize, CRC errors as events."""

from __future__ import annotations

import random
import zlib

import pytest

from edgeadapt.firmware_bridge import cobs
from edgeadapt.firmware_bridge.errors import CrcError, FramingError, OversizeFrameError
from edgeadapt.firmware_bridge.framing import Frame, FrameDecoder, decode_frame, encode_frame
from edgeadapt.firmware_bridge.protocol import PROTOCOL_VERSION, max_encoded_size

# Cheshire & Baker / Wikipedia examples, including the 254-byte-block edge cases.
COBS_CASES = [
    (b"", b"\x01"),
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x00\x11\x00", b"\x01\x02\x11\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255))),
    (bytes(range(255)), b"\x01\xff" + bytes(range(1, 255))),
    (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),
    (bytes(range(2, 256)) + b"\x00", b"\xff" + bytes(range(2, 256)) + b"\x01\x01"),
]


@pytest.mark.parametrize(("raw", "encoded"), COBS_CASES)
def test_cobs_known_vectors(raw: bytes, encoded: bytes) -> None:
    assert cobs.encode(raw) == encoded
    assert cobs.decode(encoded) == raw


def test_cobs_random_round_trip_and_bound() -> None:
    rng = random.Random(1)
    for _ in range(500):
        raw = bytes(rng.choice((0, rng.randrange(256))) for _ in range(rng.randrange(1200)))
        enc = cobs.encode(raw)
        assert 0 not in enc
        assert len(enc) <= len(raw) + len(raw) // 254 + 1
        assert cobs.decode(enc) == raw


@pytest.mark.parametrize("bad", [b"\x00", b"\x05\x11\x22", b"\x03\x11\x00\x22"])
def test_cobs_rejects_malformed(bad: bytes) -> None:
    with pytest.raises(FramingError) as info:
        cobs.decode(bad)
    assert info.value.reason == "cobs"


def test_frame_round_trip() -> None:
    wire = encode_frame(0x85, b"logits\x00\x01", seq=513, flags=1)
    assert wire[0] == 0 and wire[-1] == 0 and 0 not in wire[1:-1]
    assert decode_frame(wire[1:-1]) == Frame(0x85, 513, b"logits\x00\x01", 1, PROTOCOL_VERSION)


def test_encode_refuses_oversize_payload() -> None:
    with pytest.raises(OversizeFrameError):
        encode_frame(0x03, bytes(65), seq=1, max_payload=64)


def test_crc_error_is_detected() -> None:
    raw = bytearray(cobs.decode(encode_frame(0x05, b"hello", seq=1)[1:-1]))
    raw[9] ^= 0x01
    with pytest.raises(CrcError):
        decode_frame(cobs.encode(bytes(raw)))


def test_decoder_resyncs_after_garbage() -> None:
    a = encode_frame(0x81, b"first", seq=1)
    b = encode_frame(0x82, b"second", seq=2)
    garbage = b"\x13\x37 noise \xff" + a[:7]  # includes a cut-off frame
    items = FrameDecoder().feed(garbage + b + b"\x00\x00" + a)
    frames = [i for i in items if isinstance(i, Frame)]
    errors = [i for i in items if isinstance(i, FramingError)]
    assert [f.payload for f in frames] == [b"second", b"first"]
    assert errors  # the garbage was reported, not silently dropped, and did not crash the reader


def test_decoder_handles_any_chunking() -> None:
    frames = [encode_frame(0x85, bytes([i]) * (i * 37), seq=i) for i in range(1, 12)]
    stream = b"".join(frames)
    rng = random.Random(2)
    dec = FrameDecoder()
    got = []
    pos = 0
    while pos < len(stream):
        step = rng.randrange(1, 50)
        got += dec.feed(stream[pos : pos + step])
        pos += step
    assert [f.seq for f in got] == list(range(1, 12))
    assert dec.buffered == 0


def test_oversize_frame_is_dropped_without_buffering() -> None:
    dec = FrameDecoder(max_payload=64)
    limit = max_encoded_size(64)
    events = dec.feed(b"\x42" * 10_000)  # no delimiter at all
    assert len(events) == 1 and isinstance(events[0], OversizeFrameError)
    assert dec.buffered <= limit
    assert dec.feed(b"\x42" * 10_000) == []  # still skipping; reported once
    good = encode_frame(0x81, b"ok", seq=3, max_payload=64)
    assert [f.payload for f in dec.feed(good)] == [b"ok"]


def test_length_field_and_magic_are_checked() -> None:
    import struct

    body = struct.pack("<BBBBHH", 0xEA, 1, 5, 0, 1, 4) + b"abc"  # says 4, has 3
    with pytest.raises(FramingError) as info:
        decode_frame(cobs.encode(body + struct.pack("<I", zlib.crc32(body))))
    assert info.value.reason == "length"
    body = struct.pack("<BBBBHH", 0x00, 1, 5, 0, 1, 3) + b"abc"
    with pytest.raises(FramingError) as info:
        decode_frame(cobs.encode(body + struct.pack("<I", zlib.crc32(body))))
    assert info.value.reason == "magic"
