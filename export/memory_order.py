"""A memory-aware order for a forward+backward graph: ops that free memory run as soon
as they can.

ExecuTorch's planner keeps each tensor from the op that makes it to its last reader, so the
arena's peak is set by the order of the ops as much as by the ops. The joint graph's order
is autograd's: in EcoTTA's step a part's meta network reads the part's input after the
frozen part's BN has made its output, so four feature maps are alive where three would do
if the meta network ran first (its input dies there). `early_forward_ops` and
`late_backward_ops` move known patterns; this weighs every ready op by what it adds: the
bytes it makes less the bytes it frees (inputs it is the last to read), an elementwise op
that is the last reader of an input of its size making nothing (export/in_place.py writes
it over that input). Ops that add at most `SMALL` bytes run first, the least first; the
others keep the graph's order. (Taking the least-adding op every time, however large, pulls
later layers' mask unpacking and dequantizing forward: ResNet-20's step grew to 818 KB.)
The forward is ordered before the backward, and ops made from constants only (a weight's
dequantize) run right before their first reader.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch

from edgeadapt.export.in_place import ELEMENTWISE, op_name
from edgeadapt.export.training_passes import _bytes, _forward_ops, _outputs

__all__ = ["memory_aware_order"]

SMALL = 4096  # bytes: a vector of statistics, a packed mask's row


def memory_aware_order(exported: Any) -> int:
    """Reorder, in place, the ops of an exported forward+backward program: forward first,
    then backward, each greedily by the arena bytes an op adds (`__doc__`); returns how many
    ops changed position. Exact: the same ops on the same values."""
    from torch.export.graph_signature import OutputKind

    graph = exported.graph_module.graph
    nodes = list(graph.nodes)
    kinds = (OutputKind.LOSS_OUTPUT, OutputKind.USER_OUTPUT)
    forward = _forward_ops(exported, nodes, _outputs(exported, nodes, lambda k: k in kinds))
    ops = [n for n in nodes if n.op == "call_function"]
    position = {n: i for i, n in enumerate(nodes)}
    lazy = {n for n in ops if _only_constants(n)}
    remaining = {n: len(n.users) for n in nodes}
    done = {n for n in nodes if n.op in ("placeholder", "get_attr")}
    order: list[Any] = []

    def emit(node: Any) -> None:
        for a in node.all_input_nodes:
            if a not in done:
                emit(a)  # a lazy constant op, made right before its first reader
        done.add(node)
        order.append(node)
        for a in node.all_input_nodes:
            remaining[a] -= 1

    for phase in (
        [n for n in ops if n in forward and n not in lazy],
        [n for n in ops if n not in forward and n not in lazy],
    ):
        members = set(phase)
        waiting = {n: sum(1 for a in n.all_input_nodes if a not in done and a not in lazy)
                   for n in phase}  # fmt: skip
        ready = {n for n in phase if waiting[n] == 0}
        while ready:
            cost = {n: _added_bytes(n, remaining, done, lazy) for n in ready}
            # What frees memory (or costs next to nothing) first, the least costly first;
            # then the graph's own order.
            cheap = [n for n in ready if cost[n] <= SMALL]
            best = (min(cheap, key=lambda n: (cost[n], position[n])) if cheap
                    else min(ready, key=position.__getitem__))  # fmt: skip
            ready.remove(best)
            emit(best)
            for user in best.users:
                if user in members and user not in done:
                    waiting[user] -= 1
                    if waiting[user] == 0:
                        ready.add(user)
        if any(n not in done for n in phase):  # an input outside the phase: keep the order
            return 0
    for n in ops:  # lazy ops nothing reads
        if n not in done:
            emit(n)
    # Inputs and attributes first, the output last, the ops in their new order between.
    head = [n for n in nodes if n.op in ("placeholder", "get_attr")]
    tail = [n for n in nodes if n.op not in ("placeholder", "get_attr", "call_function")]
    new = [*head, *order, *tail]
    moved = sum(1 for a, b in zip(nodes, new) if a is not b)
    for before, after in itertools.pairwise(new):
        before.append(after)
    graph.lint()
    exported.graph_module.recompile()
    return moved


def _only_constants(node: Any) -> bool:
    """Made from placeholders only, through ops made from placeholders only."""
    todo, seen = [node], set()
    while todo:
        n = todo.pop()
        if n in seen or n.op == "placeholder":
            continue
        if n.op != "call_function" or not n.all_input_nodes:
            return False
        seen.add(n)
        todo.extend(n.all_input_nodes)
    return True


def _added_bytes(node: Any, remaining: dict, done: set, lazy: set) -> int:
    """What running `node` now adds to the live bytes: its output (nothing when elementwise
    and writing over an input it is the last to read), its lazy constant inputs not made
    yet, less the inputs it is the last to read."""
    made = _bytes(node)
    freed = 0
    taken = False
    val = node.meta.get("val")
    elementwise = op_name(node.target) in ELEMENTWISE and isinstance(val, torch.Tensor)
    for a in node.all_input_nodes:
        if a not in done and a in lazy:
            made += _bytes(a)
            continue
        if a.op != "call_function" or remaining[a] != 1:
            continue
        other = a.meta.get("val")
        if (elementwise and not taken and isinstance(other, torch.Tensor)
                and other.shape == val.shape and other.dtype == val.dtype):  # fmt: skip
            made -= _bytes(a)  # written over a: a's bytes become the output's
            taken = True
            continue
        freed += _bytes(a)
    return made - freed
