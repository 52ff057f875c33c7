"""One value per distinct scalar argument in an emitted program, not one per use.

ExecuTorch's emitter gives every instruction its own EValue for each scalar argument: the
`alpha=1` of every `add`, every `dim`, `keepdim`, `None` and every `[1, 1]` stride list. The
runtime allocates each of them from the method allocator at load -- an EValue each, and for a
list its boxed and unboxed copies -- so on a microcontroller they are a large part of the
"runtime tables" (ResNet-20's EcoTTA step: 2,387 scalars with 25 distinct values, 517 int lists
with 22). Instructions only read these arguments, so instructions can share one value.

Only values nothing writes are shared: not the plan's or a chain's inputs and outputs, not a
move's destination, not a kernel's or delegate's last argument (where an op's result goes),
not a freed value. Tensors are never touched.
"""

from __future__ import annotations

from typing import Any

__all__ = ["share_constant_values"]


def share_constant_values(data: bytes) -> tuple[bytes, int]:
    """`data` (a .pte) with identical read-only scalar and int-list values shared in every
    method; returns the new bytes and how many values were removed."""
    from executorch.exir._serialize._program import deserialize_pte_binary, serialize_pte_binary

    pte = deserialize_pte_binary(data)
    removed = sum(_share_in_plan(plan) for plan in pte.program.execution_plan)
    if not removed:
        return data, 0
    return bytes(serialize_pte_binary(pte)), removed


def _share_in_plan(plan: Any) -> int:
    from executorch.exir import schema as s

    written = _written(plan, s)
    canonical: dict[tuple, int] = {}
    target: dict[int, int] = {}  # value index -> the index of the value it shares
    for i, v in enumerate(plan.values):
        key = _scalar_key(v.val, s)
        if key is not None and i not in written:
            target[i] = canonical.setdefault(key, i)
    for i, v in enumerate(plan.values):  # lists after scalars: their keys use shared items
        if isinstance(v.val, s.IntList) and i not in written:
            key = ("IntList", tuple(target.get(j, j) for j in v.val.items))
            target[i] = canonical.setdefault(key, i)
    kept = [i for i in range(len(plan.values)) if target.get(i, i) == i]
    if len(kept) == len(plan.values):
        return 0
    position = {old: new for new, old in enumerate(kept)}

    def new(i: int) -> int:
        return i if i < 0 else position[target.get(i, i)]  # -1: an absent optional tensor

    plan.values = [plan.values[i] for i in kept]
    for v in plan.values:
        if isinstance(v.val, (s.IntList, s.TensorList, s.OptionalTensorList)):
            v.val.items = [new(j) for j in v.val.items]
    plan.inputs = [new(i) for i in plan.inputs]
    plan.outputs = [new(i) for i in plan.outputs]
    for chain in plan.chains:
        chain.inputs = [new(i) for i in chain.inputs]
        chain.outputs = [new(i) for i in chain.outputs]
        for instruction in chain.instructions:
            _remap_instruction(instruction.instr_args, new, s)
    return len(target) - sum(1 for i, t in target.items() if i == t)


def _written(plan: Any, s: Any) -> set[int]:
    written = {*plan.inputs, *plan.outputs}
    for chain in plan.chains:
        written.update(chain.inputs)
        written.update(chain.outputs)
        for instruction in chain.instructions:
            a = instruction.instr_args
            if isinstance(a, s.MoveCall):
                written.add(a.move_to)
            elif isinstance(a, (s.KernelCall, s.DelegateCall)) and a.args:
                written.add(a.args[-1])
            elif isinstance(a, s.FreeCall):
                written.add(a.value_index)
    return written


def _scalar_key(val: Any, s: Any) -> tuple | None:
    # The type is part of the key: Int 1, Double 1.0 and Bool True stay distinct values.
    if isinstance(val, s.Int):
        return ("Int", val.int_val)
    if isinstance(val, s.Bool):
        return ("Bool", val.bool_val)
    if isinstance(val, s.Double):
        return ("Double", repr(val.double_val))  # repr: -0.0 and nan stay themselves
    if isinstance(val, s.Null):
        return ("Null",)
    return None


def _remap_instruction(a: Any, new: Any, s: Any) -> None:
    if isinstance(a, (s.KernelCall, s.DelegateCall)):
        a.args = [new(i) for i in a.args]
    elif isinstance(a, s.MoveCall):
        a.move_from, a.move_to = new(a.move_from), new(a.move_to)
    elif isinstance(a, s.JumpFalseCall):
        a.cond_value_index = new(a.cond_value_index)
    elif isinstance(a, s.FreeCall):
        a.value_index = new(a.value_index)
