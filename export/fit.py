"""Does a program fit a device? Each planned arena must sit whole in one RAM bank; constants
stay in flash on MCUs (read in place) and in RAM on Linux boards (the file is loaded).

Placement is first-fit decreasing over the banks in the order internal-largest-first, then
external RAM: the biggest buffer takes the biggest internal bank it fits in. ExecuTorch plans
one arena per memory id; a program planned into several ids (banked planning) gives several
buffers here, each placed on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgeadapt.export.devices import DeviceProfile, load_profile
from edgeadapt.export.errors import DoesNotFitError
from edgeadapt.export.report import ExportReport

__all__ = ["FitResult", "Placement", "Shortfall", "check_fit", "require_fit"]


@dataclass(frozen=True)
class Placement:
    item: str  # "arena 0", "constants"
    bytes: int
    where: str  # bank name, or "flash"


@dataclass(frozen=True)
class Shortfall:
    item: str
    bytes: int
    where: str  # the bank (or "flash") that came closest
    missing_bytes: int  # how much more that bank would need


@dataclass(frozen=True)
class FitResult:
    device: str
    fits: bool
    placements: tuple[Placement, ...]
    shortfalls: tuple[Shortfall, ...]

    @property
    def missing_bytes(self) -> int:
        return sum(s.missing_bytes for s in self.shortfalls)

    @property
    def message(self) -> str:
        placed = "; ".join(f"{p.item} ({p.bytes:,} B) in {p.where}" for p in self.placements)
        if self.fits:
            return f"fits {self.device}: {placed or 'nothing to place'}"
        short = "; ".join(
            f"{s.item} ({s.bytes:,} B) fits nowhere: {s.where} is {s.missing_bytes:,} B short"
            for s in self.shortfalls
        )
        return f"does not fit {self.device}: {short}" + (f" (placed: {placed})" if placed else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "fits": self.fits,
            "missing_bytes": self.missing_bytes,
            "message": self.message,
            "placements": [vars(p) for p in self.placements],
            "shortfalls": [vars(s) for s in self.shortfalls],
        }


def _sizes(report_or_sizes: ExportReport | Mapping[str, Any]) -> tuple[list[int], int]:
    if isinstance(report_or_sizes, ExportReport):
        if report_or_sizes.constant_bytes is None:
            raise ValueError("check_fit needs an ExecuTorch report (ONNX has no memory plan)")
        return list(report_or_sizes.arena_bytes), report_or_sizes.constant_bytes
    arenas = report_or_sizes.get("arena_bytes", ())
    arenas = [int(arenas)] if isinstance(arenas, int) else [int(a) for a in arenas]
    return arenas, int(report_or_sizes.get("constant_bytes", 0))


def check_fit(
    report_or_sizes: ExportReport | Mapping[str, Any], profile: DeviceProfile | str
) -> FitResult:
    """Plan a program's arenas (and, on Linux boards, its constants) into the device's banks.

    `report_or_sizes` is an ExecuTorch ExportReport or a mapping with `arena_bytes` (an int
    or a list, one per arena) and `constant_bytes`.
    """
    if isinstance(profile, str):
        profile = load_profile(profile)
    arenas, constants = _sizes(report_or_sizes)
    items: list[tuple[str, int]] = [(f"arena {i}", b) for i, b in enumerate(arenas) if b > 0]
    placements: list[Placement] = []
    shortfalls: list[Shortfall] = []
    if profile.kind == "mcu":
        flash = profile.flash_bytes - profile.flash_reserved_bytes
        if constants <= flash:
            placements.append(Placement("constants", constants, "flash"))
        else:
            shortfalls.append(Shortfall("constants", constants, "flash", constants - flash))
    elif constants > 0:
        items.append(("constants", constants))
    banks = sorted(
        profile.data_banks, key=lambda b: (b.external, -b.usable_bytes)
    )  # internal, largest first; external RAM last
    free = {b.name: b.usable_bytes for b in banks}
    for item, size in sorted(items, key=lambda t: -t[1]):
        bank = next((b for b in banks if free[b.name] >= size), None)
        if bank is None:
            closest = max(banks, key=lambda b: free[b.name])
            shortfalls.append(Shortfall(item, size, closest.name, size - free[closest.name]))
            continue
        free[bank.name] -= size
        placements.append(Placement(item, size, bank.name))
    return FitResult(profile.name, not shortfalls, tuple(placements), tuple(shortfalls))


def require_fit(
    report_or_sizes: ExportReport | Mapping[str, Any], profile: DeviceProfile | str
) -> FitResult:
    """`check_fit`, raising DoesNotFitError with the result's message when it does not fit."""
    result = check_fit(report_or_sizes, profile)
    if not result.fits:
        raise DoesNotFitError(result.message)
    return result
