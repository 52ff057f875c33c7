"""Long operations: a device busy for longer than the host's timeout says so (IN_PROGRESS
keep-alives) and the host waits for the answer instead of retrying into a failure; the host
can ask what became of the last upload."""

from __future__ import annotations

import random
import time
import zlib

import pytest

from edgeadapt.firmware_bridge import (
    BridgeTimeoutError,
    DeviceError,
    ErrorCode,
    MsgType,
    Target,
    UploadState,
    cobs,
)
from edgeadapt.firmware_bridge._fake_model import Refuse


def _slow(seconds: float):
    def adapt(data: bytes) -> tuple[float, bytes]:
        time.sleep(seconds)
        return 0.25, data

    return adapt


def test_a_step_longer_than_the_timeout_is_waited_for(bridge) -> None:
    client, fake = bridge(device={"adapt": _slow(0.8), "keepalive_ms": 100},
                          timeout=0.25, retries=1)  # fmt: skip
    info = client.connect()
    assert info.keepalive_ms == 100
    start = time.monotonic()
    result = client.adapt(b"slow")
    assert result.step == 1 and 0.8 <= time.monotonic() - start < 2.0
    assert client.link.counters["retries"] == 0  # keep-alives, not retries, bridged the wait
    assert client.link.counters["keepalives"] >= 5
    assert fake.counts["adapt_steps"] == 1


def test_a_slow_adapting_stream_is_waited_for(bridge) -> None:
    client, _ = bridge(device={"adapt": _slow(0.5), "keepalive_ms": 100, "stream_batch": 2},
                       timeout=0.25, retries=1)  # fmt: skip
    client.connect()
    results = list(client.stream([b"a", b"b", b"c", b"d"], adapt=True, window=2))
    assert [r.frame_id for r in results] == [0, 1, 2, 3]


def test_a_silent_device_still_fails_within_the_bound(bridge) -> None:
    client, _ = bridge(device={"adapt": _slow(1.0), "keepalive_ms": 0}, timeout=0.2, retries=1)
    client.connect()
    start = time.monotonic()
    with pytest.raises(BridgeTimeoutError):
        client.adapt(b"x")
    assert time.monotonic() - start < 0.2 * 2 + 0.3


def test_busy_limit_bounds_a_device_that_never_finishes(bridge) -> None:
    client, _ = bridge(device={"adapt": _slow(3.0), "keepalive_ms": 50}, timeout=0.2,
                       retries=0, busy_limit=0.6)  # fmt: skip
    client.connect()
    start = time.monotonic()
    with pytest.raises(BridgeTimeoutError, match="busy"):
        client.adapt(b"x")
    assert time.monotonic() - start < 0.6 + 0.2 + 0.3


def test_the_last_upload_outcome_can_be_asked_for(bridge) -> None:
    client, _ = bridge(max_payload=256)
    client.connect()
    assert client.upload_outcome().state == UploadState.NONE
    blob = random.Random(0).randbytes(3000)
    client.upload(blob, target=Target.ADAPTER)
    out = client.upload_outcome()
    assert (out.state, out.target, out.size, out.crc) == (
        UploadState.COMMITTED,
        Target.ADAPTER,
        len(blob),
        zlib.crc32(blob),
    )
    assert out.request_id != 0


def _lose(msg_type: int, times: int):
    """A `mangle` hook that drops the first `times` frames of `msg_type` through its end."""
    left = [times]

    def mangle(wire: bytes) -> bytes:
        if left[0] and cobs.decode(wire[1:-1])[2] == msg_type:
            left[0] -= 1
            return b""
        return wire

    return mangle


@pytest.mark.parametrize("lost", ["request", "answer"])
def test_a_commit_whose_answer_is_lost_is_settled_by_its_outcome(bridge, lost) -> None:
    # Every attempt of the commit (retries=1: two) goes unanswered: upload() asks GET_UPLOAD
    # instead of failing with the bytes active ("answer") or leaving them staged ("request").
    client, fake = bridge(timeout=0.05, retries=1, max_payload=256)
    client.connect()
    blob = random.Random(1).randbytes(1000)
    if lost == "request":
        client.link.transport.mangle = _lose(MsgType.UPLOAD_COMMIT, 2)
    else:
        fake.transport.mangle = _lose(MsgType.ACK, 2)
    assert client.upload(blob, target=Target.ADAPTER) == 0
    assert fake.active[Target.ADAPTER] == blob
    commits = [r for r in fake.requests if r.TYPE == MsgType.UPLOAD_COMMIT]
    assert len(commits) == 1  # executed once either way
    assert client.upload_outcome().state == UploadState.COMMITTED


def test_a_refused_commit_whose_answer_is_lost_is_reported_as_refused(bridge) -> None:
    client, fake = bridge(timeout=0.05, retries=1, max_payload=256)
    client.upload(b"old weights", target=Target.ADAPTER)

    def refuse(target, data, outcome):
        raise Refuse(ErrorCode.INVALID_PROGRAM, 0, "the runtime cannot load it")

    fake.activate = refuse
    fake.transport.mangle = _lose(MsgType.ERROR, 2)
    with pytest.raises(DeviceError) as err:
        client.upload(b"new weights", target=Target.ADAPTER)
    assert err.value.code == ErrorCode.INVALID_PROGRAM
    assert fake.active[Target.ADAPTER] == b"old weights"
