"""Discovery by USB ids, and the package staying light to import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from edgeadapt.firmware_bridge import DeviceMatch, discover

REPO = Path(__file__).resolve().parents[2]


def _port(device: str, vid: int | None, pid: int | None, serial: str | None = None):
    return SimpleNamespace(
        device=device, vid=vid, pid=pid, serial_number=serial, description=f"port {device}"
    )


def test_discover_matches_vid_pid() -> None:
    ports = [
        _port("/dev/ttyACM1", 0x0483, 0x374B, "066DFF"),  # ST-LINK
        _port("/dev/ttyS0", None, None),  # on-board UART: never matches
        _port("/dev/ttyUSB0", 0x10C4, 0xEA60),  # CP210x, shared by two boards
        _port("/dev/ttyACM0", 0x2E8A, 0x000A),  # not in the table
    ]
    profiles = [("nucleo-h743", 0x0483, 0x374B), ("esp32-a", 0x10C4, 0xEA60),
                ("esp32-b", 0x10C4, 0xEA60)]  # fmt: skip
    found = discover(profiles, ports=ports)
    assert [(d.name, d.port) for d in found] == [
        ("nucleo-h743", "/dev/ttyACM1"),
        ("esp32-a", "/dev/ttyUSB0"),
        ("esp32-b", "/dev/ttyUSB0"),
    ]
    assert found[0] == DeviceMatch(
        "nucleo-h743", "/dev/ttyACM1", 0x0483, 0x374B, "066DFF", "port /dev/ttyACM1"
    )


def test_discover_on_this_machine_does_not_fail() -> None:
    assert isinstance(discover([("none", 0xFFFF, 0xFFFF)]), list)


def test_import_is_light() -> None:
    code = (
        "import sys, runpy; runpy.run_path(sys.argv[1]);"
        "import edgeadapt.firmware_bridge;"
        "heavy = {'torch', 'numpy', 'serial'} & set(sys.modules);"
        "assert not heavy, heavy"
    )
    conftest = Path(__file__).with_name("conftest.py")
    result = subprocess.run(
        [sys.executable, "-c", code, str(conftest)], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
