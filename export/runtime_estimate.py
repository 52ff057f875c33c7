"""What the ExecuTorch runtime allocates for a method outside the planned arena, estimated
from the program's own tables for a 32-bit target.

`Method::init` takes these from the method allocator, on top of the planned buffers: one
EValue per value in the plan, a TensorImpl and a strides array per tensor, the unboxed
arrays of int lists and tensor lists, and per instruction the kernel pointer, its argument
list (a span: pointer and length) and the argument pointers. The per-item sizes are those of
a 32-bit build (ExecuTorch's EValue is 16 bytes there, TensorImpl 28). They are an estimate,
not a measurement: the host bindings do not expose the method allocator. The Cortex-M7
firmware measures it (benchmarks/firmware/results.md): with these sizes the estimate is
within 0.4% of the measured figure for every program built there (36 to 234 B below it).
Before, it left out the argument list's span and took TensorImpl as 32 bytes: 3% low for
the unscheduled programs, 10% for the scheduled ones, whose instructions outnumber their
tensors 2 to 1.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RuntimeEstimate", "estimate_runtime_bytes"]

EVALUE = 16
TENSOR_IMPL = 28  # sizes*, dim_order*, strides*, data*, numel, dim, dtype, dynamism
POINTER = 4
SPAN = 8  # pointer and length: an instruction's argument list
INT64 = 8


@dataclass(frozen=True)
class RuntimeEstimate:
    values: int  # EValues in the plan
    tensors: int
    instructions: int
    bytes: int  # estimated method-allocator bytes


def estimate_runtime_bytes(data: bytes) -> RuntimeEstimate:
    """The estimated method-allocator bytes of a .pte's first method."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    plan = deserialize_pte_binary(data).program.execution_plan[0]
    total = EVALUE * len(plan.values)
    tensors = 0
    for value in plan.values:
        kind = type(value.val).__name__
        if kind == "Tensor":
            tensors += 1
            total += TENSOR_IMPL + POINTER + POINTER * len(value.val.sizes)
        elif kind in ("IntList", "BoolList", "DoubleList"):
            total += (POINTER + INT64) * len(value.val.items)
        elif kind in ("TensorList", "OptionalTensorList"):
            total += (POINTER + POINTER + TENSOR_IMPL // 4) * len(value.val.items)
    instructions = 0
    for chain in plan.chains:
        for instruction in chain.instructions:
            instructions += 1
            args = getattr(instruction.instr_args, "args", None) or ()
            total += POINTER + SPAN + POINTER * len(args)
    return RuntimeEstimate(len(plan.values), tensors, instructions, total)
