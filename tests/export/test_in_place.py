"""Elementwise ops written over an input they are the last to read: a smaller arena, the
same outputs."""

from __future__ import annotations

import torch
from torch import nn

from edgeadapt.export.executorch_program import ExecuTorchRunner
from edgeadapt.export.in_place import in_place_elementwise


class _Chain(nn.Module):
    """Elementwise chains over full maps, one input read again later (kept whole)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(x * 1.5 + 0.25)  # each op the last reader of the one before
        z = (y - 0.5).abs() * y  # y read twice: the last reader may take it
        return z.mean(dim=(2, 3)) + x.sum(dim=(2, 3))  # x read at the end: never taken


def _program(in_place: bool) -> tuple[bytes, int, int]:
    from executorch.exir import to_edge

    exported = torch.export.export(_Chain(), (torch.randn(1, 4, 8, 8),))
    edge = to_edge(exported)
    marked = in_place_elementwise(edge.exported_program().graph_module) if in_place else 0
    manager = edge.to_executorch()
    plan = manager.executorch_program.execution_plan[0]
    return manager.buffer, marked, sum(plan.non_const_buffer_sizes)


def test_in_place_ops_shrink_the_arena_and_keep_the_outputs() -> None:
    plain, none, plain_arena = _program(in_place=False)
    shared, marked, arena = _program(in_place=True)
    assert none == 0 and marked >= 3
    assert arena < plain_arena
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    want = ExecuTorchRunner.from_bytes(plain).run(x)
    assert torch.equal(ExecuTorchRunner.from_bytes(shared).run(x), want)
    assert torch.allclose(want, _Chain()(x), atol=1e-5)


def test_an_input_read_later_or_through_a_view_is_never_taken() -> None:
    from executorch.exir import to_edge

    class _Later(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = x * 2.0
            b = a + 1.0  # not a's last reader: a is read below
            v = a.view(-1)  # a view of a
            return b.sum() + v.sum()

    edge = to_edge(torch.export.export(_Later(), (torch.randn(2, 3),)))
    graph_module = edge.exported_program().graph_module
    in_place_elementwise(graph_module)
    taken = {
        n.args[n.meta["_share_alloc_with_arg_idx"]].name
        for n in graph_module.graph.nodes
        if "_share_alloc_with_arg_idx" in n.meta
    }
    mul = next(n.name for n in graph_module.graph.nodes if "mul" in n.name)
    assert mul not in taken
