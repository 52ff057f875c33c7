"""Split a frozen network into K parts and attach a meta network to each.

A part is a run of consecutive sibling modules that the forward calls one after the other,
each feeding the next (a ResNet's blocks, a stage, ...). A probe forward checks that, and
reads each part's channels and downsampling, so no model code is rewritten.
"""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from edgeadapt.errors import PartitionError
from edgeadapt.modules.meta import MetaPart

__all__ = ["Part", "PartSpec", "attach_meta_parts", "auto_parts", "resolve_parts"]

PartSpec = str | Sequence[str]


@dataclass(frozen=True)
class Part:
    names: tuple[str, ...]  # consecutive sibling modules, in forward order
    in_channels: int
    out_channels: int
    stride: int


@dataclass
class _Call:
    order: int
    inp: Tensor
    out: Tensor


def _probe(model: nn.Module, names: Sequence[str], example: Tensor) -> dict[str, list[_Call]]:
    """Run `model(example)` once and record every call of the named modules."""
    modules = dict(model.named_modules())
    calls: dict[str, list[_Call]] = {n: [] for n in names}
    counter = iter(range(1 << 30))
    handles = []
    for name in names:

        def hook(_m, args, out, name=name):
            inp = args[0] if args else None
            if isinstance(inp, Tensor) and isinstance(out, Tensor):
                calls[name].append(_Call(next(counter), inp, out))
            else:
                calls[name].append(_Call(next(counter), torch.empty(0), torch.empty(0)))

        handles.append(modules[name].register_forward_hook(hook))
    modes = [(m, m.training) for m in model.modules()]  # restore each module's own mode
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        for m, mode in modes:
            m.training = mode
        for h in handles:
            h.remove()
    return calls


def _check_names(model: nn.Module, names: Sequence[str]) -> None:
    known = dict(model.named_modules())
    for name in names:
        if name not in known or name == "":
            close = difflib.get_close_matches(name, list(known), n=5)
            hint = (
                f"did you mean {close}?"
                if close
                else f"top-level modules are {[n for n, _ in model.named_children()]}"
            )
            raise PartitionError(
                f"partition names module {name!r}, which the model does not have; {hint}"
            )


def _parent_name(name: str) -> str:
    return name.rpartition(".")[0]


def resolve_parts(model: nn.Module, specs: Sequence[PartSpec], example: Tensor) -> list[Part]:
    """Validate user-given parts and read their channels and strides from a probe forward."""
    groups = [(s,) if isinstance(s, str) else tuple(s) for s in specs]
    if any(len(g) == 0 for g in groups):
        raise PartitionError("a part must name at least one module")
    flat = [n for g in groups for n in g]
    if len(set(flat)) != len(flat):
        raise PartitionError(
            f"a module appears in two parts: {sorted({n for n in flat if flat.count(n) > 1})}"
        )
    _check_names(model, flat)
    calls = _probe(model, flat, example)
    parts: list[Part] = []
    last_order = -1
    for group in groups:
        if len({_parent_name(n) for n in group}) != 1:
            raise PartitionError(
                f"part {list(group)} mixes modules of different parents; a part is a run of siblings"
            )
        for n in group:
            if len(calls[n]) != 1:
                raise PartitionError(
                    f"module {n!r} ran {len(calls[n])} times in one forward; a part must run exactly once"
                )
            if calls[n][0].out.ndim != 4 or calls[n][0].inp.ndim != 4:
                raise PartitionError(
                    f"module {n!r} does not map a 4-D feature map to a 4-D feature map"
                )
        for a, b in itertools.pairwise(group):
            if calls[b][0].inp is not calls[a][0].out:
                raise PartitionError(
                    f"in part {list(group)}, {b!r} does not consume the output of {a!r}"
                )
        first, last = calls[group[0]][0], calls[group[-1]][0]
        if first.order <= last_order:
            raise PartitionError(
                f"part {list(group)} runs before the part listed before it; list parts in forward order"
            )
        last_order = last.order
        in_hw, out_hw = tuple(first.inp.shape[2:]), tuple(last.out.shape[2:])
        stride = _stride(group, in_hw, out_hw)
        parts.append(Part(group, first.inp.shape[1], last.out.shape[1], stride))
    return parts


