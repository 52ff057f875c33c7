"""MEMORY (GET_MEMORY's answer) as a report a person or a fit check reads: only the figures
the device measured, by program, plus the firmware image and its stack.

Figures the device did not measure are left out rather than reported as 0, so a reader can
tell "0 bytes" from "not known on this build" (the emulator has no C++ runtime; a host build
has no fixed image or painted stack)."""

from __future__ import annotations

from typing import Any

from .messages import Memory
from .protocol import MemoryFlag

__all__ = ["memory_dict"]

_ROLES = (
    ("inference", "program", MemoryFlag.PROGRAM),
    ("training", "training", MemoryFlag.TRAINING),
)


def memory_dict(m: Memory) -> dict[str, Any]:
    """JSON-ready: {"measured": [...], "programs": {role: {...}}, "firmware": {...}}."""
    programs: dict[str, dict[str, int]] = {}
    for role, prefix, flag in _ROLES:
        if not m.measured(flag):
            continue
        entry = {"planned_arena_bytes": getattr(m, f"{prefix}_planned")}
        if m.measured(MemoryFlag.RUNTIME):
            entry |= {
                "method_allocator_used_bytes": getattr(m, f"{prefix}_method_used"),
                "method_allocator_pool_bytes": getattr(m, f"{prefix}_method_pool"),
                "temp_allocator_peak_bytes": getattr(m, f"{prefix}_temp_peak"),
                "temp_allocator_pool_bytes": getattr(m, f"{prefix}_temp_pool"),
            }
            # What the program itself takes at run time: its arenas, the runtime's tables
            # for it and the scratch its kernels asked for.
            entry["program_ram_bytes"] = (
                entry["planned_arena_bytes"]
                + entry["method_allocator_used_bytes"]
                + entry["temp_allocator_peak_bytes"]
            )
        programs[role] = entry
    firmware: dict[str, int] = {}
    if m.measured(MemoryFlag.STACK):
        firmware |= {"stack_high_water_bytes": m.stack_high_water, "stack_bytes": m.stack_size}
    if m.measured(MemoryFlag.IMAGE):
        firmware |= {
            "text_bytes": m.text_bytes,
            "data_bytes": m.data_bytes,
            "bss_bytes": m.bss_bytes,
        }
    measured = [f.name.lower() for f in MemoryFlag if f and m.measured(f)]
    return {"measured": measured, "programs": programs, "firmware": firmware}
