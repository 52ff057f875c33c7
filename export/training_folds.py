"""Pattern rewrites of a forward+backward graph that make fewer full-size maps for the same
values (exact but for the sign of a zero): how autograd spells |x|, its gradient, and the
gradient of a strided slice. Part of the exporter's scheduling (`schedule=True`), before
the reordering passes of training_passes.
"""

from __future__ import annotations

from typing import Any

import torch

from edgeadapt.export.training_passes import _call, _rewrite

__all__ = ["fold_abs", "fold_scatter_adds", "fold_sign_gradients"]


def fold_sign_gradients(exported: Any) -> int:
    """Rewrite, in place, each `where(m, d, 0) + -where(m, 0, d)` of a joint graph as
    `where(m, d, -d)`, with `d` read before its broadcast when it is one (`expand`, then
    divided by a number); returns how many. Exact but for the sign of a zero.

    That sum is the gradient of |x| (an L1 term, EcoTTA's |part output - frozen output|):
    autograd makes it from two masked copies of the incoming gradient, a negation and a sum
    -- four maps of the term's size, three alive at once, for what is the mean's scalar
    gradient with a sign. Folded, the sign and the scalar make one map, and the mask is
    read once (one unpacking less when it is kept packed)."""
    aten = torch.ops.aten
    graph = exported.graph_module.graph
    found = []
    for node in graph.nodes:
        if node.target is not aten.add.Tensor or len(node.args) != 2 or node.kwargs:
            continue
        negated = [a for a in node.args if getattr(a, "target", None) is aten.neg.default]
        if len(negated) != 1:
            continue
        kept = node.args[1] if node.args[0] is negated[0] else node.args[0]
        dropped = negated[0].args[0]
        if not (_is_where(kept) and _is_where(dropped) and kept.args[0] is dropped.args[0]):
            continue
        mask, d, zero = kept.args
        if not (_is_zero(zero) and _is_zero(dropped.args[1]) and dropped.args[2] is d):
            continue
        shapes = [mask.meta["val"].shape, _unbroadcast(d).meta["val"].shape]
        if torch.broadcast_shapes(*shapes) != node.meta["val"].shape:
            continue
        found.append((node, [mask, d]))
    return _rewrite(exported, found, _fold_signs)


def _fold_signs(graph: Any, found: list[tuple[Any, list[Any]]]) -> None:
    aten = torch.ops.aten
    for node, (mask, d) in found:
        with graph.inserting_before(node):
            small = _unbroadcast(d)
            if d.target is aten.div.Scalar and small is not d:  # the same division, once
                small = _call(graph, aten.div.Scalar, (small, *d.args[1:]))
            minus = _call(graph, aten.neg.default, (small,))
            folded = _call(graph, aten.where.self, (mask, small, minus))
        node.replace_all_uses_with(folded)
        # The sum, its terms and the broadcast map, where nothing else reads them.
        todo = [node]
        while todo:
            n = todo.pop()
            if n.op == "call_function" and not n.users:
                todo.extend(n.all_input_nodes)
                graph.erase_node(n)


def fold_abs(exported: Any) -> int:
    """Rewrite, in place, each `where(x > 0, x, -x)` as `abs(x)`; returns how many. Exact
    but for the sign of a zero.

    The joint graph spells an L1 term's |x| that way: x, -x and the result, three maps
    alive at once where `abs` makes one (the mask `x > 0` stays: the backward reads it)."""
    aten = torch.ops.aten
    found = []
    for node in exported.graph_module.graph.nodes:
        if not _is_where(node) or len(node.args) != 3:
            continue
        mask, x, minus = node.args
        if not (getattr(mask, "target", None) is aten.gt.Scalar and mask.args == (x, 0)):
            continue
        if getattr(minus, "target", None) is aten.neg.default and minus.args[0] is x:
            found.append((node, [x, minus]))

    def rewrite(graph: Any, found: list[tuple[Any, list[Any]]]) -> None:
        for node, (x, minus) in found:
            with graph.inserting_before(node):
                node.replace_all_uses_with(_call(graph, aten.abs.default, (x,)))
            graph.erase_node(node)
            if not minus.users:
                graph.erase_node(minus)

    return _rewrite(exported, found, rewrite)


def fold_scatter_adds(exported: Any) -> int:
    """Rewrite, in place, each `a + slice_scatter(zeros, src, dim, start, end, step)` as
    `slice_scatter(a, a[start:end:step] + src, ...)` (along `dim`), again on what that makes
    until none is left; returns how many. Exact but for the sign of a zero.

    That sum is how autograd adds the gradient of a strided slice -- ResNet-20's shortcut
    `x[:, :, ::2, ::2]`, zero-padded in channels -- to the gradient of the sliced map: it
    scatters the small gradient into a map of zeros the size of `a` (twice: rows, then
    columns) and adds it, so four maps of that size are alive at once. Adding into `a`'s
    slice and scattering the sum back makes one."""
    aten = torch.ops.aten
    graph = exported.graph_module.graph
    rewritten = 0
    while True:
        found = []
        for node in graph.nodes:
            if node.target is not aten.add.Tensor or len(node.args) != 2 or node.kwargs:
                continue
            scattered = [a for a in node.args if _scatters_into_zeros(a)]
            if not scattered or len(scattered[0].users) != 1:
                continue
            a = node.args[1] if node.args[0] is scattered[0] else node.args[0]
            val = node.meta["val"]
            if getattr(a, "meta", {}).get("val") is None or a.meta["val"].shape != val.shape:
                continue
            found.append((node, [a, scattered[0]]))
            break  # the graph changes: look again
        if not found:
            break
        rewritten += _rewrite(exported, found, _fold_scatter)
    return rewritten


def _scatters_into_zeros(node: Any) -> bool:
    aten = torch.ops.aten
    if getattr(node, "target", None) is not aten.slice_scatter.default:
        return False
    base = node.args[0]
    if len(node.args) != 6 or node.kwargs:  # dim, start, end and step all given
        return False
    return base.target is aten.full.default and base.args[1] == 0 and len(base.users) == 1


def _fold_scatter(graph: Any, found: list[tuple[Any, list[Any]]]) -> None:
    aten = torch.ops.aten
    for node, (a, scattered) in found:
        zeros, src, *where = scattered.args  # where: dim, start, end, step
        with graph.inserting_before(node):
            part = _call(graph, aten.slice.Tensor, (a, *where))
            summed = _call(graph, aten.add.Tensor, (part, src))
            folded = _call(graph, aten.slice_scatter.default, (a, summed, *where))
        node.replace_all_uses_with(folded)
        for n in (node, scattered, zeros):
            graph.erase_node(n)


def _is_where(node: Any) -> bool:
    return getattr(node, "target", None) is torch.ops.aten.where.self


def _is_zero(value: Any) -> bool:
    """A literal 0, or a `scalar_tensor(0)` node."""
    if isinstance(value, (int, float)):
        return value == 0
    return (getattr(value, "target", None) is torch.ops.aten.scalar_tensor.default
            and value.args[0] == 0)  # fmt: skip


def _unbroadcast(node: Any) -> Any:
    """What `node` broadcasts: `c` for `expand(c)` and for `expand(c) / k`; `node` itself
    otherwise."""
    aten = torch.ops.aten
    divided = node.target is aten.div.Scalar and len(node.args) == 2 and not node.kwargs
    inner = node.args[0] if divided else node
    return inner.args[0] if getattr(inner, "target", None) is aten.expand.default else node
