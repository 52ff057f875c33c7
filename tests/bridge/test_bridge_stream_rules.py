"""Stream semantics at the edges: START while streaming, STOP without a stream, other
requests during a stream, and what a refused frame does to the credits."""

from __future__ import annotations

import pytest

from edgeadapt.firmware_bridge import DeviceError, ErrorCode
from edgeadapt.firmware_bridge import messages as m


def test_start_while_streaming_is_busy_and_keeps_the_stream(bridge) -> None:
    client, _ = bridge(device={"infer": bytes, "stream_batch": 4})
    client.connect()
    link = client.link
    assert link.request(m.StreamStart(4), m.StreamCredit).credits == 4
    with pytest.raises(DeviceError) as err:
        link.request(m.StreamStart(2), m.StreamCredit)
    assert err.value.code == ErrorCode.BUSY
    link.request(m.StreamStop(), m.Ack)


def test_stop_without_a_stream_is_acknowledged(bridge) -> None:
    client, _ = bridge()
    client.connect()
    assert isinstance(client.link.request(m.StreamStop(), m.Ack), m.Ack)


def test_programs_do_not_change_under_an_open_stream(bridge) -> None:
    client, fake = bridge(device={"infer": bytes, "adapt": lambda d: (0.0, d),
                                  "stream_batch": 4})  # fmt: skip
    client.connect()
    link = client.link
    link.request(m.StreamStart(4, 1), m.StreamCredit)
    assert client.infer(b"read-only requests are served").output  # INFER is fine
    with pytest.raises(DeviceError) as err:
        client.adapt(b"not while streaming")
    assert err.value.code == ErrorCode.BUSY
    with pytest.raises(DeviceError) as err:
        client.set_adapter(b"new weights")
    assert err.value.code == ErrorCode.BUSY
    link.request(m.StreamStop(), m.Ack)
    client.set_adapter(b"new weights")
    assert fake.adapter == b"new weights"


def test_a_refused_frame_costs_no_credit_and_the_client_closes_the_stream(bridge) -> None:
    def infer(data: bytes) -> bytes:
        if data == b"bad":
            raise ValueError("cannot decode this frame")
        return data

    client, fake = bridge(device={"infer": infer, "max_window": 2})
    client.connect()
    with pytest.raises(DeviceError) as err:
        list(client.stream([b"ok", b"bad", b"ok"], window=2))
    assert err.value.code == ErrorCode.EXECUTION_FAILED
    assert fake.stream_open is False  # the client sent STREAM_STOP on its way out
    assert [r.output for r in client.stream([b"x", b"y", b"z"], window=2)] == [b"x", b"y", b"z"]


def test_results_recovered_by_a_repeated_stop_come_in_frame_order(bridge, line) -> None:
    # The short last batch (frames 4 and 5) is answered at STREAM_STOP: result 4 and the ACK
    # are lost, result 5 gets through. The repeated STOP is answered from the retransmission
    # cache (results 4, 5, ACK), so result 4 arrives after result 5; the client must still
    # yield them in frame order (seen as a wrong stream result in the fault campaign).
    client, fake = bridge(device={"infer": lambda d: d[::-1], "stream_batch": 4})
    client.connect()
    # Device writes: 0 credit, 1-4 results of frames 0-3, 5-6 results 4-5, 7 ACK, 8- replay.
    fake.transport.mangle = line(drop={5, 7})
    frames = [bytes([i, 100 + i]) for i in range(6)]
    results = list(client.stream(frames, window=4))
    assert fake.counts["duplicates"] == 1  # the STOP was answered from the cache
    assert [r.frame_id for r in results] == list(range(6))
    assert [r.output for r in results] == [f[::-1] for f in frames]
