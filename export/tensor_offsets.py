"""Per-tensor offsets: an arena plan where each tensor has its own place, not a shared slot.

ExecuTorch's greedy planner groups tensors into shared objects: a slot as large as its
largest tenant, for the whole program. A training step's maps come in many sizes (a 64 KB
gradient, then 32 KB ones, then a 36 KB dequantized weight), so slots sized for one tenant
sit half empty under the next. Here each tensor, largest first, takes the lowest offset in
the first bank where no tensor alive at the same time overlaps it (first fit by decreasing
size, as TensorFlow Lite Micro's greedy planner does). Tensors that write over another one
(`storage_base`, the in-place elementwise ops of export/in_place.py) take their base's place.
"""

from __future__ import annotations

from typing import Any

__all__ = ["offset_plan"]


def offset_plan(
    specs: list[Any], capacities: list[int], alignment: int
) -> tuple[list[int], dict[Any, tuple[int, None, int]]]:
    """Bytes used per bank, and each spec's (bank, None, offset): banks in order, each
    tensor in the first bank it fits in, else where it overflows least (the fit check then
    reports the excess). Shared-object ids are None: no tensor shares a slot whole."""
    for spec in specs:
        spec.realign(alignment)
    own = [s for s in specs if s.storage_base is None]
    # Largest first; among equals the earlier-born first, so the plan is deterministic.
    own.sort(key=lambda s: (-s.allocated_memory, s.lifetime[0], s.lifetime[1]))
    held: list[list[tuple[int, int, int, int]]] = [[] for _ in capacities]  # start, end, lo, hi
    used = [0] * len(capacities)
    where: dict[Any, tuple[int, int]] = {}
    for spec in own:
        size, (start, end) = spec.allocated_memory, spec.lifetime
        if size == 0:
            where[spec] = (0, 0)
            continue
        choice = None
        for bank, capacity in enumerate(capacities):
            offset = _lowest_gap(held[bank], start, end, size)
            over = offset + size - capacity
            if over <= 0:
                choice = (bank, offset, 0)
                break
            if choice is None or over < choice[2]:
                choice = (bank, offset, over)
        assert choice is not None  # capacities is never empty
        bank, offset, _ = choice
        held[bank].append((start, end, offset, offset + size))
        used[bank] = max(used[bank], offset + size)
        where[spec] = (bank, offset)
    placement = {}
    for spec in specs:
        bank, offset = where[spec] if spec.storage_base is None else _based(spec, where)
        placement[spec] = (bank, None, offset)
    used = [(u + alignment - 1) // alignment * alignment for u in used]
    return used, placement


def _lowest_gap(held: list[tuple[int, int, int, int]], start: int, end: int, size: int) -> int:
    """The lowest offset where `size` bytes overlap no held tensor alive during start..end."""
    offset = 0
    for lo, hi in sorted((lo, hi) for s, e, lo, hi in held if s <= end and start <= e):
        if offset + size <= lo:
            break
        offset = max(offset, hi)
    return offset


def _based(spec: Any, where: dict[Any, tuple[int, int]]) -> tuple[int, int]:
    """A storage-backed tensor's (bank, offset): its root's, plus the offsets down the chain."""
    offset, seen = 0, set()
    while spec.storage_base is not None:
        if id(spec) in seen:
            raise ValueError("a circular storage_base chain cannot be planned")
        seen.add(id(spec))
        offset += spec.storage_base_offset
        spec = spec.storage_base
    bank, base = where[spec]
    return bank, base + offset