def _stride(group: Sequence[str], in_hw: tuple[int, ...], out_hw: tuple[int, ...]) -> int:
    """The part's downsampling factor s, as the meta conv block will apply it.

    The meta block's conv (odd kernel k, padding k // 2, stride s) maps n pixels to
    ceil(n / s), as do the parts' own stride-s convs with the same padding and the option-A
    shortcuts (x[..., ::s, ::s]). So s is the stride whose ceil maps both sides of the input
    to the output: 27 -> 14 is stride 2, though 27 is not a multiple of 14.
    """
    for s in range(1, max(in_hw) + 1):
        if all(-(-i // s) == o for i, o in zip(in_hw, out_hw)):
            return s
    raise PartitionError(
        f"part {list(group)} maps {in_hw[0]}x{in_hw[1]} to {out_hw[0]}x{out_hw[1]}: no stride s "
        "gives ceil(input / s) on both sides, so no meta conv can match its output; choose "
        "parts that downsample by a stride-s conv with 'same'-style padding, or an input size "
        "that each stage divides"
    )


def _is_stage(m: nn.Module) -> bool:
    kids = list(m.children())
    return (
        isinstance(m, nn.Sequential)
        and len(kids) >= 1
        and all(any(True for _ in k.children()) and any(True for _ in k.parameters()) for k in kids)
    )


def _stages(model: nn.Module, prefix: str = "") -> list[list[str]]:
    """Outermost Sequential containers of blocks, each as its list of block names."""
    found = []
    for name, child in model.named_children():
        full = f"{prefix}{name}"
        if _is_stage(child):
            found.append([f"{full}.{k}" for k, _ in child.named_children()])
        else:
            found.extend(_stages(child, f"{full}."))
    return found


def _split(items: Sequence[str], k: int) -> list[tuple[str, ...]]:
    """`items` into k contiguous groups, sizes differing by at most one, larger first."""
    size, extra = divmod(len(items), k)
    out, i = [], 0
    for j in range(k):
        n = size + (1 if j < extra else 0)
        out.append(tuple(items[i : i + n]))
        i += n
    return out


DEFAULT_NUM_PARTS = 4


def auto_parts(
    model: nn.Module, num_parts: int | None, example: Tensor, skip_stages: int = 0
) -> list[Part]:
    """Partition a ResNet-style network: its blocks, grouped into `num_parts` runs that never
    cross a stage boundary (as the paper's K = 4/5 splits). None: 4, or one part per block
    when there are fewer blocks. The first `skip_stages` stages get no part: they run frozen
    and the training step keeps none of their maps for the backward."""
    stages = _stages(model)
    if not stages:
        raise PartitionError(
            "found no stage of blocks (an nn.Sequential of sub-networks) to split automatically; "
            "name the parts with EcoTTAConfig(parts=...)"
        )
    if skip_stages >= len(stages):
        raise PartitionError(
            f"skip_stages={skip_stages} leaves no stage for a meta network: the network has "
            f"{len(stages)} stages {[_parent_name(s[0]) for s in stages]}; "
            f"use skip_stages <= {len(stages) - 1}"
        )
    stages = stages[skip_stages:]
    blocks = sum(len(s) for s in stages)
    if num_parts is None:
        num_parts = max(min(DEFAULT_NUM_PARTS, blocks), len(stages))
    if num_parts > blocks:
        raise PartitionError(
            f"num_parts={num_parts} but the network has only {blocks} blocks; use num_parts <= {blocks}"
        )
    if num_parts < len(stages):
        raise PartitionError(
            f"num_parts={num_parts} is fewer than the {len(stages)} stages {[_parent_name(s[0]) for s in stages]}; "
            f"use num_parts >= {len(stages)} or name the parts with EcoTTAConfig(parts=...)"
        )
    # Parts per stage in proportion to its blocks (largest remainder), at least one each.
    quotas = [max(1, num_parts * len(s) // blocks) for s in stages]
    order = sorted(
        range(len(stages)), key=lambda i: -(num_parts * len(stages[i]) / blocks - quotas[i])
    )
    while sum(quotas) < num_parts:
        for i in order:
            if sum(quotas) < num_parts and quotas[i] < len(stages[i]):
                quotas[i] += 1
    while sum(quotas) > num_parts:
        i = max(range(len(stages)), key=lambda j: quotas[j])
        quotas[i] -= 1
    specs = [g for s, q in zip(stages, quotas) for g in _split(s, q)]
    return resolve_parts(model, specs, example)


def attach_meta_parts(
    model: nn.Module, parts: Sequence[Part], kernel_size: int = 1, recompute: bool = True
) -> list[str]:
    """Replace each part, in place, by a MetaPart; the other modules of the run become
    nn.Identity. Returns the names of the MetaPart modules."""
    modules = dict(model.named_modules())
    names = []
    for part in parts:
        parent = modules[_parent_name(part.names[0])] if "." in part.names[0] else model
        leaves = [n.rpartition(".")[2] for n in part.names]
        frozen = nn.Sequential()
        for leaf, full in zip(leaves, part.names):
            frozen.add_module(leaf, modules[full])
        setattr(
            parent,
            leaves[0],
            MetaPart(
                frozen, part.in_channels, part.out_channels, part.stride, kernel_size, recompute
            ),
        )
        for leaf in leaves[1:]:
            setattr(parent, leaf, nn.Identity())
        names.append(part.names[0])
    return names
