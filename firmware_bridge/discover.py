"""Find attached boards by USB vendor/product id.

Matching takes plain (name, vid, pid) tuples so it works before (and without) the device
profile TOML files; a profile loader can feed it later.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from edgeadapt._extras import require

__all__ = ["DeviceMatch", "discover"]


@dataclass(frozen=True)
class DeviceMatch:
    """A serial port whose USB ids match a known device profile."""

    name: str  # profile name
    port: str  # what to pass to BridgeClient.open()
    vid: int
    pid: int
    serial_number: str | None = None
    description: str = ""


def discover(
    profiles: Iterable[tuple[str, int, int]], *, ports: Iterable[Any] | None = None
) -> list[DeviceMatch]:
    """Ports whose (vid, pid) matches one of `profiles`, sorted by port name.

    `ports` defaults to `serial.tools.list_ports.comports()`; tests pass objects with the
    same attributes (device, vid, pid, serial_number, description). Ports without USB ids
    (on-board UARTs, Bluetooth) never match. A port matching several profiles is listed once
    per profile, since a shared USB bridge chip (CP210x, CH340) cannot tell boards apart.
    """
    if ports is None:
        require("serial", "finding boards")  # lazy: only discovery needs pyserial
        from serial.tools import list_ports

        ports = list_ports.comports()
    table: dict[tuple[int, int], list[str]] = {}
    for name, vid, pid in profiles:
        table.setdefault((int(vid), int(pid)), []).append(name)
    found = []
    for port in ports:
        if port.vid is None or port.pid is None:
            continue
        for name in table.get((port.vid, port.pid), []):
            found.append(
                DeviceMatch(
                    name,
                    port.device,
                    port.vid,
                    port.pid,
                    getattr(port, "serial_number", None),
                    getattr(port, "description", "") or "",
                )
            )
    return sorted(found, key=lambda m: (m.port, m.name))
