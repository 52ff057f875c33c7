"""Banked memory planning: a program's arena split over a device's RAM banks.

ExecuTorch plans every tensor into a numbered arena (`mem_id`); the runtime gets one buffer
per id, so a device can hand each id a different bank. `BankedPlanner` is a
`memory_planning_algo` for `MemoryPlanningPass`: it runs ExecuTorch's own greedy planner
once over one arena, which groups tensors into shared objects (slots that tensors with
disjoint lifetimes take in turn), then packs whole slots into the banks, largest slot first,
each into the fullest bank it still fits in (best fit). Slots keep their inner layout, so the
plan is the greedy one, only cut into pieces no larger than a bank. Slots that fit nowhere go
to the bank with the most room left, where the fit check reports the excess.

Two refinements, used for scheduled training programs (the default; export/training.py):
- `merge_contiguous`: banks that follow each other in the address map (the STM32F746's DTCM,
  SRAM1 and SRAM2 are one 320 KB range) are planned as one region, named "DTCM+SRAM1+SRAM2";
  a tensor may then span a bank edge, which costs a Cortex-M7 nothing.
- `per_tensor_offsets`: each tensor gets its own offset (largest first, at the lowest offset
  no tensor alive at the same time holds) instead of a slot shared whole. Greedy slots are
  as large as their largest tenant for their whole life (export/tensor_offsets.py);
  ResNet-20's int8 EcoTTA step: 357 KB against greedy's 387 KB. Both plans are made and the
  better kept.

`room`: bytes one bank must keep free beside the arenas, for what the firmware puts there (the
runtime's tables, its statics and stack: they need one bank, `fit.py`). Each bank is tried as
that home and the plan with the least overflow, counting the room, is kept. Used only when a
first plan left no bank that room (export/table_room.py): ResNet-20's int8 EcoTTA step with
a teacher has 250 KB of tables, and its first plan fills the H743's largest bank.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from edgeadapt.export.devices import DeviceProfile
from edgeadapt.export.tensor_offsets import offset_plan, overflow

__all__ = ["BankedPlanner", "backend_config", "plan_banks"]


@dataclass(frozen=True)
class PlanBank:
    name: str  # the bank's name, or the names of the banks it spans joined by "+"
    capacity: int
    external: bool = False


def plan_banks(profile: DeviceProfile, *, merge_contiguous: bool = False) -> tuple[PlanBank, ...]:
    """The banks a program is planned into, in mem_id order (1, 2, ...): internal RAM largest
    first, then external RAM; code-only banks are left out. With `merge_contiguous`, internal
    banks that follow each other in the address map (each with its `address` stated and
    nothing reserved) are one bank."""
    data = profile.data_banks
    internal = [PlanBank(b.name, b.usable_bytes) for b in data if not b.external]
    if merge_contiguous:
        internal = _merged([b for b in data if not b.external])
    external = [PlanBank(b.name, b.usable_bytes, external=True) for b in data if b.external]
    return (*sorted(internal, key=lambda b: -b.capacity), *external)


def _merged(banks: list[Any]) -> list[PlanBank]:
    """Runs of banks that end where the next begins, each run one PlanBank."""
    runs: list[list[Any]] = []
    placed = sorted((b for b in banks if b.address is not None and not b.reserved_bytes),
                    key=lambda b: b.address)  # fmt: skip
    for bank in placed:
        if runs and runs[-1][-1].address + runs[-1][-1].bytes == bank.address:
            runs[-1].append(bank)
        else:
            runs.append([bank])
    runs += [[b] for b in banks if b not in placed]
    return [PlanBank("+".join(b.name for b in run), sum(b.usable_bytes for b in run))
            for run in runs]  # fmt: skip


def _align(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


class BankedPlanner:
    """memory_planning_algo placing ExecuTorch's greedy shared objects into banks, or with
    `per_tensor_offsets` each tensor at its own offset where that plan is the better one;
    `room` bytes kept free in one of the banks (the module docstring)."""

    def __init__(
        self, banks: tuple[PlanBank, ...], *, per_tensor_offsets: bool = False, room: int = 0
    ) -> None:
        if not banks:
            raise ValueError("banked planning needs at least one bank")
        if room < 0:
            raise ValueError(f"room must be at least 0 bytes, got {room}")
        self.banks = banks
        self.per_tensor_offsets = per_tensor_offsets
        self.room = room
        self.__name__ = "banked"

    def __call__(
        self, alignment: int, specs: Any, graph_module: Any, graph_signature: Any, padding: int
    ) -> list[int]:
        from executorch.exir.memory_planning import greedy

        specs = list(specs)
        for spec in specs:
            spec.mem_id = None
        # Greedy breaks ties between equal sizes by input order, and that order moves the
        # result by several percent (ResNet-20 EcoTTA step: 0.99 to 1.05 MB). Try a few
        # deterministic orders; keep the plan with the least overflow, then the least total.
        orders = [
            specs,
            specs[::-1],
            sorted(specs, key=lambda sp: sp.lifetime[0]),
            sorted(specs, key=lambda sp: -sp.lifetime[0]),
            sorted(specs, key=lambda sp: sp.lifetime[1]),
            sorted(specs, key=lambda sp: -sp.lifetime[1]),
            sorted(specs, key=lambda sp: sp.lifetime[0] - sp.lifetime[1]),
        ]
        results = [greedy(alignment, order, graph_module, graph_signature, 0) for order in orders]
        plans = []  # (overflow, total, used, placement)
        for capacities in self._capacities():
            packed = [self._pack(result, alignment, capacities) for result in results]
            if self.per_tensor_offsets:
                packed.append(offset_plan(specs, capacities, alignment))
            plans += [(overflow(p[0], capacities), sum(p[0]), *p) for p in packed]
        _, _, used, placement = min(plans, key=lambda p: (p[0], p[1]))
        for spec, (bank, obj, offset) in placement.items():
            spec.mem_id, spec.mem_obj_id, spec.mem_offset = bank + 1, obj, offset
        sizes = [u + padding if u else 0 for u in used]
        while sizes and sizes[-1] == 0:  # trailing empty banks: no buffer at all
            sizes.pop()
        return [0, *sizes]

    def _capacities(self) -> list[list[int]]:
        """What the arenas may take of each bank: the whole banks, or with `room`, one list
        per bank that can hold the room, that bank short of it."""
        whole = [b.capacity for b in self.banks]
        if not self.room:
            return [whole]
        homes = [i for i, c in enumerate(whole) if c >= self.room]
        choices = [
            [c - self.room if i == home else c for i, c in enumerate(whole)] for home in homes
        ]
        return choices or [whole]

    def _pack(
        self, result: Any, alignment: int, capacities: list[int]
    ) -> tuple[list[int], dict[Any, tuple]]:
        """Bytes used per bank, and each spec's (bank, object, offset), for one greedy plan."""
        extent: dict[int, list[int]] = {}
        members: dict[int, list[Any]] = defaultdict(list)
        for spec, alloc in result.spec_dict.items():
            lo, hi = alloc.mem_offset, alloc.mem_offset + spec.allocated_memory
            box = extent.setdefault(alloc.mem_obj_id, [lo, hi])
            box[0], box[1] = min(box[0], lo), max(box[1], hi)
            members[alloc.mem_obj_id].append((spec, alloc))
        used = [0] * len(self.banks)
        placement: dict[Any, tuple] = {}
        for obj in sorted(extent, key=lambda o: (extent[o][0] - extent[o][1], o)):
            lo, hi = extent[obj]
            size = _align(hi - lo, alignment)
            fitting = [i for i, c in enumerate(capacities) if used[i] + size <= c]
            if fitting:  # best fit: the bank with the least room that still holds it
                bank = min(fitting, key=lambda i: capacities[i] - used[i])
            else:
                bank = max(range(len(capacities)), key=lambda i: capacities[i] - used[i])
            for spec, alloc in members[obj]:
                placement[spec] = (bank, obj, used[bank] + alloc.mem_offset - lo)
            used[bank] += size
        return used, placement


def backend_config(profile: DeviceProfile | None, *, tight: bool = False, room: int = 0) -> Any:
    """An ExecutorchBackendConfig planning into `profile`'s banks (default planning: None);
    `tight`: contiguous banks merged and per-tensor offsets; `room`: bytes kept free in one
    bank (the module docstring)."""
    from executorch.exir import ExecutorchBackendConfig
    from executorch.exir.passes import MemoryPlanningPass

    if profile is None:
        return ExecutorchBackendConfig()
    banks = plan_banks(profile, merge_contiguous=tight)
    planner = BankedPlanner(banks, per_tensor_offsets=tight, room=room)
    return ExecutorchBackendConfig(
        memory_planning_pass=MemoryPlanningPass(memory_planning_algo=planner)
    )
