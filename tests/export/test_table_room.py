"""Room for the runtime's tables: a banked plan that places every arena but leaves no bank
room for the tables is made again with that room kept in one bank (export/table_room.py)."""

from __future__ import annotations

import types

import pytest
import torch
from tiny_training import X, made_up_mcu, tiny_ecotta

import edgeadapt.export.table_room as table_room
import edgeadapt.export.training as training
from edgeadapt.export import TrainingRunner, check_fit, load_profile, to_training_program
from edgeadapt.export.memory_plan import BankedPlanner, PlanBank
from edgeadapt.export.table_room import needed_room

H743 = load_profile("stm32h743")


def _memory(arenas, banks, tables):
    return {"arena_bytes": arenas, "arena_banks": banks, "planned_for": H743.key,
            "constant_bytes": 100_000, "runtime_bytes_estimate": tables}  # fmt: skip


def test_room_is_asked_only_when_it_would_make_the_program_fit():
    banks = ("AXI SRAM", "SRAM1+SRAM2+SRAM3")
    # The arenas fill the AXI SRAM and most of SRAM1-3: the 200 kB of tables fit nowhere.
    crowded = _memory([500_000, 200_000], banks, 200_000)
    fit = check_fit(crowded, H743)
    assert not fit.fits
    beside = [
        p.bytes
        for p in fit.placements
        if not p.item.startswith(("arena", "constants", "firmware code"))
    ]
    room = needed_room(crowded, H743)
    assert room == sum(beside) + sum(s.bytes for s in fit.shortfalls) > 200_000
    assert needed_room(_memory([500_000, 20_000], banks, 200_000), H743) == 0  # it fits
    # An arena larger than its bank: no room elsewhere makes that fit.
    assert needed_room(_memory([600_000, 200_000], banks, 200_000), H743) == 0


class _Spec:
    """What BankedPlanner and offset_plan read of an ExecuTorch TensorSpec."""

    def __init__(self, size):
        self.lifetime, self.allocated_memory = [0, 9], size
        self.storage_base, self.storage_base_offset = None, 0

    def realign(self, alignment):
        return self.allocated_memory


def _one_object(alignment, specs, graph_module, signature, padding):
    """A stand-in for ExecuTorch's greedy plan: every tensor in one shared object, end to
    end, larger than any bank (never the plan kept), so the per-tensor offsets decide."""
    alloc = lambda i: types.SimpleNamespace(mem_offset=30 * i, mem_obj_id=0)  # noqa: E731
    return types.SimpleNamespace(spec_dict={s: alloc(i) for i, s in enumerate(specs)})


def test_the_planner_keeps_the_room_free_in_one_bank(monkeypatch):
    """Four 30-byte tensors alive together in banks of 100, 60 and 40 bytes: first fit puts
    three in the first bank and one in the second (free: 10, 30, 40), so no bank has 50 bytes
    left. Asked for 50 bytes of room, the plan leaves one bank that much."""
    import executorch.exir.memory_planning as planning

    monkeypatch.setattr(planning, "greedy", _one_object)
    banks = (PlanBank("A", 100), PlanBank("B", 60), PlanBank("C", 40))

    def free_after(room):
        planner = BankedPlanner(banks, per_tensor_offsets=True, room=room)
        sizes = planner(1, [_Spec(30) for _ in range(4)], None, None, 0)[1:]
        sizes += [0] * (len(banks) - len(sizes))
        assert all(u <= b.capacity for u, b in zip(sizes, banks))  # no overflow either way
        return [b.capacity - u for u, b in zip(sizes, banks)]

    assert max(free_after(0)) < 50
    assert max(free_after(50)) >= 50
    with pytest.raises(ValueError, match="room"):
        BankedPlanner(banks, room=-1)


