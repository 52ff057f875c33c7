"""Seeded fuzzing of the Python decoders: never crash, never a wrong frame, always resync."""

from __future__ import annotations

import random

import pytest

from edgeadapt.firmware_bridge.errors import FramingError, MessageError
from edgeadapt.firmware_bridge.framing import Frame, FrameDecoder, decode_frame, encode_frame
from edgeadapt.firmware_bridge.messages import MESSAGE_TYPES, unpack_message
from edgeadapt.firmware_bridge.protocol import PROTOCOL_VERSION


def _frames(rng: random.Random) -> list[tuple[Frame, bytes]]:
    out = []
    for seq in range(40):
        payload = bytes(rng.choice((0, rng.randrange(256))) for _ in range(rng.randrange(600)))
        frame = Frame(rng.randrange(256), seq, payload, rng.randrange(2), PROTOCOL_VERSION)
        out.append((frame, encode_frame(frame.msg_type, payload, seq=seq, flags=frame.flags)))
    return out


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        pos = rng.randrange(len(buf)) if buf else 0
        op = rng.randrange(4)
        if op == 0 and buf:
            buf[pos] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            buf[pos] = rng.randrange(256)
        elif op == 2:
            del buf[pos:]
        else:
            buf.insert(pos, rng.randrange(256))
    return bytes(buf)


def test_decode_frame_survives_mutations() -> None:
    rng = random.Random(7)
    corpus = _frames(rng)
    outcomes = {"same": 0, "rejected": 0}
    for _ in range(3000):
        frame, wire = rng.choice(corpus)
        mutated = _mutate(rng, wire[1:-1])
        try:
            got = decode_frame(mutated)
        except FramingError:
            outcomes["rejected"] += 1
            continue
        assert got == frame, "a corrupted frame decoded to something else"
        outcomes["same"] += 1
    assert outcomes["rejected"] > 2500


def test_stream_decoder_resyncs_after_any_garbage() -> None:
    rng = random.Random(8)
    corpus = _frames(rng)
    dec = FrameDecoder()
    for _ in range(1500):
        frame, wire = rng.choice(corpus)
        junk = _mutate(rng, rng.choice(corpus)[1])[: rng.randrange(1, 800)]
        items: list = []
        cut = rng.randrange(len(junk) + 1)  # arbitrary chunk boundaries
        for piece in (junk[:cut], junk[cut:], wire):
            items += dec.feed(piece)
        assert items and items[-1] == frame, "the good frame after the garbage was lost"
        for item in items[:-1]:
            assert isinstance(item, (Frame, FramingError))


@pytest.mark.parametrize("msg_type", sorted(MESSAGE_TYPES))
def test_message_unpack_never_crashes(msg_type: int) -> None:
    rng = random.Random(msg_type)
    for _ in range(150):
        payload = bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
        try:
            msg = unpack_message(msg_type, payload)
        except MessageError:
            continue
        assert msg.pack() == payload or msg.TAIL == "text"
