"""Device profiles (`devices/*.toml`): memory banks, flash, CPU and serial defaults.

`load_profile("stm32h743")` finds a profile by file stem or by its `name` (case and
punctuation ignored), or loads a path to a .toml. The folder is the repository's `devices/`,
or `$EDGEADAPT_DEVICES`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeadapt._suggest import unknown_name_message
from edgeadapt.export.errors import DeviceProfileError, UnknownDeviceError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as the `tomli` package
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = [
    "CpuInfo",
    "DeviceProfile",
    "MemoryBank",
    "SerialDefaults",
    "devices_dir",
    "list_profiles",
    "load_profile",
]


@dataclass(frozen=True, kw_only=True)
class MemoryBank:
    """One contiguous RAM region; a planned arena must sit inside one bank."""

    name: str  # e.g. "AXI SRAM", "DTCM", "PSRAM"
    bytes: int  # size of the region
    reserved_bytes: int = 0  # taken by firmware, OS, stack or heap before any program
    code_only: bool = False  # kept for code (ITCM, RTC memory): never planned for tensors
    external: bool = False  # off-chip (PSRAM, SDRAM): usable, but slower; planned last
    address: int | None = None  # where it starts in the address map (None: not stated)
    notes: str = ""
    source: str = ""  # the document the figure comes from

    @property
    def usable_bytes(self) -> int:
        return max(self.bytes - self.reserved_bytes, 0)


@dataclass(frozen=True, kw_only=True)
class CpuInfo:
    core: str  # e.g. "Arm Cortex-M7"
    mhz: int  # nominal maximum clock
    fpu: str  # floating-point unit, "none" if absent
    source: str = ""


@dataclass(frozen=True, kw_only=True)
class SerialDefaults:
    baud: int  # default UART / CDC baud rate
    usb_vid: int | None = None  # USB vendor id where a standard one exists
    usb_pid: int | None = None
    notes: str = ""


@dataclass(frozen=True, kw_only=True)
class DeviceProfile:
    """A device: what `check_fit` plans a program against."""

    key: str  # the file stem, e.g. "stm32h743"
    name: str  # e.g. "STM32H743"
    kind: str  # "mcu": weights stay in flash; "linux": the program file is loaded into RAM
    description: str
    source: str  # datasheets / product pages the figures come from
    cpu: CpuInfo
    ram: tuple[MemoryBank, ...]  # on-chip banks (and system RAM on Linux boards)
    external_ram: tuple[MemoryBank, ...]  # PSRAM / SDRAM
    flash_bytes: int  # program storage that constants can be read from in place (0: none)
    flash_reserved_bytes: int
    serial: SerialDefaults
    path: Path

    @property
    def data_banks(self) -> tuple[MemoryBank, ...]:
        """Banks tensors may use: internal (not code-only) first, then external."""
        return tuple(b for b in self.ram if not b.code_only) + self.external_ram


def devices_dir() -> Path:
    env = os.environ.get("EDGEADAPT_DEVICES")
    if env:
        return Path(env)
    # Shipped as the package edgeadapt.devices (the root devices/ folder), so installed and
    # editable copies both find the profiles.
    import importlib.resources

    return Path(str(importlib.resources.files("edgeadapt.devices")))


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def list_profiles() -> list[str]:
    """Keys (file stems) of the profiles in `devices_dir()`."""
    folder = devices_dir()
    return sorted(p.stem for p in folder.glob("*.toml")) if folder.is_dir() else []


def load_profile(name: str | os.PathLike[str]) -> DeviceProfile:
    """The profile `name` (file stem, profile name, or path to a .toml)."""
    as_path = Path(name)
    if as_path.suffix == ".toml" and as_path.is_file():
        return _parse(as_path)
    wanted = _norm(str(name))
    for key in list_profiles():
        path = devices_dir() / f"{key}.toml"
        if _norm(key) == wanted:
            return _parse(path)
    for key in list_profiles():  # by the `name` field: "Raspberry Pi 4 (4 GB)", "ESP32-S3-N8R8"
        profile = _parse(devices_dir() / f"{key}.toml")
        if _norm(profile.name) == wanted:
            return profile
    raise UnknownDeviceError(
        unknown_name_message("device", str(name), list_profiles(), f"(profiles in {devices_dir()})")
    )


def _parse(path: Path) -> DeviceProfile:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise DeviceProfileError(f"{path}: not valid TOML ({exc})") from exc
    f = _Fields(path, data)
    kind = f.get("kind", str)
    if kind not in ("mcu", "linux"):
        raise DeviceProfileError(f"{path}: field 'kind' must be 'mcu' or 'linux', got {kind!r}")
    cpu = f.table("cpu")
    flash = f.table("flash")
    serial = f.table("serial")
    ram = tuple(_bank(f, t, f"ram[{i}]", False) for i, t in enumerate(f.tables("ram")))
    if not ram:
        raise DeviceProfileError(f"{path}: needs at least one [[ram]] bank")
    ext = f.tables("external_ram", required=False)
    return DeviceProfile(
        key=path.stem,
        name=f.get("name", str),
        kind=kind,
        description=f.get("description", str),
        source=f.get("source", str),
        cpu=CpuInfo(
            core=f.get("cpu.core", str, cpu),
            mhz=f.get("cpu.mhz", int, cpu),
            fpu=f.get("cpu.fpu", str, cpu),
            source=f.get("cpu.source", str, cpu, default=""),
        ),
        ram=ram,
        external_ram=tuple(_bank(f, t, f"external_ram[{i}]", True) for i, t in enumerate(ext)),
        flash_bytes=f.get("flash.bytes", int, flash),
        flash_reserved_bytes=f.get("flash.reserved_bytes", int, flash, default=0),
        serial=SerialDefaults(
            baud=f.get("serial.baud", int, serial),
            usb_vid=f.get("serial.usb_vid", int, serial, default=None),
            usb_pid=f.get("serial.usb_pid", int, serial, default=None),
            notes=f.get("serial.notes", str, serial, default=""),
        ),
        path=path,
    )


def _bank(f: _Fields, table: dict[str, Any], where: str, external: bool) -> MemoryBank:
    bank = MemoryBank(
        name=f.get(f"{where}.name", str, table),
        bytes=f.get(f"{where}.bytes", int, table),
        reserved_bytes=f.get(f"{where}.reserved_bytes", int, table, default=0),
        code_only=f.get(f"{where}.code_only", bool, table, default=False),
        external=external,
        address=f.get(f"{where}.address", int, table, default=None),
        notes=f.get(f"{where}.notes", str, table, default=""),
        source=f.get(f"{where}.source", str, table, default=""),
    )
    if bank.bytes <= 0 or not 0 <= bank.reserved_bytes <= bank.bytes:
        raise DeviceProfileError(
            f"{f.path}: field '{where}.bytes' must be > 0 and '{where}.reserved_bytes' within it"
        )
    if bank.address is not None and not 0 <= bank.address < 1 << 32:
        raise DeviceProfileError(f"{f.path}: field '{where}.address' must be a 32-bit address")
    return bank


_MISSING = object()


class _Fields:
    """Typed access to a parsed TOML document; errors name the file and the dotted field."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path, self.data = path, data

    def get(self, field: str, typ: type, table: dict | None = None, default: Any = _MISSING):
        table = self.data if table is None else table
        key = field.rpartition(".")[2]
        if key not in table:
            if default is _MISSING:
                raise DeviceProfileError(f"{self.path}: missing field '{field}'")
            return default
        value = table[key]
        # bool is an int in Python; a size written as `true` is still wrong.
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise DeviceProfileError(
                f"{self.path}: field '{field}' must be {typ.__name__}, got {value!r}"
            )
        return value

    def table(self, field: str) -> dict[str, Any]:
        return self.get(field, dict)

    def tables(self, field: str, required: bool = True) -> list[dict[str, Any]]:
        value = self.get(field, list, default=None if not required else _MISSING)
        if value is None:
            return []
        if not all(isinstance(t, dict) for t in value):
            raise DeviceProfileError(f"{self.path}: field '{field}' must be [[{field}]] tables")
        return value
