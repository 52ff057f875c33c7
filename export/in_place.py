"""Elementwise ops written into the memory of an input that dies with them.

ExecuTorch plans a program functionally: every op's output gets its own place in the arena,
so `y = x * s` holds x and y at once even where nothing reads x afterwards. A training step
is chains of such ops over full feature maps (a BN's scale and shift, a ReLU's `where`, the
L1 term's difference, the int8 kept activations' quantize and dequantize): at batch 1 on
ResNet-20's first stage each is a 64 KB map held twice. An elementwise kernel reads element
i of its inputs before it writes element i of its output, so the output can take the memory
of an input of its own shape and dtype whose last reader it is -- the in-place updates of
on-device training (MCUNetV3). The memory planner supports exactly that
(`_share_alloc_with_arg_idx`: the output's storage is that argument's); this marks the ops.
"""

from __future__ import annotations

import operator
from typing import Any

import torch

__all__ = ["ELEMENTWISE", "ELEMENTWISE_KERNELS", "in_place_elementwise", "op_name"]

# Ops whose portable and optimized ExecuTorch kernels compute each output element from the
# same element of every input of the output's shape (the others broadcast), so writing the
# output over such an input is safe.
ELEMENTWISE = frozenset(
    {
        "aten.abs.default",
        "aten.add.Tensor",
        "aten.clamp.default",
        "aten.div.Tensor",
        "aten.mul.Tensor",
        "aten.neg.default",
        "aten.round.default",
        "aten.rsqrt.default",
        "aten.sub.Tensor",
        "aten.where.self",
    }
)


def _out_kernel(name: str) -> str:
    """The runtime's name of an ELEMENTWISE op's out variant: "aten.add.Tensor" ->
    "aten::add.out", "aten.where.self" -> "aten::where.self_out"."""
    _, op, overload = name.split(".")
    return f"aten::{op}.out" if overload in ("Tensor", "default") else f"aten::{op}.{overload}_out"


# The kernels those ops run as in an emitted program (operator name.overload).
ELEMENTWISE_KERNELS = frozenset(_out_kernel(n) for n in ELEMENTWISE)


def in_place_elementwise(graph_module: Any) -> int:
    """Mark, in place, each elementwise op of an edge program's graph (`ELEMENTWISE`) that is
    the last reader of an input of its output's shape and dtype, so that the memory planner
    gives the output that input's memory; returns how many. Exact: the same kernels compute
    the same values. Inputs that are placeholders, returned, or read through a view (which
    the planner turns into an alias of the same memory) keep their own."""
    nodes = list(graph_module.graph.nodes)
    order = {n: i for i, n in enumerate(nodes)}
    returned = set(nodes[-1].all_input_nodes) if nodes and nodes[-1].op == "output" else set()
    marked = 0
    for node in nodes:
        if node.op != "call_function" or op_name(node.target) not in ELEMENTWISE:
            continue
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            continue
        for index, arg in enumerate(node.args):
            if _can_take(arg, node, val, order, returned):
                node.meta["_share_alloc_with_arg_idx"] = index
                marked += 1
                break
    return marked


def _can_take(arg: Any, node: Any, val: torch.Tensor, order: dict, returned: set) -> bool:
    """Whether `node`'s output can be written over `arg`'s memory."""
    if not hasattr(arg, "op") or arg.op != "call_function" or arg in returned:
        return False
    if arg.target is operator.getitem or _is_alias(arg):  # memory that is another op's
        return False
    other = arg.meta.get("val")
    if not isinstance(other, torch.Tensor) or other.shape != val.shape or other.dtype != val.dtype:
        return False
    if not other.is_contiguous() or not val.is_contiguous():
        return False
    users = list(arg.users)
    return all(order[u] <= order[node] for u in users) and not any(_is_alias(u) for u in users)


def op_name(target: Any) -> str:
    # Edge ops print as their ATen overload: "aten.add.Tensor".
    return str(getattr(target, "_op", target))


def _is_alias(node: Any) -> bool:
    """An op the emitter may turn into a view of its input's memory."""
    name = op_name(node.target) if node.op == "call_function" else ""
    return any(k in name for k in ("view", "alias", "squeeze", "expand", "_unsafe", "slice"))
