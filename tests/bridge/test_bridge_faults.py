"""Dropped and corrupted bytes on the line are recovered by retries, never answered wrongly."""

from __future__ import annotations

import random

import pytest

from edgeadapt.firmware_bridge import CrcError, Target, cobs
from edgeadapt.firmware_bridge import messages as m


def test_corrupted_request_is_nakked_and_resent(bridge, line) -> None:
    client, fake = bridge(device={"infer": lambda d: d[::-1]})
    client.connect()
    client.link.transport.mangle = line(corrupt={0})
    assert client.infer(b"abc").output == b"cba"
    assert fake.counts["naks_sent"] >= 1 and client.link.counters["naks"] >= 1


def test_dropped_request_times_out_and_is_resent(bridge, line) -> None:
    client, _ = bridge(device={"infer": lambda d: d}, timeout=0.05)
    client.connect()
    client.link.transport.mangle = line(drop={0})
    assert client.infer(b"x").output == b"x"
    assert client.link.counters["retries"] >= 1


@pytest.mark.parametrize("fault", ["drop", "corrupt"])
def test_lost_reply_is_answered_from_cache_not_executed_twice(bridge, line, fault) -> None:
    client, fake = bridge(device={"adapt": lambda d: (0.5, d)}, timeout=0.05)
    client.connect()
    fake.transport.mangle = line(**{fault: {0}})  # the device's first reply is lost
    result = client.adapt(b"step")
    assert result.step == 1  # the step ran once, though the request arrived twice
    assert fake.counts["adapt_steps"] == 1 and fake.counts["duplicates"] >= 1


def _bad_crc(wire: bytes) -> bytes:
    """The same frame with its last CRC byte wrong (COBS kept valid)."""
    raw = bytearray(cobs.decode(wire[1:-1]))
    raw[-1] ^= 0xFF
    return b"\x00" + cobs.encode(bytes(raw)) + b"\x00"


def test_persistent_corruption_is_a_crc_error(bridge) -> None:
    client, fake = bridge(device={"infer": bytes}, timeout=0.05, retries=2)
    client.connect()
    fake.transport.mangle = _bad_crc  # every reply arrives, none intact
    with pytest.raises(CrcError, match="3 attempts"):
        client.infer(b"x")
    assert fake.counts["infer_count"] == 1 and fake.counts["duplicates"] == 2


def test_noisy_line_both_ways(bridge, line) -> None:
    # 15% of writes in each direction damaged (bit flips, lost bytes, garbage bursts).
    client, fake = bridge(
        device={"infer": lambda d: bytes(b ^ 0x5A for b in d)},
        max_payload=512,
        timeout=0.05,
        retries=12,
    )
    client.connect()
    client.link.transport.mangle = line(noise=0.15, seed=11)
    fake.transport.mangle = line(noise=0.15, seed=12)
    rng = random.Random(5)
    for i in range(25):
        data = rng.randbytes(rng.randrange(1, 400))
        assert client.infer(data, frame_id=i).output == bytes(b ^ 0x5A for b in data)
    blob = rng.randbytes(6000)
    client.upload(blob)
    assert fake.active[Target.PROGRAM] == blob
    assert sum(isinstance(r, m.Infer) for r in fake.requests) == 25  # none ran twice
    errors = fake.counts["crc_errors"] + fake.counts["framing_errors"]
    assert errors > 0 and client.link.counters["retries"] > 0  # the noise really bit
