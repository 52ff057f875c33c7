"""Per-tensor offsets: an arena plan where each tensor has its own place, not a shared slot.

ExecuTorch's greedy planner groups tensors into shared objects: a slot as large as its
largest tenant, for the whole program. A training step's maps come in many sizes (a 64 KB
gradient, then 32 KB ones, then a 36 KB dequantized weight), so slots sized for one tenant
sit half empty under the next. Here each tensor, largest first, takes the lowest offset in
the first bank where no tensor alive at the same time overlaps it (first fit by decreasing
size, as TensorFlow Lite Micro's greedy planner does; two tie-breaks tried, `ORDERS`).
Tensors that write over another one (`storage_base`, the in-place elementwise ops of
export/in_place.py) take their base's place.
"""

from __future__ import annotations

from typing import Any

__all__ = ["offset_plan", "overflow"]


# Orders to place tensors in, largest first; the plan with the least overflow, then the
# least total, is kept. Among equal sizes the earlier-born first packs ResNet-20's int8
# EcoTTA step tightest (357,200 B against 327,120 alive), the longer-lived first its fp32
# step (589,888 B against 589,024; 598,752 B the other way).
ORDERS = (
    lambda s: (-s.allocated_memory, s.lifetime[0], s.lifetime[1]),
    lambda s: (-s.allocated_memory, s.lifetime[0] - s.lifetime[1], s.lifetime[0]),
)


def offset_plan(
    specs: list[Any], capacities: list[int], alignment: int
) -> tuple[list[int], dict[Any, tuple[int, None, int]]]:
    """Bytes used per bank, and each spec's (bank, None, offset): banks in order, each
    tensor in the first bank it fits in, else where it overflows least (the fit check then
    reports the excess). Shared-object ids are None: no tensor shares a slot whole."""
    for spec in specs:
        spec.realign(alignment)
    own = [s for s in specs if s.storage_base is None]
    plans = (_placed(sorted(own, key=order), capacities) for order in ORDERS)
    used, where = min(plans, key=lambda p: (overflow(p[0], capacities), sum(p[0])))
    placement = {}
    for spec in specs:
        bank, offset = where[spec] if spec.storage_base is None else _based(spec, where)
        placement[spec] = (bank, None, offset)
    used = [(u + alignment - 1) // alignment * alignment for u in used]
    return used, placement


def overflow(used: list[int], capacities: list[int]) -> int:
    """Bytes a plan puts beyond its banks' capacities, over all banks."""
    return sum(max(u - c, 0) for u, c in zip(used, capacities))


def _placed(own: list[Any], capacities: list[int]) -> tuple[list[int], dict[Any, tuple[int, int]]]:
    """Each tensor in `own`'s order at the lowest free offset of the first bank it fits."""
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
    return used, where


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
