"""Scalar arguments shared between instructions: fewer values, the same results."""

from __future__ import annotations

import torch
from torch import nn

from edgeadapt.export.executorch_program import ExecuTorchRunner
from edgeadapt.export.shared_values import share_constant_values


class _Adds(nn.Module):
    """Many ops with the same scalar arguments (alpha, dims, keepdim)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for k in range(6):
            x = torch.add(x, x * 0.5, alpha=2) - k
            x = x - x.mean(dim=1, keepdim=True)
        return x.sum(dim=(2, 3))


def _plain_pte() -> bytes:
    from executorch.exir import to_edge

    exported = torch.export.export(_Adds(), (torch.randn(2, 3, 4, 4),))
    return to_edge(exported).to_executorch().buffer


def _values(data: bytes) -> int:
    from executorch.exir._serialize._program import deserialize_pte_binary

    plans = deserialize_pte_binary(data).program.execution_plan
    return sum(len(p.values) for p in plans)


def test_shared_values_give_the_same_outputs_with_fewer_values() -> None:
    plain = _plain_pte()
    shared, removed = share_constant_values(plain)
    assert removed > 0 and _values(shared) == _values(plain) - removed
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    want = ExecuTorchRunner.from_bytes(plain).run(x)
    assert torch.equal(ExecuTorchRunner.from_bytes(shared).run(x), want)
    again, none = share_constant_values(shared)  # already shared: nothing left to do
    assert none == 0 and again == shared


def test_shared_arena_tensors_give_the_same_outputs_with_fewer_tensors() -> None:
    """Arena tensors of one shape at one offset become one value: the same outputs."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    from edgeadapt.export.shared_values import share_arena_tensors

    plain = share_constant_values(_plain_pte())[0]
    shared, removed = share_arena_tensors(plain)
    assert removed > 0 and _values(shared) == _values(plain) - removed
    plan = deserialize_pte_binary(shared).program.execution_plan[0]
    offsets = [
        (
            tuple(v.val.sizes),
            v.val.allocation_info.memory_id,
            v.val.allocation_info.memory_offset_low,
        )
        for i, v in enumerate(plan.values)
        if type(v.val).__name__ == "Tensor"
        and v.val.allocation_info is not None
        and i not in (*plan.inputs, *plan.outputs)
    ]
    assert len(offsets) == len(set(offsets))  # one value per shape at each offset
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    want = ExecuTorchRunner.from_bytes(plain).run(x)
    assert torch.equal(ExecuTorchRunner.from_bytes(shared).run(x), want)
    again, none = share_arena_tensors(shared)
    assert none == 0 and again == shared


class _Constants(nn.Module):
    """The same constant twice (two buffers of equal bytes: one data buffer in the file)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("a", torch.full((3,), 0.5))
        self.register_buffer("b", torch.full((3,), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.a.view(1, 3, 1, 1) + self.b.view(1, 3, 1, 1)).sum(dim=(2, 3))


def test_equal_constants_become_one_value_with_the_same_outputs() -> None:
    from executorch.exir import to_edge
    from executorch.exir._serialize._program import deserialize_pte_binary

    from edgeadapt.export.shared_values import share_arena_tensors

    def constants(data: bytes) -> int:
        plan = deserialize_pte_binary(data).program.execution_plan[0]
        return sum(1 for v in plan.values
                   if type(v.val).__name__ == "Tensor" and v.val.data_buffer_idx > 0)  # fmt: skip

    exported = torch.export.export(_Constants(), (torch.randn(2, 3, 4, 4),))
    plain = to_edge(exported).to_executorch().buffer
    shared, removed = share_arena_tensors(plain)
    assert removed > 0 and constants(shared) < constants(plain)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    want = ExecuTorchRunner.from_bytes(plain).run(x)
    assert torch.equal(ExecuTorchRunner.from_bytes(shared).run(x), want)
    assert torch.allclose(want, _Constants()(x))
