"""Room for the runtime's tables beside a banked plan.

The firmware keeps the runtime's tables (the method allocator's pool), its statics and its
stack in one bank, beside whatever arenas that bank holds (`fit.py`, the Cortex-M7 build's
`home_bank`). The planner fills banks largest first, so a program with large tables can end
up with every arena placed and no bank left with room for them: ResNet-20's int8 EcoTTA step
with a 4-view teacher has about 250 KB of tables, and its first plan fills the STM32H743's
512 KB AXI SRAM. `needed_room` says how many bytes the plan should have kept free in one
bank; the exporter then plans again with that room (`memory_plan.BankedPlanner`'s `room`)
and keeps the new plan when it fits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgeadapt.export.devices import DeviceProfile
from edgeadapt.export.fit import FIRMWARE_RAM_ITEM, check_fit

__all__ = ["needed_room"]


def _beside_arenas(item: str) -> bool:
    return item == FIRMWARE_RAM_ITEM or item.startswith("runtime tables")


def needed_room(memory: Mapping[str, Any], profile: DeviceProfile) -> int:
    """The bytes of what goes beside the arenas when the plan in `memory` (a mapping as
    `check_fit` reads it) places every arena and fits the flash but leaves no bank room for
    that; 0 when the program fits, or when room would not make it fit (an arena or the flash
    is short)."""
    fit = check_fit(memory, profile)
    if fit.fits or not all(_beside_arenas(s.item) for s in fit.shortfalls):
        return 0
    placed = sum(p.bytes for p in fit.placements if _beside_arenas(p.item))
    return placed + sum(s.bytes for s in fit.shortfalls)
