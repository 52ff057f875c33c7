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

A trainable convolution's `convolution_backward` reads the forward input for its weight
gradient while it writes the input gradient: split in two (weight gradient first, input
gradient as a transposed convolution), the forward input can die before the input
gradient's map is made (`split_conv_backward`).

The joint graph's op order is not the memory planner's friend: it computes the loss's
terms after the whole forward and their gradients at the head of the backward, so the maps
they read or make stay alive across the rest of the step. `drop_aliases`,
`early_forward_ops` and `late_backward_ops` reorder (exact: the same ops on the same
values).

A float activation the backward reads (a meta network's input for its weight gradient, a
part's output for its BN's) can be kept as int8 with a step per channel: a quarter of its
bytes, an approximation of the gradients that read it (`int8_kept_activations`, opt-in;
MCUNetV3's on-device training keeps int8 activations).
"""

from __future__ import annotations

import contextlib
import itertools
import operator
from collections.abc import Iterator
from typing import Any

import torch

__all__ = [
    "bit_packed_masks",
    "defer_constant_ops",
    "drop_aliases",
    "early_forward_ops",
    "input_free_conv_backward",
    "int8_kept_activations",
    "late_backward_ops",
    "split_conv_backward",
    "training_indices_without_buffer_mutations",
]


def input_free_conv_backward(exported: Any) -> int:
    """Rewrite, in place, each input-gradient-only `convolution_backward` of an exported
    forward+backward program as a transposed convolution; returns how many."""
    graph = exported.graph_module.graph
    rewritten = 0
    for node in _conv_backwards(graph):
        *_, transposed, _, _, mask = node.args
        users = list(node.users)
        if transposed or list(mask) != [True, False, False]:
            continue
        if any(u.target is not operator.getitem or u.args[1] != 0 for u in users):
            continue
        with graph.inserting_before(node):
            new = _input_gradient(graph, node, _constant_names(exported))
        if new is None:
            continue
        for user in users:
            new.meta = dict(user.meta)
            user.replace_all_uses_with(new)
            graph.erase_node(user)
        graph.erase_node(node)
        rewritten += 1
    graph.lint()
    exported.graph_module.recompile()
    return rewritten


def split_conv_backward(exported: Any) -> int:
    """Rewrite, in place, each `convolution_backward` that computes both the input's and
    the weight's gradient as two ops: the weight's (and bias's) first, then the input's as a
    transposed convolution (as the frozen convolutions' already are); returns how many. The
    same math; with ExecuTorch's portable kernels the same values bit for bit (ResNet-20's
    EcoTTA step: identical over 5 SGD steps; tests/export/test_export_training.py).

    The combined op holds the forward input (for the weight gradient), the incoming
    gradient and the input gradient it writes at once: a trainable convolution's three maps
    (EcoTTA's meta networks read a part's input, a full feature map). Split, the forward
    input can die before the input gradient is made (`memory_aware_order` runs it first)."""
    aten = torch.ops.aten
    graph = exported.graph_module.graph
    split = 0
    for node in _conv_backwards(graph):
        *args, transposed, output_padding, groups, mask = node.args
        if transposed or not (mask[0] and mask[1]):
            continue
        users = list(node.users)
        if any(u.target is not operator.getitem for u in users):
            continue
        with graph.inserting_before(node):
            grad_input = _input_gradient(graph, node, _constant_names(exported))
        if grad_input is None:
            continue
        with graph.inserting_before(grad_input):
            others = graph.call_function(
                aten.convolution_backward.default,
                (*args, transposed, output_padding, groups, [False, *mask[1:]]),
            )
        others.meta = {**node.meta, "val": (None, *node.meta["val"][1:])}
        for user in users:
            if user.args[1] == 0:
                grad_input.meta = dict(user.meta)
                user.replace_all_uses_with(grad_input)
                graph.erase_node(user)
            else:
                user.replace_input_with(node, others)
        graph.erase_node(node)
        split += 1
    graph.lint()
    exported.graph_module.recompile()
    return split


def _conv_backwards(graph: Any) -> list[Any]:
    return [n for n in graph.nodes if n.target is torch.ops.aten.convolution_backward.default]


def _input_gradient(graph: Any, node: Any, constants: set[str]) -> Any:
    """The input gradient of convolution_backward `node` as a transposed convolution of its
    incoming gradient with its weight (inserted at the current point; a weight made from
    constants made again there), or None where output_padding cannot restore the input's
    size."""
    aten = torch.ops.aten
    grad, inp, weight, _, stride, padding, dilation, _, _, groups, _ = node.args
    # The transposed convolution's natural output size can be short of the input by up to
    # stride - 1 rows/columns (the forward dropped them); output_padding restores them.
    in_size = inp.meta["val"].shape[2:]
    grad_size = grad.meta["val"].shape[2:]
    kernel = weight.meta["val"].shape[2:]
    output_padding = [
        int(in_size[i])
        - ((int(grad_size[i]) - 1) * stride[i] - 2 * padding[i] + dilation[i] * (kernel[i] - 1) + 1)
        for i in range(len(kernel))
    ]
    if not all(0 <= p < max(s, d) for p, s, d in zip(output_padding, stride, dilation)):
        return None
    weight = _recompute(graph, weight, constants)
    return graph.call_function(
        aten.convolution.default,
        (grad, weight, None, stride, padding, dilation, True, output_padding, groups),
    )


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
    return _rewrite(exported, masks, _pack_and_unpack)


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


def int8_kept_activations(exported: Any, *, min_elements: int = 8192) -> int:
    """Keep, in place, each float32 activation the backward reads as int8: quantized right
    after the forward makes it (a step of (max - min) / 255 from each channel's min, rounded
    to nearest) and widened right before each gradient computation that reads it. The
    forward itself reads the exact values, and so does anything that is not a gradient (the
    loss, the logits, the stream statistics); the gradients that read a kept activation
    become approximations (half a step: one part in 510 of each channel's range). Returns
    how many activations are kept as int8.

    Only tensors of at least `min_elements`: each adds about fifteen instructions, whose
    runtime tables outweigh the bytes a small tensor saves, and on ResNet-20 at 32×32 the
    last stage's 8×8 maps (4096 values) carried most of the gradients' error and almost
    none of the arena's peak (benchmarks/firmware/int8_activations.md)."""
    from torch.export.graph_signature import OutputKind

    nodes = list(exported.graph_module.graph.nodes)
    grads = _outputs(exported, nodes, lambda kind: kind == OutputKind.GRADIENT_TO_PARAMETER)
    # Everything but the gradients reads exact values: the loss, the logits, and the stream
    # statistics the step writes back (buffer mutations).
    exact = _outputs(exported, nodes, lambda kind: kind != OutputKind.GRADIENT_TO_PARAMETER)
    if not grads:
        return 0
    forward, gradient = _forward_ops(exported, nodes, exact), _ancestors(grads)
    kept = []
    for node in nodes:
        val = node.meta.get("val")
        if node not in forward or node.op != "call_function" or not isinstance(val, torch.Tensor):
            continue
        if val.dtype != torch.float32 or val.numel() < min_elements:
            continue
        late = [u for u in node.users if u not in forward and u in gradient]
        if late:
            kept.append((node, late))
    return _rewrite(exported, kept, _quantize_and_dequantize)


def drop_aliases(exported: Any) -> int:
    """Read each `alias` op's input directly, in place; returns how many were dropped.
    Exact in a functional graph (nothing is written in place, so an alias is its input).

    The joint graph aliases forward tensors it hands to the loss and to the backward, and
    ExecuTorch emits an alias as a copy (`alias_copy`): a second feature map held as long as
    its readers. Aliases the program returns stay (an output keeps its own memory)."""
    graph = exported.graph_module.graph
    output = next(n for n in graph.nodes if n.op == "output")
    dropped = 0
    for node in list(graph.nodes):
        if node.target is not torch.ops.aten.alias.default or output in node.users:
            continue
        node.replace_all_uses_with(node.args[0])
        graph.erase_node(node)
        dropped += 1
    graph.lint()
    exported.graph_module.recompile()
    return dropped


def early_forward_ops(exported: Any) -> int:
    """Move, in place, each forward op to right after the last of its inputs (no later than
    where it was); returns how many moved. Exact: the same ops on the same values.

    A joint graph computes the loss's terms after the whole forward: EcoTTA's L1 terms
    (|part output - its frozen output|, averaged) come after the last part, so every part's
    output and frozen output stay alive through the rest of the forward only to be reduced
    to a scalar at the end. Computed where their inputs are made, each frees its two maps at
    once (the backward keeps only their bit-packed signs). An op is left in place when it
    makes more bytes than it reads (moving it up would hold its output longer) or reads only
    placeholders (a weight's dequantize, which `defer_constant_ops` put next to its use)."""
    from torch.export.graph_signature import OutputKind

    graph = exported.graph_module.graph
    nodes = list(graph.nodes)
    kinds = (OutputKind.LOSS_OUTPUT, OutputKind.USER_OUTPUT)
    forward = _forward_ops(exported, nodes, _outputs(exported, nodes, lambda k: k in kinds))
    order: list[Any] = []
    moved = 0
    for node in nodes:
        inputs = node.all_input_nodes
        if (node in forward and node.op == "call_function" and inputs
                and any(a.op != "placeholder" for a in inputs)
                and _bytes(node) <= sum(_bytes(a) for a in inputs)):  # fmt: skip
            index = {n: i for i, n in enumerate(order)}
            at = max(index[a] for a in inputs) + 1
            if at < len(order):
                moved += 1
            order.insert(at, node)
        else:
            order.append(node)
    for before, after in itertools.pairwise(order):
        before.append(after)
    graph.lint()
    exported.graph_module.recompile()
    return moved


def late_backward_ops(exported: Any, *, small: int = 4096) -> int:
    """Move, in place, each backward op made from small tensors only (recursively: from
    tensors of at most `small` bytes, or from such ops) to right before its first user;
    returns how many moved. Exact: the same ops on the same values.

    The backward of a loss term read by many layers makes all their gradient maps at its
    start: EcoTTA's L1 terms give every part's output a gradient map (the L1 loss's scalar
    gradient broadcast, masked by the term's bit-packed sign) at the head of the backward,
    each held until that part's backward runs -- four 16×32×32 maps of ResNet-20 alive at
    its peak. Made right before their use, one is alive at a time, and what they are made
    from is small and alive anyway, so nothing else is held longer."""
    graph = exported.graph_module.graph
    order = list(graph.nodes)
    start = _loss_position(exported, order)
    if start is None:
        return 0
    cheap: set[Any] = set()
    for node in order[start + 1 :]:
        if (
            node.op == "call_function"
            and node.users
            and all(a in cheap or _bytes(a) <= small for a in node.all_input_nodes)
        ):
            cheap.add(node)
    moved = 0
    for node in reversed(order[start + 1 :]):
        if node not in cheap:
            continue
        index = {n: i for i, n in enumerate(order)}
        first = min(index[u] for u in node.users)
        if first > index[node] + 1:
            order.remove(node)
            order.insert(first - 1, node)
            moved += 1
    for before, after in itertools.pairwise(order):
        before.append(after)
    graph.lint()
    exported.graph_module.recompile()
    return moved


def _loss_position(exported: Any, order: list[Any]) -> int | None:
    """Where the loss is computed (the backward starts after it), or None without a loss."""
    from torch.export.graph_signature import OutputKind

    losses = _outputs(exported, order, lambda kind: kind == OutputKind.LOSS_OUTPUT)
    index = {n: i for i, n in enumerate(order)}
    found = [index[o] for o in losses if o in index]
    return max(found) if found else None


def _forward_ops(exported: Any, nodes: list[Any], roots: list[Any]) -> set[Any]:
    """`roots`' ancestors, and every op placed before the loss that is made from those and
    placeholders only: what the forward makes for the backward alone (an L1 term's sign
    mask once `fold_abs` computes |x| without it)."""
    seen = _ancestors(roots)
    last = _loss_position(exported, nodes)
    for n in nodes[: -1 if last is None else last + 1]:
        if (n.op == "call_function" and n not in seen
                and all(a in seen or a.op == "placeholder" for a in n.all_input_nodes)):  # fmt: skip
            seen.add(n)
    return seen


def _outputs(exported: Any, nodes: list[Any], wanted: Any) -> list[Any]:
    """The graph's output nodes whose output kind (`OutputKind`) `wanted` accepts; `nodes`
    in graph order (the output node last)."""
    specs = exported.graph_signature.output_specs
    return [o for o, sp in zip(nodes[-1].args[0], specs) if wanted(sp.kind)]


def _bytes(node: Any) -> int:
    val = node.meta.get("val")
    if isinstance(val, torch.Tensor):
        return val.numel() * val.element_size()
    if isinstance(val, (list, tuple)):
        return sum(v.numel() * v.element_size() for v in val if isinstance(v, torch.Tensor))
    return 0


def _rewrite(exported: Any, found: list[tuple[Any, list[Any]]], rewrite: Any) -> int:
    """`rewrite(graph, found)` under the fake mode of the found tensors (so that new nodes
    get `val` metadata), then lint and recompile; returns how many were found."""
    if not found:
        return 0
    graph = exported.graph_module.graph
    fake = getattr(found[0][0].meta["val"], "fake_mode", None)
    with fake or contextlib.nullcontext():
        rewrite(graph, found)
    graph.lint()
    exported.graph_module.recompile()
    return len(found)


def _ancestors(roots: list[Any]) -> set[Any]:
    seen: set[Any] = set()
    todo = [r for r in roots if hasattr(r, "op")]
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(n.all_input_nodes)
    return seen


def _quantize_and_dequantize(graph: Any, kept: list[tuple[Any, list[Any]]]) -> None:
    """For each (node, late) of `kept`: its values to int8 steps of (max - min) / 255 from
    each channel's min (dim 1; the whole tensor where it has none) right after `node`, back
    to float before each of `late`."""
    for node, late in kept:
        _quantize_one(graph, node, late)


def _quantize_one(graph: Any, node: Any, late: list[Any]) -> None:
    aten = torch.ops.aten
    val = node.meta["val"]
    dims = [d for d in range(val.dim()) if d != 1] if val.dim() >= 2 else list(range(val.dim()))

    def after(at: Any, target: Any, *args: Any, **kwargs: Any) -> Any:
        with graph.inserting_after(at):
            return _call(graph, target, args, kwargs)

    low = after(node, aten.amin.default, node, dims, True)
    high = after(low, aten.amax.default, node, dims, True)
    span = after(high, aten.sub.Tensor, high, low)
    step = after(span, aten.div.Tensor, span, 255.0)
    scale = after(step, aten.clamp.default, step, 1e-30)  # a constant channel: no 0 / 0
    shifted = after(scale, aten.sub.Tensor, node, low)
    steps = after(shifted, aten.div.Tensor, shifted, scale)
    rounded = after(steps, aten.round.default, steps)
    centred = after(rounded, aten.sub.Tensor, rounded, 128.0)
    clamped = after(centred, aten.clamp.default, centred, -128.0, 127.0)
    q = after(clamped, aten._to_copy.default, clamped, dtype=torch.int8)
    for user in late:
        with graph.inserting_before(user):
            wide = _call(graph, aten._to_copy.default, (q,), {"dtype": torch.float32})
            uncentred = _call(graph, aten.add.Tensor, (wide, 128.0))
            scaled = _call(graph, aten.mul.Tensor, (uncentred, scale))
            back = _call(graph, aten.add.Tensor, (scaled, low))
        user.replace_input_with(node, back)


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
