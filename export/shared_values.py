"""One value per distinct scalar argument in an emitted program, not one per use.

ExecuTorch's emitter gives every instruction its own EValue for each scalar argument: the
`alpha=1` of every `add`, every `dim`, `keepdim`, `None` and every `[1, 1]` stride list. The
runtime allocates each of them from the method allocator at load -- an EValue each, and for a
list its boxed and unboxed copies -- so on a microcontroller they are a large part of the
"runtime tables" (ResNet-20's EcoTTA step: 2,387 scalars with 25 distinct values, 517 int lists
with 22). Instructions only read these arguments, so instructions can share one value.

Only values nothing writes are shared: not the plan's or a chain's inputs and outputs, not a
move's destination, not a kernel's or delegate's last argument (where an op's result goes),
not a freed value.

Tensors in the planned arena repeat too: the memory planner puts tensors whose lifetimes do
not overlap at the same offset, and tensors of one shape at one offset are the same TensorImpl
in all but name (ResNet-20's EcoTTA step: 1,559 arena tensors, 429 distinct). Each still costs
an EValue, a TensorImpl and a strides array at load (~60 B on a 32-bit target).
`share_arena_tensors` gives instructions one value for each, and one for each set of
constant tensors that are the same bytes of the file (the emitter stores equal data once
but gives every lifted constant its own value: 270 constants, 169 distinct). Opt-in with the
exporter's memory levers.
"""

from __future__ import annotations

from typing import Any

from edgeadapt.export.in_place import ELEMENTWISE_KERNELS

__all__ = ["share_arena_tensors", "share_constant_values"]


def share_constant_values(data: bytes) -> tuple[bytes, int]:
    """`data` (a .pte) with identical read-only scalar and int-list values shared in every
    method; returns the new bytes and how many values were removed."""
    return _in_every_plan(data, _share_in_plan)


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
    return _merge(plan, target, s)


def share_arena_tensors(data: bytes) -> tuple[bytes, int]:
    """`data` (a .pte) with the arena tensors of each method that are identical -- dtype,
    shape, dim order, memory id and offset -- given one value, and so the constant tensors
    that are the same bytes of the file seen the same way (the lifted 0.9s and 1e-5s of
    every BN); returns the new bytes and how many values were removed. Exact: such tensors
    are the same memory seen the same way, and the planner placed arena tensors there
    because no two are alive at once. Not shared: the plan's and chains' inputs and outputs,
    and any arena tensor an instruction reads or writes beside another of its group (there
    would be an instruction reading its own output then, which a correct plan never makes)
    unless that instruction is an elementwise kernel writing over its input
    (export/in_place.py)."""
    return _in_every_plan(data, _share_tensors_in_plan)


def _in_every_plan(data: bytes, share: Any) -> tuple[bytes, int]:
    """`share(plan)` on every method of the .pte `data`: the new bytes and the values removed
    (`data` itself when none was)."""
    from executorch.exir._serialize._program import deserialize_pte_binary, serialize_pte_binary

    pte = deserialize_pte_binary(data)
    removed = sum(share(plan) for plan in pte.program.execution_plan)
    if not removed:
        return data, 0
    return bytes(serialize_pte_binary(pte)), removed


def _share_tensors_in_plan(plan: Any) -> int:
    from executorch.exir import schema as s

    ends = _ends(plan)
    canonical: dict[tuple, int] = {}
    target: dict[int, int] = {}
    constants: dict[int, int] = {}  # read-only: no instruction writes them, nothing clashes
    for i, v in enumerate(plan.values):
        t = v.val
        if not isinstance(t, s.Tensor) or i in ends or t.extra_tensor_info is not None:
            continue
        view = (t.scalar_type, tuple(t.sizes), tuple(t.dim_order), t.storage_offset, t.layout,
                t.shape_dynamism, t.requires_grad)  # fmt: skip
        a = t.allocation_info
        if a is None and t.data_buffer_idx > 0:  # a constant: the same bytes in the file
            constants[i] = canonical.setdefault(("constant", t.data_buffer_idx, *view), i)
        elif a is not None and t.data_buffer_idx == 0:
            key = (*view, a.memory_id, a.memory_offset_low, a.memory_offset_high)
            target[i] = canonical.setdefault(key, i)
    # An instruction whose distinct tensors would become one: leave that group unshared,
    # unless it is an elementwise kernel writing over its input (export/in_place.py).
    clashing = set()
    for chain in plan.chains:
        for instruction in chain.instructions:
            a = instruction.instr_args
            if isinstance(a, s.KernelCall) and _operator(plan, a.op_index) in ELEMENTWISE_KERNELS:
                continue
            tensors = {j for j in (getattr(a, "args", None) or ()) if j in target}
            if len({target[j] for j in tensors}) < len(tensors):
                clashing.update(target[j] for j in tensors)
    target = {i: t for i, t in target.items() if t not in clashing} | constants
    return _merge(plan, target, s)


def _operator(plan: Any, index: int) -> str:
    op = plan.operators[index]
    return f"{op.name}.{op.overload}" if op.overload else op.name


def _merge(plan: Any, target: dict[int, int], s: Any) -> int:
    """Drop, in place, every value `target` maps to another and point its readers at that
    one; returns how many were dropped."""
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


def _ends(plan: Any) -> set[int]:
    """The plan's and its chains' inputs and outputs: values the caller reads or writes."""
    ends = {*plan.inputs, *plan.outputs}
    for chain in plan.chains:
        ends.update(chain.inputs)
        ends.update(chain.outputs)
    return ends


def _written(plan: Any, s: Any) -> set[int]:
    written = _ends(plan)
    for chain in plan.chains:
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
