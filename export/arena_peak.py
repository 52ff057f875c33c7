"""What a training program's arena holds at its peak, by role: the measured items behind a
program that does not fit.

ExecuTorch plans every non-constant tensor into the arena by lifetime (node positions in the
emitted graph), so the arena's size is set by the moment when the most bytes are alive. For
a forward+backward program those bytes are mostly what the forward keeps for the backward:
that is where recomputation, bit-packed ReLU masks or int8 activations would act, and this
says how much each could free. Read from the emitted program's own tensor specs, so it
describes exactly the plan the file carries.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["ArenaPeak", "arena_peak"]

# Roles, in the order reports list them.
ROLES = (
    "input",  # the program's user inputs (the batch)
    "state",  # mutable buffers the program updates (stream statistics of its BNs)
    "kept activations",  # forward tensors alive into the backward, not bool
    "kept masks",  # ReLU masks alive into the backward: bool, or bit-packed (uint8)
    "forward temporaries",  # forward tensors that die in the forward
    "backward temporaries",  # tensors the backward makes and frees
    "outputs",  # loss, logits, gradients: alive until the program returns
)


@dataclass(frozen=True)
class ArenaPeak:
    """Bytes alive at the step where the most are, by role (`ROLES`), and the plan's size
    (the plan can exceed `peak_live_bytes`: the greedy planner's gaps)."""

    planned_bytes: int
    peak_live_bytes: int
    peak_step: int
    steps: int
    by_role: dict[str, int]
    largest: tuple[tuple[str, str, tuple[int, ...], str, int], ...] = field(default=())
    # The same before the backward starts: what the forward alone needs at its own peak.
    forward_peak_bytes: int = 0
    forward_peak_step: int = 0
    forward_largest: tuple[tuple[str, str, tuple[int, ...], str, int], ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        def rows(tensors):
            return [{"node": n, "role": r, "shape": list(s), "dtype": d, "bytes": b}
                    for n, r, s, d, b in tensors]  # fmt: skip

        return {
            "planned_bytes": self.planned_bytes,
            "peak_live_bytes": self.peak_live_bytes,
            "peak_step": self.peak_step,
            "steps": self.steps,
            "by_role": dict(self.by_role),
            "largest": rows(self.largest),
            "forward_peak_bytes": self.forward_peak_bytes,
            "forward_peak_step": self.forward_peak_step,
            "forward_largest": rows(self.forward_largest),
        }


def arena_peak(program: Any, *, largest: int = 12) -> ArenaPeak:
    """The arena peak of `program` (an ExecutorchProgramManager after `to_executorch`, or its
    ExportedProgram) with what is alive there by role, and its `largest` tensors."""
    ep = program.exported_program() if hasattr(program, "exported_program") else program
    graph = ep.graph_module.graph
    nodes = list(graph.nodes)
    specs = _planned_specs(nodes)
    if not specs:
        return ArenaPeak(0, 0, 0, len(nodes), {r: 0 for r in ROLES})
    forward = _forward_nodes(ep, nodes)
    first_backward = min(
        (i for i, n in enumerate(nodes) if n.op == "call_function" and n not in forward),
        default=len(nodes),
    )
    buffers = set(ep.graph_signature.inputs_to_buffers)
    output = nodes[-1]
    returned = {id(s) for a in output.args[0] if hasattr(a, "meta") for s in _specs_of(a)}
    steps = max(s.lifetime[1] for s, _ in specs.values()) + 1
    live = [0] * steps
    for spec, _ in specs.values():
        for t in range(spec.lifetime[0], spec.lifetime[1] + 1):
            live[t] += spec.allocated_memory
    peak = max(range(steps), key=live.__getitem__)
    forward_peak = max(range(min(first_backward, steps) or 1), key=live.__getitem__)

    def alive_at(step: int) -> list[tuple[str, str, tuple[int, ...], str, int]]:
        alive = []
        for key, (spec, node) in specs.items():
            if spec.lifetime[0] <= step <= spec.lifetime[1]:
                role = _role(spec, node, key in returned, node in forward, first_backward, buffers)
                alive.append((node.name, role, tuple(int(d) for d in spec.shape),
                              str(spec.dtype).replace("torch.", ""), spec.allocated_memory))  # fmt: skip
        return sorted(alive, key=lambda a: -a[4])

    alive = alive_at(peak)
    by_role = {r: 0 for r in ROLES}
    for _, role, _, _, size in alive:
        by_role[role] += size
    planned = max((s.mem_offset or 0) + s.allocated_memory for s, _ in specs.values())
    return ArenaPeak(
        planned, live[peak], peak, steps, by_role, tuple(alive[:largest]),
        live[forward_peak], forward_peak, tuple(alive_at(forward_peak)[:largest]),
    )  # fmt: skip


def _specs_of(node: Any) -> Iterable[Any]:
    spec = node.meta.get("spec")
    for s in spec if isinstance(spec, (list, tuple)) else (spec,):
        if s is not None and hasattr(s, "lifetime"):
            yield s


def _planned_specs(nodes: list[Any]) -> dict[int, tuple[Any, Any]]:
    """Every arena tensor once (an out-variant op and its `alloc` share one spec), with the
    node that produces it: the op, not the allocation."""
    found: dict[int, tuple[Any, Any]] = {}
    for node in nodes:
        if _is_view(node):  # an alias of its base, whose lifetime the planner extended
            continue
        for s in _specs_of(node):
            if s.mem_id is None or s.lifetime[0] is None or getattr(s, "const", False):
                continue
            if getattr(s, "storage_base", None) is not None:
                continue  # written over its base's memory, whose lifetime the planner extended
            producer = found.get(id(s), (s, node))[1]
            if _is_alloc(producer) and not _is_alloc(node):
                producer = node
            found[id(s)] = (s, producer)
    return found


def _is_view(node: Any) -> bool:
    """ExecuTorch's `memory.view` (a view_copy made free): it shares its base's memory."""
    target = node.target
    return (node.op == "call_function" and getattr(target, "__name__", "") == "view"
            and getattr(target, "__module__", "").endswith("exir.memory"))  # fmt: skip


def _is_alloc(node: Any) -> bool:
    return node.op == "call_function" and getattr(node.target, "__name__", "") == "alloc"


def _forward_nodes(ep: Any, nodes: list[Any]) -> set[Any]:
    """The forward: the nodes the loss and the user outputs (logits) depend on, and every
    node placed before the loss that is made from forward values only -- what the forward
    makes for the backward to read (bit-packed ReLU masks, int8 kept activations:
    training_passes), which the loss does not need. The backward starts after the loss."""
    from torch.export.graph_signature import OutputKind

    from edgeadapt.export.training_passes import _ancestors

    # The emitted program writes mutated buffers in place: their outputs are gone from the
    # graph but not from the signature.
    specs = [s for s in ep.graph_signature.output_specs if s.kind != OutputKind.BUFFER_MUTATION]
    outputs = nodes[-1].args[0]
    kinds = (OutputKind.LOSS_OUTPUT, OutputKind.USER_OUTPUT)
    losses = [o for o, s in zip(outputs, specs) if s.kind == OutputKind.LOSS_OUTPUT]
    seen = _ancestors([o for o, s in zip(outputs, specs) if s.kind in kinds])
    position = {n: i for i, n in enumerate(nodes)}
    last = max((position[_base(o)] for o in losses if _base(o) in position), default=-1)
    for n in nodes[: last + 1]:
        made_here = n.op == "call_function" and n not in seen and not _is_alloc(n)
        ready = (a in seen or _is_alloc(a) or a.op == "placeholder" for a in n.all_input_nodes)
        if made_here and all(ready):
            seen.add(n)
    # An out-variant op's output buffer (`alloc`) belongs where its op does.
    for n in nodes:
        if n in seen:
            seen.update(a for a in n.all_input_nodes if _is_alloc(a))
    return seen


def _base(node: Any) -> Any:
    """The node that computes `node`'s values: through aliases and views to their source."""
    while (node.op == "call_function" and node.all_input_nodes
           and ("alias" in str(node.target) or _is_view(node))):  # fmt: skip
        node = node.all_input_nodes[0]
    return node


def _role(
    spec: Any, node: Any, returned: bool, in_forward: bool, first_backward: int, buffers: set[str]
) -> str:
    if node.op == "placeholder":
        return "state" if node.name in buffers or node.target in buffers else "input"
    if returned:
        return "outputs"
    if not in_forward:
        return "backward temporaries"
    if spec.lifetime[1] < first_backward:
        return "forward temporaries"
    mask = spec.dtype in (torch.bool, torch.uint8)
    return "kept masks" if mask else "kept activations"
