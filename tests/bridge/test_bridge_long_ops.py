"""Long operations: a device busy for longer than the host's timeout says so (IN_PROGRESS
keep-alives) and the host waits for the answer instead of retrying into a failure; the host
can ask what became of the last upload."""

from __future__ import annotations

import random
import time
import zlib

import pytest

from edgeadapt.firmware_bridge import BridgeTimeoutError, Target, UploadState


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
