"""Exactly-once requests: the retransmission cache answers only true retransmissions, a
non-idempotent request carries an idempotency key the device remembers across retries and
sessions, and the client checks that every reply belongs to its request."""

from __future__ import annotations

import pytest

from edgeadapt.firmware_bridge import (
    BridgeClient,
    BridgeTimeoutError,
    DeviceError,
    ErrorCode,
    FakeDevice,
    ProtocolError,
    null_modem_pair,
)
from edgeadapt.firmware_bridge import messages as m
from edgeadapt.firmware_bridge.protocol import Flag


def _reverse_adapt(data: bytes) -> tuple[float, bytes]:
    return 0.5, data[::-1]


def test_two_host_sessions_each_get_their_own_adapt_result() -> None:
    # Two host programs, one after the other on the same port, neither calling connect():
    # both start at the same place, and the second one's ADAPT must still run.
    host_end, dev_end = null_modem_pair(poll=0.005)
    with FakeDevice(dev_end, adapt=_reverse_adapt) as fake:
        first = BridgeClient(host_end, timeout=0.2).adapt(b"first")
        second = BridgeClient(host_end, timeout=0.2).adapt(b"second")
    assert first.output == b"tsrif"
    assert second.output == b"dnoces" and second.step == 2
    assert fake.counts["adapt_steps"] == 2


def test_caller_retry_after_a_timeout_does_not_step_twice(bridge, line) -> None:
    client, fake = bridge(device={"adapt": _reverse_adapt}, timeout=0.05, retries=1)
    client.connect()
    fake.transport.mangle = line(drop={0, 1})  # the reply and its retransmission are lost
    with pytest.raises(BridgeTimeoutError):
        client.adapt(b"frame", frame_id=7)
    fake.transport.mangle = None
    again = client.adapt(b"frame", frame_id=7)  # the caller simply calls again
    assert (again.step, again.output, again.frame_id) == (1, b"emarf", 7)
    assert fake.counts["adapt_steps"] == 1
    other = client.adapt(b"frame", frame_id=8)  # a new request is a new step
    assert other.step == 2


def test_request_id_is_remembered_across_host_sessions(bridge, line) -> None:
    client, fake = bridge(device={"adapt": _reverse_adapt}, timeout=0.05, retries=0)
    client.connect()
    fake.transport.mangle = line(drop={0})
    with pytest.raises(BridgeTimeoutError):
        client.adapt(b"x", frame_id=1, request_id=0xC0FFEE)
    fake.transport.mangle = None
    # A new host process (it journaled the request id before sending) reconnects and retries.
    other = BridgeClient(client.link.transport, timeout=0.2)
    other.connect()
    result = other.adapt(b"x", frame_id=1, request_id=0xC0FFEE)
    assert result.step == 1 and fake.counts["adapt_steps"] == 1
    assert fake.counts["duplicates"] >= 1
    with pytest.raises(DeviceError) as err:  # the same key for another request is refused
        other.adapt(b"y", frame_id=1, request_id=0xC0FFEE)
    assert err.value.code == ErrorCode.ID_REUSED
    assert fake.counts["adapt_steps"] == 1


def test_cache_answers_only_retransmissions_of_the_same_request(bridge) -> None:
    client, fake = bridge(device={"infer": lambda d: d.upper()})
    client.connect()
    link = client.link
    seq = link.next_seq()
    link.send(m.Infer(1, b"abc"), seq)
    link.send(m.Infer(2, b"xyz"), seq)  # same seq, not a retransmission: runs
    link.send(m.Infer(3, b"def"), seq, Flag.RETRY)  # RETRY, but another payload: runs
    link.send(m.Infer(3, b"def"), seq, Flag.RETRY)  # a true retransmission: from the cache
    got = []
    for _ in range(4):
        link.wait_other(got.append, what="a reply")
    outputs = [m.InferResult.unpack(f.payload).output for f in got]
    assert outputs == [b"ABC", b"XYZ", b"DEF", b"DEF"]
    assert fake.counts["infer_count"] == 3 and fake.counts["duplicates"] == 1


def test_hello_clears_the_retransmission_cache(bridge) -> None:
    # The last request of one session, then a new session (another host process) whose first
    # attempt at the same seq and bytes was lost: its retransmission must run in the new
    # session, not draw the old session's answer (which the host drops as stale, until it
    # times out).
    client, fake = bridge(device={"infer": lambda d: d.upper()})
    client.connect()
    link = client.link
    seq = link.next_seq()
    link.send(m.Infer(1, b"abc"), seq)
    got = []
    link.wait_other(got.append, what="the first session's reply")
    client.connect()
    link.send(m.Infer(1, b"abc"), seq, Flag.RETRY)
    link.wait_other(got.append, what="the second session's reply")
    assert got[1].session == link.session != got[0].session
    assert fake.counts["infer_count"] == 2 and fake.counts["duplicates"] == 0


class _WrongEcho(FakeDevice):
    """A device that answers INFER with another frame's id (a reply to someone else)."""

    def serve(self, msg, seq):
        if isinstance(msg, m.Infer):
            return [(m.InferResult(msg.frame_id + 1, b"not yours"), seq)]
        return super().serve(msg, seq)


def test_client_refuses_a_reply_to_another_request() -> None:
    host_end, dev_end = null_modem_pair(poll=0.005)
    with _WrongEcho(dev_end, infer=bytes):
        client = BridgeClient(host_end, timeout=0.2)
        client.connect()
        with pytest.raises(ProtocolError, match="frame id"):
            client.infer(b"data", frame_id=4)
