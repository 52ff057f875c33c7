"""The Python codec against the shared vectors (the C codec checks the same file)."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from edgeadapt.firmware_bridge import cobs
from edgeadapt.firmware_bridge.errors import FramingError
from edgeadapt.firmware_bridge.framing import Frame, FrameDecoder, decode_frame, encode_frame

C_DIR = Path(__file__).resolve().parents[2] / "firmware_bridge" / "c"
VECTORS = C_DIR / "test_vectors.txt"


def _hex(s: str) -> bytes:
    return b"" if s == "-" else bytes.fromhex(s)


def _lines(kind: str) -> list[list[str]]:
    rows = [ln.split(" ") for ln in VECTORS.read_text().splitlines() if not ln.startswith("#")]
    return [r[1:] for r in rows if r[0] == kind]


def test_vectors_file_is_up_to_date(gen_vectors) -> None:
    assert gen_vectors.generate() == VECTORS.read_text(), "run firmware_bridge/c/gen_vectors.py"


def test_vectors_cover_every_kind_and_reason() -> None:
    reasons = {row[-1] for row in _lines("invalid")}
    assert reasons == {"cobs", "short", "crc", "magic", "length", "oversize"}
    assert _lines("valid") and _lines("decodes") and _lines("stream")


def test_crc_and_cobs_vectors() -> None:
    for data, crc in _lines("crc"):
        assert zlib.crc32(_hex(data)) == int(crc, 16)
    for raw, enc in _lines("cobs"):
        assert cobs.encode(_hex(raw)) == _hex(enc)
        assert cobs.decode(_hex(enc)) == _hex(raw)


@pytest.mark.parametrize("kind", ["valid", "decodes"])
def test_frame_vectors_decode(kind: str) -> None:
    for max_payload, enc, version, msg_type, flags, seq, payload in _lines(kind):
        frame = decode_frame(_hex(enc), max_payload=int(max_payload))
        want = Frame(int(msg_type), int(seq), _hex(payload), int(flags), int(version))
        assert frame == want
        if kind == "valid":
            wire = encode_frame(want.msg_type, want.payload, seq=want.seq, flags=want.flags,
                                version=want.version)  # fmt: skip
            assert wire == b"\x00" + _hex(enc) + b"\x00"


def test_invalid_vectors_are_rejected_with_their_reason() -> None:
    for max_payload, enc, reason in _lines("invalid"):
        with pytest.raises(FramingError) as info:
            decode_frame(_hex(enc), max_payload=int(max_payload))
        assert info.value.reason == reason


def test_stream_vectors_byte_at_a_time() -> None:
    for max_payload, wire, events in _lines("stream"):
        dec = FrameDecoder(int(max_payload))
        got = []
        for byte in _hex(wire):
            for item in dec.feed(bytes([byte])):
                got.append(
                    f"ok.{item.msg_type}.{item.seq}" if isinstance(item, Frame) else item.reason
                )
        assert (",".join(got) or "-") == events
