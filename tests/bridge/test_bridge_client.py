"""BridgeClient end to end against the fake device over a null modem."""

from __future__ import annotations

import time

import pytest

from edgeadapt.firmware_bridge import (
    BridgeClient,
    BridgeTimeoutError,
    DeviceError,
    ErrorCode,
    ResetKind,
    VersionMismatchError,
    encode_frame,
    null_modem_pair,
)
from edgeadapt.firmware_bridge import messages as m
from edgeadapt.firmware_bridge.link import Link
from edgeadapt.firmware_bridge.protocol import PROTOCOL_VERSION, MsgType


def test_handshake_negotiates_payload(bridge) -> None:
    client, _ = bridge(max_payload=1024, device={"max_payload": 512, "profile": "nucleo"})
    info = client.connect()
    assert (info.version, info.max_payload, info.profile) == (PROTOCOL_VERSION, 512, "nucleo")
    assert client.link.max_payload == 512 and client.link.decoder.max_payload == 512
    assert client.info == info


def test_version_mismatch_reported_by_device(bridge) -> None:
    client, _ = bridge(device={"version": 3})
    with pytest.raises(VersionMismatchError) as info:
        client.connect()
    assert (info.value.host, info.value.device) == (PROTOCOL_VERSION, 3)


def test_version_mismatch_seen_in_device_info() -> None:
    # A device that ignores the host's range and just answers with its own, newer layout.
    host_end, dev_end = null_modem_pair(poll=0.005)
    newer = bytes([3]) + b"\x00" * 40  # version first; the rest is a layout v2 cannot parse
    client = BridgeClient(host_end, timeout=0.2, retries=0)
    client.link._seq = 0  # so the HELLO goes out with seq 1, which the canned answer carries
    dev_end.write(encode_frame(MsgType.DEVICE_INFO, newer, seq=1, version=3))
    with pytest.raises(VersionMismatchError, match="v3"):
        client.connect()


def test_infer_adapt_stats_reset(bridge) -> None:
    client, fake = bridge(
        device={"infer": lambda d: d[::-1], "adapt": lambda d: (0.5, d + b"!", b"adapted")}
    )
    client.connect()
    assert client.infer(b"abc", frame_id=9) == m.InferResult(9, b"cba")
    first = client.adapt(b"x")
    assert (first.frame_id, first.step, first.loss, first.output) == (0, 1, 0.5, b"x!")
    assert client.adapt(b"y").step == 2
    assert client.get_adapter() == b"adapted"
    stats = client.stats()
    assert (stats.infer_count, stats.adapt_steps) == (1, 2)
    assert stats.frames_rx >= 5 and stats.crc_errors == 0
    client.reset(ResetKind.ADAPTER)
    assert fake.adapter is None and client.connect().adapter_step == 0
    assert client.stats().adapt_steps == 2  # STATS counts since boot


def test_device_error_carries_code_and_is_not_retried(bridge) -> None:
    client, fake = bridge(device={"infer": lambda d: 1 / 0})
    client.connect()
    with pytest.raises(DeviceError) as info:
        client.infer(b"boom")
    assert info.value.code == ErrorCode.EXECUTION_FAILED
    assert "ZeroDivisionError" in info.value.text
    assert sum(isinstance(r, m.Infer) for r in fake.requests) == 1
    with pytest.raises(DeviceError) as info:
        client.adapt(b"no adapt callable")
    assert info.value.code == ErrorCode.NOT_READY
    with pytest.raises(DeviceError) as info:
        client.get_adapter()
    assert info.value.code == ErrorCode.NO_ADAPTER


def test_unknown_request_type_is_a_device_error(bridge) -> None:
    client, _ = bridge()
    client.connect()

    class Bogus(m.Ack):  # a request type the device does not know
        TYPE = 0x3F  # type: ignore[assignment]

    with pytest.raises(DeviceError) as info:
        client.link.exchange(Bogus())
    assert info.value.code == ErrorCode.UNKNOWN_MESSAGE and info.value.arg == 0x3F


def test_timeout_is_bounded() -> None:
    host_end, _silent = null_modem_pair(poll=0.005)
    client = BridgeClient(host_end, timeout=0.1, retries=2)
    start = time.monotonic()
    with pytest.raises(BridgeTimeoutError, match="3 attempts"):
        client.connect()
    elapsed = time.monotonic() - start
    assert 0.3 <= elapsed < 1.5  # 3 attempts x 0.1 s, with slack for a loaded machine
    assert client.link.counters["retries"] == 2


def test_stream_respects_credits(bridge) -> None:
    # The fake answers only when a full window is queued, so the client must stop at 3 in
    # flight and wait; one frame too many would draw ERROR NO_CREDIT.
    client, fake = bridge(device={"infer": lambda d: d * 2, "max_window": 3, "stream_batch": 3})
    client.connect()
    results = list(client.stream([bytes([i]) for i in range(7)], window=8))
    assert [r.frame_id for r in results] == list(range(7))
    assert [r.output for r in results] == [bytes([i]) * 2 for i in range(7)]
    assert sum(isinstance(r, m.StreamFrame) for r in fake.requests) == 7


def test_stream_with_adaptation(bridge) -> None:
    client, fake = bridge(device={"adapt": lambda d: (0.1, d)})
    client.connect()
    results = list(client.stream([b"a", b"b"], adapt=True, window=1))
    assert all(r.adapted == 1 for r in results) and fake.counts["adapt_steps"] == 2


def test_frame_without_credit_is_refused(bridge) -> None:
    client, _ = bridge(device={"infer": bytes, "stream_batch": 2})
    client.connect()
    link: Link = client.link
    assert link.request(m.StreamStart(1), m.StreamCredit).credits == 1
    link.send(m.StreamFrame(0, b"a"), link.next_seq())
    link.send(m.StreamFrame(1, b"b"), link.next_seq())
    seen = []
    link.wait_other(seen.append, what="a refusal")
    err = m.ErrorReport.unpack(seen[0].payload)
    assert err.code == ErrorCode.NO_CREDIT


def test_set_and_get_adapter_in_chunks(bridge) -> None:
    client, fake = bridge(max_payload=128)
    client.connect()
    blob = bytes(range(256)) * 40  # 10 KiB over 116-byte chunks
    assert client.set_adapter(blob) == 0
    assert fake.adapter == blob
    assert client.get_adapter() == blob
    per_chunk = 128 - 4 - 12  # payload - session envelope - ADAPTER_CHUNK header
    assert sum(isinstance(r, m.GetAdapter) for r in fake.requests) == -(-len(blob) // per_chunk)


def test_get_adapter_is_bounded_before_allocation(bridge) -> None:
    from edgeadapt.firmware_bridge import ProtocolError

    client, _ = bridge(max_blob=1000)
    client.connect()
    client.set_adapter(b"w" * 5000)
    with pytest.raises(ProtocolError, match="max_blob"):
        client.get_adapter()
