"""Injected faults over a real pty end in a correct result after retries or in a typed error
within a bounded time, and a power cut mid-upload never leaves a half-written program active."""

from __future__ import annotations

import time
import zlib

import pytest
import torch
from bridge.emulator_programs import batches

from edgeadapt.firmware_bridge import (
    BridgeClient,
    BridgeError,
    BridgeTimeoutError,
    CrcError,
    FramingError,
)
from edgeadapt.firmware_bridge.emulator import Faults, pty_supported, set_faults
from edgeadapt.firmware_bridge.validation import device_infer

pytestmark = pytest.mark.skipif(not pty_supported(), reason="needs pseudo-terminals")


@pytest.fixture
def client(emulator, programs):
    # Small frames, so a faulty byte costs one short frame; short timeouts keep bounds tight.
    dev = BridgeClient.open(emulator.port, timeout=0.4, retries=3, max_payload=256)
    dev.connect()
    yield dev
    dev.close()


def _host(program: bytes):
    from edgeadapt.export.executorch_program import ExecuTorchRunner

    return ExecuTorchRunner.from_bytes(program).run


def test_power_cut_mid_upload_is_resumed_by_retries(client, programs) -> None:
    client.upload(programs.infer)
    set_faults(client, Faults(reset_at=0.5, boot_ms=100))
    start = time.monotonic()
    assert client.upload(programs.plain) == 0
    assert client.link.counters["retries"] >= 1  # the chunk in flight at the cut was resent
    assert client.connect().program_crc == zlib.crc32(programs.plain)
    assert client.stats().uptime_ms < (time.monotonic() - start) * 1000  # it did reboot
    x = batches(1)[0]
    assert torch.equal(device_infer(client, x), _host(programs.plain)(x))


def test_long_power_cut_is_a_timeout_and_never_activates_half_a_program(client, programs) -> None:
    client.upload(programs.plain)
    old = zlib.crc32(programs.plain)
    client.link.timeout, client.link.retries = 0.2, 2  # gives up long before it boots
    set_faults(client, Faults(reset_at=0.5, boot_ms=1200))
    bound = client.link.timeout * (client.link.retries + 1)
    start = time.monotonic()
    with pytest.raises(BridgeTimeoutError):
        client.upload(programs.infer)
    assert time.monotonic() - start < bound + 1.0
    time.sleep(1.2)  # let it finish booting
    assert client.connect().program_crc == old  # the half-written upload is not active
    resumed = client.upload(programs.infer)  # the staged half survived in flash
    assert 0 < resumed < len(programs.infer)
    assert client.connect().program_crc == zlib.crc32(programs.infer)


def test_noisy_slow_line_still_gives_correct_results(client, programs) -> None:
    client.upload(programs.infer)
    set_faults(client, Faults(drop=5e-4, corrupt=5e-4, delay=2e-3, delay_ms=20, seed=3))
    client.link.retries = 8
    host = _host(programs.infer)
    for x in batches(6, seed=4):
        assert torch.equal(device_infer(client, x), host(x))
    client.upload(programs.plain)
    set_faults(client, Faults())
    assert client.connect().program_crc == zlib.crc32(programs.plain)
    counters = client.link.counters
    assert counters["retries"] + counters["bad_frames"] + counters["naks"] > 0  # it did bite


def test_hopeless_line_is_a_typed_error_within_the_bound(client, programs) -> None:
    # At 3% of bytes corrupted almost no frame of a few hundred bytes gets through.
    set_faults(client, Faults(corrupt=0.03, seed=1))
    bound = client.link.timeout * (client.link.retries + 1)
    try:
        start = time.monotonic()
        with pytest.raises((CrcError, FramingError, BridgeTimeoutError)):
            device_infer(client, batches(1)[0])
        assert time.monotonic() - start < bound + 1.0
        start = time.monotonic()
        with pytest.raises(BridgeError):  # a stream has no retransmission: it ends, typed
            list(client.stream([b"\x01" * 200] * 8, window=4))
        assert time.monotonic() - start < 2 * bound + 1.0
    finally:  # the short SET_FAULTS frame gets through 30% of the time: insist
        set_faults(client, Faults(), timeout=0.1, retries=60)
    assert client.stats().frames_rx > 0