@pytest.fixture(scope="module")
def room_programs(tmp_path_factory):
    """The tiny int8 step (~38 kB of arena, ~29 kB of tables) for banks of 45 and 30 kB, as
    planned and planned again with 33 kB of room asked for. The tiny step's own first plan
    leaves its tables room (ExecuTorch's greedy slots, packed best fit, leave the larger bank
    mostly free), so the ask is forced: this checks the planning again, end to end."""
    folder = tmp_path_factory.mktemp("room")
    profile = made_up_mcu(folder, [("A", 45_000), ("B", 30_000)])
    common = dict(device=profile, quantize="int8")
    first = to_training_program(tiny_ecotta(), X, folder / "first.pte", **common)
    asked = iter([ROOM])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(table_room, "needed_room", lambda memory, p: next(asked, 0))
        again = to_training_program(tiny_ecotta(), X, folder / "again.pte", **common)
    return profile, first, again


ROOM = 33_000


def test_a_plan_made_again_keeps_the_room_and_fits(room_programs):
    profile, _, again = room_programs
    capacity = {b.name: b.bytes for b in profile.ram}
    free = dict(capacity)
    for size, bank in zip(again.arena_bytes, again.arena_banks):
        free[bank] -= size
    assert max(free.values()) >= ROOM and min(free.values()) >= 0
    assert check_fit(again, profile).fits
    assert any(f"planned again with {ROOM:,} B" in note for note in again.notes)


def test_the_plan_made_again_steps_the_same(room_programs):
    _, first, again = room_programs
    runners = [TrainingRunner(r.path, lr=5e-2) for r in (first, again)]
    start = None
    for x in torch.randn(3, 1, 3, 16, 16, generator=torch.Generator().manual_seed(9)):
        (la, loss_a, _), (lb, loss_b, _) = (r.step(x) for r in runners)
        assert torch.equal(la, lb) and loss_a == loss_b
        start = start or runners[1].parameters()
    got, want = (r.parameters() for r in runners)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert any(not torch.equal(got[k], v) for k, v in start.items())  # the weights moved


def test_a_second_try_asks_for_what_the_second_plan_lacks(monkeypatch):
    """The tables move a little with the plan: when the plan made with the room asked for
    still leaves too little, the exporter asks once more for what that plan lacks (plus
    1 KiB), and gives up after that, keeping the first plan; a room no bank could hold is
    not asked for at all. (Planning, fit and room are stand-ins here: the tiny programs
    never land that close.)"""
    import edgeadapt.export.executorch_program as executorch_program
    import edgeadapt.export.fit as fit
    import edgeadapt.export.memory_plan as memory_plan

    needs = {b"first": 1_000, b"room 1000": 1_300, b"room 2324": 0}  # room each plan lacks
    monkeypatch.setattr(
        memory_plan, "plan_banks", lambda p, merge_contiguous: [PlanBank("A", 5_000)]
    )
    monkeypatch.setattr(
        executorch_program, "planned_memory", lambda data, p, merge_contiguous: data
    )
    monkeypatch.setattr(table_room, "needed_room", lambda data, p: needs[data])
    monkeypatch.setattr(
        fit, "check_fit", lambda data, p: types.SimpleNamespace(fits=not needs[data])
    )
    asked = []

    def emit(room):
        asked.append(room)
        return f"manager {room}", f"room {room}".encode()

    manager, data, note = training._with_table_room(emit, "first manager", b"first", H743)
    assert asked == [1_000, 2_324] and "2,324 B" in note
    assert (manager, data) == ("manager 2324", b"room 2324")
    needs[b"room 2324"] = 50  # still short after the second try: the first plan stays
    asked.clear()
    assert training._with_table_room(emit, "m", b"first", H743) == ("m", b"first", None)
    assert asked == [1_000, 2_324]
    needs[b"first"] = 6_000  # more than the largest bank: no plan could keep it
    asked.clear()
    assert training._with_table_room(emit, "m", b"first", H743) == ("m", b"first", None)
    assert asked == []
