"""Graph rewrites on a forward+backward program that shorten what the backward keeps.

`aten.convolution_backward` takes the forward input as an argument even when it computes
only the gradient to that input (a frozen convolution: weight and bias need none), so the
memory planner keeps every frozen convolution's input alive from the forward to the backward:
a full feature map per layer. That gradient is a transposed convolution of the incoming
gradient with the weights, which reads no activation; writing it so frees them.

Weights computed from constants (an int8 weight dequantized in the graph) are computed again
right before the backward convolution instead of being kept from the forward: one fp32
weight alive at a time, not all of them.

A ReLU's mask (`x > 0`, a bool byte per element) is kept from the forward for the backward;
packed eight to a byte it takes an eighth of that, and unpacking it right before its
backward use gives back exactly the same mask.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Iterator
from typing import Any

import torch

__all__ = [
    "bit_packed_masks",
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


def bit_packed_masks(exported: Any, *, min_gap: int = 8, min_elements: int = 4096) -> int:
    """Keep, in place, each bool tensor the backward reads long after the forward made it
    (a ReLU mask) as bits: packed (8 elements a byte, uint8) right after it is made, unpacked
    right before each later use. Exact; returns how many masks are kept packed.

    A use counts as later when more than `min_gap` nodes separate it from the mask (the
    forward's own `where` is next to it). A mask whose element count is not a multiple of 8
    stays as it is, and so does one under `min_elements`: each packed mask adds seven
    instructions, whose runtime tables (~1 KB on a 32-bit target) would outweigh the bytes a
    small mask saves. Packing: `sum(mask · [1, 2, …, 128], dim=1)` over rows of 8; unpacking:
    `(packed & [1, 2, …, 128]) != 0` -- ops every ExecuTorch kernel library has, and one
    shared weight vector made in the graph (`2 ** arange(8)`), so no constant is added."""
    graph = exported.graph_module.graph
    order = {n: i for i, n in enumerate(graph.nodes)}
    masks = []
    for node in graph.nodes:
        val = node.meta.get("val")
        if node.op != "call_function" or not isinstance(val, torch.Tensor):
            continue
        if val.dtype != torch.bool or val.numel() % 8 or val.numel() < min_elements:
            continue
        late = [u for u in node.users if order[u] - order[node] > min_gap]
        if late:
            masks.append((node, late))
    if not masks:
        return 0
    fake = getattr(masks[0][0].meta["val"], "fake_mode", None)
    with fake or contextlib.nullcontext():
        _pack_and_unpack(graph, masks)
    graph.lint()
    exported.graph_module.recompile()
    return len(masks)


def _pack_and_unpack(graph: Any, masks: list[tuple[Any, list[Any]]]) -> None:
    aten = torch.ops.aten
    first = next(n for n in graph.nodes if n.op != "placeholder")
    with graph.inserting_before(first):
        exponents = _call(graph, aten.arange.default, (8,), {"dtype": torch.uint8})
        bits = _call(graph, aten.pow.Scalar, (2, exponents))  # 1, 2, 4, ..., 128 (uint8)
    for mask, late in masks:
        shape = list(mask.meta["val"].shape)
        rows = mask.meta["val"].numel() // 8
        with graph.inserting_after(mask):
            grouped = _call(graph, aten.view.default, (mask, [rows, 8]))
        with graph.inserting_after(grouped):
            weighted = _call(graph, aten.mul.Tensor, (grouped, bits))  # bool · uint8: uint8
        with graph.inserting_after(weighted):
            packed = _call(graph, aten.sum.dim_IntList, (weighted, [1]), {"dtype": torch.uint8})
        for user in late:
            with graph.inserting_before(user):
                column = _call(graph, aten.view.default, (packed, [rows, 1]))
                masked = _call(graph, aten.bitwise_and.Tensor, (column, bits))
                flags = _call(graph, aten.ne.Scalar, (masked, 0))
                unpacked = _call(graph, aten.view.default, (flags, shape))
            user.replace_input_with(mask, unpacked)


def _call(graph: Any, target: Any, args: tuple, kwargs: dict | None = None) -> Any:
    """A call_function node with its `val` metadata (what later passes and the memory
    planner read), computed on the inputs' fake values (under their fake mode)."""
    node = graph.call_function(target, args, kwargs or {})
    vals = [a.meta["val"] if hasattr(a, "meta") else a for a in args]
    node.meta["val"] = target(*vals, **(kwargs or {}))
    return node


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
