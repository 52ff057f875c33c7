"""Every message packs and unpacks to itself; malformed payloads are typed errors."""

from __future__ import annotations

import pytest

from edgeadapt.firmware_bridge import messages as m
from edgeadapt.firmware_bridge.errors import MessageError
from edgeadapt.firmware_bridge.protocol import MsgType

SAMPLES = [
    m.Hello(2, 2, 4096, 0x1F),
    m.DeviceInfo(2, 512, 0x1F, 262144, 1 << 20, 0xDEADBEEF, 0xCAFE, 0, 3, 1, 2, 250, "nucleo"),
    m.UploadBegin(0, 123456, 0xCAFEBABE),
    m.UploadChunk(4092, b"\x00\x01program bytes"),
    m.UploadCommit(1, 0x12345678, 0xABCDEF),
    m.UploadStatus(0, 4092, 123456),
    m.Infer(7, bytes(range(256))),
    m.InferResult(7, b"\x00\x00\x80\x3f"),
    m.Adapt(8, 0x1234, b"img"),
    m.AdaptResult(8, 0x1234, 3, 0.25, b"pred"),
    m.StreamStart(4, 1),
    m.StreamCredit(4),
    m.StreamFrame(0xFFFFFFFF, b""),
    m.StreamResult(9, 1, 1, b"out"),
    m.StreamStop(),
    m.GetAdapter(0, 4084),
    m.AdapterChunk(10_000, 0xABCDEF01, 4084, b"w" * 100),
    m.GetStats(),
    m.Stats(1, 2, 3, 4, 5, 6, 7, 8, 9),
    m.GetMemory(),
    m.Memory(0x1F, *range(1, 16)),
    m.Reset(2, 77),
    m.GetUpload(),
    m.UploadOutcome(2, 0, 1000, 0xDEAD, 1000, 55, 0, 0),
    m.Ack(),
    m.Nak(1),
    m.InProgress(1500, 4000),
    m.ErrorReport(8, 0xFFFFFFFF, "CRC mismatch; upload again — ünïcode"),
]


def test_every_type_has_a_sample_and_a_class() -> None:
    assert {type(s) for s in SAMPLES} == set(m.MESSAGE_TYPES.values())
    assert set(m.MESSAGE_TYPES) == set(MsgType)


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda s: type(s).__name__)
def test_round_trip(msg: m.Message) -> None:
    payload = msg.pack()
    assert m.unpack_message(msg.TYPE, payload) == msg
    assert len(payload) >= msg.LAYOUT.size


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda s: type(s).__name__)
def test_truncated_or_padded_payload_is_rejected(msg: m.Message) -> None:
    payload = msg.pack()
    if msg.LAYOUT.size:
        with pytest.raises(MessageError):
            type(msg).unpack(payload[: msg.LAYOUT.size - 1])
    if not msg.TAIL:
        with pytest.raises(MessageError):
            type(msg).unpack(payload + b"\x00")


def test_bounded_text_and_bad_utf8_are_rejected() -> None:
    with pytest.raises(MessageError):
        m.DeviceInfo(2, 512, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, "x" * 33).pack()
    head = m.DeviceInfo(2, 512, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0).pack()
    with pytest.raises(MessageError):
        m.DeviceInfo.unpack(head + b"y" * 33)
    with pytest.raises(MessageError):
        m.ErrorReport.unpack(m.ErrorReport(1).pack() + b"\xff\xfe")


def test_out_of_range_fields_are_typed_errors() -> None:
    with pytest.raises(MessageError):
        m.Hello(1, 1, 70_000).pack()
    with pytest.raises(MessageError):
        m.UploadChunk(-1, b"").pack()


def test_unknown_type_is_a_message_error() -> None:
    with pytest.raises(MessageError, match="unknown message type"):
        m.unpack_message(0x7E, b"")
