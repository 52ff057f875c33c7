"""Does a program fit a device? Each planned arena must sit whole in one RAM bank; constants
stay in flash on MCUs (read in place) and in RAM on Linux boards (the file is loaded).

ExecuTorch plans one arena per memory id. A program planned for the device's banks
(`memory_plan`, `device=` at export) has one arena per bank, each checked against its bank
(a plan that merged contiguous banks: against the merged region, where the rest goes too).
Otherwise placement is first-fit decreasing over the banks in the order internal-largest-
first, then external RAM: the biggest buffer takes the biggest internal bank it fits in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgeadapt.export.devices import DeviceProfile, load_profile
from edgeadapt.export.errors import DoesNotFitError
from edgeadapt.export.memory_plan import plan_banks
from edgeadapt.export.report import ExportReport

__all__ = ["FitResult", "Placement", "Shortfall", "check_fit", "require_fit"]

# What a firmware build holds in RAM besides the program: measured statics, reserved stack
# and temp pool (firmware_measured.FirmwareMeasurement.firmware_ram_bytes).
FIRMWARE_RAM_ITEM = "firmware .data+.bss (measured), stack and temp pool (reserved)"


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
    # Where the figures not read from the program come from (measured firmware build,
    # calibrated or plain estimate): one sentence each.
    basis: tuple[str, ...] = ()

    @property
    def missing_bytes(self) -> int:
        return sum(s.missing_bytes for s in self.shortfalls)

    @property
    def message(self) -> str:
        placed = "; ".join(f"{p.item} ({p.bytes:,} B) in {p.where}" for p in self.placements)
        if self.fits:
            return f"fits {self.device}: {placed or 'nothing to place'}"
        short = "; ".join(_shortfall_text(s) for s in self.shortfalls)
        total = f"; {self.missing_bytes:,} B missing in all" if self.missing_bytes else ""
        return f"does not fit {self.device}: {short}{total}" + (
            f" (placed: {placed})" if placed else ""
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "fits": self.fits,
            "missing_bytes": self.missing_bytes,
            "message": self.message,
            "placements": [vars(p) for p in self.placements],
            "shortfalls": [vars(s) for s in self.shortfalls],
            "basis": list(self.basis),
        }


def _shortfall_text(s: Shortfall) -> str:
    if s.item == "XNNPACK delegate":
        return "the program delegates to XNNPACK, which has no kernels for this CPU; export with backend 'portable'"
    return f"{s.item} ({s.bytes:,} B) does not fit: {s.where} is {s.missing_bytes:,} B short"


def _sizes(report_or_sizes: ExportReport | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(report_or_sizes, ExportReport):
        if report_or_sizes.constant_bytes is None:
            raise ValueError("check_fit needs an ExecuTorch report (ONNX has no memory plan)")
        d: Mapping[str, Any] = report_or_sizes.to_dict()
    else:
        d = report_or_sizes
    arenas = d.get("arena_bytes", ())
    arenas = [int(arenas)] if isinstance(arenas, int) else [int(a) for a in arenas]
    return {
        "arenas": arenas,
        "banks": list(d.get("arena_banks", ()) or ()),
        "planned_for": d.get("planned_for"),
        "constants": int(d.get("constant_bytes", 0) or 0),
        "runtime": int(d.get("runtime_bytes_estimate", 0) or 0),
        "backend": d.get("backend"),
    }


def check_fit(
    report_or_sizes: ExportReport | Mapping[str, Any],
    profile: DeviceProfile | str,
    *,
    include_runtime: bool = True,
) -> FitResult:
    """Place a program's arenas (and, on Linux boards, its constants) into the device's banks.

    `report_or_sizes` is an ExecuTorch ExportReport or a mapping with `arena_bytes` (an int
    or a list, one per arena), `constant_bytes`, and optionally `arena_banks` and
    `planned_for` (see ExportReport). A program planned for this device's
    banks (`planned_for` is its key) has each arena checked against the bank it was planned
    for; other arenas are placed first-fit decreasing. A training program's trainable tensors
    are not counted again: ExecuTorch plans them inside the arena (their initial values sit
    with the constants), where the runtime updates them in place. With
    `include_runtime`, the runtime's own tables for the method need RAM as well, and on an
    MCU whose core has a measured firmware build (`firmware_measured`) so do the firmware's
    .data+.bss, stack and temp allocator, and its code needs flash beside the constants: the
    tables are then the estimate calibrated on that build, the rest the measured figures.
    `basis` says which figure came from where. XNNPACK programs do not run on MCUs (XNNPACK
    has no Cortex-M or Xtensa kernels) and never fit one.
    """
    from edgeadapt.export.firmware_measured import measurement_for, runtime_figure

    if isinstance(profile, str):
        profile = load_profile(profile)
    sizes = _sizes(report_or_sizes)
    arenas, constants = sizes["arenas"], sizes["constants"]
    banked = sizes["planned_for"] == profile.key and len(sizes["banks"]) == len(arenas)
    placements: list[Placement] = []
    shortfalls: list[Shortfall] = []
    if profile.kind == "mcu" and sizes["backend"] == "xnnpack":
        shortfalls.append(Shortfall("XNNPACK delegate", 0, "CPU", 0))
    # Internal, largest first; external RAM last. A plan that merged contiguous banks
    # (memory_plan) names the merged regions: then those are the banks, for every item.
    merged = {b.name for b in plan_banks(profile, merge_contiguous=True)}
    merged -= {b.name for b in profile.data_banks}
    uses_merged = any(name in merged for name in sizes["banks"])
    regions = plan_banks(profile, merge_contiguous=uses_merged)
    banks = sorted(regions, key=lambda b: (b.external, -b.capacity))
    free = {b.name: b.capacity for b in banks}
    items: list[tuple[str, int]] = []
    for i, size in enumerate(arenas):
        if size <= 0:
            continue
        if not banked:
            items.append((f"arena {i}", size))
            continue
        name = sizes["banks"][i]
        if name in free and size <= free[name]:
            free[name] -= size
            placements.append(Placement(f"arena {i}", size, name))
        else:
            shortfalls.append(Shortfall(f"arena {i}", size, name, size - free.get(name, 0)))
            free[name] = 0  # the arena fills its bank (and more): nothing else goes there
    basis: list[str] = []
    firmware = measurement_for(profile.cpu.core) if profile.kind == "mcu" else None
    if profile.kind == "mcu":
        flash = profile.flash_bytes - profile.flash_reserved_bytes
        in_flash = [("constants", constants)]
        if firmware is not None and include_runtime:
            in_flash.append(("firmware code (measured)", firmware.code_bytes))
            items.append((FIRMWARE_RAM_ITEM, firmware.firmware_ram_bytes))
            basis.append(
                f"firmware: code {firmware.code_bytes:,} B and .data+.bss "
                f"{firmware.data_bss_bytes:,} B, the largest measured on {firmware.core}; stack "
                f"{firmware.stack_reserved_bytes:,} B and temp pool "
                f"{firmware.temp_pool_bytes:,} B as the build reserves them (high-water "
                f"{firmware.stack_bytes:,} B and {firmware.temp_bytes:,} B) ({firmware.source})"
            )
        for item, size in in_flash:
            if size <= flash:
                placements.append(Placement(item, size, "flash"))
                flash -= size
            else:
                shortfalls.append(Shortfall(item, size, "flash", size - flash))
                flash = 0
    elif constants > 0:
        items.append(("constants", constants))
    if sizes["runtime"] > 0 and include_runtime:
        if profile.kind == "mcu":
            figure = runtime_figure(sizes["runtime"], profile.cpu.core)
            items.append((figure.label, figure.bytes))
            basis.append(figure.note)
        else:  # a Linux board: the runtime's tables are a rounding error beside its RAM
            items.append(("runtime tables (est.)", sizes["runtime"]))
    # The firmware keeps its statics, stack and the method allocator's pool in one bank, the
    # one its arenas leave the most room in (firmware_bridge/device/mcu/build.py home_bank):
    # the tables and that RAM go there together when they fit side by side (a banked plan:
    # its arenas are placed already).
    home = max(banks, key=lambda b: free[b.name])
    together = [t for t in items if t[0] == FIRMWARE_RAM_ITEM or t[0].startswith("runtime")]
    if banked and len(together) == 2 and sum(n for _, n in together) <= free[home.name]:
        for item, size in together:
            free[home.name] -= size
            placements.append(Placement(item, size, home.name))
        items = [t for t in items if t not in together]
    for item, size in sorted(items, key=lambda t: -t[1]):
        bank = next((b for b in banks if free[b.name] >= size), None)
        if bank is None:
            closest = max(banks, key=lambda b: free[b.name])
            shortfalls.append(Shortfall(item, size, closest.name, size - free[closest.name]))
            # Grown by the shortfall, that bank would be full: later items get none of it,
            # so the missing bytes add up to what the device really lacks.
            free[closest.name] = 0
            continue
        free[bank.name] -= size
        placements.append(Placement(item, size, bank.name))
    return FitResult(
        profile.name, not shortfalls, tuple(placements), tuple(shortfalls), tuple(basis)
    )


def require_fit(
    report_or_sizes: ExportReport | Mapping[str, Any], profile: DeviceProfile | str
) -> FitResult:
    """`check_fit`, raising DoesNotFitError with the result's message when it does not fit."""
    result = check_fit(report_or_sizes, profile)
    if not result.fits:
        raise DoesNotFitError(result.message)
    return result
