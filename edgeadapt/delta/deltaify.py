"""`deltaify`: insert a `DeltaActivation` after every activation of a conv net, on a copy.

The model code is not rewritten. If `torch.fx` can trace the model, the quantisers go into the
traced graph after every activation *call site* (modules such as nn.ReLU / ReLU6 / SiLU, and
functional relu / relu6 / silu and `Tensor.relu`), so a ReLU module reused twice, as in
torchvision's BasicBlock, gets two quantisers; residual adds stay as they are. The graph also
says who consumes each quantised activation, which gives the fan-out MACs the sparsity penalty
weights by: walking forward through MAC-free ops (adds, pooling, flatten, BN, ...) until the
next conv / linear (counted) or the next quantiser (its own deltas are counted there).

If tracing fails (data-dependent Python control flow), activation *modules* are wrapped in
place as nn.Sequential(act, DeltaActivation) on the copy; functional activations are then not
found, a module used at several sites shares one quantiser, and the fan-out is taken from the
first conv / linear that runs after the activation on the example input (a heuristic).

Fan-out = dense MACs of the consumer(s) / elements of the quantised activation: k·k·C_out
per element for a stride-1 'same' conv consuming it, out_features for a linear, less where
strides or pooling shrink the map on the way. So Σ fan-out × elements over all quantisers is
the dense MACs they drive, and the penalty reads as a fraction of those.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from edgeadapt.delta.quantize import CALIBRATION_QUANTILE, DeltaActivation
from edgeadapt.errors import ConfigError, InputError

__all__ = ["DEFAULT_ACTIVATIONS", "delta_activations", "deltaify"]

DEFAULT_ACTIVATIONS: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6, nn.SiLU)
_FUNCTIONAL: set[Callable[..., Any]] = {F.relu, torch.relu, F.relu6, F.silu, torch.relu_}
_METHODS = {"relu", "relu_"}
_MAC_TYPES = (nn.Conv2d, nn.Linear)


def delta_activations(model: nn.Module) -> list[DeltaActivation]:
    """All `DeltaActivation` modules of `model`, in registration order."""
    return [m for m in model.modules() if isinstance(m, DeltaActivation)]


def deltaify(
    model: nn.Module,
    example_input: Tensor,
    *,
    bits: int = 8,
    activation_types: tuple[type[nn.Module], ...] = DEFAULT_ACTIVATIONS,
    quantile: float = CALIBRATION_QUANTILE,
) -> nn.Module:
    """Return a copy of `model` with a `DeltaActivation` after every activation.

    `model` is deep-copied and never modified. Step sizes start so the `quantile` (default
    the 99.9th percentile) of each channel on `example_input` spans 2**bits - 1 steps
    (calibrated in eval mode, layer by layer, so each quantiser sees already-quantised
    inputs). A runtime that stores activations in 2**bits - 1 steps and clamps there (the
    fast runtime's uint8 maps) wants `quantile=1.0`: clamping the top 0.1% of every channel
    biases the logits (measured on a static-camera clip: 97.7% top-1 agreement with float32
    against 99.8% calibrated on the maximum, benchmarks/delta/README_fast.md). The copy keeps
    `model`'s train/eval mode. A traceable model comes back as a `torch.fx.GraphModule` with the same
    parameter names plus the quantisers' `log_step` / `fan_out_macs`.
    """
    if not isinstance(example_input, Tensor):
        raise InputError(f"example_input must be a Tensor batch, got {type(example_input)}")
    check_quantile(quantile)
    work = copy.deepcopy(model)
    try:
        traced: fx.GraphModule | None = fx.symbolic_trace(work)
    except Exception:  # fx raises TraceError, TypeError, ... on data-dependent Python
        traced = None
    if traced is not None:
        out = _deltaify_graph(traced, example_input, bits, activation_types, quantile)
    else:
        out = _deltaify_modules(work, example_input, bits, activation_types, quantile)
    return out.train(model.training)


def check_quantile(quantile: float) -> None:
    """Refuse a calibration quantile outside (0, 1] before any copying or tracing."""
    if not isinstance(quantile, (int, float)) or not 0.0 < quantile <= 1.0:
        raise ConfigError(
            f"quantile must be in (0, 1] (1.0: calibrate on each channel's maximum), got "
            f"{quantile!r}"
        )


def _is_activation(node: fx.Node, modules: dict[str, nn.Module], types: tuple[type, ...]) -> bool:
    if node.op == "call_module":
        return isinstance(modules[str(node.target)], types)
    if node.op == "call_function":
        return node.target in _FUNCTIONAL
    return node.op == "call_method" and node.target in _METHODS


def _free_name(root: nn.Module, base: str) -> str:
    names = {n for n, _ in root.named_modules()}
    name, i = base, 1
    while name in names:
        name, i = f"{base}_{i}", i + 1
    return name


def _no_activation_error(types: tuple[type, ...]) -> ConfigError:
    names = ", ".join(t.__name__ for t in types)
    return ConfigError(
        f"no activation found to deltaify; looked for modules {names} and functional "
        "relu/relu6/silu. Pass activation_types=... for other activations."
    )


def _deltaify_graph(
    gm: fx.GraphModule, example: Tensor, bits: int, types: tuple, quantile: float
) -> nn.Module:
    modules = dict(gm.named_modules())
    acts = [n for n in gm.graph.nodes if _is_activation(n, modules, types)]
    if not acts:
        raise _no_activation_error(types)
    try:
        with torch.no_grad():
            ShapeProp(gm.eval()).propagate(example)  # channel counts of every activation
    except RuntimeError as e:
        raise InputError(f"example_input does not run through the model: {e}") from e
    quantisers = []
    for node in acts:
        meta = node.meta.get("tensor_meta")
        if meta is None or len(meta.shape) < 2:
            raise InputError(f"activation {node.name} does not output an (N, C, ...) tensor")
        base = f"{node.target}_delta" if node.op == "call_module" else f"{node.name}_delta"
        name = _free_name(gm, base)
        gm.add_submodule(name, DeltaActivation(int(meta.shape[1])))
        with gm.graph.inserting_after(node):
            q = gm.graph.call_module(name, (node,))
        node.replace_all_uses_with(q, delete_user_cb=lambda user, q=q: user is not q)
        quantisers.append(q)
    gm.recompile()
    consumer_macs, sizes = _calibrate(gm, example, bits, quantile)
    modules = dict(gm.named_modules())
    for q in quantisers:
        macs = _graph_consumer_macs(q, modules, consumer_macs)
        modules[str(q.target)].fan_out_macs.fill_(macs / sizes[str(q.target)])
    return gm


def _graph_consumer_macs(start: fx.Node, modules: dict[str, nn.Module], macs: dict) -> float:
    total, seen, stack = 0.0, set(), list(start.users)
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if node.op == "call_module":
            if isinstance(modules[str(node.target)], DeltaActivation):
                continue  # deltas past the next quantiser are counted by that quantiser
            if node.target in macs:
                total += macs[str(node.target)]
                continue
        stack.extend(node.users)
    return total


def _calibrate(
    model: nn.Module, example: Tensor, bits: int, quantile: float
) -> tuple[dict[str, float], dict[str, int]]:
    """One eval pass: init each quantiser's step from its input just before it quantises
    (so later quantisers see quantised inputs); return the dense MACs of every conv / linear
    and the elements of every quantiser on `example`, by module name."""
    macs: dict[str, float] = {}
    sizes: dict[str, int] = {}
    names = {id(m): n for n, m in model.named_modules()}

    def init_step(mod: nn.Module, args: tuple[Any, ...]) -> None:
        if names[id(mod)] not in sizes:  # a shared quantiser keeps its first call's statistics
            sizes[names[id(mod)]] = max(args[0].numel(), 1)
            mod.init_step_from(args[0], bits=bits, quantile=quantile)

    def count(mod: nn.Module, args: tuple[Any, ...], out: Tensor) -> None:
        w = mod.weight  # conv: out elements · (C_in/groups)·kh·kw; linear: out · in_features
        macs[names[id(mod)]] = float(out.numel() * w[0].numel())

    handles = []
    for mod in model.modules():
        if isinstance(mod, DeltaActivation):
            handles.append(mod.register_forward_pre_hook(init_step))
        elif isinstance(mod, _MAC_TYPES):
            handles.append(mod.register_forward_hook(count))
    model.eval()
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return macs, sizes


def _deltaify_modules(
    model: nn.Module, example: Tensor, bits: int, types: tuple, quantile: float
) -> nn.Module:
    calls: list[tuple[str, Tensor | None]] = []  # execution order: (name, act output or None)
    targets = {n: m for n, m in model.named_modules() if isinstance(m, types)}
    if not targets:
        raise _no_activation_error(types)
    macs_names = {id(m): n for n, m in model.named_modules() if isinstance(m, _MAC_TYPES)}
    handles = [
        m.register_forward_hook(lambda _m, _a, out, n=n: calls.append((n, out)))
        for n, m in targets.items()
    ]
    handles += [
        m.register_forward_hook(lambda mod, a, _o: calls.append((macs_names[id(mod)], a[0])))
        for m in model.modules()
        if id(m) in macs_names
    ]
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in handles:
            h.remove()
    first_consumer: dict[str, str] = {}
    for i, (name, out) in enumerate(calls):
        if name not in targets or name in first_consumer:
            continue
        later = [
            n for n, t in calls[i + 1 :] if n in macs_names.values() and t.numel() == out.numel()
        ]
        first_consumer[name] = later[0] if later else ""
    channels: dict[str, int] = {}
    for name, out in calls:
        if name in targets and channels.setdefault(name, int(out.shape[1])) != out.shape[1]:
            raise ConfigError(
                f"activation module {name!r} runs on tensors with different channel counts and "
                "the model is not fx-traceable, so it cannot get one quantiser per call site; "
                "use a separate activation module per site"
            )
    for name, act in targets.items():
        if name not in channels:
            continue  # never runs on the example input: dead code, nothing to quantise
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, nn.Sequential(act, DeltaActivation(channels[name])))
    consumer_macs, sizes = _calibrate(model, example, bits, quantile)
    for name in channels:
        macs = consumer_macs.get(first_consumer[name], 0.0)
        model.get_submodule(name)[1].fan_out_macs.fill_(macs / sizes[f"{name}.1"])
    return model
