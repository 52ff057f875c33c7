"""Fault injection for the emulator: what a bad cable, a slow line and a power cut do.

Rates are per byte and apply to both directions (what the device reads and what it
writes): a dropped byte vanishes, a corrupted one has random bits flipped, a delayed one
holds its write back `delay_ms`. `reset_at` reboots the device once, when an upload has
staged that fraction of its bytes -- in the middle of writing a chunk, as a power cut would.
`reboot` is a probability per request that power fails while the device serves it: before it
runs, or after it ran and before its answer went out. Faults are set on the command line or,
while running, by the emulator-only SET_FAULTS request (type 0x7E, which real firmware
answers with UNKNOWN_MESSAGE).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from ..message_base import Message
from ..message_base import layout as _s

__all__ = ["SET_FAULTS", "Faults", "FaultyLine", "SetFaults"]

SET_FAULTS = 0x7E  # emulator/test extension range 0x70..0x7F (docs/bridge-protocol.md)
_PPM = 1_000_000


@dataclass(frozen=True, kw_only=True)
class Faults:
    drop: float = 0.0  # probability that a byte is lost
    corrupt: float = 0.0  # probability that a byte arrives with bits flipped
    delay: float = 0.0  # probability that a byte (and what follows) is held back
    delay_ms: int = 0  # how long a delayed byte is held back
    reset_at: float = 0.0  # reboot once when an upload is this far in (0: never)
    reboot: float = 0.0  # probability per request of a power cut while it is served
    boot_ms: int = 200  # how long a reboot keeps the device deaf
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("drop", "corrupt", "delay", "reset_at", "reboot"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"fault rate {name} must be in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.delay_ms <= 60_000 or not 0 <= self.boot_ms <= 60_000:
            raise ValueError("delay_ms and boot_ms must be in [0, 60000]")

    @property
    def line_faults(self) -> bool:
        return bool(self.drop or self.corrupt or (self.delay and self.delay_ms))

    def to_message(self) -> SetFaults:
        rates = (self.drop, self.corrupt, self.delay, self.reset_at, self.reboot)
        ppm = [round(v * _PPM) for v in rates]
        return SetFaults(*ppm, self.delay_ms, self.boot_ms, self.seed & 0xFFFFFFFF)


@dataclass(frozen=True)
class SetFaults(Message):
    """Emulator-only request: replace the active faults; answered ACK on a clean line."""

    TYPE = SET_FAULTS  # type: ignore[assignment]  # not a v1 MsgType on purpose
    LAYOUT = _s("IIIIIHHI")
    drop_ppm: int
    corrupt_ppm: int
    delay_ppm: int
    reset_at_ppm: int
    reboot_ppm: int
    delay_ms: int
    boot_ms: int
    seed: int

    def to_faults(self) -> Faults:
        return Faults(
            drop=self.drop_ppm / _PPM, corrupt=self.corrupt_ppm / _PPM,
            delay=self.delay_ppm / _PPM, reset_at=self.reset_at_ppm / _PPM,
            reboot=self.reboot_ppm / _PPM,
            delay_ms=self.delay_ms, boot_ms=self.boot_ms, seed=self.seed,
        )  # fmt: skip


class FaultyLine:
    """Applies `Faults` to byte strings; `counts` says how many bytes each fault hit."""

    def __init__(self, faults: Faults | None = None) -> None:
        self.counts = {"dropped": 0, "corrupted": 0, "delayed": 0}
        self.set(faults or Faults())

    def set(self, faults: Faults) -> None:
        self.faults = faults
        self.rng = random.Random(faults.seed)

    def apply(self, data: bytes, *, sleep: bool = True) -> bytes:
        """`data` as it arrives: bytes dropped or corrupted; sleeps for delayed bytes."""
        f = self.faults
        if not data or not f.line_faults:
            return data
        out = bytearray()
        rng = self.rng
        for byte in data:
            if f.drop and rng.random() < f.drop:
                self.counts["dropped"] += 1
                continue
            if f.corrupt and rng.random() < f.corrupt:
                byte ^= rng.randrange(1, 256)
                self.counts["corrupted"] += 1
            if f.delay and f.delay_ms and rng.random() < f.delay:
                self.counts["delayed"] += 1
                if sleep:
                    time.sleep(f.delay_ms / 1000)
            out.append(byte)
        return bytes(out)
