"""Graph rewrites on a forward+backward program that shorten what the backward keeps.

`aten.convolution_backward` takes the forward input as an argument even when it computes
only the gradient to that input (a frozen convolution: weight and bias need none), so the
memory planner keeps every frozen convolution's input alive from the forward to the backward:
a full feature map per layer. That gradient is a transposed convolution of the incoming
gradient with the weights, which reads no activation; writing it so frees them.

Weights computed from constants (an int8 weight dequantized in the graph) are computed again
right before the backward convolution instead of being kept from the forward: one fp32
weight alive at a time, not all of them.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Iterator
from typing import Any

import torch

__all__ = [
    "defer_constant_ops",
    "input_free_conv_backward",
    "training_indices_without_buffer_mutations",
]


def input_free_conv_backward(exported: Any) -> int:
    """Rewrite, in place, each input-gradient-only `convolution_backward` of an exported
    forward+backward program as a transposed convolution; returns how many."""
    aten = torch.ops.aten
    graph = exported.graph_module.graph
    rewritten = 0
    for node in list(graph.nodes):
        if node.target is not aten.convolution_backward.default:
            continue
        grad, inp, weight, _, stride, padding, dilation, transposed, _, groups, mask = node.args
        users = list(node.users)
        wants_input_grad_only = list(mask) == [True, False, False]
        if transposed or not wants_input_grad_only:
            continue
        if any(u.target is not operator.getitem or u.args[1] != 0 for u in users):
            continue
        # The transposed convolution's natural output size can be short of the input by up to
        # stride - 1 rows/columns (the forward dropped them); output_padding restores them.
        in_size = inp.meta["val"].shape[2:]
        grad_size = grad.meta["val"].shape[2:]
        kernel = weight.meta["val"].shape[2:]
        output_padding = [
            int(in_size[i])
            - (
                (int(grad_size[i]) - 1) * stride[i]
                - 2 * padding[i]
                + dilation[i] * (kernel[i] - 1)
                + 1
            )
            for i in range(len(kernel))
        ]
        if not all(0 <= p < max(s, d) for p, s, d in zip(output_padding, stride, dilation)):
            continue
        with graph.inserting_before(node):
            weight = _recompute(graph, weight, _constant_names(exported))
            new = graph.call_function(
                aten.convolution.default,
                (grad, weight, None, stride, padding, dilation, True, output_padding, groups),
            )
        for user in users:
            new.meta = dict(user.meta)
            user.replace_all_uses_with(new)
            graph.erase_node(user)
        graph.erase_node(node)
        rewritten += 1
    graph.lint()
    exported.graph_module.recompile()
    return rewritten


def _constant_names(exported: Any) -> set[str]:
    sig = exported.graph_signature
    return {
        *sig.inputs_to_parameters,
        *sig.inputs_to_buffers,
        *getattr(sig, "inputs_to_lifted_tensor_constants", {}),
    }


def _recompute(graph: Any, node: Any, constants: set[str], depth: int = 4) -> Any:
    """A copy, inserted at the current point, of `node` if it is computed from constants
    only (a few ops deep); `node` itself otherwise."""
    chain: list[Any] = []

    def from_constants(n: Any, d: int) -> bool:
        if n.op == "placeholder":
            return n.name in constants
        if n.op != "call_function" or d == 0:
            return False
        inputs = [a for a in (*n.args, *n.kwargs.values()) if hasattr(a, "op")]
        if not all(from_constants(a, d - 1) for a in inputs):
            return False
        if n not in chain:
            chain.append(n)
        return True

    if node.op != "call_function" or not from_constants(node, depth):
        return node
    copies: dict[Any, Any] = {}
    for n in chain:  # inputs before their users: appended after their own inputs
        copies[n] = graph.node_copy(n, lambda a: copies.get(a, a))
    return copies[node]


def defer_constant_ops(exported: Any) -> int:
    """Move, in place, every op computed from constants only (a PT2E weight's dequantize)
    to just before its first user; returns how many moved.

    PT2E puts all weight dequantizes at the top of the graph, so the memory planner keeps
    every fp32 weight alive from the start until its layer runs: the whole model in fp32 in
    the arena (ResNet-20: +1.1 MB). Computed where used, one layer's weights are alive at a
    time."""
    constants = _constant_names(exported)
    graph = exported.graph_module.graph
    order = {n: i for i, n in enumerate(graph.nodes)}
    moved = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or not node.users:
            continue
        inputs = [a for a in (*node.args, *node.kwargs.values()) if hasattr(a, "op")]
        if not inputs or not all(a.op == "placeholder" and a.name in constants for a in inputs):
            continue
        first = min(node.users, key=order.__getitem__)
        if order[first] > order[node] + 1:
            first.prepend(node)
            moved += 1
    graph.lint()
    exported.graph_module.recompile()
    return moved


@contextlib.contextmanager
def training_indices_without_buffer_mutations() -> Iterator[None]:
    """While emitting, count the output positions of a training program's gradients the way
    the emitted program has them.

    ExecuTorch 1.5.1's `_get_training_metadata` counts every output spec, but the emitter
    drops the buffer-mutation outputs (the buffers are written in place). In a program that
    mutates buffers (EcoTTA's teacher) the runtime then reads gradients from the wrong
    outputs and finds no parameters. Programs without mutated buffers get the same indices
    either way. Checked by tests/export/test_export_teacher.py (weights move as eager's)."""
    from executorch.exir.emit import _emit_program
    from torch.export.graph_signature import OutputKind

    def metadata(methods: dict[str, Any]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for name, method in methods.items():
            specs = [s for s in method.graph_signature.output_specs
                     if s.kind != OutputKind.BUFFER_MUTATION]  # fmt: skip
            grads = [i for i, s in enumerate(specs) if s.kind == OutputKind.GRADIENT_TO_PARAMETER]
            tokens = [i for i, s in enumerate(specs) if s.kind == OutputKind.TOKEN]
            if grads:
                found[f"__et_training_gradients_index_{name}"] = grads[0]
                found[f"__et_training_fqn_{name}"] = [specs[i].target for i in grads]
            if tokens:
                found[f"__et_training_parameters_index_{name}"] = tokens[0]
        return found

    original = _emit_program._get_training_metadata
    _emit_program._get_training_metadata = metadata
    try:
        yield
    finally:
        _emit_program._get_training_metadata = original
