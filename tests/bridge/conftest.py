"""Shared fixtures for the bridge tests: a null-modem line with fault injection."""

from __future__ import annotations

import importlib.util
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgeadapt.firmware_bridge import BridgeClient, FakeDevice, null_modem_pair


class Line:
    """A `mangle` hook for a null-modem end: drop, corrupt or cut chosen writes.

    `drop` / `corrupt` are sets of write indices (0 = first write through this end);
    `noise` is a probability per write of a random corruption, from a seeded RNG.
    """

    def __init__(self, *, drop=(), corrupt=(), noise: float = 0.0, seed: int = 0) -> None:
        self.drop, self.corrupt, self.noise = set(drop), set(corrupt), noise
        self.rng = random.Random(seed)
        self.writes = 0

    def __call__(self, data: bytes) -> bytes:
        i = self.writes
        self.writes += 1
        if i in self.drop:
            return b""
        if i in self.corrupt or (self.noise and self.rng.random() < self.noise):
            return self._damage(bytearray(data))
        return data

    def _damage(self, data: bytearray) -> bytes:
        pos = self.rng.randrange(1, max(2, len(data) - 1))
        action = self.rng.randrange(3)
        if action == 0:  # a flipped bit (may even create a delimiter: that is noise too)
            data[pos] ^= 1 << self.rng.randrange(8)
        elif action == 1:  # a lost byte
            del data[pos]
        else:  # a burst of garbage
            data[pos:pos] = bytes(self.rng.randrange(256) for _ in range(5))
        return bytes(data)


REPO = Path(__file__).resolve().parents[2]
C_DIR = REPO / "firmware_bridge" / "c"


@pytest.fixture(scope="session")
def gen_vectors():
    """firmware_bridge/c/gen_vectors.py as a module (it is a script, not in the package)."""
    spec = importlib.util.spec_from_file_location("gen_vectors", C_DIR / "gen_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def line() -> type[Line]:
    return Line


@pytest.fixture
def bridge() -> Iterator[Callable[..., tuple[BridgeClient, FakeDevice]]]:
    """Factory: `bridge(client_kwargs..., device=dict(...))` -> a connected-up (client, fake)
    pair over a null modem, both torn down after the test. The client is not yet connected."""
    made: list[tuple[BridgeClient, FakeDevice]] = []

    def make(*, device: dict | None = None, **client_kwargs) -> tuple[BridgeClient, FakeDevice]:
        host_end, dev_end = null_modem_pair(poll=0.005)
        fake = FakeDevice(dev_end, **(device or {})).start()
        client_kwargs.setdefault("timeout", 0.2)
        client_kwargs.setdefault("retries", 3)
        client = BridgeClient(host_end, **client_kwargs)
        made.append((client, fake))
        return client, fake

    yield make
    for client, fake in made:
        fake.stop()
        client.close()


@pytest.fixture(scope="module")
def emulator():
    """The emulator process the emulator tests share (started once per session)."""
    from bridge.emulator_programs import shared_emulator  # exports programs: only when used

    return shared_emulator()  # boots while the programs export


@pytest.fixture(scope="module", params=["python", "native"])
def device_process(request):
    """The emulator or the native device (firmware_bridge/device), one process of each kind
    shared by every test module; the native kind is skipped without a build toolchain."""
    from bridge.native_device import shared_device

    return shared_device(request.param)


@pytest.fixture(scope="module")
def programs(emulator):
    from bridge.emulator_programs import tiny_programs

    return tiny_programs()
